"""Running a plugin outside any schedule: once, or set up once and collected many times."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any

import anyio
import anyio.from_thread
import attrs

from ..config import InstanceSettings, Isolation, SchedulerSettings
from ..instances import build_instance, plugin_type_for
from ..isolation.pool import Workers
from ..isolation.runner import ProcessRunner
from ..model import Execution, ExecutionStatus, HealthReport, InstanceState, Metric
from ..plugin import Plugin, validate_plugin_type
from ..plugins import PluginManager
from ..runner import Runner, run_once
from ._clock import Clock


@attrs.define
class PluginRun:
    """What one run of a plugin produced, with look-ups that fail readably."""

    execution: Execution
    metrics: list[Metric]
    health: HealthReport | None = None

    @property
    def status(self) -> ExecutionStatus:
        """How the run ended (``ok``, ``error``, ``timeout``)."""
        return self.execution.status

    @property
    def error(self) -> str | None:
        """The run's error text (redacted like the framework's), or None."""
        return self.execution.error

    @property
    def ok(self) -> bool:
        """Whether the run ended ``ok``."""
        return self.execution.status is ExecutionStatus.OK

    def assert_ok(self) -> PluginRun:
        """Raise :class:`AssertionError` with the run's error unless it ended ``ok``."""
        if not self.ok:
            raise AssertionError(
                f"run of {self.execution.instance_id!r} ended {self.status.value}: {self.error}"
            )
        return self

    def find(self, name: str, **labels: str) -> list[Metric]:
        """The metrics called ``name`` whose labels include ``labels``."""
        return [m for m in self.metrics if m.name == name and _has_labels(m, labels)]

    def has(self, name: str, **labels: str) -> bool:
        """Whether a metric ``name`` with (at least) these labels was returned."""
        return bool(self.find(name, **labels))

    def metric(self, name: str, **labels: str) -> Metric:
        """The one metric ``name`` with (at least) these labels.

        :raises AssertionError: none or several match; the message lists what the run
            returned instead (and its error, if it failed).
        """
        found = self.find(name, **labels)
        if len(found) == 1:
            return found[0]
        wanted = describe_series(name, labels)
        if found:
            raise AssertionError(
                f"{len(found)} metrics match {wanted}; give more labels to pick one of"
                f" {describe_metrics(found)}"
            )
        outcome = "" if self.ok else f" (the run ended {self.status.value}: {self.error})"
        raise AssertionError(
            f"no metric {wanted} in the run of {self.execution.instance_id!r}{outcome};"
            f" it returned {describe_metrics(self.metrics, empty='no metrics')}"
        )

    def value(self, name: str, **labels: str) -> float:
        """The value of :meth:`metric` ``(name, **labels)``."""
        return self.metric(name, **labels).value


def _has_labels(metric: Metric, labels: Mapping[str, str]) -> bool:
    own = metric.labels
    return all(own.get(key) == value for key, value in labels.items())


def describe_series(name: str, labels: Mapping[str, str]) -> str:
    """``name{a="1"}``: a series as failure messages show it."""
    inner = ", ".join(f"{key}={value!r}" for key, value in sorted(labels.items()))
    return f"{name!r}" + (f" {{{inner}}}" if labels else "")


def describe_metrics(metrics: list[Metric], *, empty: str = "none") -> str:
    """``empty``, or a colon and one line per metric (name, labels, value, unit), for
    failure messages: ``f"it returned {describe_metrics(metrics)}"``."""
    if not metrics:
        return empty
    lines = [
        f"  - {describe_series(m.name, m.labels)} = {m.value!r}{' ' + m.unit if m.unit else ''}"
        for m in metrics
    ]
    return f"{len(metrics)} metric(s):\n" + "\n".join(lines)


def resolve_type(plugin_type: type[Plugin] | str) -> type[Plugin]:
    """A plugin class, checked; or the installed type of that name (entry points)."""
    if isinstance(plugin_type, str):
        types = PluginManager().plugin_types()
        return plugin_type_for(types, InstanceSettings(id=plugin_type, type=plugin_type))
    problems = validate_plugin_type(plugin_type)
    if problems:
        raise TypeError(f"not a usable plugin type: {'; '.join(problems)}")
    return plugin_type


