"""WebSocket clients for ``websocket_fanout``, run as a process of their own.

``python bench/ws_fanout_client.py URL DIRECTORY --clients 1000 [--server-pid PID]``

Connects ``--clients`` healthy clients (the ``websockets`` library, which offers
permessage-deflate as browsers do, unless ``--no-compression``), each subscribing to
everything, waits until each has its ``--ready-on`` message (the subscription's snapshot),
writes ``DIRECTORY/ready.json`` and then follows the commands appended to
``DIRECTORY/control`` (one a line), so that the clients stay connected over several
measurements of a server that the bench pauses and resumes:

``window NAME SECONDS GRACE``
    Measure a window of SECONDS; GRACE seconds after it ends, write ``NAME.json``: every
    healthy client's latency for each event whose ``ts`` (the time the server created it)
    falls in the window (receive time minus ``ts``: one clock, one machine) and the seq
    numbers it received, so that the bench counts deliveries against the stream's
    consecutive numbers; and, with ``--server-pid``, the server's CPU and RSS.
``stall N``
    Connect N clients that subscribe and then never read (a tiny receive buffer, so the
    server's writes to them soon block); writes ``stalled.json`` once they are connected.
``unstall``
    Close them.
``quit``
    Disconnect everyone and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import socket
import sys
import time
from base64 import b64encode
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import connect

SUBSCRIBE = json.dumps({"type": "subscribe"})
EVENT_TYPES = frozenset({"metrics", "status", "execution", "plugin"})
#: The head of an event message as the stream encodes it (and the bare server mimics).
_HEAD = re.compile(r'\{"type":"(\w+)","seq":(\d+),"plugin_id":"[^"]*","ts":([-+.eE0-9]+)[,}]')
POLL = 0.02


class Window:
    def __init__(self, name: str, start: float, end: float) -> None:
        self.name = name
        self.start = start
        self.end = end


class Healthy:
    """One healthy client: (seq, latency) of the events of each window, lags, errors."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[int, float]]] = {}
        self.lagged = 0
        self.subscribed = asyncio.Event()
        self.error: str | None = None
        self.compressed = False


def proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds and RSS bytes of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


async def healthy(
    url: str, client: Healthy, windows: list[Window], compression: bool, ready_on: str
) -> None:
    try:
        async with connect(
            url,
            compression="deflate" if compression else None,
            ping_interval=None,
            open_timeout=60,
            close_timeout=1,
            max_size=None,
        ) as ws:
            response = ws.response
            offered = response.headers.get("Sec-WebSocket-Extensions", "") if response else ""
            client.compressed = "permessage-deflate" in offered
            await ws.send(SUBSCRIBE)
            async for raw in ws:
                now = time.time()
                text = raw if isinstance(raw, str) else raw.decode()
                head = _HEAD.match(text, 0, 200)
                if head is not None:
                    kind, seq, ts = head.group(1), int(head.group(2)), float(head.group(3))
                else:
                    message = json.loads(text)
                    kind, seq, ts = message.get("type"), message.get("seq"), message.get("ts")
                    if kind == ready_on:
                        client.subscribed.set()
                    elif kind == "lagged":
                        client.lagged += int(message.get("missed", 0))
                if kind in EVENT_TYPES and ts is not None:
                    for window in windows:
                        if window.start <= ts < window.end:
                            client.events.setdefault(window.name, []).append((seq, now - ts))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a healthy client must not fail: reported and counted
        client.error = repr(exc)
        client.subscribed.set()


