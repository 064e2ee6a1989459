"""Rollups and retention: raw samples to 1-minute and 1-hour aggregates, then pruning.

Each tier is filled from the one below up to a watermark kept in ``homelab_meta``; only
buckets that ended more than :data:`GRACE` seconds ago are rolled, so samples still in the
write queue are not missed.
"""

from __future__ import annotations

import logging
import math
import time

import anyio

from ..config import RetentionSettings
from .store import Store

log = logging.getLogger("homelab.store.retention")

MINUTE, HOUR = 60, 3600
#: Seconds after a bucket ends before it is rolled up.
GRACE = 30.0
DAY = 86400.0


def _floor(value: float, step: int) -> float:
    return float(math.floor(value / step) * step)


class Maintenance:
    """Keeps rollups current and drops data past its retention."""

    def __init__(self, store: Store, settings: RetentionSettings) -> None:
        self.store = store
        self.settings = settings

    async def run(self) -> None:
        """Run :meth:`run_once` every ``maintenance_interval`` seconds, forever."""
        while True:
            await anyio.sleep(self.settings.maintenance_interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("store maintenance failed; will try again")

    async def run_once(self, now: float | None = None) -> None:
        """Roll up finished buckets and prune every tier."""
        now = time.time() if now is None else now
        await self.rollup(now)
        await self.prune(now)

    async def watermark(self, resolution: int) -> float | None:
        """The end of the last bucket rolled up at ``resolution``, or None."""
        rows = await self.store.fetch(
            "SELECT value FROM homelab_meta WHERE key = ?", [f"rollup_{resolution}"]
        )
        return float(rows[0]["value"]) if rows else None

    async def rollup(self, now: float) -> None:
        """Fill the minute tier from raw samples and the hour tier from minutes."""
        d = self.store.dialect
        raw = (
            "homelab_sample",
            "ts",
            "MIN(value)",
            "MAX(value)",
            "SUM(value)",
            "COUNT(*)",
        )
        minutes = (
            f"homelab_rollup WHERE resolution = {MINUTE} AND",
            "bucket",
            "MIN(min)",
            "MAX(max)",
            "SUM(sum)",
            "SUM(count)",
        )
        for resolution, (source, column, mn, mx, sm, ct) in ((MINUTE, raw), (HOUR, minutes)):
            start = await self.watermark(resolution)
            end = _floor(now - GRACE, resolution)
            if start is None:
                start = await self._first_bucket(resolution, end)
                if start is None:
                    continue
            if end <= start:
                continue
            where = source if source.endswith("AND") else f"{source} WHERE"
            bucket = d.bucket(column, resolution)
            await self.store.execute(
                f"INSERT INTO homelab_rollup (series_id, resolution, bucket, min, max, sum, count)"
                f" SELECT series_id, {resolution}, {bucket}, {mn}, {mx}, {sm}, {ct}"
                f" FROM {where} {column} >= ? AND {column} < ?"
                f" GROUP BY series_id, {bucket}"
                f" ON CONFLICT (series_id, resolution, bucket) DO UPDATE SET"
                f" min = {d.least('homelab_rollup.min', 'excluded.min')},"
                f" max = {d.greatest('homelab_rollup.max', 'excluded.max')},"
                f" sum = homelab_rollup.sum + excluded.sum,"
                f" count = homelab_rollup.count + excluded.count",
                [start, end],
            )
            await self._set_watermark(resolution, end)

    async def _first_bucket(self, resolution: int, end: float) -> float | None:
        if resolution == MINUTE:
            rows = await self.store.fetch("SELECT MIN(ts) AS first FROM homelab_sample")
        else:
            rows = await self.store.fetch(
                "SELECT MIN(bucket) AS first FROM homelab_rollup WHERE resolution = ?", [MINUTE]
            )
        first = rows[0]["first"] if rows else None
        if first is None:
            return None
        return min(_floor(float(first), resolution), end)

    async def _set_watermark(self, resolution: int, value: float) -> None:
        await self.store.execute(
            "INSERT INTO homelab_meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [f"rollup_{resolution}", value],
        )

    async def prune(self, now: float) -> None:
        """Delete raw samples, rollups, executions and health changes past their retention."""
        s = self.settings
        await self.store.execute(
            "DELETE FROM homelab_sample WHERE ts < ?", [now - s.raw_days * DAY]
        )
        for resolution, days in ((MINUTE, s.minute_days), (HOUR, s.hour_days)):
            await self.store.execute(
                "DELETE FROM homelab_rollup WHERE resolution = ? AND bucket < ?",
                [resolution, now - days * DAY],
            )
        await self.store.execute(
            "DELETE FROM homelab_execution WHERE started_at < ?", [now - s.executions_days * DAY]
        )
        # Health changes are few; the newest one of each instance before the cutoff stays,
        # so that the state at the start of a window (the status page's uptime) is known.
        cutoff = now - s.health_days * DAY
        await self.store.execute(
            "DELETE FROM homelab_health_transition WHERE ts < ? AND id NOT IN"
            " (SELECT MAX(id) FROM homelab_health_transition WHERE ts < ? GROUP BY instance_id)",
            [cutoff, cutoff],
        )
