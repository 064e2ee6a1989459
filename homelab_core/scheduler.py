"""Runs plugin instances on their intervals, each isolated from the others.

One anyio task group holds a task per enabled instance, and one timer task wakes up when
the next instance is due (a heap of due times: 10,000 instances cost one sleeping timer,
not 10,000). Each instance:

- sets up first (:class:`~homelab_core.runner.Runner`), retrying a failed, timed-out or
  not-ready ``setup()`` after 5, 10, 20, 40, 80 s (configurable; the last wait repeats),
  and giving up for good on :class:`~homelab_core.errors.SetupFailed`;
- then ticks at a fixed rate (tick *n* is at ``start + n * interval``, so late runs do not
  push later ones back), starting after a random jitter so instances do not all fire at once;
- never overlaps itself: a tick that finds the previous run (or its abandoned worker
  thread) still busy is recorded as a ``skipped`` execution;
- runs under a timeout and the scheduler-wide concurrency limit;
- backs off exponentially after consecutive failures (ticks inside the back-off are passed).

Its life cycle follows :mod:`homelab_core.lifecycle`; its health follows
:mod:`homelab_core.policy`. Every run becomes an :class:`~homelab_core.Execution`, handed
with the collected metrics and the new health to the ``sink`` callback (the hub stores,
caches and broadcasts them). The scheduler itself is pure anyio: asyncio and trio.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup

from . import policy
from .config import Isolation, SchedulerSettings
from .errors import ConflictError, HomelabError, InvalidArgumentError, UnknownInstanceError
from .isolation.pool import Workers
from .isolation.runner import ProcessRunner
from .lifecycle import Lifecycle
from .limits import Limiter, Limits
from .model import (
    Execution,
    ExecutionStatus,
    Health,
    HealthReport,
    InstanceState,
    Metric,
    RunStats,
)
from .plugin import Plugin
from .runner import Outcome, Runner, describe, is_cancellation, retry_after
from .watchdog import LoopWatchdog

log = logging.getLogger("homelab.scheduler")
S = InstanceState


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


@attrs.define(eq=False)
class _Unit:
    """The scheduler's record of one instance: the one owner of its state and health."""

    id: str
    runner: Runner
    interval: float
    lifecycle: Lifecycle
    limiter: Limiter
    health: Health = attrs.field(factory=Health)
    stats: RunStats = attrs.field(factory=RunStats)
    running: bool = False
    backoff_until: float = 0.0
    scope: anyio.CancelScope | None = None
    stopped: anyio.Event | None = None
    first_setup: anyio.Event | None = None
    run_done: anyio.Event | None = None
    #: Whether this node runs it (a node of a cluster runs only the instances it holds).
    held: bool = True

    @property
    def active(self) -> bool:
        """Whether its task should run: enabled, and held by this node."""
        return self.lifecycle.enabled and self.held

    @property
    def busy(self) -> bool:
        return self.running or self.runner.thread_busy

    async def ready_to_run(self) -> None:
        """Wait (up to a timeout) until the instance may run now; ConflictError if never.

        A just-started instance finishes its first setup attempt, and a run in progress
        finishes (so that "run now" does run) rather than being refused.
        """
        timeout, lifecycle = self.runner.timeout, self.lifecycle
        if not lifecycle.enabled:
            raise ConflictError(f"plugin instance {self.id!r} is disabled; enable it first")
        if not self.held:
            raise ConflictError(f"plugin instance {self.id!r} runs on another node")
        if lifecycle.state is not S.READY and self.first_setup is not None:
            with anyio.move_on_after(timeout):
                await self.first_setup.wait()
        if lifecycle.state is S.FAILED:
            raise ConflictError(
                f"plugin instance {self.id!r} failed to set up and is not retried"
                f" ({lifecycle.reason}); disable and enable it to try again"
            )
        if lifecycle.state is not S.READY:
            why = f" (last setup error: {lifecycle.reason})" if lifecycle.reason else ""
            raise ConflictError(f"plugin instance {self.id!r} is not set up yet{why}")
        if self.running:
            if self.run_done is None:
                self.run_done = anyio.Event()
            done = self.run_done
            with anyio.move_on_after(timeout):
                await done.wait()

    def skipped(self, scheduled: float, reason: str) -> Execution:
        """Record a tick that did not run."""
        execution = Execution(
            instance_id=self.id,
            started_at=time.time(),
            duration=0.0,
            status=ExecutionStatus.SKIPPED,
            error=reason,
            lag=anyio.current_time() - scheduled,
        )
        self.stats.count(execution)
        return execution

    def ran(
        self,
        execution: Execution,
        report: HealthReport | None,
        scheduled: float,
        settings: SchedulerSettings,
    ) -> None:
        """Judge a finished run: the new health, the back-off, the counters, a log line."""
        verdict = policy.judge_run(
            self.health,
            execution,
            report,
            failure_threshold=settings.failure_threshold,
            now=time.time(),
        )
        self.health = health = verdict.health
        if verdict.change is policy.Change.FAILING:
            log.error(
                "plugin instance %r is failing after %d consecutive failures: %s",
                self.id,
                health.consecutive_failures,
                execution.error,
            )
        elif verdict.change is policy.Change.RECOVERED:
            log.info("plugin instance %r recovered", self.id)
        if execution.status is ExecutionStatus.OK:
            self.backoff_until = 0.0
        else:
            failures = health.consecutive_failures
            delay = policy.backoff_delay(self.interval, failures, settings.max_backoff)
            self.backoff_until = scheduled + delay
        self.stats.count(execution)

    def setup_failed(
        self, result: InstanceState, outcome: Outcome, attempt: int, waits: Sequence[float]
    ) -> float | None:
        """Judge a failed setup attempt (``result`` is the state it leads to, ``FAILED`` or
        ``SETUP_RETRY``); the seconds until the next attempt, or None if there is none."""
        error, now = outcome.execution.error or "", time.time()
        wait: float | None = None
        if result is S.FAILED:
            verdict = policy.judge_setup_failed(self.health, error, now=now)
        else:
            wait = policy.setup_wait(waits, attempt, retry_after(outcome))
            verdict = policy.judge_setup_retry(self.health, error, wait, now=now)
        self.lifecycle.to(result, error)
        if verdict.change is policy.Change.FAILING:
            log.error("plugin instance %r %s", self.id, verdict.health.message)
        self.health = verdict.health
        self.stats.count(outcome.execution)
        return wait


