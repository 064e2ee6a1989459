"""Calling one instance's plugin methods: on the event loop or in a worker thread, under a
timeout, with every outcome turned into an :class:`~homelab_core.Execution`.

A :class:`Runner` belongs to one instance. The scheduler uses it for every run, setup and
teardown; :func:`run_once` (``homelab run --once``) uses the same object, so one run
behaves the same inside and outside a schedule.

A sync method runs in a worker thread, which cannot be killed: on timeout it is abandoned
and keeps running. The runner remembers that (:attr:`Runner.thread_busy`) so that no other
method of the plugin is called while it still runs.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
import attrs

from . import clock
from .codec import storable_text
from .errors import SetupFailed, SetupNotReady
from .isolation.wire import RemoteError
from .model import Execution, ExecutionStatus, HealthReport, InstanceState, Metric
from .options import secret_values
from .plugin import Plugin
from .redact import Redactor, install_filter

if TYPE_CHECKING:
    from .config import Isolation

log = logging.getLogger("homelab.runner")

#: Seconds that a plugin's ``teardown()`` may take when the instance stops.
TEARDOWN_TIMEOUT = 10.0
#: A run that starts at most this late gets its scheduled tick as the time of its metrics:
#: the timestamps of a series then step by exactly its interval, which the store's chunks
#: keep in almost no space (a few milliseconds of start lag would cost more than half a byte
#: a sample). Prometheus aligns its scrape timestamps the same way, with the same default.
STAMP_TOLERANCE = 0.002
#: Plugin methods whose base implementation does nothing.
_BASE_NO_OPS = frozenset({Plugin.setup, Plugin.teardown, Plugin.health})


class Outcome(NamedTuple):
    """One call of a plugin method: its execution record, result and exception.

    A named tuple, not an attrs class: one is made per run, and a tuple is the cheapest.
    """

    execution: Execution
    result: Any = None
    error: BaseException | None = None


class Runner:
    """Calls the methods of one instance's plugin object.

    :param instance_id: the instance, for execution records and log lines.
    :param plugin: the plugin object.
    :param timeout: seconds each call may take.
    :param teardown_timeout: seconds ``teardown()`` may take, counting the wait for a
        worker thread still running.
    :param threads: the limiter of worker threads running plugin code, shared by the
        scheduler's instances (a new one of its own if not given). It is not anyio's
        default limiter, which the framework's own thread work uses.
    """

    def __init__(
        self,
        instance_id: str,
        plugin: Plugin,
        timeout: float,
        *,
        teardown_timeout: float = TEARDOWN_TIMEOUT,
        threads: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.plugin = plugin
        self.timeout = timeout
        self.teardown_timeout = teardown_timeout
        self._threads = threads
        # Set while no worker thread of this instance runs (one may outlive its timeout).
        self._thread_idle = threading.Event()
        self._thread_idle.set()
        #: The method running in the worker thread and when it started (monotonic).
        self._thread_call: tuple[str, float] | None = None
        self._awaiting_thread = False
        self._health_hook = type(plugin).health is not Plugin.health
        #: Seconds the current call held the event loop, as the watchdog measured them:
        #: finished stalls, and the start of one still going on (set from its thread).
        self.stalled = 0.0
        self.stall_started: float | None = None
        #: Removes the instance's secrets and URL credentials from the texts of its
        #: plugin (error texts, health messages, its log lines) before anyone sees them.
        self.redact = Redactor(secret_values(getattr(plugin, "config", None)))
        if isinstance(getattr(plugin, "log", None), logging.Logger):
            install_filter(plugin.log, self.redact)

    @property
    def thread_busy(self) -> bool:
        """Whether a worker thread of this instance is still running (perhaps abandoned)."""
        return not self._thread_idle.is_set()

    @property
    def thread_abandoned(self) -> bool:
        """Whether a worker thread of this instance runs on after its call was given up
        (timed out or cancelled): nobody awaits it any more."""
        return not self._awaiting_thread and not self._thread_idle.is_set()

    def hung_call(self) -> str:
        """What still runs in the worker thread, as a phrase for health messages."""
        call = self._thread_call
        if call is None or self._thread_idle.is_set():
            return ""
        method, since = call
        return (
            f"{method}() has been running in its worker thread for {time.monotonic() - since:.0f} s"
        )

    async def wait_thread(self, timeout: float | None) -> bool:
        """Wait for a running worker thread to return; False if it did not in time.

        The wait polls on the event loop: a framework wait never takes a worker thread
        (waiting in one would hold a thread slot for as long as the plugin hangs, and
        leave a thread behind each time the wait is cancelled).
        """
        idle = self._thread_idle
        delay = 0.01
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            while not idle.is_set():
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.25)
        return idle.is_set()

    async def call(self, method: Callable[[], Any]) -> Any:
        """Await an async method, or run a sync one in a worker thread."""
        if getattr(method, "__func__", None) in _BASE_NO_OPS:
            # The base class's setup()/teardown() do nothing: skip the worker thread round
            # trip (docs/performance.md: it made starting and stopping many instances slow).
            return None
        if inspect.iscoroutinefunction(method):
            result = await method()
        else:
            idle, label = self._thread_idle, f"homelab plugin {self.instance_id}"
            name = getattr(method, "__name__", "method")

            def in_thread() -> Any:
                # Marked busy here, not before: a job cancelled before a worker picks it
                # up never runs, and must not leave the instance looking busy for good.
                idle.clear()
                self._thread_call = (name, time.monotonic())
                thread = threading.current_thread()
                # Named after the instance while it runs its code: a shutdown that has
                # to abandon hung threads can say whose they are.
                thread.name, previous_name = label, thread.name
                try:
                    return method()
                except Exception:
                    raise
                except BaseException as exc:
                    # Awaiting a worker thread re-raises GeneratorExit beyond every
                    # ``except`` of the awaiting coroutine: carry it out as an Exception.
                    raise _Escaped(exc) from exc
                finally:
                    thread.name = previous_name
                    idle.set()

            if self._threads is None:
                self._threads = anyio.CapacityLimiter(1)
            self._awaiting_thread = True
            try:
                result = await anyio.to_thread.run_sync(
                    in_thread, abandon_on_cancel=True, limiter=self._threads
                )
            finally:
                self._awaiting_thread = False
        if inspect.isawaitable(result):
            result = await result
        return result

    async def attempt(
        self,
        method: Callable[[], Any],
        *,
        trigger: str,
        what: str = "",
        scheduled: float | None = None,
        stamp: float | None = None,
    ) -> Outcome:
        """Call ``method`` under the timeout; its outcome as an execution.

        ``what`` ("setup") prefixes error texts. With ``stamp``, the result is validated as
        collected metrics (stamped with that time) and counted in the execution.
        """
        started_wall, started = time.time(), anyio.current_time()
        status, error, result, count = ExecutionStatus.OK, None, None, 0
        failure: BaseException | None = None
        self.stalled, self.stall_started = 0.0, None
        with anyio.move_on_after(self.timeout) as scope:
            try:
                result = await self.call(method)
                if stamp is not None:
                    result = validate_metrics(result, stamp)
                    count = len(result)
            except BaseException as exc:
                if is_cancellation(exc):
                    raise  # our timeout, or the instance being stopped
                failure = exc.original if isinstance(exc, _Escaped) else exc
                error = self.redact(describe(failure))
                status, result, count = ExecutionStatus.ERROR, None, 0
                if what:
                    error = f"{what} failed: {error}"
        duration = anyio.current_time() - started
        # An async method that blocks the event loop cannot be cancelled at its timeout:
        # it returns late, and the watchdog may have seen it hold the loop.
        late = (
            not scope.cancelled_caught and status is ExecutionStatus.OK and duration > self.timeout
        )
        if scope.cancelled_caught or late:
            prefix = f"{what} " if what else ""
            status, error, result, count = (
                ExecutionStatus.TIMEOUT,
                f"{prefix}timed out after {self.timeout:g} s",
                None,
                0,
            )
            if late and not self._blocked():
                error += f" (returned after {duration:.2f} s, before the cancellation reached it)"
        if blocked := self._blocked():
            note = (
                f"blocked the event loop for {blocked:.2f} s, stopping every other instance;"
                " blocking code belongs in a sync method (run in a worker thread)"
            )
            error = f"{error}: {note}" if error else note
        execution = Execution(
            instance_id=self.instance_id,
            started_at=started_wall,
            duration=duration,
            status=status,
            error=error,
            metric_count=count,
            trigger=trigger,
            lag=0.0 if scheduled is None else max(0.0, started - scheduled),
        )
        return Outcome(execution, result, failure)

    def _blocked(self) -> float:
        """Seconds the current call held the event loop, as far as the watchdog saw."""
        started = self.stall_started
        return self.stalled + (time.monotonic() - started if started is not None else 0.0)

    async def setup(self, trigger: str = "setup") -> tuple[InstanceState, Outcome]:
        """One setup attempt, once no earlier call of the plugin still runs in a thread.

        :return: the state the attempt leads to (``READY``; ``SETUP_RETRY`` after an
            error, a timeout or :class:`~homelab_core.errors.SetupNotReady`; ``FAILED``
            after :class:`~homelab_core.errors.SetupFailed`), and the attempt's outcome.

        A timed-out setup or collect may still run in its thread: waiting for it keeps two
        calls into the plugin from ever overlapping, even across disable and enable.
        """
        await self.wait_thread(None)
        outcome = await self.attempt(self.plugin.setup, trigger=trigger, what="setup")
        if outcome.execution.status is ExecutionStatus.OK:
            return InstanceState.READY, outcome
        if isinstance(outcome.error, SetupFailed):
            return InstanceState.FAILED, outcome
        return InstanceState.SETUP_RETRY, outcome

    async def collect(
        self, trigger: str, scheduled: float | None = None
    ) -> tuple[Execution, list[Metric], HealthReport | None]:
        """One collection, then ``health()`` if the plugin has one; under one timeout.

        Metrics without a timestamp get :func:`homelab_core.clock.wall` at the start, or
        at the scheduled tick when the run started within :data:`STAMP_TOLERANCE` of it.
        """
        started_wall = clock.wall()
        if scheduled is not None:
            lag = anyio.current_time() - scheduled
            if 0.0 < lag <= STAMP_TOLERANCE:
                started_wall -= lag
        plugin = self.plugin
        if not self._health_hook:
            # The common case, kept lean: no closure, one Execution per run.
            outcome = await self.attempt(
                plugin.collect, trigger=trigger, scheduled=scheduled, stamp=started_wall
            )
            return outcome.execution, outcome.result or [], None

        async def collect() -> tuple[list[Metric], HealthReport | None]:
            metrics = validate_metrics(await self.call(plugin.collect), started_wall)
            return metrics, validate_report(await self.call(plugin.health))

        outcome = await self.attempt(collect, trigger=trigger, scheduled=scheduled)
        metrics, report = outcome.result if outcome.result is not None else ([], None)
        execution = attrs.evolve(outcome.execution, metric_count=len(metrics))
        if report is not None and report.message:
            message = self.redact(report.message)
            if message != report.message:
                report = HealthReport(report.state, message)
        return execution, metrics, report

    async def teardown(self) -> None:
        """Call ``teardown()``, shielded and bounded, once no worker thread of it runs."""
        limit = self.teardown_timeout
        with anyio.move_on_after(limit, shield=True) as scope:
            try:
                if await self.wait_thread(limit):
                    await self.call(self.plugin.teardown)
                else:
                    log.warning(
                        "plugin instance %r: not tearing down, a run is still blocked in its"
                        " worker thread",
                        self.instance_id,
                    )
            except BaseException as exc:
                if is_cancellation(exc):
                    raise
                # The traceback names the plugin's exception text: redacted like its errors.
                trace = "".join(traceback.format_exception(exc)).rstrip()
                log.error(
                    "teardown of plugin instance %r failed\n%s",
                    self.instance_id,
                    self.redact(trace),
                )
        if scope.cancelled_caught:
            log.warning(
                "teardown of plugin instance %r timed out after %g s; left unfinished",
                self.instance_id,
                limit,
            )

    async def close(self) -> None:
        """Release what the runner holds for its instance, once the instance stopped
        (called whether or not it was set up; in process there is nothing to release)."""
        return None


def validate_metrics(raw: Any, timestamp: float | None) -> list[Metric]:
    """Check what ``collect()`` returned and stamp metrics that carry no timestamp (with
    ``timestamp``; None leaves them unstamped)."""
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
        if item.timestamp is None and timestamp is not None:
            item = item.with_timestamp(timestamp)
        metrics.append(item)
    return metrics


def validate_report(raw: Any) -> HealthReport | None:
    """Check what ``health()`` returned."""
    if raw is None or isinstance(raw, HealthReport):
        return raw
    raise TypeError(f"health() must return a HealthReport or None, got {type(raw).__name__}")


class _Escaped(Exception):
    """A ``BaseException`` that is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``, ``GeneratorExit`` ...), raised by a sync plugin method in its
    worker thread and carried back to the event loop as an ordinary exception."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(original)
        self.original = original


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is a real cancellation of the running code, not a plugin's exception.

    A plugin's exception of any kind (``SystemExit``, ``KeyboardInterrupt``,
    ``GeneratorExit``, a bare ``BaseException``, even an ``asyncio.CancelledError`` it
    raises itself) is that run's error; only a cancellation that a cancel scope around
    the call asked for (the run's timeout, the instance being stopped) may propagate. Such
    a scope leaves the effective deadline at minus infinity.
    """
    return (
        isinstance(exc, anyio.get_cancelled_exc_class())
        and anyio.current_effective_deadline() == -math.inf
    )


def describe(exc: BaseException) -> str:
    """An exception as one line: its class, then its text if it has one (storable: see
    :func:`~homelab_core.codec.storable_text`)."""
    if isinstance(exc, RemoteError):  # raised in a worker process: described there
        return storable_text(exc.description)
    text = str(exc)
    return storable_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def retry_after(outcome: Outcome) -> float | None:
    """The wait a plugin asked for with :class:`~homelab_core.errors.SetupNotReady`."""
    error = outcome.error
    return error.retry_after if isinstance(error, SetupNotReady) else None


async def run_once(
    plugin: Plugin, *, instance_id: str, timeout: float, isolation: Isolation | None = None
) -> tuple[Execution, list[Metric], HealthReport | None]:
    """Set up, collect once and tear down ``plugin``, outside any schedule.

    A failed or timed-out setup is returned as that execution, with no metrics. A sync
    method still blocked in its worker thread after its timeout is abandoned, as in the
    scheduler; teardown then waits for it up to :data:`TEARDOWN_TIMEOUT` seconds and is
    skipped (with a warning) if it has not returned by then. With ``isolation``, the
    plugin runs in a worker process of its own, as an isolated instance of a schedule.

    :raises InvalidArgumentError: ``isolation`` is given and the plugin cannot run in a
        worker process (see :func:`homelab_core.isolation.runner.portable`).
    """
    if isolation is None:
        return await _run_once(Runner(instance_id, plugin, timeout))
    from .isolation.pool import Workers
    from .isolation.runner import ProcessRunner

    async with Workers() as workers:
        runner = ProcessRunner(
            instance_id,
            plugin,
            timeout,
            workers=workers,
            worker=isolation.worker,
            memory_limit=isolation.memory_limit,
        )
        return await _run_once(runner)


async def _run_once(runner: Runner) -> tuple[Execution, list[Metric], HealthReport | None]:
    try:
        result, outcome = await runner.setup(trigger="manual")
        if result is not InstanceState.READY:
            return outcome.execution, [], None
        try:
            return await runner.collect("manual")
        finally:
            await runner.teardown()
    finally:
        await runner.close()