def build_plugin(
    plugin_type: type[Plugin] | str,
    *,
    instance_id: str | None,
    timeout: float | None,
    options: Mapping[str, Any],
) -> tuple[Plugin, float]:
    """The plugin object and its timeout, with options validated as the hub does."""
    cls = resolve_type(plugin_type)
    settings = InstanceSettings(
        id=instance_id or cls.name, type=cls.name, timeout=timeout, options=dict(options)
    )
    plugin, _, run_timeout = build_instance(
        settings,
        cls,
        default_timeout=SchedulerSettings().default_timeout,
        source="run_plugin()",
    )
    return plugin, run_timeout


def _clock(clock: Clock | None) -> AbstractContextManager[Any]:
    return nullcontext() if clock is None else clock.installed()


#: What ``isolation=None`` means in the kit's runs; :func:`use_isolation` sets it.
_default_isolation = "none"


@contextlib.contextmanager
def use_isolation(mode: str) -> Iterator[None]:
    """Run every plugin of the kit (:func:`run_plugin`, :class:`PluginHarness`, ...) that
    does not say otherwise with ``isolation = mode`` (``"none"`` or ``"process"``) until
    the block ends: a plugin's whole test suite can be run again in a worker process.

    ::

        @pytest.fixture(autouse=True, params=["none", "process"])
        def isolation(request):
            with use_isolation(request.param):
                yield request.param
    """
    global _default_isolation
    if mode not in ("none", "process"):
        raise ValueError(f"isolation must be 'none' or 'process', got {mode!r}")
    previous, _default_isolation = _default_isolation, mode
    try:
        yield
    finally:
        _default_isolation = previous


def _isolation(mode: str | None) -> Isolation | None:
    mode = _default_isolation if mode is None else mode
    if mode not in ("none", "process"):
        raise ValueError(f"isolation must be 'none' or 'process', got {mode!r}")
    return Isolation() if mode == "process" else None


async def run_plugin_async(
    plugin_type: type[Plugin] | str,
    /,
    *,
    instance_id: str | None = None,
    timeout: float | None = None,
    clock: Clock | None = None,
    isolation: str | None = None,
    **options: Any,
) -> PluginRun:
    """Set up, collect once and tear down a plugin, like ``homelab run TYPE --once``.

    :param plugin_type: a plugin class, or the name of an installed type.
    :param instance_id: the instance id (the type's name if not given).
    :param timeout: seconds each call may take (the type's default, else the scheduler's).
    :param clock: installed for the run (see :class:`Clock`); a worker process sees its
        readings as they were when each call was made.
    :param isolation: ``"process"`` runs the plugin in a worker process, as an instance
        with ``isolation = "process"``; None: :func:`use_isolation`'s choice (``"none"``).
    :param options: the instance's options, validated by the type's ``Config``; a bad
        one raises :class:`~homelab_core.errors.ConfigError` naming it.
    """
    plugin, run_timeout = build_plugin(
        plugin_type, instance_id=instance_id, timeout=timeout, options=options
    )
    with _clock(clock):
        execution, metrics, report = await run_once(
            plugin,
            instance_id=plugin.instance_id,
            timeout=run_timeout,
            isolation=_isolation(isolation),
        )
    return PluginRun(execution, metrics, report)


def run_plugin(
    plugin_type: type[Plugin] | str,
    /,
    *,
    instance_id: str | None = None,
    timeout: float | None = None,
    clock: Clock | None = None,
    isolation: str | None = None,
    **options: Any,
) -> PluginRun:
    """The sync form of :func:`run_plugin_async` (runs its own event loop).

    :raises RuntimeError: called where an event loop already runs (an async test):
        ``await run_plugin_async(...)`` there.
    """
    _refuse_running_loop("run_plugin()", "await run_plugin_async(...)")
    return anyio.run(
        lambda: run_plugin_async(
            plugin_type,
            instance_id=instance_id,
            timeout=timeout,
            clock=clock,
            isolation=isolation,
            **options,
        )
    )


