"""The bounded write queue and the batched writer that drains it into the store."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence

import anyio
import attrs

from ..config import StoreSettings
from ..model import Execution, Health, Metric
from .store import Store

log = logging.getLogger("homelab.store.writer")

#: Waits between attempts when a write fails; the last one repeats.
RETRY_WAITS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: Attempts per batch once shutdown has begun, before the batch is dropped and counted.
SHUTDOWN_ATTEMPTS = 3


@attrs.define
class Batch:
    """What one transaction writes."""

    samples: list[tuple[str, Sequence[Metric]]] = attrs.field(factory=list)
    executions: list[Execution] = attrs.field(factory=list)
    transitions: list[tuple[str, Health, Health]] = attrs.field(factory=list)
    sample_count: int = 0

    def __bool__(self) -> bool:
        return bool(self.samples or self.executions or self.transitions)


class WriteQueue:
    """Collections waiting to be written, bounded by a number of samples.

    Putting never waits. When accepting a collection would pass ``max_samples``, the whole
    collection is dropped and counted in :attr:`dropped_samples` (and logged), never lost
    silently. Execution records are bounded by the same number and counted in
    :attr:`dropped_executions`; health transitions are rare and always accepted.
    """

    def __init__(self, max_samples: int, batch_size: int) -> None:
        self.max_samples = max_samples
        self.batch_size = batch_size
        self._samples: deque[tuple[str, Sequence[Metric]]] = deque()
        self._executions: deque[Execution] = deque()
        self._transitions: deque[tuple[str, Health, Health]] = deque()
        self.pending_samples = 0
        self.dropped_samples = 0
        self.dropped_executions = 0
        self.closed = False
        self._wakeup = anyio.Event()
        self._last_drop_log = 0.0

    def __len__(self) -> int:
        return len(self._samples) + len(self._executions) + len(self._transitions)

    def put_metrics(self, instance_id: str, metrics: Sequence[Metric]) -> bool:
        """Queue one collection; False (and counted) if the queue is full or closed."""
        count = len(metrics)
        if not count:
            return True
        if self.closed or self.pending_samples + count > self.max_samples:
            self.dropped_samples += count
            now = time.monotonic()
            if now - self._last_drop_log > 10:
                self._last_drop_log = now
                log.warning(
                    "write queue %s: dropped %d samples of %r (%d dropped in total)",
                    "closed" if self.closed else f"full ({self.pending_samples} samples)",
                    count,
                    instance_id,
                    self.dropped_samples,
                )
            return False
        self._samples.append((instance_id, metrics))
        self.pending_samples += count
        if self.pending_samples >= self.batch_size:
            self._wakeup.set()
        return True

    def put_execution(self, execution: Execution) -> None:
        """Queue an execution record; dropped and counted if too many are waiting."""
        if len(self._executions) >= self.max_samples:
            self.dropped_executions += 1
            return
        self._executions.append(execution)

    def put_transition(self, instance_id: str, old: Health, new: Health) -> None:
        """Queue a health transition."""
        self._transitions.append((instance_id, old, new))

    def take(self) -> Batch:
        """Remove and return up to one batch of queued items."""
        batch = Batch()
        while self._samples and batch.sample_count < self.batch_size:
            instance_id, metrics = self._samples.popleft()
            batch.samples.append((instance_id, metrics))
            batch.sample_count += len(metrics)
        self.pending_samples -= batch.sample_count
        while self._executions and len(batch.executions) < self.batch_size:
            batch.executions.append(self._executions.popleft())
        while self._transitions:
            batch.transitions.append(self._transitions.popleft())
        return batch

    def close(self) -> None:
        """Refuse new samples and wake the writer to drain what is left."""
        self.closed = True
        self._wakeup.set()

    async def wait(self, timeout: float) -> None:
        """Wait until a batch is full, the queue closes, or ``timeout`` passes."""
        with anyio.move_on_after(timeout):
            await self._wakeup.wait()
        if not self.closed:
            self._wakeup = anyio.Event()


class BatchWriter:
    """Moves batches from a :class:`WriteQueue` into the :class:`Store`.

    Flushes when a batch fills or ``flush_interval`` passes. A failed write is retried with
    growing waits; after :meth:`WriteQueue.close` it drains everything and returns.
    """

    def __init__(self, store: Store, queue: WriteQueue, settings: StoreSettings) -> None:
        self.store = store
        self.queue = queue
        self.settings = settings
        self.batches_written = 0
        self.failures = 0

    async def run(self) -> None:
        """Write until the queue is closed and empty."""
        while True:
            await self.queue.wait(self.settings.flush_interval)
            while len(self.queue):
                batch = self.queue.take()
                await self.write_batch(batch)
            if self.queue.closed and not len(self.queue):
                return

    async def write_batch(self, batch: Batch) -> None:
        """Write one batch, retrying failures (bounded once the queue is closed)."""
        attempt = 0
        while True:
            try:
                await self.store.write(batch.samples, batch.executions, batch.transitions)
                self.batches_written += 1
                return
            except Exception as exc:
                self.failures += 1
                attempt += 1
                if self.queue.closed and attempt >= SHUTDOWN_ATTEMPTS:
                    self.queue.dropped_samples += batch.sample_count
                    log.error(
                        "store write failed %d times during shutdown; dropped %d samples: %s",
                        attempt,
                        batch.sample_count,
                        exc,
                    )
                    return
                wait = RETRY_WAITS[min(attempt - 1, len(RETRY_WAITS) - 1)]
                log.warning(
                    "store write failed (attempt %d), retrying in %g s: %s", attempt, wait, exc
                )
                await anyio.sleep(wait)
