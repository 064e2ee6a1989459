"""An app under hypercorn in the test's own event loop, on 127.0.0.1, as ``homelab serve``
runs it: real sockets for clients that must see what a real server sends (UTF-8 encoding
of WebSocket text frames, for one), with the test's own plugin manager.

::

    async with served(app) as url:
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
from quart import Quart

from homelab_core.web.serve import hypercorn_config


@asynccontextmanager
async def served(app: Quart, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields its URL once ``/api/health`` answers 200.

    The port is the app's ``[server] port`` unless given: the bundled app answers only the
    names it is reached under, its port included.
    """
    from hypercorn.asyncio import serve

    port = app.extensions["homelab"].settings.server.port if port is None else port
    stop, stopped = anyio.Event(), anyio.Event()

    async def shutdown() -> None:
        await stop.wait()
        stream = app.extensions["homelab"].stream
        if stream is not None:
            await stream.close_clients()

    async def run() -> None:
        try:
            await serve(app, hypercorn_config("127.0.0.1", port), shutdown_trigger=shutdown)
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        try:
            url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=url) as http:
                with anyio.fail_after(15):
                    while True:
                        try:
                            if (await http.get("/api/health")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await anyio.sleep(0.05)
            yield url
        finally:
            stop.set()  # a graceful stop, also when the test failed
            with anyio.move_on_after(15, shield=True):
                await stopped.wait()