def _refuse_running_loop(what: str, instead: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{what} runs its own event loop and cannot run inside one; use {instead}")


class PluginHarness:
    """One plugin object, set up once, collected as often as the test asks (async).

    ::

        async with PluginHarness(MyPlugin, clock=clock, host="x") as harness:
            first = await harness.run()
            clock.advance(60)
            second = await harness.run()

    Entering sets the plugin up (an unsuccessful setup raises :class:`AssertionError`
    with its error; :attr:`setup` keeps the record); leaving tears it down. The clock, if
    given, is installed for the whole block. Same arguments as :func:`run_plugin`.
    """

    def __init__(
        self,
        plugin_type: type[Plugin] | str,
        /,
        *,
        instance_id: str | None = None,
        timeout: float | None = None,
        clock: Clock | None = None,
        isolation: str | None = None,
        **options: Any,
    ) -> None:
        self.plugin, timeout = build_plugin(
            plugin_type, instance_id=instance_id, timeout=timeout, options=options
        )
        self.clock = clock
        self._workers: Workers | None = None
        self.runner: Runner
        if _isolation(isolation) is None:
            self.runner = Runner(self.plugin.instance_id, self.plugin, timeout)
        else:
            # In a worker process: ``plugin`` is then the hub's copy, never set up.
            self._workers = Workers()
            self.runner = ProcessRunner(
                self.plugin.instance_id, self.plugin, timeout, workers=self._workers
            )
        #: The setup's execution record, once entered.
        self.setup: Execution | None = None
        #: Every run so far.
        self.runs: list[PluginRun] = []
        self._stack = contextlib.ExitStack()

    async def __aenter__(self) -> PluginHarness:
        self._stack.enter_context(_clock(self.clock))
        if self._workers is not None:
            await self._workers.__aenter__()
        try:
            state, outcome = await self.runner.setup(trigger="manual")
            self.setup = outcome.execution
            if state is not InstanceState.READY:
                raise AssertionError(
                    f"setup of {self.plugin.instance_id!r} did not succeed"
                    f" ({outcome.execution.status.value}): {outcome.execution.error}"
                )
        except BaseException:
            await self._close()
            raise
        return self

    async def _close(self) -> None:
        try:
            await self.runner.close()
            if self._workers is not None:
                await self._workers.__aexit__(None, None, None)
        finally:
            self._stack.close()

    async def run(self) -> PluginRun:
        """One collection (and ``health()``) of the plugin object."""
        if self.setup is None:
            raise RuntimeError("PluginHarness.run() needs `async with PluginHarness(...)` first")
        execution, metrics, report = await self.runner.collect("manual")
        result = PluginRun(execution, metrics, report)
        self.runs.append(result)
        return result

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.runner.teardown()
        finally:
            await self._close()


class SyncHarness:
    """The sync face of a :class:`PluginHarness`, given by :func:`plugin_harness`."""

    def __init__(self, harness: PluginHarness, portal: anyio.from_thread.BlockingPortal) -> None:
        self.harness = harness
        self._portal = portal

    @property
    def plugin(self) -> Plugin:
        """The plugin object."""
        return self.harness.plugin

    @property
    def runs(self) -> list[PluginRun]:
        """Every run so far."""
        return self.harness.runs

    def run(self) -> PluginRun:
        """One collection (and ``health()``) of the plugin object."""
        return self._portal.call(self.harness.run)


@contextlib.contextmanager
def plugin_harness(
    plugin_type: type[Plugin] | str,
    /,
    *,
    instance_id: str | None = None,
    timeout: float | None = None,
    clock: Clock | None = None,
    isolation: str | None = None,
    **options: Any,
) -> Iterator[SyncHarness]:
    """A :class:`PluginHarness` for sync tests: its event loop runs in a helper thread.

    ::

        with plugin_harness(MyPlugin, clock=clock, host="x") as harness:
            harness.run()
            clock.advance(60)
            assert harness.run().value("rate") == 2.0
    """
    _refuse_running_loop("plugin_harness()", "async with PluginHarness(...)")
    harness = PluginHarness(
        plugin_type,
        instance_id=instance_id,
        timeout=timeout,
        clock=clock,
        isolation=isolation,
        **options,
    )
    with (
        anyio.from_thread.start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(harness),
    ):
        yield SyncHarness(harness, portal)
