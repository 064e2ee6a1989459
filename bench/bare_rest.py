"""``rest_latest``'s baseline: a bare Quart route returning fixed bytes, on the same server.

``python bench/bare_rest.py BODY_FILE PORT``

Serves the bytes of ``BODY_FILE`` (a response of ``homelab serve`` fetched once) at
``GET /api/plugins/<plugin_id>/metrics``, under hypercorn with exactly the settings of
``homelab serve`` (:func:`homelab_core.web.serve.hypercorn_config`; the garbage collector
set as in such a process, :func:`homelab_gc`) on the same event loop runner (``anyio.run``,
asyncio). No hub, no schema, no auth: what Quart itself costs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import anyio
from hypercorn.asyncio import serve
from quart import Quart, Response

from homelab_core import hub
from homelab_core.config import SchedulerSettings
from homelab_core.web.serve import hypercorn_config, settle_gc


def make_app(body: bytes) -> Quart:
    app = Quart("bare_rest")

    @app.get("/api/plugins/<plugin_id>/metrics")
    async def latest(plugin_id: str) -> Response:
        return Response(body, content_type="application/json")

    return app


def homelab_gc() -> contextlib.AbstractContextManager[None]:
    """The garbage collector as in a ``homelab serve`` process, for the ``with`` block.

    The web server's settling (:func:`~homelab_core.web.serve.settle_gc`) and, when the hub
    tunes the collector while it runs (``homelab_core.hub.tuned_gc``), the same tuning with
    the default ``[scheduler]`` threshold: the baseline's process gets every advantage the
    subject's does.
    """
    settle_gc()
    tuned = getattr(hub, "tuned_gc", None)
    threshold = getattr(SchedulerSettings(), "gc_threshold", 0)
    return tuned(threshold) if tuned is not None else contextlib.nullcontext()


async def orphaned(stop: anyio.Event) -> None:
    """Stop when the bench that started this server is gone."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 - polls the process, not an event
        await anyio.sleep(1)
    stop.set()


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
