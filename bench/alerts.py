"""``alerts``: what rule evaluation costs the pipeline, and how fast a crossing is sent.

- ``alerts.overhead``: CPU seconds per stored sample of a pipeline (1,000 instances x 50
  metrics every 2 s: a load both runs keep up with, so the ratio is the rules' cost and not
  a backlog's) with 1,000 value rules, each matching every series of one
  instance (none crossing its threshold, the usual case), against the same pipeline
  without rules, run after it in the same process. Target: ratio <= 1.15.
- ``alerts.latency_p99``: from the collection whose value crosses a threshold (a rule with
  ``for = 0`` and no group wait) to the arrival of the webhook's POST at a receiver on
  127.0.0.1, over the crossings of a plugin that flips its value every run. Target < 1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio

from homelab_core import Hub, Metric, Plugin, hookimpl
from homelab_core.config import settings_from_mapping
from homelab_plugins import notifiers

from . import plugins
from .common import (
    Result,
    cpu_seconds,
    log,
    percentile,
    ratio_target,
    result,
    value_target,
    workdir,
)

INSTANCES = 1_000
METRICS = 50
RULES = 1_000
WARMUP = 4.0


class Flip(Plugin):
    """Reports ``flip`` = 100 on odd runs and 0 on even ones."""

    name = "bench_flip"

    def __init__(self, config: Any, *, instance_id: str) -> None:
        super().__init__(config, instance_id=instance_id)
        self.runs = 0

    async def collect(self) -> list[Metric]:
        self.runs += 1
        return [Metric("flip", 100.0 if self.runs % 2 else 0.0, timestamp=time.time())]


def _settings(directory: Path, name: str, data: dict[str, Any]) -> Any:
    data.setdefault("scheduler", {})["jitter"] = 1.0
    settings = settings_from_mapping(data)
    settings.database.url = f"sqlite://{directory / name}"
    return settings


async def _pipeline(directory: Path, window: float, rules: int) -> dict[str, float]:
    data: dict[str, Any] = {
        "plugins": {
            f"burst{i}": {"type": "bench_burst", "interval": 2.0, "metrics": METRICS}
            for i in range(INSTANCES)
        },
        "alerts": {
            f"rule{i}": {
                "metric": "value.*",
                "instances": [f"burst{i % INSTANCES}"],
                "threshold": 1e15,
            }
            for i in range(rules)
        },
    }
    settings = _settings(directory, f"pipeline-{rules}.db", data)
    async with Hub(settings, plugin_manager=plugins.manager()) as hub:
        await anyio.sleep(WARMUP)
        cpu0, t0 = cpu_seconds(os.getpid()), time.time()
        await anyio.sleep(window)
        cpu1, t1 = cpu_seconds(os.getpid()), time.time()
        await anyio.sleep(2.0)
        stored = await hub.store.count_samples(t0, t1)
        evaluated = hub.alerts.engine.samples_evaluated
    return {
        "cpu_s": cpu1 - cpu0,
        "stored": stored,
        "cpu_us_per_sample": (cpu1 - cpu0) / max(stored, 1) * 1e6,
        "evaluated": evaluated,
    }


@contextmanager
def _receiver() -> Iterator[tuple[int, list[tuple[float, dict[str, Any]]]]]:
    arrivals: list[tuple[float, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            at = time.time()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            arrivals.append((at, json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], arrivals
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def _latency(directory: Path, window: float) -> list[float]:
    with _receiver() as (port, arrivals):
        data: dict[str, Any] = {
            "plugins": {"flip": {"type": "bench_flip", "interval": 0.25}},
            "notifiers": {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{port}/"}},
            "alerting": {"group_wait": 0, "group_interval": 0, "evaluation_interval": 1.0},
            "alerts": {"cross": {"metric": "flip", "threshold": 50}},
        }
        settings = _settings(directory, "latency.db", data)
        manager = plugins.manager()
        manager.register(notifiers, "homelab_plugins.notifiers")
        import sys

        manager.register(sys.modules[__name__], name="bench_alerts")
        async with Hub(settings, plugin_manager=manager):
            await anyio.sleep(window)
        return [
            (at - alert["started_at"]) * 1000
            for at, body in arrivals
            if body["status"] == "firing"
            for alert in body["alerts"]
        ]


@hookimpl
def register_plugins(register: Any) -> None:
    register(Flip)


def run(quick: bool) -> list[Result]:
    window = 8.0 if quick else 30.0
    with workdir("alerts") as directory:
        with_rules = asyncio.run(_pipeline(directory, window, RULES))
        without = asyncio.run(_pipeline(directory, window, 0))
        latencies = asyncio.run(_latency(directory, window))
    log(f"with rules {with_rules}, without {without}, {len(latencies)} crossings")
    return [
        result(
            "alerts.overhead",
            with_rules["cpu_us_per_sample"],
            "us CPU/sample",
            ratio_target("<=", 1.15),
            baseline=without["cpu_us_per_sample"],
            baseline_name="the same pipeline without rules",
            details={"with_rules": with_rules, "without": without},
        ),
        result(
            "alerts.latency_p99",
            percentile(latencies, 99),
            "ms",
            value_target("<", 1000, "ms"),
            details={"crossings": len(latencies), "p50_ms": round(percentile(latencies, 50), 1)},
        ),
    ]
