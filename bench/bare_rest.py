"""``rest_latest``'s baseline: a bare Quart route returning fixed bytes, on the same server.

``python bench/bare_rest.py BODY_FILE PORT``

Serves the bytes of ``BODY_FILE`` (a response of ``homelab serve`` fetched once) at
``GET /api/plugins/<plugin_id>/metrics``, under hypercorn with exactly the settings of
``homelab serve`` (:func:`homelab_core.web.serve.hypercorn_config`; the garbage collector
set as in such a process, :func:`serving.homelab_gc`) on the same event loop runner (``anyio.run``,
asyncio). No hub, no schema, no auth: what Quart itself costs.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
from hypercorn.asyncio import serve
from quart import Quart, Response
from serving import homelab_gc, orphaned

from homelab_core.web.serve import hypercorn_config


def make_app(body: bytes) -> Quart:
    app = Quart("bare_rest")

    @app.get("/api/plugins/<plugin_id>/metrics")
    async def latest(plugin_id: str) -> Response:
        return Response(body, content_type="application/json")

    return app


async def main(body: bytes, port: int) -> None:
    app = make_app(body)
    stop = anyio.Event()

    async def watch() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stop.set()
                return

    with homelab_gc():
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            tg.start_soon(orphaned, stop)
            await serve(app, hypercorn_config("127.0.0.1", port), shutdown_trigger=stop.wait)
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]).read_bytes(), int(sys.argv[2]))
