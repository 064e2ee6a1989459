"""Runs plugin instances on their intervals, each isolated from the others.

One anyio task group holds a task per enabled instance, and one timer task wakes up when
the next instance is due (a heap of due times: 10,000 instances cost one sleeping timer,
not 10,000). Each instance:

- sets up first, retrying a failed or timed-out ``setup()`` after 5, 10, 20, 40, 80 s
  (configurable; the last wait repeats);
- then ticks at a fixed rate (tick *n* is at ``start + n * interval``, so late runs do not
  push later ones back), starting after a random jitter so instances do not all fire at once;
- never overlaps itself: a tick that finds the previous run (or its abandoned worker
  thread) still busy is recorded as a ``skipped`` execution;
- runs under a timeout and the scheduler-wide concurrency limit;
- backs off exponentially after consecutive failures (ticks inside the back-off are passed).

Every run becomes an :class:`~homelab_core.Execution`, handed with the collected metrics and
the new health to the ``sink`` callback (the hub stores, caches and broadcasts them). The
scheduler itself is pure anyio and runs on asyncio and trio.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup

from .config import SchedulerSettings
from .errors import HomelabError, UnknownPluginError
from .model import Execution, ExecutionStatus, Health, HealthReport, HealthState, Metric
from .plugin import Plugin

log = logging.getLogger("homelab.scheduler")

#: Seconds that a plugin's ``teardown()`` may take when the instance stops.
TEARDOWN_TIMEOUT = 10.0


@attrs.frozen
class RunResult:
    """What one run produced; handed to the scheduler's sink.

    ``execution`` is None when only the health changed (the instance was enabled or
    disabled).
    """

    instance_id: str
    execution: Execution | None
    metrics: list[Metric]
    health: Health
    previous_health: Health

    @property
    def health_changed(self) -> bool:
        """Whether this run changed the instance's health state."""
        return self.health.state != self.previous_health.state


Sink = Callable[[RunResult], Awaitable[None]]


