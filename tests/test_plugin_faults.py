"""A plugin's exception of any kind is that run's error: BaseException, SystemExit,
KeyboardInterrupt, GeneratorExit or a CancelledError of its own never escape isolation.

Real time, the real scheduler, on asyncio and trio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sample_plugins import Counter, Hangs, make

from homelab_core import (
    ExecutionStatus,
    Metric,
    Plugin,
    PluginManager,
    RunResult,
    Scheduler,
    hookimpl,
)
from homelab_core.config import SchedulerSettings
from homelab_core.runner import Runner

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def raising(exc: Callable[[], BaseException], *, sync: bool) -> Plugin:
    """A plugin whose every collection raises ``exc()``, from async or sync code."""

    class Raiser(Plugin):
        name = "raiser"

        if sync:

            def collect(self) -> list[Metric]:
                raise exc()

        else:

            async def collect(self) -> list[Metric]:
                await anyio.lowlevel.checkpoint()
                raise exc()

    return make(Raiser)


class Results:
    def __init__(self) -> None:
        self.items: list[RunResult] = []

    async def __call__(self, result: RunResult) -> None:
        self.items.append(result)

    def statuses(self, instance_id: str) -> list[tuple[ExecutionStatus, str]]:
        """The statuses and errors of the instance's runs (not of ticks skipped while the
        machine was too slow to start them on time: those are the scheduler's, not the
        plugin's)."""
        return [
            (r.execution.status, r.execution.error or "")
            for r in self.items
            if r.instance_id == instance_id
            and r.execution is not None
            and r.execution.status is not ExecutionStatus.SKIPPED
        ]


FAULTS: dict[str, Callable[[], BaseException]] = {
    "BaseException": BaseException,
    "GeneratorExit": GeneratorExit,
    "SystemExit": lambda: SystemExit(3),
    "KeyboardInterrupt": KeyboardInterrupt,
}


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_any_exception_of_a_plugin_is_its_runs_error(fault: str, sync: bool) -> None:
    results = Results()
    healthy = make(Counter)
    settings = SchedulerSettings(jitter=0, setup_retry=[0.05], default_timeout=1)
    with anyio.fail_after(10):
        async with Scheduler(settings, sink=results) as scheduler:
            scheduler.add("bad", raising(FAULTS[fault], sync=sync), interval=0.05)
            scheduler.add("good", healthy, interval=0.05)
            while len(results.statuses("bad")) < 3 or healthy.runs < 5:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            assert scheduler.running
    statuses = results.statuses("bad")[:3]
    assert [s for s, _ in statuses] == [ExecutionStatus.ERROR] * 3
    assert all(text.startswith(fault) for _, text in statuses), statuses


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio's Cancelled cannot be raised
async def test_a_cancelled_error_raised_by_a_plugin_is_an_error_not_a_vanished_run() -> None:
    results = Results()
    settings = SchedulerSettings(jitter=0, setup_retry=[0.05], default_timeout=1)
    with anyio.fail_after(10):
        async with Scheduler(settings, sink=results) as scheduler:
            scheduler.add("bad", raising(asyncio.CancelledError, sync=False), interval=0.05)
            while len(results.statuses("bad")) < 3:  # noqa: ASYNC110 - polling a plain list
                await anyio.sleep(0.01)
    assert [s for s, _ in results.statuses("bad")[:3]] == [ExecutionStatus.ERROR] * 3
    assert results.statuses("bad")[0][1].startswith("CancelledError")


async def test_real_cancellation_still_stops_a_hanging_run() -> None:
    results = Results()
    settings = SchedulerSettings(jitter=0, setup_retry=[0.05], default_timeout=30)
    with anyio.fail_after(10):
        async with Scheduler(settings, sink=results) as scheduler:
            scheduler.add("hangs", make(Hangs), interval=60, timeout=30)
            await anyio.sleep(0.1)
            await scheduler.set_enabled("hangs", False)
    assert results.statuses("hangs") == [], "a cancelled run records nothing"


def test_faults_are_real_base_exceptions() -> None:
    assert not any(issubclass(type(FAULTS[f]()), Exception) for f in FAULTS)


class ExitingHooks:
    """Event hooks that raise what would end a process."""

    @hookimpl
    def hub_startup(self, hub: Any) -> None:
        raise SystemExit(3)

    @hookimpl
    async def hub_shutdown(self, hub: Any) -> None:
        raise KeyboardInterrupt


class CountingHooks:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl(trylast=True)
    def hub_startup(self, hub: Any) -> None:
        self.calls += 1


@pytest.mark.parametrize("hook", ["hub_startup", "hub_shutdown"])
async def test_a_hook_raising_system_exit_is_logged_and_the_others_still_run(
    hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(ExitingHooks(), name="exits")
    counting = CountingHooks()
    manager.register(counting, name="counts")

    await manager.notify(hook, hub=None)

    assert f"hook {hook} of plugin 'exits' failed" in caplog.text
    assert counting.calls == (1 if hook == "hub_startup" else 0)


async def test_a_sink_raising_keyboard_interrupt_leaves_the_schedule_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    healthy = make(Counter)

    async def sink(result: RunResult) -> None:
        raise KeyboardInterrupt

    settings = SchedulerSettings(jitter=0, setup_retry=[0.05], default_timeout=1)
    with anyio.fail_after(10):
        async with Scheduler(settings, sink=sink) as scheduler:
            scheduler.add("good", healthy, interval=0.05)
            while healthy.runs < 5:  # noqa: ASYNC110 - polling the plugin's counter
                await anyio.sleep(0.01)
            assert scheduler.running
    assert "handling the result of plugin instance 'good' failed" in caplog.text


class HangsInTeardown(Plugin):
    name = "hangs_in_teardown"

    async def collect(self) -> list[Metric]:
        return []

    async def teardown(self) -> None:
        await anyio.sleep_forever()


async def test_a_teardown_that_times_out_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    runner = Runner("stuck", make(HangsInTeardown), timeout=1.0, teardown_timeout=0.1)
    with anyio.fail_after(5):
        await runner.teardown()
    assert "teardown of plugin instance 'stuck' timed out after 0.1 s" in caplog.text
