"""``pipeline``: 2,000 instances x 50 metrics every second (100k samples/s), end to end.

A :class:`Hub` on a SQLite file runs 2,000 instances of an async plugin that returns 50 new
metrics per collection. Everything a collection goes through runs: validation, the cache,
the bus, the write queue, the batched writer, the execution log.

- ``pipeline.stored``: samples whose timestamp falls in the measuring window and that are in
  the database two seconds after it ended, per second, against the offered load (instances x
  metrics / interval). A pipeline that falls behind, skips ticks or drops shows up here.
- ``pipeline.lag_p99``: start lag (scheduled tick to run start) of the window's runs.
- ``pipeline.loss``: samples the plugins returned that are not in the database once the hub
  has stopped (and the write queue's drop counter), over the whole run.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import anyio

from homelab_core import Hub
from homelab_core.config import InstanceSettings, Settings

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

INSTANCES = 2_000
METRICS = 50
INTERVAL = 1.0
WARMUP = 5.0
#: Seconds after the window that its samples may take to reach the database.
GRACE = 2.0


def settings_for(directory: Path) -> Settings:
    instances = {
        f"burst{i}": InstanceSettings(
            id=f"burst{i}", type="bench_burst", interval=INTERVAL, options={"metrics": METRICS}
        )
        for i in range(INSTANCES)
    }
    settings = Settings(plugins=instances)
    settings.database.url = f"sqlite://{directory / 'pipeline.db'}"
    return settings


async def measure(directory: Path, window: float) -> dict[str, float]:
    manager = plugins.manager()
    began = time.perf_counter()
    async with Hub(settings_for(directory), plugin_manager=manager) as hub:
        log(f"hub started with {INSTANCES} instances in {time.perf_counter() - began:.1f} s")
        await anyio.sleep(WARMUP)
        cpu0, t0 = cpu_seconds(os.getpid()), time.time()
        await anyio.sleep(window)
        cpu1, t1 = cpu_seconds(os.getpid()), time.time()
        await anyio.sleep(GRACE)
        [row] = await hub.store.fetch(
            "SELECT COUNT(*) AS n FROM homelab_head WHERE ts >= ? AND ts < ?", [t0, t1]
        )
        in_window = int(row["n"])
        lags = [
            r["lag"] * 1000
            for r in await hub.store.fetch(
                "SELECT lag FROM homelab_execution WHERE started_at >= ? AND started_at < ?"
                " AND status = 'ok'",
                [t0, t1],
            )
        ]
        [row] = await hub.store.fetch(
            "SELECT COUNT(*) AS n FROM homelab_execution WHERE started_at >= ? AND started_at < ?"
            " AND status != 'ok'",
            [t0, t1],
        )
        not_ok = int(row["n"])
        produced_instances = [hub.scheduler.plugin(i) for i in hub.scheduler.ids()]
    produced = sum(p.runs for p in produced_instances) * METRICS  # type: ignore[attr-defined]
    dropped = hub.queue.dropped_samples
    store = hub.store
    await store.open()
    try:
        stored_total = await store.count_samples()
    finally:
        await store.close()
    return {
        "window_s": t1 - t0,
        "stored_per_s": in_window / (t1 - t0),
        "lag_p50_ms": percentile(lags, 50),
        "lag_p99_ms": percentile(lags, 99),
        "runs_in_window": len(lags),
        "not_ok_runs_in_window": not_ok,
        "produced": produced,
        "stored_total": stored_total,
        "dropped": dropped,
        "lost": produced - stored_total,
        "cpu_percent": (cpu1 - cpu0) / (t1 - t0) * 100,
    }


def run(quick: bool) -> list[Result]:
    window = 10.0 if quick else 60.0
    with workdir("pipeline") as directory:
        figures = asyncio.run(measure(directory, window))
    offered = INSTANCES * METRICS / INTERVAL
    details = {k: round(v, 3) for k, v in figures.items()}
    log(str(details))
    return [
        result(
            "pipeline.stored",
            figures["stored_per_s"],
            "samples/s",
            ratio_target(">=", 0.99),
            baseline=offered,
            baseline_name="offered load",
            details=details,
        ),
        result("pipeline.lag_p99", figures["lag_p99_ms"], "ms", value_target("<", 100, "ms")),
        result(
            "pipeline.loss",
            figures["lost"] + figures["dropped"],
            "samples",
            value_target("==", 0),
        ),
    ]