@attrs.define(eq=False)
class _Due:
    """A started instance's place in the timer's heap; ``runs`` is None once it stopped."""

    unit: _Unit
    runs: TaskGroup | None


class _Timer:
    """The heap of due instances and the one task that starts their runs on time.

    ``run`` starts a run (in the instance's task group); ``skip`` records a skipped tick.
    """

    def __init__(
        self,
        run: Callable[[_Unit, float, str, bool], Coroutine[Any, Any, Execution]],
        skip: Callable[[_Unit, float, str], Awaitable[None]],
        watchdog: LoopWatchdog | None = None,
    ) -> None:
        self._run = run
        self._skip = skip
        self._watchdog = watchdog
        #: Heap of [due time, sequence, entry] rows. Lists compare in C (the sequence is
        #: unique, so entries are never compared), and a row is rescheduled in place: a
        #: new row per tick would add 10,000 long-lived objects every interval for the
        #: garbage collector to walk at its next full collection.
        self._due: list[list[Any]] = []
        self._sequence = itertools.count()
        self._wakeup: anyio.Event | None = None

    def push(self, at: float, entry: _Due) -> None:
        """Make ``entry`` due at ``at`` (waking the timer if it is now the first due)."""
        heapq.heappush(self._due, [at, next(self._sequence), entry])
        if self._due[0][2] is entry and self._wakeup is not None:
            self._wakeup.set()

    async def run(self) -> None:
        """Start every due run; sleep until the next one is due (or an earlier one is added)."""
        due = self._due
        while True:
            now = anyio.current_time()
            while due and due[0][0] <= now:
                row = due[0]
                scheduled: float = row[0]
                entry: _Due = row[2]
                unit, runs = entry.unit, entry.runs
                if runs is None:  # the instance was stopped
                    heapq.heappop(due)
                    continue
                # Fixed rate: tick n is at start + n * interval, however late this one is.
                next_at = scheduled + unit.interval
                missed = 0
                if now >= next_at:
                    missed = math.floor((now - next_at) / unit.interval) + 1
                    next_at += missed * unit.interval
                row[0], row[1] = next_at, next(self._sequence)
                heapq.heapreplace(due, row)
                if missed or unit.busy:
                    await self._tick(unit, scheduled, now, missed, entry)
                    now = anyio.current_time()
                elif now >= unit.backoff_until:  # the common case, without a coroutine
                    unit.running = True
                    runs.start_soon(self._run, unit, scheduled, "schedule", True, name=unit.id)
            # A push of an earlier entry sets this event (no await between here and waiting).
            self._wakeup = wakeup = anyio.Event()
            now = anyio.current_time()  # starting many runs takes time too
            with anyio.move_on_after(due[0][0] - now if due else math.inf):
                await wakeup.wait()

    async def _tick(
        self, unit: _Unit, scheduled: float, now: float, missed: int, entry: _Due
    ) -> None:
        """One due tick of ``unit``: record what was missed, then run it unless it may not."""
        if missed:
            late = now - scheduled
            why = ""
            if self._watchdog is not None:
                blocker = self._watchdog.blocker(since=time.monotonic() - late)
                if blocker is not None and blocker != unit.id:
                    why = f" (the event loop was blocked by plugin instance {blocker!r})"
            await self._skip(
                unit, scheduled, f"scheduler was {late:.3f} s late{why}; {missed} tick(s) missed"
            )
        if now < unit.backoff_until:
            return
        if unit.busy:
            await self._skip(unit, scheduled, "previous run still in progress")
            return
        runs = entry.runs
        if runs is None:  # stopped while the skip above was being handled
            return
        unit.running = True
        runs.start_soon(self._run, unit, scheduled, "schedule", True, name=unit.id)


