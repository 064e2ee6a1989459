"""``websocket_fanout``: 1,000 clients of ``/ws/metrics`` at 10 events/s, plus 10 stalled ones.

The subject is a real ``homelab serve`` (hypercorn, its defaults: WebSocket compression
off) with one ``command`` instance every 0.2 s: each run publishes a ``metrics`` event
(8 series, about 1.2 kB) and an ``execution`` event (about 270 B), 10 events/s. The baseline
is a bare Quart broadcast loop (``bench/bare_ws.py``) on the same server settings, sending
those two events, captured from the subject, every 0.2 s with fresh ``seq`` and ``ts``.

Each server has its 1,000 clients (``bench/ws_fanout_client.py``, one process per server,
the ``websockets`` library offering permessage-deflate as browsers do) connected for the
whole benchmark; one server sends at a time: the bench pauses the bare loop (a signal) and
disables the subject's instance (the API) while it measures the other. Each round measures,
alternating which goes first:

- the bare loop: one window;
- the subject: one window, then 10 clients that subscribe and never read are connected and,
  once they have had ``fill`` seconds of events, a second window. A stalled client's
  buffers (its 2 kB window, the server's send buffer, some 29 kB, and the transport's
  64 kB) take some 13 s of events: the full run's 15 s find the server's writes to them
  blocked, the quick run's 1 s still accepted. Neither reaches the stream's drop limit
  (1,024 queued messages: 100 s more), which the unit tests cover.

Latency is the time from the event's creation (``ts``: the hub stamps it when the run's
results arrive, before the bus) to its arrival at a client. Delivery counts, for every
healthy client, the events of each window (numbered consecutively by ``seq``) it received.
The p99 of each window is computed over every (client, event) pair; the results are
medians over rounds.

The full run also measures a bare loop that writes through Quart's inner send as the
stream does (so the stream's own cost shows apart from that shortcut), and the subject with
WebSocket compression on (``--websocket-compression``), the cost docs/performance.md describes.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
from websockets.sync.client import connect

from .common import (
    Result,
    clean_env,
    free_port,
    homelab_server,
    log,
    median_of,
    percentile,
    process,
    python_process,
    ratio_target,
    result,
    rounded,
    value_target,
    wait_http,
    workdir,
)

NAME = "websocket_fanout"
INSTANCE = "ups"
CLIENTS = 1000
STALLED = 10
#: Seconds between runs of the instance: two events per run, so 10 events/s.
INTERVAL = 0.2
EXTRA_SERIES = 4


@dataclass(frozen=True)
class Plan:
    rounds: int
    warmup: float  # seconds of events before a window
    window: float  # seconds of events measured
    fill: float  # seconds of events the stalled clients get before their window
    grace: float  # seconds a window's events have to arrive
    #: Also measure a bare loop that sends as the stream does, and the subject with
    #: WebSocket compression on.
    extras: bool


QUICK = Plan(rounds=3, warmup=0.5, window=2.5, fill=1.0, grace=0.5, extras=False)
FULL = Plan(rounds=3, warmup=1.0, window=10.0, fill=15.0, grace=1.0, extras=True)


def config(directory: Path) -> str:
    entries = [
        {
            "name": "ups.load",
            "value": 23.0 + i,
            "unit": "%",
            "labels": {"ups": f"ups{i}"},
            "device_class": "percentage",
        }
        for i in range(EXTRA_SERIES)
    ]
    output = directory / "metrics.json"
    output.write_text(json.dumps(entries))
    return (
        f'[database]\nurl = "sqlite://{directory / "homelab.db"}"\n\n'
        f'[plugins.{INSTANCE}]\ntype = "command"\ninterval = {INTERVAL}\n'
        f'command = ["cat", "{output}"]\nformat = "json"\n'
    )


def capture_events(url: str, path: Path) -> None:
    """One run's ``metrics`` and ``execution`` events, for the bare loop to send."""
    ws_url = url.replace("http://", "ws://") + "/ws/metrics"
    wanted: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    with connect(ws_url, compression=None, open_timeout=10) as ws:
        while len(wanted) < 2:
            message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            kind = message["type"]
            if kind == "metrics" or (kind == "execution" and "metrics" in wanted):
                wanted[kind] = {k: message[k] for k in ("type", "plugin_id", "data")}
    events = [wanted["metrics"], wanted["execution"]]
    path.write_text(json.dumps({"interval": INTERVAL, "events": events}))


