"""A small, fast HTTP/1.1 load generator: ``rest_latest``'s clients, run as a process of its own.

``python bench/rest_client.py NAME=URL [NAME=URL ...] --connections 50 --segments 6
--seconds 1.5 --out FILE [--pid NAME=PID ...]``

Opens ``--connections`` keep-alive connections to each URL and loads one server at a time,
in segments that alternate between them (a, b, a, b, ...), so that what disturbs the machine
for a while disturbs every server alike. During a segment each connection of the active
server sends one GET at a time and reads the whole response (``Content-Length`` framing)
before the next: a closed loop, like a dashboard's clients. The first ``--settle`` seconds of
each segment are not counted (the previous server's requests in flight finish meanwhile).

Writes ``{name: [segment, ...]}`` to ``--out``; a segment has requests, seconds, throughput
(req/s), latency percentiles (ms), status counts, errors, the size of the last body and,
with ``--pid``, the server's CPU use.

httpx costs a few hundred microseconds per request, more than the server under test on this
machine; this client costs a few tens (raw ``asyncio`` streams, uvloop when installed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class Target:
    """One server: its request, its connections' switch, and the current segment's figures."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: */*\r\n\r\n"
        ).encode()
        self.active = asyncio.Event()
        self.measuring = False
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.body_bytes = 0
        self.errors: list[str] = []
        self.reconnects = 0


async def connection(target: Target, stop: asyncio.Event) -> None:
    """One keep-alive connection: one request in flight while its server is active.

    A server closes a connection that stayed idle past its keep-alive timeout (hypercorn:
    5 s) while another server had its segment; like a browser, the client then opens a
    new one before its next request (counted in ``reconnects``, not in the latency).
    """
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        while True:
            if not target.active.is_set():
                await target.active.wait()
            if stop.is_set():
                return
            if reader.at_eof():
                writer.close()
                reader, writer = await asyncio.open_connection(target.host, target.port)
                target.reconnects += 1
            started = time.perf_counter()
            writer.write(target.request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
                # Closed by the server as the request went out: the keep-alive race.
                writer.close()
                reader, writer = await asyncio.open_connection(target.host, target.port)
                target.reconnects += 1
                continue
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at < 0:
                raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
            length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
            body = await reader.readexactly(length)
            elapsed = time.perf_counter() - started
            if target.measuring:
                status = int(head[9:12])
                target.statuses[status] = target.statuses.get(status, 0) + 1
                target.latencies.append(elapsed)
                target.body_bytes = len(body)
    except Exception as exc:
        target.errors.append(repr(exc))
        raise
    finally:
        writer.close()


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered), max(1, math.ceil(p / 100 * len(ordered)))) - 1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def segment(target: Target, args: argparse.Namespace, pid: int | None) -> dict[str, Any]:
    target.latencies, target.statuses, target.reconnects = [], {}, 0
    target.active.set()
    await asyncio.sleep(args.settle)
    target.measuring = True
    cpu = cpu_seconds(pid) if pid else 0.0
    started = time.perf_counter()
    await asyncio.sleep(args.seconds)
    seconds = time.perf_counter() - started
    target.measuring = False
    cpu = cpu_seconds(pid) - cpu if pid else math.nan
    target.active.clear()
    ordered = sorted(target.latencies)
    return {
        "requests": len(ordered),
        "seconds": seconds,
        "throughput": len(ordered) / seconds,
        "p50_ms": percentile(ordered, 50) * 1000,
        "p90_ms": percentile(ordered, 90) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": ordered[-1] * 1000 if ordered else math.nan,
        "statuses": {str(k): v for k, v in sorted(target.statuses.items())},
        "errors": target.errors[:5],
        "body_bytes": target.body_bytes,
        "reconnects": target.reconnects,
        "server_cpu_percent": round(100 * cpu / seconds, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    targets = [Target(*spec.split("=", 1)) for spec in args.targets]
    pids = {name: int(pid) for name, pid in (spec.split("=", 1) for spec in args.pid)}
    stop = asyncio.Event()
    tasks = [
        asyncio.ensure_future(connection(target, stop))
        for target in targets
        for _ in range(args.connections)
    ]
    figures: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    # The client must not pause itself (a collection would show as server latency); what
    # it allocates is freed by reference counting.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        for _ in range(args.segments):
            for target in targets:
                failed = [t for t in tasks if t.done()]
                if failed:
                    failed[0].result()  # raises what ended the connection
                    raise RuntimeError("a connection ended")
                figures[target.name].append(await segment(target, args, pids.get(target.name)))
    finally:
        stop.set()
        for target in targets:
            target.active.set()
        _, pending = await asyncio.wait(tasks, timeout=5)
        for task in pending:
            task.cancel()
    return figures


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", metavar="NAME=URL")
    parser.add_argument("--connections", type=int, default=50, help="per server")
    parser.add_argument("--segments", type=int, default=6, help="per server")
    parser.add_argument("--seconds", type=float, default=1.5, help="measured per segment")
    parser.add_argument("--settle", type=float, default=0.2, help="not counted per segment")
    parser.add_argument("--pid", action="append", default=[], metavar="NAME=PID")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    figures = runner(main(args))
    args.out.write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