async def stalled(host: str, port: int, path: str, compression: bool) -> socket.socket:
    """A client that completes the handshake, subscribes, and never reads again.

    Its receive buffer is tiny, and so is its segment size: on loopback (64 kB segments)
    the server's kernel would otherwise size its send buffer for megabytes and accept
    minutes of events before a write to the stalled client blocks; with 536-byte segments
    it holds some 29 kB, as over a network.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, port))
    key = b64encode(os.urandom(16)).decode()
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{offer if compression else ''}\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise RuntimeError("stalled client: connection closed during the handshake")
        received += chunk
    if not received.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"stalled client: handshake refused: {received[:100]!r}")
    payload = SUBSCRIBE.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    await loop.sock_sendall(sock, bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    return sock


class Session:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.directory: Path = args.directory
        url = urlsplit(args.url)
        self.host, self.port, self.path = url.hostname or "127.0.0.1", url.port or 80, url.path
        self.windows: list[Window] = []
        self.clients = [Healthy() for _ in range(args.clients)]
        self.tasks: list[asyncio.Future[None]] = []
        self.stalled: list[socket.socket] = []
        self.pending: set[asyncio.Future[None]] = set()

    def write(self, name: str, data: dict[str, Any]) -> None:
        """Write ``name`` atomically: the bench polls for it."""
        path = self.directory / name
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        temporary.replace(path)

    async def connect_all(self) -> None:
        started = time.monotonic()
        ready_on = self.args.ready_on
        # A bounded number of handshakes at once: hypercorn's listen backlog is 100.
        for first in range(0, len(self.clients), self.args.batch):
            batch = self.clients[first : first + self.args.batch]
            self.tasks += [
                asyncio.ensure_future(
                    healthy(self.args.url, c, self.windows, self.args.compression, ready_on)
                )
                for c in batch
            ]
            await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in batch)), 60)
        self.write(
            "ready.json",
            {
                "connect_seconds": time.monotonic() - started,
                "errors": sorted({c.error for c in self.clients if c.error})[:5],
                "failed_clients": sum(c.error is not None for c in self.clients),
                "compressed_clients": sum(c.compressed for c in self.clients),
            },
        )

    async def window(self, name: str, seconds: float, grace: float) -> None:
        pid = self.args.server_pid
        now = time.time()
        window = Window(name, now, now + seconds)
        self.windows.append(window)
        cpu0, _ = proc_stat(pid) if pid else (0.0, 0)
        own0 = time.process_time()
        lagged0 = sum(c.lagged for c in self.clients)
        await asyncio.sleep(seconds)
        cpu1, rss = proc_stat(pid) if pid else (0.0, 0)
        own = (time.process_time() - own0) / seconds
        await asyncio.sleep(grace)
        self.windows.remove(window)
        self.write(
            f"{name}.json",
            {
                "start": window.start,
                "end": window.end,
                "server_cpu": (cpu1 - cpu0) / seconds if pid else None,
                "server_rss": rss if pid else None,
                "client_cpu": own,
                "stalled": len(self.stalled),
                "failed_clients": sum(c.error is not None for c in self.clients),
                "errors": sorted({c.error for c in self.clients if c.error})[:5],
                "lagged_events": sum(c.lagged for c in self.clients) - lagged0,
                # Per healthy client: [[seq, latency], ...] of the window's events.
                "events": [
                    [[seq, round(latency, 6)] for seq, latency in c.events.pop(name, [])]
                    for c in self.clients
                ],
            },
        )

    async def stall(self, count: int) -> None:
        compression = self.args.compression
        for _ in range(count):
            self.stalled.append(await stalled(self.host, self.port, self.path, compression))
        self.write("stalled.json", {"stalled": len(self.stalled)})

    def unstall(self) -> None:
        for sock in self.stalled:
            sock.close()
        self.stalled.clear()

    async def follow(self) -> None:
        control = self.directory / "control"
        done = 0
        parent = os.getppid()
        deadline = time.monotonic() + self.args.lifetime
        while True:
            await asyncio.sleep(POLL)
            if os.getppid() != parent or time.monotonic() > deadline:
                return  # the bench is gone (or forgot us): never outlive it
            lines = control.read_text().splitlines() if control.exists() else []
            for line in lines[done:]:
                done += 1
                command, *rest = line.split()
                if command == "window":
                    task = asyncio.ensure_future(
                        self.window(rest[0], float(rest[1]), float(rest[2]))
                    )
                    self.pending.add(task)
                    task.add_done_callback(self.pending.discard)
                elif command == "stall":
                    await self.stall(int(rest[0]))
                elif command == "unstall":
                    self.unstall()
                elif command == "quit":
                    if self.pending:
                        await asyncio.wait(self.pending, timeout=60)
                    return
                else:
                    raise ValueError(f"unknown command {line!r}")

    async def run(self) -> None:
        await self.connect_all()
        # The clients must not pause themselves: a full collection of their 1,000
        # connections took 60 ms every 9 s and showed as latency of every server. What
        # they allocate from now on is freed by reference counting.
        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            await self.follow()
        finally:
            self.unstall()
            for task in self.tasks:
                task.cancel()
            await asyncio.wait(self.tasks, timeout=5)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=900, help="seconds before giving up")
    parser.add_argument(
        "--ready-on", default="snapshot",
        help="the message type that tells a client it is subscribed (the bare server: hello)",
    )  # fmt: skip
    parser.add_argument(
        "--no-compression", dest="compression", action="store_false",
        help="do not offer permessage-deflate (offered by default, as browsers do)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.directory.mkdir(parents=True, exist_ok=True)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(Session(args).run())
    return 0


if __name__ == "__main__":
    sys.exit(cli())