def set_enabled(url: str, enabled: bool) -> None:
    response = httpx.post(f"{url}/api/plugins/{INSTANCE}/enable", json={"enabled": enabled})
    response.raise_for_status()


class Clients:
    """A ``ws_fanout_client.py`` process, driven through its control file."""

    def __init__(self, directory: Path, proc: Popen[bytes], name: str) -> None:
        self.directory = directory
        self.proc = proc
        self.name = name

    def command(self, line: str) -> None:
        with (self.directory / "control").open("a") as control:
            control.write(line + "\n")

    def wait(self, name: str, timeout: float) -> dict[str, Any]:
        path = self.directory / name
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                out = (self.directory.parent / f"{self.name}.out").read_text(errors="replace")
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {out[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {name} within {timeout:g} s")
            time.sleep(0.02)
        data: dict[str, Any] = json.loads(path.read_text())
        return data


@contextmanager
def clients(
    directory: Path, name: str, url: str, server_pid: int, *extra: str
) -> Iterator[Clients]:
    folder = directory / name
    folder.mkdir()
    ws_url = url.replace("http://", "ws://") + "/ws/metrics"
    args = [ws_url, str(folder), "--clients", str(CLIENTS), "--server-pid", str(server_pid)]
    with python_process("ws_fanout_client.py", *args, *extra, cwd=directory, name=name) as proc:
        yield Clients(folder, proc, name)
        with (folder / "control").open("a") as control:
            control.write("quit\n")
        proc.wait(30)


def summarise(window: dict[str, Any]) -> dict[str, Any]:
    """Latency percentiles and delivery of one window's events to the healthy clients."""
    per_client = window["events"]
    latencies = [latency for events in per_client for _, latency in events]
    seqs = {seq for events in per_client for seq, _ in events}
    expected = (max(seqs) - min(seqs) + 1) if seqs else 0
    delivered = sum(len({seq for seq, _ in events}) for events in per_client)
    return {
        "events": expected,
        "deliveries": delivered,
        "expected_deliveries": expected * len(per_client),
        "delivered_percent": (
            100.0 * delivered / (expected * len(per_client)) if expected else math.nan
        ),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000 if latencies else math.nan,
        "server_cpu_percent": round(window["server_cpu"] * 100, 1),
        "server_rss_mb": round(window["server_rss"] / 1e6, 1),
        "client_cpu_percent": round(window["client_cpu"] * 100, 1),
        "failed_clients": window["failed_clients"],
        "lagged_events": window["lagged_events"],
        "stalled": window["stalled"],
    }


def measure(group: Clients, name: str, plan: Plan) -> None:
    """Start a window; return when its events have been sent (its result comes later)."""
    group.command(f"window {name} {plan.window} {plan.grace}")
    time.sleep(plan.window + 0.05)


def result_of(group: Clients, name: str, plan: Plan) -> dict[str, Any]:
    return summarise(group.wait(f"{name}.json", plan.grace + 30))


@dataclass
class Bare:
    """A bare broadcast loop, paused, with its clients."""

    proc: Popen[bytes]
    clients: Clients
    runs: list[dict[str, Any]]


def start_bare(stack: ExitStack, directory: Path, events: Path, name: str, *extra: str) -> Bare:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(events), str(port), "--paused", *extra]
    proc = stack.enter_context(python_process("bare_ws.py", *args, cwd=directory, name=name))
    wait_http(url + "/", process=proc)
    group = stack.enter_context(
        clients(directory, f"{name}-clients", url, proc.pid, "--ready-on", "hello")
    )
    return Bare(proc, group, [])


def measure_bare(bare: Bare, name: str, plan: Plan) -> None:
    bare.proc.send_signal(signal.SIGUSR2)
    time.sleep(plan.warmup)
    measure(bare.clients, name, plan)
    bare.proc.send_signal(signal.SIGUSR1)
    bare.runs.append(result_of(bare.clients, name, plan))


def measure_subject(
    url: str, group: Clients, n: int, plan: Plan
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One window of the subject, then one with the stalled clients connected."""
    set_enabled(url, True)
    time.sleep(plan.warmup)
    measure(group, f"healthy-{n}", plan)
    group.command(f"stall {STALLED}")
    group.wait("stalled.json", 30)
    (group.directory / "stalled.json").unlink()
    time.sleep(plan.fill)
    measure(group, f"stalled-{n}", plan)
    group.command("unstall")
    set_enabled(url, False)
    return result_of(group, f"healthy-{n}", plan), result_of(group, f"stalled-{n}", plan)


def compression_run(plan: Plan) -> dict[str, Any]:
    """The subject with ``--websocket-compression``: one window; CPU and memory."""
    with workdir(f"{NAME}-deflate") as directory:
        port = free_port()
        (directory / "homelab.toml").write_text(config(directory))
        command = [
            sys.executable, "-m", "homelab_core.cli", "serve", "--config",
            str(directory / "homelab.toml"), "--port", str(port), "--websocket-compression",
        ]  # fmt: skip
        with process(command, cwd=directory, env=clean_env(), name="server") as proc:
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/api/health", process=proc)
            with clients(directory, "deflate-clients", url, proc.pid) as group:
                ready = group.wait("ready.json", 120)
                time.sleep(plan.warmup)
                measure(group, "deflate", plan)
                figures = result_of(group, "deflate", plan)
    return {**figures, "compressed_clients": ready["compressed_clients"]}


def stream_counters(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("homelab_core_websocket")
    }


def run(quick: bool) -> list[Result]:
    plan = QUICK if quick else FULL
    healthy: list[dict[str, Any]] = []
    stalled: list[dict[str, Any]] = []
    with (
        workdir(NAME) as directory,
        homelab_server(directory, config(directory)) as (url, proc),
        ExitStack() as stack,
    ):
        events = directory / "events.json"
        capture_events(url, events)
        set_enabled(url, False)
        bares = {"bare": start_bare(stack, directory, events, "bare")}
        if plan.extras:
            bares["bare_raw_send"] = start_bare(stack, directory, events, "raw", "--raw-send")
        subject = stack.enter_context(clients(directory, "homelab-clients", url, proc.pid))
        ready = subject.wait("ready.json", 120)
        if ready["failed_clients"]:
            raise RuntimeError(f"clients failed to connect: {ready['errors']}")
        connect = {"homelab": round(ready["connect_seconds"], 2)}
        for name, bare in bares.items():
            connect[name] = round(bare.clients.wait("ready.json", 120)["connect_seconds"], 2)
        log(f"connected {CLIENTS} clients to each server in {connect} s")
        for n in range(1, plan.rounds + 1):
            # Alternate who goes first, so that no one always follows the same thing.
            order = [*bares, "homelab"]
            for which in order[n % len(order) :] + order[: n % len(order)]:
                if which == "homelab":
                    window, stalled_window = measure_subject(url, subject, n, plan)
                    healthy.append(window)
                    stalled.append(stalled_window)
                else:
                    measure_bare(bares[which], f"{which}-{n}", plan)
            log(
                f"round {n}/{plan.rounds}: p99 bare {bares['bare'].runs[-1]['p99_ms']:.1f} ms,"
                f" homelab {healthy[-1]['p99_ms']:.1f} ms, with {STALLED} stalled clients"
                f" {stalled[-1]['p99_ms']:.1f} ms; delivered {healthy[-1]['delivered_percent']:.2f}"
                f" / {stalled[-1]['delivered_percent']:.2f} %"
            )
        counters = stream_counters(url)
    deflate = compression_run(plan) if plan.extras else None
    compressed = ready["compressed_clients"]
    return results(plan, healthy, stalled, bares, counters, connect, compressed, deflate)


def _ratios(runs: list[dict[str, Any]], bases: list[dict[str, Any]]) -> list[float]:
    return [round(r["p99_ms"] / b["p99_ms"], 3) for r, b in zip(runs, bases, strict=True)]


def results(
    plan: Plan,
    healthy: list[dict[str, Any]],
    stalled: list[dict[str, Any]],
    bares: dict[str, Bare],
    counters: dict[str, float],
    connect: dict[str, float],
    compressed: int,
    deflate: dict[str, Any] | None,
) -> list[Result]:
    bare = bares["bare"].runs
    common = {
        "clients": CLIENTS,
        "events_per_second": 2 / INTERVAL,
        "rounds": plan.rounds,
        "window_seconds": plan.window,
        "server": "hypercorn, homelab serve's settings (WebSocket compression off), 1 worker",
    }
    subject = healthy + stalled
    delivered_total = sum(r["deliveries"] for r in subject)
    expected_total = sum(r["expected_deliveries"] for r in subject)
    delivered = result(
        f"{NAME}.delivered",
        100.0 * delivered_total / expected_total if expected_total else math.nan,
        "%",
        value_target(">=", 100.0, "%"),
        details={
            **common,
            "deliveries": delivered_total,
            "expected_deliveries": expected_total,
            "per_window_percent": rounded(subject, "delivered_percent"),
            "bare_per_window_percent": rounded(bare, "delivered_percent"),
            "failed_clients": max(r["failed_clients"] for r in subject),
            "lagged_events_healthy_clients": sum(r["lagged_events"] for r in subject),
        },
    )
    details: dict[str, Any] = {
        **common,
        "p50_ms": round(median_of(healthy, "p50_ms"), 2),
        "bare_p50_ms": round(median_of(bare, "p50_ms"), 2),
        "p99_per_round": rounded(healthy, "p99_ms"),
        "bare_p99_per_round": rounded(bare, "p99_ms"),
        "ratio_per_round": _ratios(healthy, bare),
        "server_cpu_percent": median_of(healthy, "server_cpu_percent"),
        "bare_server_cpu_percent": median_of(bare, "server_cpu_percent"),
        "server_rss_mb": healthy[-1]["server_rss_mb"],
        "bare_server_rss_mb": bare[-1]["server_rss_mb"],
        "client_cpu_percent": median_of(healthy, "client_cpu_percent"),
        "connect_seconds": connect,
        "compressed_clients": compressed,
    }
    raw = bares.get("bare_raw_send")
    if raw is not None:
        details["bare_raw_send"] = {
            "note": "the bare loop writing through websocket._send, as the stream does",
            "p99_ms": round(median_of(raw.runs, "p99_ms"), 2),
            "p99_per_round": rounded(raw.runs, "p99_ms"),
            "ratio": round(median_of(healthy, "p99_ms") / median_of(raw.runs, "p99_ms"), 3),
            "server_cpu_percent": median_of(raw.runs, "server_cpu_percent"),
        }
    if deflate is not None:
        details["websocket_compression_on"] = {
            "compressed_clients": deflate["compressed_clients"],
            "p50_ms": round(deflate["p50_ms"], 2),
            "p99_ms": round(deflate["p99_ms"], 2),
            "server_cpu_percent": deflate["server_cpu_percent"],
            "server_rss_mb": deflate["server_rss_mb"],
            "delivered_percent": deflate["delivered_percent"],
        }
    p99 = result(
        f"{NAME}.p99",
        median_of(healthy, "p99_ms"),
        "ms",
        ratio_target("<=", 1.25),
        baseline=median_of(bare, "p99_ms"),
        baseline_name="bare Quart broadcast loop, same server",
        details=details,
    )
    p99_stalled = result(
        f"{NAME}.p99_stalled",
        median_of(stalled, "p99_ms"),
        "ms",
        ratio_target("<=", 1.25),
        baseline=median_of(healthy, "p99_ms"),
        baseline_name="homelab p99 without the stalled clients",
        details={
            **common,
            "stalled_clients": STALLED,
            "stalled_seconds_before_window": plan.fill,
            "p50_ms": round(median_of(stalled, "p50_ms"), 2),
            "p99_per_round": rounded(stalled, "p99_ms"),
            "ratio_per_round": _ratios(stalled, healthy),
            "server_cpu_percent": median_of(stalled, "server_cpu_percent"),
            "stream_counters": counters,
        },
    )
    return [delivered, p99, p99_stalled]
