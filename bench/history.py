"""``history``: a week of 10 s samples of one series, read back as 500 points.

The week is written through the store's write path into a SQLite file, then the hub's own
maintenance rolls it up (1-minute and 1-hour tiers) as it would have while running. The
query is :meth:`Hub.history` with ``max_points=500``, what ``GET .../metrics/history``
calls. Absolute target (no baseline): median below 50 ms.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from homelab_core import Hub, Metric
from homelab_core.config import InstanceSettings, Settings

from . import plugins
from .common import Result, log, median, percentile, result, value_target, workdir

WEEK = 7 * 86_400
STEP = 10.0
POINTS = 500


def settings_for(directory: Path) -> Settings:
    instance = InstanceSettings(id="disk", type="bench_idle", enabled=False)
    settings = Settings(plugins={instance.id: instance})
    settings.database.url = f"sqlite://{directory / 'history.db'}"
    return settings


async def measure(directory: Path, queries: int) -> tuple[list[float], dict[str, object]]:
    manager = plugins.manager()
    now = time.time()
    start = now - WEEK
    async with Hub(settings_for(directory), plugin_manager=manager) as hub:
        count = int(WEEK / STEP)
        for first in range(0, count, 20_000):
            batch = [
                Metric("disk.used", 40 + (i % 360) / 10, unit="%", timestamp=start + i * STEP)
                for i in range(first, min(count, first + 20_000))
            ]
            await hub.store.write([("disk", batch)])
        began = time.perf_counter()
        await hub.maintenance.run_once(now)
        log(f"wrote {count:,} samples; rollups took {time.perf_counter() - began:.1f} s")
        timings = []
        points = 0
        for _ in range(queries):
            began = time.perf_counter()
            [series] = await hub.history("disk", "disk.used", since=start, until=now)
            timings.append((time.perf_counter() - began) * 1000)
            points = len(series.points)
        details: dict[str, object] = {
            "samples": count,
            "points": points,
            "resolution_s": series.resolution,
            "queries": queries,
            "p99_ms": round(percentile(timings, 99), 2),
        }
        if not POINTS * 0.9 <= points <= POINTS:
            raise RuntimeError(f"the query returned {points} points, not about {POINTS}")
    return timings, details


def run(quick: bool) -> list[Result]:
    with workdir("history") as directory:
        timings, details = asyncio.run(measure(directory, 30 if quick else 200))
    return [
        result(
            "history.p50",
            median(timings),
            "ms",
            value_target("<", 50, "ms"),
            details=details,
        )
    ]