class Scheduler:
    """Schedules plugin instances; use as ``async with Scheduler(...) as scheduler``."""

    def __init__(
        self,
        settings: SchedulerSettings | None = None,
        *,
        sink: Sink | None = None,
        may_run: Callable[[str], bool] | None = None,
        node: str | None = None,
        fence: Callable[[str], int | None] | None = None,
    ) -> None:
        """``may_run``, if given, is asked before every run of an instance (a node of a
        cluster checks that its lease still holds); a run it refuses is skipped. Every
        execution records ``node`` and the instance's ``fence`` (its lease's token)."""
        self.settings = settings or SchedulerSettings()
        self._sink = sink
        self._may_run = may_run
        self.node = node
        self._fence = fence
        self._units: dict[str, _Unit] = {}
        # fast_acquire: taking a free slot costs no trip through the event loop (a run
        # awaits its plugin right after anyway); measured in bench/pipeline.py.
        self._limiter = anyio.Semaphore(max(1, self.settings.concurrency), fast_acquire=True)
        # Worker threads running plugin code: a limiter of their own, so that plugins never
        # take the thread slots of the framework (anyio's default limiter), nor it theirs.
        self._threads = anyio.CapacityLimiter(max(1, self.settings.concurrency))
        #: The worker processes of its isolated instances (``isolation = "process"``).
        self.workers = Workers(kill_grace=self.settings.worker_kill_grace)
        threshold = self.settings.loop_stall_threshold
        self.watchdog = LoopWatchdog(threshold) if threshold > 0 else None
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._timer: _Timer | None = None
        self.running = False
        #: Why the scheduler stopped while it should have run ("" while it runs).
        self.error = ""

    async def __aenter__(self) -> Scheduler:
        self._stack = AsyncExitStack()
        # Entered first, left last: every instance has stopped before its worker does.
        await self._stack.enter_async_context(self.workers)
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._timer = _Timer(self._run, self._skip, self.watchdog)
        self.running, self.error = True, ""
        self._tg.start_soon(self._guard, self._timer.run, name="homelab:scheduler-timer")
        if self.watchdog is not None:
            self._tg.start_soon(self._watch, self.watchdog, name="homelab:loop-watchdog")
        for unit in self._units.values():
            if unit.active:
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

    async def _guard(self, part: Callable[[], Awaitable[None]]) -> None:
        """Run one of the scheduler's own tasks; if it ever fails, stop the scheduler and
        say why (readiness reports :attr:`error`) instead of leaving it half dead."""
        try:
            await part()
        except BaseException as exc:
            if is_cancellation(exc):
                raise
            self.running, self.error = False, describe(exc)
            log.critical(
                "the scheduler stopped: its %s failed; no instance runs until restart",
                getattr(part, "__qualname__", "task"),
                exc_info=True,
            )
            for unit in self._units.values():  # their runs would never be started
                if unit.scope is not None:
                    unit.scope.cancel()

    async def _watch(self, watchdog: LoopWatchdog) -> None:
        """Run the watchdog; the scheduler goes on without it if it fails."""
        try:
            await watchdog.run()
        except Exception:
            log.exception("the event loop watchdog failed; going on without it")

    # -- instances -----------------------------------------------------------------------

    def add(
        self,
        instance_id: str,
        plugin: Plugin,
        *,
        interval: float,
        timeout: float | None = None,
        enabled: bool = True,
        limits: Limits | None = None,
        held: bool = True,
        isolation: Isolation | None = None,
    ) -> None:
        """Add an instance; it starts at once if the scheduler runs and it is enabled
        (and ``held``: see :meth:`set_held`).

        ``limits`` bound its samples per run and its series (:mod:`homelab_core.limits`);
        by default, the ``[scheduler]`` settings' ``max_samples_per_run`` and ``max_series``.
        With ``isolation``, its plugin methods run in a worker process
        (:mod:`homelab_core.isolation`).

        :raises InvalidArgumentError: a bad interval, or an isolated instance whose plugin
            cannot run in a worker process.
        """
        if instance_id in self._units:
            raise HomelabError(f"plugin instance {instance_id!r} is already scheduled")
        if interval <= 0:
            raise InvalidArgumentError(
                f"plugin instance {instance_id!r}: interval must be positive"
            )
        timeout = float(timeout if timeout is not None else self.settings.default_timeout)
        settings, stats = self.settings, RunStats()
        limits = limits or Limits(settings.max_samples_per_run, settings.max_series)
        runner = self._runner(instance_id, plugin, timeout, isolation)
        unit = _Unit(
            id=instance_id,
            runner=runner,
            interval=float(interval),
            lifecycle=Lifecycle.initial(enabled),
            limiter=Limiter(instance_id, limits, stats),
            stats=stats,
            held=held,
        )
        if not enabled:
            unit.health = policy.disabled_health()
        self._units[instance_id] = unit
        if unit.active and self._tg is not None:
            unit.first_setup = anyio.Event()
            self._tg.start_soon(self._instance_task, unit, name=f"homelab:{instance_id}")

    def _runner(
        self, instance_id: str, plugin: Plugin, timeout: float, isolation: Isolation | None
    ) -> Runner:
        teardown_timeout = self.settings.teardown_timeout
        if isolation is None:
            return Runner(
                instance_id,
                plugin,
                timeout,
                teardown_timeout=teardown_timeout,
                threads=self._threads,
            )
        try:
            return ProcessRunner(
                instance_id,
                plugin,
                timeout,
                workers=self.workers,
                worker=isolation.worker,
                memory_limit=isolation.memory_limit,
                teardown_timeout=teardown_timeout,
            )
        except InvalidArgumentError as exc:
            message = str(exc)
            if instance_id not in message:
                message = f"plugin instance {instance_id!r}: {message}"
            raise InvalidArgumentError(message) from None

    async def remove(self, instance_id: str) -> None:
        """Stop an instance (its runs are cancelled and it is torn down) and forget it.

        Other instances are not touched: their schedules go on without a gap.
        """
        unit = self._unit(instance_id)
        await self._stop(unit)
        self._units.pop(instance_id, None)
        if isinstance(unit.runner, ProcessRunner):
            unit.runner.forget()

    async def set_held(self, instance_id: str, held: bool) -> None:
        """Start running an instance on this node, or stop it (torn down, its run
        cancelled), without enabling or disabling it: a node of a cluster runs only the
        instances it holds. Returns once it is started or stopped."""
        unit = self._unit(instance_id)
        if unit.held == held:
            return
        unit.held = held
        if not held:
            # Shielded: a caller that gives up waiting must not leave the instance half
            # stopped (its teardown is bounded by the teardown timeout).
            with anyio.CancelScope(shield=True):
                await self._stop(unit)
        elif unit.lifecycle.enabled and self._tg is not None:
            await self._start(unit)

    def is_held(self, instance_id: str) -> bool:
        """Whether this node runs the instance (see :meth:`set_held`)."""
        return self._unit(instance_id).held

    def ids(self) -> list[str]:
        """The ids of every scheduled instance, in the order they were added."""
        return list(self._units)

    def _unit(self, instance_id: str) -> _Unit:
        try:
            return self._units[instance_id]
        except KeyError:
            raise UnknownInstanceError(instance_id) from None

    def plugin(self, instance_id: str) -> Plugin:
        """The plugin object of an instance."""
        return self._unit(instance_id).runner.plugin

    def state(self, instance_id: str) -> Lifecycle:
        """The instance's life cycle state, and why it is in it: a copy, since only the
        scheduler moves an instance from state to state."""
        return attrs.evolve(self._unit(instance_id).lifecycle)

    def busy(self, instance_id: str) -> bool:
        """Whether a run of the instance, or its abandoned worker thread, is in progress."""
        return self._unit(instance_id).busy

    def is_enabled(self, instance_id: str) -> bool:
        """Whether the instance is enabled."""
        return self._unit(instance_id).lifecycle.enabled

    def health(self, instance_id: str) -> Health:
        """The instance's current health."""
        return self._unit(instance_id).health

    def stats(self, instance_id: str) -> RunStats:
        """The instance's run counters."""
        return self._unit(instance_id).stats

    def all_stats(self) -> Mapping[str, RunStats]:
        """Run counters of every instance."""
        return {uid: unit.stats for uid, unit in self._units.items()}

    def abandoned_threads(self) -> int:
        """Worker threads still running plugin code that nobody waits for any more."""
        return sum(unit.runner.thread_abandoned for unit in self._units.values())

    def loop_stalls(self) -> int:
        """Times the watchdog saw the event loop blocked (0 without a watchdog)."""
        return self.watchdog.stalls if self.watchdog is not None else 0

    async def set_enabled(self, instance_id: str, enabled: bool) -> Health:
        """Enable or disable an instance at once; a disabled one is torn down first.

        :return: the instance's health after the change.
        """
        unit = self._unit(instance_id)
        if unit.lifecycle.enabled == enabled:
            return unit.health
        if not enabled:
            await self._stop(unit)
            unit.lifecycle.to(S.DISABLED)
            await self._set_health(unit, policy.disabled_health())
        else:
            unit.lifecycle.to(S.STOPPED)
            await self._set_health(unit, policy.enabled_health())
            if self._tg is not None and unit.held:
                await self._start(unit)
        return unit.health

    async def run_now(self, instance_id: str) -> Execution:
        """Run the instance immediately in the calling task and return its execution.

        The fixed-rate schedule is not moved. A run already in progress is waited for (up to
        the instance's timeout); if it is still busy then, the result is a ``skipped``
        execution.
        """
        unit = self._unit(instance_id)
        await unit.ready_to_run()
        return await self._run(unit, anyio.current_time(), "manual")

    # -- the instance task -------------------------------------------------------------------

    async def _start(self, unit: _Unit) -> None:
        assert self._tg is not None
        if not self.running:  # stopped by a failure of its own (see _guard)
            return
        if unit.stopped is not None and not unit.stopped.is_set():
            if unit.scope is not None and not unit.scope.cancel_called:
                return  # its task runs already
            await unit.stopped.wait()  # a stop under way (a slow teardown): it ends first
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
                    if await self._setup(unit):
                        # The timer starts this instance's runs in ``runs`` (inside its
                        # cancel scope, so stopping the instance cancels them).
                        jitter = random.uniform(0, min(self.settings.jitter, unit.interval))
                        entry = _Due(unit, runs)
                        assert self._timer is not None
                        self._timer.push(anyio.current_time() + jitter, entry)
                        try:
                            await anyio.sleep_forever()
                        finally:
                            entry.runs = None
                    else:  # failed for good: stays so until disabled or stopped
                        await anyio.sleep_forever()
        finally:
            unit.scope = None
            try:
                try:
                    if unit.lifecycle.state is S.READY:
                        await unit.runner.teardown()
                finally:
                    await unit.runner.close()
            finally:
                if unit.lifecycle.state is not S.STOPPED:
                    unit.lifecycle.to(S.STOPPED)
                unit.stopped.set()

    async def _setup(self, unit: _Unit) -> bool:
        """Set the instance up, retrying; False if it failed for good."""
        attempt = 0
        while True:
            unit.lifecycle.to(S.SETTING_UP)
            if unit.runner.thread_busy:
                # Never two calls into one plugin at once: wait for the hung one, and say so.
                hung = unit.runner.hung_call()
                health = policy.thread_hung_health(unit.health, hung, now=time.time())
                await self._set_health(unit, health)
                await unit.runner.wait_thread(None)
            result, outcome = await unit.runner.setup()
            if unit.first_setup is not None:
                unit.first_setup.set()
            if result is S.READY:
                unit.lifecycle.to(S.READY)
                if attempt:
                    log.info("plugin instance %r set up after %d failed attempts", unit.id, attempt)
                return True
            execution = self._stamp(unit.id, outcome.execution)
            previous = unit.health
            wait = unit.setup_failed(result, outcome, attempt, self.settings.setup_retry)
            await self._emit(RunResult(unit.id, execution, [], unit.health, previous))
            if wait is None:
                return False
            attempt += 1
            await anyio.sleep(wait)

    # -- one run -----------------------------------------------------------------------------

    def _stamp(self, instance_id: str, execution: Execution, fence: int | None = None) -> Execution:
        """The execution with the node that ran it and its lease's fencing token (the one
        the run started under, when given: the lease may have gone while it ran)."""
        if self.node is None:
            return execution
        if fence is None and self._fence is not None:
            fence = self._fence(instance_id)
        return attrs.evolve(execution, node=self.node, fence=fence)

    async def _skip(self, unit: _Unit, scheduled: float, reason: str) -> None:
        execution = self._stamp(unit.id, unit.skipped(scheduled, reason))
        unit.stats.last_execution = execution
        await self._emit(RunResult(unit.id, execution, [], unit.health, unit.health))

    async def _run(
        self, unit: _Unit, scheduled: float, trigger: str, claimed: bool = False
    ) -> Execution:
        if unit.busy and not claimed:
            await self._skip(unit, scheduled, "previous run still in progress")
            assert unit.stats.last_execution is not None
            return unit.stats.last_execution
        if self._may_run is not None and not self._may_run(unit.id):
            await self._skip(unit, scheduled, "this node does not hold the instance's lease")
            assert unit.stats.last_execution is not None
            return unit.stats.last_execution
        unit.running = True
        fence = self._fence(unit.id) if self._fence is not None else None
        try:
            async with self._limiter:
                execution, metrics, report = await unit.runner.collect(trigger, scheduled)
                execution = self._stamp(unit.id, execution, fence)
        finally:
            unit.running = False
            if unit.run_done is not None:
                unit.run_done.set()
                unit.run_done = None
        execution, metrics, report = unit.limiter.check(execution, metrics, report)
        previous = unit.health
        unit.ran(execution, report, scheduled, self.settings)
        await self._emit(RunResult(unit.id, execution, metrics, unit.health, previous))
        return execution

    async def _set_health(self, unit: _Unit, health: Health) -> None:
        previous, unit.health = unit.health, health
        if previous.state != health.state:
            await self._emit(RunResult(unit.id, None, [], health, previous))

    async def _emit(self, result: RunResult) -> None:
        if self._sink is None:
            return
        try:
            await self._sink(result)
        except BaseException as exc:
            if is_cancellation(exc):
                raise
            log.exception("handling the result of plugin instance %r failed", result.instance_id)
