"""Maintenance: compaction (with the rollups it fills) and retention.

A pass (every ``maintenance_interval`` seconds) moves the head's samples of ended hours into
raw and hour-rollup chunks (:mod:`.compaction`), merges the chunks of ended days, then drops
what is past its retention: raw chunks (which become minute rollups), rollup chunks,
executions and health changes.
"""

from __future__ import annotations

import logging
import math
import time

import anyio

from ..config import RetentionSettings
from . import compaction
from .compaction import DAY, HOUR, MINUTE
from .store import Store

log = logging.getLogger("homelab.store.retention")

__all__ = ["DAY", "HOUR", "MINUTE", "Maintenance"]


class Maintenance:
    """Keeps the head small, the rollups current, and drops data past its retention."""

    def __init__(self, store: Store, settings: RetentionSettings) -> None:
        self.store = store
        self.settings = settings
        #: The boundary of the last compaction of this process (None: none yet).
        self._cut: float | None = None
        #: The hour (since the epoch) of the last look for chunks past retention.
        self._chunks_pruned: int | None = None

    async def run(self) -> None:
        """Run :meth:`run_once` every ``maintenance_interval`` seconds, forever."""
        while True:
            await anyio.sleep(self.settings.maintenance_interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("store maintenance failed; will try again")

    async def run_once(self, now: float | None = None) -> None:
        """Compact what has ended and prune every tier."""
        now = time.time() if now is None else now
        await self.compact(now)
        await self.prune(now)

    async def compact(self, now: float, *, force: bool = False) -> int:
        """Move the head's samples of the hours ended by ``now`` into chunks and rollups,
        then merge the chunks of ended days; returns the number of samples moved.

        Runs when the boundary has changed since the last pass of this process (once an
        hour), or with ``force``; a late sample waits in the head until then, and reads
        see it there.
        """
        cut = compaction.cut_for(now)
        if not force and cut == self._cut:
            return 0
        async with self.store.transaction("find the samples to compact") as conn:
            ids = await compaction.head_series(conn, self.store.dialect, cut)
        moved = 0
        advance = compaction.progress("compacting the head", len(ids))
        for part in compaction.in_slices(ids):
            async with self.store.transaction("compact the samples") as conn:
                moved += await compaction.compact_slice(conn, self.store.dialect, part, cut)
            advance(len(part))
        self._cut = cut
        await self.merge_days(now)
        if moved:
            log.debug("compacted %d samples of %d series before %s", moved, len(ids), cut)
        return moved

    async def merge_days(self, now: float) -> int:
        """Merge the chunks of each series and ended UTC day into one; returns the number of
        chunks replaced."""
        before = math.floor((now - compaction.GRACE) / DAY) * DAY
        async with self.store.transaction("find the chunks to merge") as conn:
            days = await compaction.days_to_merge(conn, self.store.dialect, before)
        merged = 0
        for resolution, day, ids in days:
            for part in compaction.in_slices(ids):
                async with self.store.transaction("merge the chunks of a day") as conn:
                    merged += await compaction.merge_slice(
                        conn, self.store.dialect, resolution, day, part
                    )
        return merged

    async def prune(self, now: float) -> None:
        """Drop chunks, executions and health changes past their retention.

        Raw samples go a whole chunk at a time, once its last sample is past ``raw_days``,
        and become minute rollups in the same transaction (run after :meth:`compact`, which
        has taken every older sample out of the head); rollups go a chunk at a time too.
        """
        s = self.settings
        dialect = self.store.dialect
        # Chunks span hours and days: looking for old ones once an hour is enough, and
        # spares a scan of the chunk table every pass.
        hour = math.floor(now / HOUR)
        if hour != self._chunks_pruned:
            async with self.store.transaction("find the raw chunks past retention") as conn:
                ids = await compaction.expired_raw(conn, dialect, now - s.raw_days * DAY)
            for part in compaction.in_slices(ids):
                async with self.store.transaction("roll up the raw chunks past retention") as c:
                    await compaction.expire_raw_slice(c, dialect, part)
            for resolution, days in ((MINUTE, s.minute_days), (HOUR, s.hour_days)):
                await self.store.execute(
                    "DELETE FROM homelab_chunk WHERE resolution = ? AND last_ts < ?",
                    [resolution, now - days * DAY],
                )
            self._chunks_pruned = hour
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
