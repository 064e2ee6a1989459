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
from .faults import Fault, classify, reason
from .store import Store

log = logging.getLogger("homelab.store.writer")

#: Waits between attempts while the database cannot write; the last one repeats. Short,
#: so that writes resume within a couple of seconds of the database's return; an attempt
#: against a database that is away fails at once and costs little.
RETRY_WAITS = (0.25, 0.5, 1.0, 2.0)
#: Attempts per batch once shutdown has begun, before the batch is dropped and counted.
SHUTDOWN_ATTEMPTS = 3
#: Seconds between two log lines about the same outage (its start and end are always
#: logged), and the most refused rows logged one by one in that time.
LOG_EVERY = 60.0
REFUSALS_LOGGED = 20


@attrs.define
class Batch:
    """What one transaction writes."""

    samples: list[tuple[str, Sequence[Metric]]] = attrs.field(factory=list)
    executions: list[Execution] = attrs.field(factory=list)
    transitions: list[tuple[str, Health, Health]] = attrs.field(factory=list)
    sample_count: int = 0

    def __bool__(self) -> bool:
        return bool(self.samples or self.executions or self.transitions)

    @property
    def rows(self) -> int:
        """Samples, execution records and health transitions: the rows to insert."""
        return self.sample_count + len(self.executions) + len(self.transitions)

    def add_samples(self, instance_id: str, metrics: Sequence[Metric]) -> None:
        """Add one collection (or a part of one)."""
        if metrics:
            self.samples.append((instance_id, metrics))
            self.sample_count += len(metrics)

    def split(self) -> tuple[Batch, Batch]:
        """Two batches of about half the rows each, in order (for a batch of two or more)."""
        half = self.rows // 2
        first, second = Batch(), Batch()
        for instance_id, metrics in self.samples:
            room = max(half - first.rows, 0)
            first.add_samples(instance_id, metrics[:room])
            second.add_samples(instance_id, metrics[room:])
        room = max(half - first.rows, 0)
        first.executions, second.executions = self.executions[:room], self.executions[room:]
        room = max(half - first.rows, 0)
        first.transitions, second.transitions = self.transitions[:room], self.transitions[room:]
        return first, second

    def describe(self) -> str:
        """What a batch of one row holds, for the log."""
        if self.samples:
            instance_id, metrics = self.samples[0]
            m = metrics[0]
            return f"a sample of {instance_id!r} (metric {m.name!r}, labels {m.labels!r})"
        if self.executions:
            e = self.executions[0]
            return f"the execution record of {e.instance_id!r} started at {e.started_at!r}"
        if self.transitions:
            instance_id, _, new = self.transitions[0]
            return f"the health transition of {instance_id!r} to {new.state.value!r}"
        return "nothing"


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

    Flushes when a batch fills or ``flush_interval`` passes; after :meth:`WriteQueue.close`
    it drains everything and returns. A failed write means one of two things
    (:func:`.faults.classify`):

    - the database cannot write now (away, locked, disk full): the same rows are tried
      again after ``RETRY_WAITS``, nothing is dropped, and :attr:`failing` is true (the
      hub is not ready) until a write succeeds; once shutdown has begun, a batch is
      dropped and counted after ``SHUTDOWN_ATTEMPTS``;
    - the database refuses some of the rows (a constraint, a value it cannot take): the
      batch is split in halves, and halves again, until the refused rows are alone; each
      is dropped, counted (:attr:`refused_samples`, :attr:`refused_records`, and the
      queue's drop counters) and logged with the database's reason, and every other row
      is written. An error of unknown meaning is a refusal if the database answers a
      ping, an outage otherwise.
    """

    def __init__(self, store: Store, queue: WriteQueue, settings: StoreSettings) -> None:
        self.store = store
        self.queue = queue
        self.settings = settings
        self.batches_written = 0
        #: Writes (transactions) that failed, whatever the reason.
        self.failures = 0
        #: Samples, and execution records and health transitions, the database refused.
        self.refused_samples = 0
        self.refused_records = 0
        #: When (monotonic) the current outage began; ``None`` while writes succeed.
        self.failing_since: float | None = None
        #: The database's reason for the last failed write of the current outage.
        self.last_error: str | None = None
        self._outage_attempts = 0
        self._last_outage_log = 0.0
        self._refusal_window = (0.0, 0)

    @property
    def failing(self) -> bool:
        """Whether writes fail now: the last attempt failed and none succeeded since."""
        return self.failing_since is not None

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
        """Write one batch: wait out outages (bounded once the queue is closed), and
        drop only the rows the database refuses."""
        parts = deque([batch])
        attempt = 0
        while parts:
            part = parts[0]
            try:
                await self.store.write(part.samples, part.executions, part.transitions)
            except Exception as exc:
                self.failures += 1
                if await self._refused(exc):
                    parts.popleft()
                    if part.rows > 1:
                        parts.extendleft(reversed(part.split()))
                    else:
                        self._drop_refused(part, exc)
                    continue
                attempt += 1
                self._outage(exc, sum(p.sample_count for p in parts))
                if self.queue.closed and attempt >= SHUTDOWN_ATTEMPTS:
                    self._drop_at_shutdown(parts, attempt, exc)
                    return
                await anyio.sleep(RETRY_WAITS[min(attempt - 1, len(RETRY_WAITS) - 1)])
            else:
                parts.popleft()
                attempt = 0
                self.batches_written += 1
                self._recovered()

    async def _refused(self, exc: Exception) -> bool:
        fault = classify(exc)
        if fault is Fault.UNKNOWN:
            fault = Fault.REFUSED if await self.store.ping() else Fault.OUTAGE
        return fault is Fault.REFUSED

    def _outage(self, exc: Exception, held: int) -> None:
        now = time.monotonic()
        self.last_error = reason(exc)
        self._outage_attempts += 1
        if self.failing_since is None:
            self.failing_since = now
            self._last_outage_log = now
            log.error(
                "store writes fail, retrying every %g s at most; the hub is not ready until"
                " a write succeeds (%d samples held, %d queued): %s",
                RETRY_WAITS[-1],
                held,
                self.queue.pending_samples,
                self.last_error,
            )
        elif now - self._last_outage_log >= LOG_EVERY:
            self._last_outage_log = now
            log.error(
                "store writes still fail after %.0f s and %d attempts (%d samples held, %d"
                " queued): %s",
                now - self.failing_since,
                self._outage_attempts,
                held,
                self.queue.pending_samples,
                self.last_error,
            )

    def _recovered(self) -> None:
        if self.failing_since is None:
            return
        log.warning(
            "store writes succeed again after %.1f s and %d failed attempts",
            time.monotonic() - self.failing_since,
            self._outage_attempts,
        )
        self.failing_since = None
        self.last_error = None
        self._outage_attempts = 0

    def _drop_refused(self, part: Batch, exc: Exception) -> None:
        self.refused_samples += part.sample_count
        self.queue.dropped_samples += part.sample_count
        self.refused_records += len(part.executions) + len(part.transitions)
        self.queue.dropped_executions += len(part.executions)
        now = time.monotonic()
        since, logged = self._refusal_window
        if now - since >= LOG_EVERY:
            if logged > REFUSALS_LOGGED:
                log.warning(
                    "the store refused %d more rows in the last %.0f s, not logged one by one"
                    " (%d samples and %d records refused in total)",
                    logged - REFUSALS_LOGGED,
                    now - since,
                    self.refused_samples,
                    self.refused_records,
                )
            since, logged = now, 0
        logged += 1
        self._refusal_window = (since, logged)
        if logged <= REFUSALS_LOGGED:
            log.warning("the store refused %s; dropped it: %s", part.describe(), reason(exc))

    def _drop_at_shutdown(self, parts: deque[Batch], attempt: int, exc: Exception) -> None:
        samples = sum(p.sample_count for p in parts)
        executions = sum(len(p.executions) for p in parts)
        transitions = sum(len(p.transitions) for p in parts)
        self.queue.dropped_samples += samples
        self.queue.dropped_executions += executions
        log.error(
            "store write failed %d times during shutdown; dropped %d samples, %d execution"
            " records and %d health transitions: %s",
            attempt,
            samples,
            executions,
            transitions,
            reason(exc),
        )
