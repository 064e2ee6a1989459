"""``websocket_fanout``'s baseline: a bare Quart broadcast loop, on the same server.

``python bench/bare_ws.py EVENTS_FILE PORT [--websocket-compression] [--paused] [--raw-send]``

``EVENTS_FILE`` holds ``{"interval": s, "events": [{"type", "plugin_id", "data"}, ...]}``:
events captured from ``homelab serve``. Every ``interval`` the loop sends each of them, in
order, to every client at ``/ws/metrics``, with a fresh ``seq`` and ``ts``, encoded once
(the stream's encoding: compact JSON, the same keys in the same order). Each client has an
unbounded queue and a task that sends from it: the least a correct broadcaster does. No
hub, no protocol, no filters, no bounds. Hypercorn runs with the settings of ``homelab
serve`` (:mod:`homelab_core.web.serve`), including its WebSocket compression choice, and
the garbage collector is set as in such a process (:func:`serving.homelab_gc`).
SIGUSR1 pauses the loop, SIGUSR2 resumes it (the bench measures one server at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from hypercorn.asyncio import serve
from quart import Quart, websocket
from serving import homelab_gc, orphaned

from homelab_core.web.serve import hypercorn_config, hypercorn_websocket_compression

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
#: Tells a client that it is connected (the bench's clients wait for it).
HELLO = _encode({"type": "hello"})


def make_app(
    interval: float, events: list[dict[str, Any]], *, paused: bool = False, raw_send: bool = False
) -> Quart:
    """The app; ``raw_send`` writes through what ``websocket.send`` ends in, as the stream
    does (skipping the ``sleep(0)`` and headers object it adds per message)."""
    app = Quart("bare_ws")
    queues: set[asyncio.Queue[str]] = set()
    sending = [not paused]

    @app.get("/")
    async def ready() -> str:
        return "ok"

    @app.websocket("/ws/metrics")
    async def stream() -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        queues.add(queue)
        try:
            await websocket.accept()
            ws = websocket._get_current_object()  # type: ignore[attr-defined]
            send = ws._send if raw_send else ws.send
            await send(HELLO)
            while True:
                await send(await queue.get())
        finally:
            queues.discard(queue)

    async def broadcast() -> None:
        seq = 0
        tick = time.monotonic()
        while True:
            tick += interval
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            if not sending[0]:
                continue
            for event in events:
                seq += 1
                text = _encode(
                    {
                        "type": event["type"],
                        "seq": seq,
                        "plugin_id": event["plugin_id"],
                        "ts": time.time(),
                        "data": event["data"],
                    }
                )
                for queue in queues:
                    queue.put_nowait(text)

    @app.while_serving  # type: ignore[type-var]
    async def broadcasting() -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, sending.__setitem__, 0, False)
        loop.add_signal_handler(signal.SIGUSR2, sending.__setitem__, 0, True)
        task = asyncio.ensure_future(broadcast())
        yield
        task.cancel()

    return app


async def main(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    app = make_app(spec["interval"], spec["events"], paused=args.paused, raw_send=args.raw_send)
    hypercorn_websocket_compression(args.websocket_compression)
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
            config = hypercorn_config("127.0.0.1", args.port)
            await serve(app, config, shutdown_trigger=stop.wait)
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("events")
    parser.add_argument("port", type=int)
    parser.add_argument("--websocket-compression", action="store_true")
    parser.add_argument("--paused", action="store_true", help="start paused")
    parser.add_argument("--raw-send", action="store_true", help="send as the stream does")
    arguments = parser.parse_args()
    anyio.run(main, arguments, json.loads(Path(arguments.events).read_text()))
