"""``history``: a week of 10 s samples of one series, read back as 500 points; and 30 days
of 20 series, read back together.

The samples are written through the store's write path into a SQLite file a day at a time,
and the hub's own maintenance runs after each day as it would have while running
(compaction into chunks, day merges, the hour tier, raw chunks past retention into minute
rollups). The queries are :meth:`Hub.history` with ``max_points=500``, what
``GET .../metrics/history`` calls.

- ``history.p50``: the week of one series. Absolute target (no baseline): median below 50 ms.
- ``history.month_p50``: 30 days of 20 series of one instance in one query. Absolute target:
  median below 100 ms.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from homelab_core import Hub, Metric
from homelab_core.config import InstanceSettings, Settings

from . import plugins
from .common import Result, log, median, percentile, result, value_target, workdir

DAY = 86_400
WEEK = 7 * DAY
MONTH = 30 * DAY
STEP = 10.0
POINTS = 500
#: Series of the instance read in the 30-day query.
SERIES = 20


def settings_for(directory: Path) -> Settings:
    instances = [
        InstanceSettings(id="disk", type="bench_idle", enabled=False),
        InstanceSettings(id="host", type="bench_idle", enabled=False),
    ]
    settings = Settings(plugins={i.id: i for i in instances})
    settings.database.url = f"sqlite://{directory / 'history.db'}"
    return settings


async def write_days(hub: Hub, start: float, days: int, series: dict[str, list[str]]) -> int:
    """``days`` of 10 s samples of ``series`` (instance -> metric names) from ``start``, a
    day at a time, each followed by a maintenance pass; returns the samples written."""
    per_day = int(DAY / STEP)
    written = 0
    for day in range(days):
        for first in range(0, per_day, 2_000):
            batch = [
                (
                    instance,
                    [
                        Metric(
                            name, 40 + ((i + n) % 360) / 10, unit="%", timestamp=start + i * STEP
                        )
                        for n, name in enumerate(names)
                        for i in range(
                            day * per_day + first, day * per_day + min(first + 2_000, per_day)
                        )
                    ],
                )
                for instance, names in series.items()
            ]
            written += await hub.store.write(batch)
        await hub.maintenance.run_once(start + (day + 1) * DAY + 60)
    return written


async def timed(
    hub: Hub, queries: int, *args: object, **kwargs: object
) -> tuple[list[float], list[int]]:
    timings, points, width = [], [], 0.0
    for _ in range(queries):
        began = time.perf_counter()
        found = await hub.history(*args, **kwargs)  # type: ignore[arg-type]
        timings.append((time.perf_counter() - began) * 1000)
        points, width = [len(s.points) for s in found], found[0].resolution
    return timings, points, width


async def measure(
    directory: Path, queries: int
) -> tuple[list[float], dict[str, object], list[float], dict[str, object]]:
    manager = plugins.manager()
    now = (time.time() // DAY) * DAY  # midnight: every day written has ended
    async with Hub(settings_for(directory), plugin_manager=manager) as hub:
        began = time.perf_counter()
        names = [f"m{i}" for i in range(SERIES)]
        month = await write_days(hub, now - MONTH, 30, {"host": names})
        week = await write_days(hub, now - WEEK, 7, {"disk": ["disk.used"]})
        took = time.perf_counter() - began
        log(f"wrote {month + week:,} samples with maintenance in {took:.0f} s")
        timings, [points], width = await timed(
            hub, queries, "disk", "disk.used", since=now - WEEK, until=now
        )
        details: dict[str, object] = {
            "samples": week,
            "points": points,
            "resolution_s": width,
            "queries": queries,
            "p99_ms": round(percentile(timings, 99), 2),
        }
        if not POINTS * 0.9 <= points <= POINTS:
            raise RuntimeError(f"the query returned {points} points, not about {POINTS}")
        month_timings, month_points, month_width = await timed(
            hub, queries, "host", None, since=now - MONTH, until=now
        )
        month_details: dict[str, object] = {
            "samples": month,
            "series": len(month_points),
            "points_per_series": min(month_points),
            "resolution_s": month_width,
            "queries": queries,
            "p99_ms": round(percentile(month_timings, 99), 2),
        }
        # 30 days / 500 points is 5,184 s: the hour tier, whole hours (2 h: 360 points).
        if month_points != [int(MONTH // month_width)] * SERIES:
            raise RuntimeError(f"the 30-day query returned {month_points} points")
    return timings, details, month_timings, month_details


def run(quick: bool) -> list[Result]:
    with workdir("history") as directory:
        timings, details, month, month_details = asyncio.run(
            measure(directory, 30 if quick else 200)
        )
    return [
        result("history.p50", median(timings), "ms", value_target("<", 50, "ms"), details=details),
        result(
            "history.month_p50",
            median(month),
            "ms",
            value_target("<", 100, "ms"),
            details=month_details,
        ),
    ]
