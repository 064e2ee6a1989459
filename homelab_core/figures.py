"""The hub's own figures: the counters ``/metrics`` exposes and the dashboard's summary."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .bus import Bus
from .codec import escaped_texts
from .model import HealthState, InstanceInfo, Summary
from .scheduler import Scheduler
from .store import BatchWriter, Store, WriteQueue

if TYPE_CHECKING:
    from .alerts.service import AlertService
    from .cache import LatestCache

#: Seconds that :meth:`Figures.samples_stored` may be old (counting a big table is slow).
SAMPLE_COUNT_TTL = 30.0


class Figures:
    """Reads the figures off the scheduler, the store, the write queue and its writer, and
    the bus."""

    def __init__(
        self,
        scheduler: Scheduler,
        store: Store,
        queue: WriteQueue,
        bus: Bus,
        writer: BatchWriter,
        alerts: AlertService | None = None,
        cache: LatestCache | None = None,
    ) -> None:
        self.alerts = alerts
        #: Backends with figures of their own (the Redis ones: ``counters()``).
        self._backends: list[Any] = [
            part for part in (bus, cache) if callable(getattr(part, "counters", None))
        ]
        self.scheduler = scheduler
        self.store = store
        self.queue = queue
        self.bus = bus
        self.writer = writer
        self._sample_count: tuple[float, int] | None = None

    def add_part(self, part: Any) -> None:
        """Count the figures of ``part`` too (its ``counters()``: the cluster's, say)."""
        self._backends.append(part)

    def counters(self) -> dict[str, float]:
        """Runs, failures, skipped runs, samples written and dropped, queue depth, failed
        writes and rows the database refused, abandoned worker threads and event loop stalls."""
        all_stats = self.scheduler.all_stats().values()
        watchdog = self.scheduler.watchdog
        return {
            "runs": sum(s.runs for s in all_stats),
            "failures": sum(s.errors + s.timeouts for s in all_stats),
            "skipped": sum(s.skipped for s in all_stats),
            "samples_written": self.store.samples_written,
            "samples_dropped": self.queue.dropped_samples,
            "executions_dropped": self.queue.dropped_executions,
            "queue_depth": self.queue.pending_samples,
            "subscribers": self.bus.subscriber_count,
            "threads_abandoned": self.scheduler.abandoned_threads(),
            "loop_stalls": self.scheduler.loop_stalls(),
            "loop_stalled_seconds": watchdog.stalled_seconds if watchdog is not None else 0.0,
            "samples_over_run_limit": sum(s.samples_over_run_limit for s in all_stats),
            "samples_over_series_limit": sum(s.samples_over_series_limit for s in all_stats),
            "texts_escaped": escaped_texts(),
            "write_failures": self.writer.failures,
            "samples_refused": self.writer.refused_samples,
            "records_refused": self.writer.refused_records,
            "store_writable": 0.0 if self.writer.failing else 1.0,
            "workers": sum(1 for w in self.scheduler.workers.stats() if w.pid is not None),
            **(self.alerts.counters() if self.alerts is not None else {}),
            **{k: v for part in self._backends for k, v in part.counters().items()},
        }

    async def samples_stored(self) -> int:
        """The number of stored raw samples, counted at most every ``SAMPLE_COUNT_TTL`` s."""
        now = time.monotonic()
        if self._sample_count is None or now - self._sample_count[0] > SAMPLE_COUNT_TTL:
            self._sample_count = (now, await self.store.count_samples())
        return self._sample_count[1]

    async def summary(self, infos: Sequence[InstanceInfo], started_at: float | None) -> Summary:
        """The summary of ``infos`` (every instance) for a hub started at ``started_at``."""
        by_status = {state.value: 0 for state in HealthState}
        for info in infos:
            by_status[info.health.state.value] += 1
        counts = await self.store.execution_counts(since=time.time() - 3600)
        return Summary(
            instances=len(infos),
            enabled=sum(i.enabled for i in infos),
            by_status=by_status,
            runs_last_hour=sum(n for status, n in counts.items() if status != "skipped"),
            failures_last_hour=counts.get("error", 0) + counts.get("timeout", 0),
            samples_stored=await self.samples_stored(),
            samples_dropped=self.queue.dropped_samples,
            uptime=time.time() - (started_at or time.time()),
        )