@attrs.define
class RunStats:
    """Counters of one instance since the scheduler started."""

    runs: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    skipped: int = 0
    last_execution: Execution | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of the counters."""
        return {
            "runs": self.runs,
            "ok": self.ok,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "skipped": self.skipped,
            "last_execution": self.last_execution.to_dict() if self.last_execution else None,
        }


#: Plugin methods whose base implementation does nothing.
_BASE_NO_OPS = frozenset({Plugin.setup, Plugin.teardown, Plugin.health})


def _idle_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


async def _thread_finished(unit: _Unit, timeout: float | None) -> bool:
    """Wait for an abandoned worker thread of ``unit`` to return; False if it did not."""
    if unit.thread_idle.is_set():
        return True
    return await anyio.to_thread.run_sync(unit.thread_idle.wait, timeout, abandon_on_cancel=True)


@attrs.define(eq=False)
class _Unit:
    id: str
    plugin: Plugin
    interval: float
    timeout: float
    enabled: bool
    health: Health = attrs.field(factory=Health)
    stats: RunStats = attrs.field(factory=RunStats)
    running: bool = False
    #: Set while no worker thread of this instance runs (one may outlive its timeout).
    thread_idle: threading.Event = attrs.field(factory=_idle_event)
    set_up: bool = False
    setup_error: str | None = None
    backoff_until: float = 0.0
    scope: anyio.CancelScope | None = None
    stopped: anyio.Event | None = None
    first_setup: anyio.Event | None = None
    run_done: anyio.Event | None = None

    @property
    def busy(self) -> bool:
        return self.running or not self.thread_idle.is_set()

    def claim(self) -> None:
        """Mark a run as started (``run_done``, if someone made it, is set when it ends)."""
        self.running = True


class Scheduler:
    """Schedules plugin instances; use as ``async with Scheduler(...) as scheduler``."""

    def __init__(
        self,
        settings: SchedulerSettings | None = None,
        *,
        sink: Sink | None = None,
    ) -> None:
        self.settings = settings or SchedulerSettings()
        self._sink = sink
        self._units: dict[str, _Unit] = {}
        # fast_acquire: taking a free slot costs no trip through the event loop (a run
        # awaits its plugin right after anyway); measured in bench/pipeline.py.
        self._limiter = anyio.Semaphore(max(1, self.settings.concurrency), fast_acquire=True)
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        #: Heap of [due time, sequence, unit, the unit's run task group or None if stopped].
        self._due: list[list[Any]] = []
        self._sequence = itertools.count()
        self._wakeup: anyio.Event | None = None
        self.running = False

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Scheduler:
        self._stack = AsyncExitStack()
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._due = []
        self._wakeup = anyio.Event()
        self._tg.start_soon(self._timer, name="homelab:scheduler-timer")
        self.running = True
        for unit in self._units.values():
            if unit.enabled:
                await self._start(unit)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.running = False
        assert self._tg is not None and self._stack is not None
        self._tg.cancel_scope.cancel()
        try:
            return await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None

    # -- instances -----------------------------------------------------------------------

    def add(
        self,
        instance_id: str,
        plugin: Plugin,
        *,
        interval: float,
        timeout: float | None = None,
        enabled: bool = True,
    ) -> None:
        """Add an instance; it starts at once if the scheduler runs and it is enabled."""
        if instance_id in self._units:
            raise HomelabError(f"plugin instance {instance_id!r} is already scheduled")
        if interval <= 0:
            raise HomelabError(f"plugin instance {instance_id!r}: interval must be positive")
        unit = _Unit(
            id=instance_id,
            plugin=plugin,
            interval=float(interval),
            timeout=float(timeout if timeout is not None else self.settings.default_timeout),
            enabled=enabled,
        )
        if not enabled:
            unit.health = Health(state=HealthState.DISABLED, message="disabled")
        self._units[instance_id] = unit
        if enabled and self._tg is not None:
            unit.first_setup = anyio.Event()
            self._tg.start_soon(self._instance_task, unit, name=f"homelab:{instance_id}")

    def ids(self) -> list[str]:
        """The ids of every scheduled instance, in the order they were added."""
        return list(self._units)

    def _unit(self, instance_id: str) -> _Unit:
        try:
            return self._units[instance_id]
        except KeyError:
            raise UnknownPluginError(instance_id) from None

    def plugin(self, instance_id: str) -> Plugin:
        """The plugin object of an instance."""
        return self._unit(instance_id).plugin

    def is_enabled(self, instance_id: str) -> bool:
        """Whether the instance is enabled."""
        return self._unit(instance_id).enabled

    def health(self, instance_id: str) -> Health:
        """The instance's current health."""
        return self._unit(instance_id).health

    def stats(self, instance_id: str) -> RunStats:
        """The instance's run counters."""
        return self._unit(instance_id).stats

    def all_stats(self) -> Mapping[str, RunStats]:
        """Run counters of every instance."""
        return {uid: unit.stats for uid, unit in self._units.items()}

    async def set_enabled(self, instance_id: str, enabled: bool) -> Health:
        """Enable or disable an instance at once; a disabled one is torn down first.

        :return: the instance's health after the change.
        """
        unit = self._unit(instance_id)
        if unit.enabled == enabled:
            return unit.health
        unit.enabled = enabled
        if not enabled:
            await self._stop(unit)
            await self._set_health(unit, Health(state=HealthState.DISABLED, message="disabled"))
        else:
            await self._set_health(unit, Health(state=HealthState.UNKNOWN, message="enabled"))
            if self._tg is not None:
                await self._start(unit)
        return unit.health

    async def run_now(self, instance_id: str) -> Execution:
        """Run the instance immediately in the calling task and return its execution.

        The fixed-rate schedule is not moved. A run already in progress is waited for (up to
        the instance's timeout); if it is still busy then, the result is a ``skipped``
        execution.
        """
        unit = self._unit(instance_id)
        if not unit.enabled:
            raise HomelabError(f"plugin instance {instance_id!r} is disabled; enable it first")
        if not unit.set_up and unit.first_setup is not None:
            # Just started: let the first setup attempt finish rather than refuse.
            with anyio.move_on_after(unit.timeout):
                await unit.first_setup.wait()
        if not unit.set_up:
            raise HomelabError(
                f"plugin instance {instance_id!r} is not set up yet"
                + (f" (last setup error: {unit.setup_error})" if unit.setup_error else "")
            )
        if unit.running:
            # A run in progress finishes first (within the timeout), so "run now" does run.
            if unit.run_done is None:
                unit.run_done = anyio.Event()
            done = unit.run_done
            with anyio.move_on_after(unit.timeout):
                await done.wait()
        return await self._run(unit, anyio.current_time(), "manual")

    # -- the instance task -------------------------------------------------------------------

    async def _start(self, unit: _Unit) -> None:
        assert self._tg is not None
        await self._tg.start(self._instance_task, unit, name=f"homelab:{unit.id}")

    async def _stop(self, unit: _Unit) -> None:
        if unit.scope is not None:
            unit.scope.cancel()
        if unit.stopped is not None:
            await unit.stopped.wait()

    async def _instance_task(
        self, unit: _Unit, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        unit.stopped = anyio.Event()
        if unit.first_setup is None or unit.first_setup.is_set():
            unit.first_setup = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                unit.scope = scope
                task_status.started()
                async with anyio.create_task_group() as runs:
                    await self._setup(unit)
                    # The timer starts this instance's runs in ``runs`` (inside its cancel
                    # scope, so stopping the instance cancels them) until it is stopped.
                    jitter = random.uniform(0, min(self.settings.jitter, unit.interval))
                    entry = [anyio.current_time() + jitter, next(self._sequence), unit, runs]
                    self._push(entry)
                    try:
                        await anyio.sleep_forever()
                    finally:
                        entry[3] = None
        finally:
            unit.scope = None
            try:
                if unit.set_up:
                    unit.set_up = False
                    await self._teardown(unit)
            finally:
                unit.stopped.set()

    def _push(self, entry: list[Any]) -> None:
        heapq.heappush(self._due, entry)
        if self._due[0] is entry and self._wakeup is not None:
            self._wakeup.set()

    async def _timer(self) -> None:
        """Start every due run; sleep until the next one is due (or an earlier one is added)."""
        due = self._due
        while True:
            now = anyio.current_time()
            while due and due[0][0] <= now:
                entry = due[0]
                scheduled, _, unit, runs = entry
                if runs is None:  # the instance was stopped
                    heapq.heappop(due)
                    continue
                # Fixed rate: tick n is at start + n * interval, however late this one is.
                next_at = scheduled + unit.interval
                missed = 0
                if now >= next_at:
                    missed = math.floor((now - next_at) / unit.interval) + 1
                    next_at += missed * unit.interval
                entry[0], entry[1] = next_at, next(self._sequence)
                heapq.heapreplace(due, entry)
                if missed or unit.busy:
                    await self._tick(unit, scheduled, now, missed, entry)
                    now = anyio.current_time()
                elif now >= unit.backoff_until:  # the common case, without a coroutine
                    unit.claim()
                    runs.start_soon(self._run, unit, scheduled, "schedule", True, name=unit.id)
            # A push of an earlier entry sets this event (no await between here and waiting).
            self._wakeup = wakeup = anyio.Event()
            now = anyio.current_time()  # starting many runs takes time too
            with anyio.move_on_after(due[0][0] - now if due else math.inf):
                await wakeup.wait()

    async def _teardown(self, unit: _Unit) -> None:
        """Call ``teardown()``, shielded and bounded, once no worker thread of it runs."""
        with anyio.move_on_after(TEARDOWN_TIMEOUT, shield=True):
            try:
                if await _thread_finished(unit, TEARDOWN_TIMEOUT):
                    await self._call(unit, unit.plugin.teardown)
                else:
                    log.warning(
                        "plugin instance %r: not tearing down, a run is still blocked in its"
                        " worker thread",
                        unit.id,
                    )
            except Exception:
                log.exception("teardown of plugin instance %r failed", unit.id)

    async def _setup(self, unit: _Unit) -> None:
        waits = self.settings.setup_retry or [5.0]
        attempt = 0
        while True:
            # A timed-out setup (or collect) may still run in its thread: wait for it, so
            # that two calls into the plugin never overlap, even across disable/enable.
            await _thread_finished(unit, None)
            execution, _ = await self._attempt(unit, unit.plugin.setup, "setup", "setup")
            if unit.first_setup is not None:
                unit.first_setup.set()
            if execution.status is ExecutionStatus.OK:
                unit.set_up, unit.setup_error = True, None
                if unit.health.state is not HealthState.UNKNOWN:
                    log.info("plugin instance %r set up after %d failed attempts", unit.id, attempt)
                return
            wait = waits[min(attempt, len(waits) - 1)]
            attempt += 1
            error = unit.setup_error = execution.error
            previous = unit.health
            message = f"{error}; retrying in {wait:g} s"
            if previous.state is not HealthState.FAILING:
                log.error("plugin instance %r %s", unit.id, message)
            unit.health = attrs.evolve(
                previous,
                state=HealthState.FAILING,
                message=message,
                since=previous.since if previous.state is HealthState.FAILING else time.time(),
                last_error=error,
                last_error_at=time.time(),
                consecutive_failures=previous.consecutive_failures + 1,
            )
            self._count(unit, execution)
            await self._emit(RunResult(unit.id, execution, [], unit.health, previous))
            await anyio.sleep(wait)

    async def _tick(
        self, unit: _Unit, scheduled: float, now: float, missed: int, entry: list[Any]
    ) -> None:
        """One due tick of ``unit``: record what was missed, then run it unless it may not."""
        if missed:
            await self._skip(
                unit,
                scheduled,
                f"scheduler was {now - scheduled:.3f} s late; {missed} tick(s) missed",
            )
        if now < unit.backoff_until:
            return
        if unit.busy:
            await self._skip(unit, scheduled, "previous run still in progress")
            return
        runs: TaskGroup | None = entry[3]
        if runs is None:  # stopped while the skip above was being handled
            return
        unit.claim()
        runs.start_soon(self._run, unit, scheduled, "schedule", True, name=unit.id)

    async def _skip(self, unit: _Unit, scheduled: float, reason: str) -> None:
        execution = Execution(
            instance_id=unit.id,
            started_at=time.time(),
            duration=0.0,
            status=ExecutionStatus.SKIPPED,
            error=reason,
            lag=anyio.current_time() - scheduled,
        )
        self._count(unit, execution)
        await self._emit(RunResult(unit.id, execution, [], unit.health, unit.health))

    # -- one run -----------------------------------------------------------------------------

    async def _run(
        self, unit: _Unit, scheduled: float, trigger: str, claimed: bool = False
    ) -> Execution:
        if unit.busy and not claimed:
            await self._skip(unit, scheduled, "previous run still in progress")
            assert unit.stats.last_execution is not None
            return unit.stats.last_execution
        if not claimed:
            unit.claim()
        try:
            async with self._limiter:
                execution, metrics, report = await self._collect(unit, scheduled, trigger)
        finally:
            unit.running = False
            if unit.run_done is not None:
                unit.run_done.set()
                unit.run_done = None
        previous = unit.health
        unit.health = self._judge(unit, execution, report)
        if execution.status is not ExecutionStatus.OK:
            factor = 2 ** max(0, unit.health.consecutive_failures - 1)
            delay = min(unit.interval * factor, max(unit.interval, self.settings.max_backoff))
            unit.backoff_until = scheduled + delay
        else:
            unit.backoff_until = 0.0
        self._count(unit, execution)
        await self._emit(RunResult(unit.id, execution, metrics, unit.health, previous))
        return execution

    async def _collect(
        self, unit: _Unit, scheduled: float, trigger: str
    ) -> tuple[Execution, list[Metric], HealthReport | None]:
        started_wall = time.time()
        plugin = unit.plugin
        if type(plugin).health is Plugin.health:
            # The common case, kept lean: no closure, one Execution per run.
            execution, metrics = await self._attempt(
                unit, plugin.collect, trigger, "", scheduled, stamp=started_wall
            )
            return execution, metrics or [], None

        async def collect() -> tuple[list[Metric], HealthReport | None]:
            metrics = validate_metrics(await self._call(unit, plugin.collect), started_wall)
            return metrics, _validate_report(await self._call(unit, plugin.health))

        execution, result = await self._attempt(unit, collect, trigger, "", scheduled)
        metrics, report = result if result is not None else ([], None)
        return attrs.evolve(execution, metric_count=len(metrics)), metrics, report

    async def _attempt(
        self,
        unit: _Unit,
        method: Callable[[], Any],
        trigger: str,
        what: str,
        scheduled: float | None = None,
        stamp: float | None = None,
    ) -> tuple[Execution, Any]:
        """Run ``method`` under the instance's timeout; its outcome as an execution.

        ``what`` ("setup" or "") prefixes error texts; the result is None unless it succeeded.
        With ``stamp``, the result is validated as collected metrics (stamped with that time)
        and counted in the execution.
        """
        started_wall, started = time.time(), anyio.current_time()
        status, error, result, count = ExecutionStatus.OK, None, None, 0
        prefix = f"{what} " if what else ""
        with anyio.move_on_after(unit.timeout) as scope:
            try:
                result = await self._call(unit, method)
                if stamp is not None:
                    result = validate_metrics(result, stamp)
                    count = len(result)
            except Exception as exc:
                status, error, result, count = ExecutionStatus.ERROR, _describe(exc), None, 0
                if what:
                    error = f"{what} failed: {error}"
        if scope.cancelled_caught:
            status, error, result, count = (
                ExecutionStatus.TIMEOUT,
                f"{prefix}timed out after {unit.timeout:g} s",
                None,
                0,
            )
        execution = Execution(
            instance_id=unit.id,
            started_at=started_wall,
            duration=anyio.current_time() - started,
            status=status,
            error=error,
            metric_count=count,
            trigger=trigger,
            lag=0.0 if scheduled is None else max(0.0, started - scheduled),
        )
        return execution, result

    async def _call(self, unit: _Unit, method: Callable[[], Any]) -> Any:
        """Await an async method, or run a sync one in a worker thread.

        A worker thread cannot be killed: on timeout it is abandoned and the instance stays
        busy (later ticks are skipped) until the thread returns.
        """
        if getattr(method, "__func__", None) in _BASE_NO_OPS:
            # The base class's setup()/teardown() do nothing: skip the worker thread round
            # trip (10,000 instances started 1 s sooner and stopped 6 s sooner).
            return None
        if inspect.iscoroutinefunction(method):
            result = await method()
        else:

            def in_thread() -> Any:
                # Marked busy here, not before: a job cancelled before a worker picks it
                # up never runs, and must not leave the instance looking busy for good.
                unit.thread_idle.clear()
                try:
                    return method()
                finally:
                    unit.thread_idle.set()

            result = await anyio.to_thread.run_sync(in_thread, abandon_on_cancel=True)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _judge(self, unit: _Unit, execution: Execution, report: HealthReport | None) -> Health:
        previous = unit.health
        now = time.time()
        if execution.status is ExecutionStatus.OK:
            state = report.state if report else HealthState.OK
            message = report.message if report else ""
            health = Health(  # built directly: attrs.evolve costs twice as much per run
                state=state,
                message=message,
                since=previous.since if previous.state == state else now,
                last_success=now,
                last_error=previous.last_error,
                last_error_at=previous.last_error_at,
                consecutive_failures=0,
            )
            if previous.state is HealthState.FAILING and state is not HealthState.FAILING:
                log.info("plugin instance %r recovered", unit.id)
            return health
        failures = previous.consecutive_failures + 1
        failing = failures >= self.settings.failure_threshold
        state = HealthState.FAILING if failing else HealthState.DEGRADED
        if failing and previous.state is not HealthState.FAILING:
            log.error(
                "plugin instance %r is failing after %d consecutive failures: %s",
                unit.id,
                failures,
                execution.error,
            )
        return attrs.evolve(
            previous,
            state=state,
            message=f"{failures} consecutive failure(s): {execution.error}",
            last_error=execution.error,
            last_error_at=now,
            consecutive_failures=failures,
            since=previous.since if previous.state == state else now,
        )

    def _count(self, unit: _Unit, execution: Execution) -> None:
        stats = unit.stats
        stats.last_execution = execution
        if execution.status is ExecutionStatus.SKIPPED:
            stats.skipped += 1
            return
        stats.runs += 1
        if execution.status is ExecutionStatus.OK:
            stats.ok += 1
        elif execution.status is ExecutionStatus.TIMEOUT:
            stats.timeouts += 1
        else:
            stats.errors += 1

    async def _set_health(self, unit: _Unit, health: Health) -> None:
        previous, unit.health = unit.health, health
        if previous.state != health.state:
            await self._emit(RunResult(unit.id, None, [], health, previous))

    async def _emit(self, result: RunResult) -> None:
        if self._sink is None:
            return
        try:
            await self._sink(result)
        except Exception:
            log.exception("handling the result of plugin instance %r failed", result.instance_id)


def validate_metrics(raw: Any, timestamp: float) -> list[Metric]:
    """Check what ``collect()`` returned and stamp metrics that carry no timestamp."""
    if raw is None:
        return []
    if isinstance(raw, Metric | Mapping | str | bytes) or not isinstance(raw, Iterable):
        raise TypeError(f"collect() must return an iterable of Metric, got {type(raw).__name__}")
    metrics = []
    for item in raw:
        if not isinstance(item, Metric):
            raise TypeError(
                f"collect() returned a {type(item).__name__} among its metrics;"
                " return homelab_core.Metric objects"
            )
        if item.timestamp is None:
            item = item.with_timestamp(timestamp)
        metrics.append(item)
    return metrics


def _validate_report(raw: Any) -> HealthReport | None:
    if raw is None or isinstance(raw, HealthReport):
        return raw
    raise TypeError(f"health() must return a HealthReport or None, got {type(raw).__name__}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_once(
    plugin: Plugin, *, instance_id: str, timeout: float
) -> tuple[Execution, list[Metric], HealthReport | None]:
    """Set up, collect once, judge and tear down ``plugin``, outside any schedule.

    A failed or timed-out setup is returned as that execution, with no metrics.
    """
    scheduler = Scheduler(SchedulerSettings(default_timeout=timeout, jitter=0))
    unit = _Unit(id=instance_id, plugin=plugin, interval=timeout, timeout=timeout, enabled=True)
    execution, _ = await scheduler._attempt(unit, plugin.setup, "manual", "setup")
    if execution.status is not ExecutionStatus.OK:
        return execution, [], None
    try:
        return await scheduler._collect(unit, anyio.current_time(), "manual")
    finally:
        await scheduler._teardown(unit)
