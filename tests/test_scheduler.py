"""The scheduler, with real time, on asyncio and trio."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sample_plugins import (
    Blocks,
    BlocksThenTearsDown,
    Counter,
    FailsSetup,
    Garbage,
    Hangs,
    Judges,
    Raises,
    SlowSetup,
    make,
)

from homelab_core import ExecutionStatus, HealthState, HomelabError, RunResult, Scheduler
from homelab_core.config import SchedulerSettings
from homelab_core.runner import STAMP_TOLERANCE, Runner, run_once

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Recorder:
    """A sink that keeps every result."""

    def __init__(self) -> None:
        self.results: list[RunResult] = []

    async def __call__(self, result: RunResult) -> None:
        self.results.append(result)

    def executions(self, instance_id: str, status: ExecutionStatus | None = None) -> list[Any]:
        return [
            r.execution
            for r in self.results
            if r.instance_id == instance_id
            and r.execution is not None
            and (status is None or r.execution.status is status)
        ]


def settings(**overrides: Any) -> SchedulerSettings:
    base: dict[str, Any] = {"jitter": 0.0, "setup_retry": [0.05], "default_timeout": 1.0}
    base.update(overrides)
    return SchedulerSettings(**base)


async def until(condition: Callable[[], object], limit: float = 3.0) -> None:
    """Wait, bounded, until ``condition()`` holds (the plugins' counters are plain ints)."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but an attribute
            await anyio.sleep(0.01)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    yield Recorder()


async def test_fixed_rate_runs_do_not_drift(recorder: Recorder) -> None:
    plugin = make(Counter, delay=0.03)
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("c", plugin, interval=0.1)
        await anyio.sleep(1.02)
    starts = plugin.started
    assert 9 <= len(starts) <= 12
    first = starts[0]
    # Tick n is at first + n * interval: the 30 ms each run takes never accumulates (it
    # would be 0.3 s by the last run), and no start strays by a whole interval.
    errors = [started - (first + n * 0.1) for n, started in enumerate(starts)]
    assert abs(errors[-1]) < 0.05, errors
    assert max(abs(e) for e in errors) < 0.1, errors


async def test_start_jitter_spreads_first_runs(recorder: Recorder) -> None:
    plugins = [make(Counter) for _ in range(20)]
    async with Scheduler(settings(jitter=3.0), sink=recorder) as scheduler:
        started = anyio.current_time()
        for i, plugin in enumerate(plugins):
            scheduler.add(f"c{i}", plugin, interval=10)
        await anyio.sleep(3.5)
    firsts = [p.started[0] - started for p in plugins]
    # Jitter is at most 3 s; allow the scheduler some lateness on a busy machine. The spread
    # is wide enough that a loop held up for a moment (CI, 2 cores) cannot bunch them all.
    assert all(0 <= f < 3.0 + 0.5 for f in firsts)
    assert max(firsts) - min(firsts) > 1.0


async def test_late_tick_is_skipped_and_runs_never_overlap(recorder: Recorder) -> None:
    plugin = make(Counter, delay=0.25)
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("slow", plugin, interval=0.1, timeout=1.0)
        await anyio.sleep(0.9)
        stats = scheduler.stats("slow")
    assert plugin.max_active == 1
    skipped = recorder.executions("slow", ExecutionStatus.SKIPPED)
    assert len(skipped) >= 3
    assert stats.skipped == len(skipped)
    assert all("still in progress" in (e.error or "") for e in skipped)


async def test_hanging_collect_times_out(recorder: Recorder) -> None:
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("hang", make(Hangs), interval=0.5, timeout=0.1)
        await anyio.sleep(0.3)
    [execution] = recorder.executions("hang")
    assert execution.status is ExecutionStatus.TIMEOUT
    assert execution.error == "timed out after 0.1 s"
    assert 0.09 <= execution.duration < 0.3


async def test_raising_collect_is_an_error_with_its_message(recorder: Recorder) -> None:
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("boom", make(Raises), interval=1)
        await anyio.sleep(0.1)
    [execution] = recorder.executions("boom")
    assert execution.status is ExecutionStatus.ERROR
    assert execution.error == "RuntimeError: the sensor is on fire"


async def test_blocking_sync_collect_times_out_and_stays_busy_until_its_thread_ends(
    recorder: Recorder,
) -> None:
    Blocks.release.clear()
    healthy = make(Counter)
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("blocked", make(Blocks), interval=0.1, timeout=0.15)
        scheduler.add("healthy", healthy, interval=0.1)
        await anyio.sleep(0.6)
        Blocks.release.set()
        # Once the abandoned thread returns, a later tick runs (bounded: a loaded machine
        # may take a few ticks to see the thread end).
        with anyio.fail_after(5):
            while recorder.executions("blocked")[-1].status is not ExecutionStatus.OK:  # noqa: ASYNC110
                await anyio.sleep(0.05)
    statuses = [e.status for e in recorder.executions("blocked")]
    ran = [s for s in statuses if s is not ExecutionStatus.SKIPPED]
    assert ran[0] is ExecutionStatus.TIMEOUT
    # After the timeout the thread still blocks: later ticks are skipped, not stacked.
    assert statuses[statuses.index(ExecutionStatus.TIMEOUT) + 1] is ExecutionStatus.SKIPPED
    # Once the abandoned thread returned, the instance ran again normally.
    assert statuses[-1] is ExecutionStatus.OK
    assert len(healthy.started) >= 7
    lags = sorted(e.lag for e in recorder.executions("healthy"))
    assert lags[len(lags) // 2] < 0.02
    assert lags[-1] < 0.1


async def test_failing_setup_is_retried_then_the_instance_runs(recorder: Recorder) -> None:
    plugin = make(FailsSetup)
    async with Scheduler(settings(setup_retry=[0.05, 0.1]), sink=recorder) as scheduler:
        scheduler.add("late", plugin, interval=0.1)
        await anyio.sleep(0.05)
        assert scheduler.health("late").state is HealthState.FAILING
        assert "setup failed: ConnectionError: not ready" in scheduler.health("late").message
        await anyio.sleep(0.4)
        assert scheduler.health("late").state is HealthState.OK
    setups = [e for e in recorder.executions("late") if e.trigger == "setup"]
    assert [e.status for e in setups] == [ExecutionStatus.ERROR, ExecutionStatus.ERROR]
    assert plugin.attempts == 3
    assert recorder.executions("late", ExecutionStatus.OK)


async def test_setup_retry_waits_grow_and_the_last_repeats(recorder: Recorder) -> None:
    FailsSetup.failures = 4
    try:
        plugin = make(FailsSetup)
        async with Scheduler(settings(setup_retry=[0.05, 0.1, 0.2]), sink=recorder) as scheduler:
            scheduler.add("late", plugin, interval=5)
            await anyio.sleep(0.75)
    finally:
        FailsSetup.failures = 2
    setups = [e for e in recorder.executions("late") if e.trigger == "setup"]
    gaps = [b.started_at - a.started_at for a, b in itertools.pairwise(setups)]
    assert len(setups) == 4
    for gap, expected in zip(gaps, [0.05, 0.1, 0.2], strict=False):
        assert expected <= gap < expected + 0.08


async def test_consecutive_failures_back_off_exponentially(recorder: Recorder) -> None:
    plugin = make(Raises)
    async with Scheduler(settings(max_backoff=10), sink=recorder) as scheduler:
        scheduler.add("boom", plugin, interval=0.05)
        await anyio.sleep(0.85)
    gaps = [b - a for a, b in zip(plugin.started, plugin.started[1:], strict=False)]
    # Waits of 1, 2, 4, 8 intervals.
    assert len(gaps) == 4
    for gap, expected in zip(gaps, [0.05, 0.1, 0.2, 0.4], strict=True):
        assert expected - 0.01 <= gap < expected + 0.08


async def test_concurrency_limit_caps_simultaneous_runs(recorder: Recorder) -> None:
    plugins = [make(Counter, delay=0.1) for _ in range(6)]
    active = 0
    peak = 0

    async def track(result: RunResult) -> None:
        await recorder(result)

    async with Scheduler(settings(concurrency=2), sink=track) as scheduler:
        for i, plugin in enumerate(plugins):
            scheduler.add(f"c{i}", plugin, interval=5)
        for _ in range(40):
            active = sum(p.active for p in plugins)
            peak = max(peak, active)
            await anyio.sleep(0.01)
    assert peak == 2
    assert all(p.runs == 1 for p in plugins)
    # Waiting for the limiter counts as start lag.
    assert max(e.lag for r in recorder.results if (e := r.execution)) >= 0.15


async def test_disable_stops_at_once_and_tears_down(recorder: Recorder) -> None:
    plugin = make(Counter)
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("c", plugin, interval=0.05)
        await until(lambda: plugin.runs >= 2)
        health = await scheduler.set_enabled("c", False)
        assert health.state is HealthState.DISABLED
        assert plugin.torn_down
        runs = plugin.runs
        await anyio.sleep(0.2)
        assert plugin.runs == runs
        plugin.torn_down = False
        await scheduler.set_enabled("c", True)
        await until(lambda: plugin.runs > runs)
    assert plugin.torn_down
    changes = [
        (r.previous_health.state, r.health.state) for r in recorder.results if r.execution is None
    ]
    assert (HealthState.OK, HealthState.DISABLED) in changes
    assert (HealthState.DISABLED, HealthState.UNKNOWN) in changes


async def test_run_now_runs_at_once_and_keeps_the_schedule(recorder: Recorder) -> None:
    plugin = make(Counter)
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("c", plugin, interval=10)
        await until(lambda: plugin.runs == 1)
        execution = await scheduler.run_now("c")
        assert execution.status is ExecutionStatus.OK
        assert execution.trigger == "manual"
        assert execution.metric_count == 1
        assert plugin.runs == 2


async def test_run_now_of_a_disabled_instance_is_refused(recorder: Recorder) -> None:
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("c", make(Counter), interval=10, enabled=False)
        with pytest.raises(HomelabError, match="'c' is disabled"):
            await scheduler.run_now("c")


async def test_shutdown_tears_down_every_instance(recorder: Recorder) -> None:
    plugins = [make(Counter) for _ in range(3)]
    async with Scheduler(settings(), sink=recorder) as scheduler:
        for i, plugin in enumerate(plugins):
            scheduler.add(f"c{i}", plugin, interval=0.05)
        await anyio.sleep(0.1)
    assert all(p.torn_down for p in plugins)
    assert not scheduler.running


async def test_failing_is_logged_once_and_recovery_once(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = make(Raises)
    caplog.set_level(logging.INFO, logger="homelab.scheduler")
    async with Scheduler(settings(failure_threshold=2, max_backoff=0.05), sink=recorder) as s:
        s.add("flaky", plugin, interval=0.05)
        await anyio.sleep(0.4)
        assert s.health("flaky").state is HealthState.FAILING
        plugin.collect = make(Counter).collect  # type: ignore[method-assign]
        await anyio.sleep(0.15)
        assert s.health("flaky").state is HealthState.OK
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is failing" in m for m in messages) == 1
    assert sum("recovered" in m for m in messages) == 1
    states = [r.health.state for r in recorder.results if r.health_changed]
    assert states == [HealthState.DEGRADED, HealthState.FAILING, HealthState.OK]


async def test_collect_returning_garbage_is_an_error(recorder: Recorder) -> None:
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("g", make(Garbage), interval=1)
        await anyio.sleep(0.1)
    [execution] = recorder.executions("g")
    assert execution.status is ExecutionStatus.ERROR
    assert "must return an iterable of Metric, got str" in (execution.error or "")


async def test_plugin_health_report_sets_the_state(recorder: Recorder) -> None:
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("j", make(Judges), interval=1)
        await anyio.sleep(0.1)
        health = scheduler.health("j")
    assert health.state is HealthState.DEGRADED
    assert health.message == "target answers slowly"


async def test_a_failing_sink_does_not_stop_the_schedule() -> None:
    calls = 0

    async def broken(result: RunResult) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("sink broke")

    plugin = make(Counter)
    async with Scheduler(settings(), sink=broken) as scheduler:
        scheduler.add("c", plugin, interval=0.05)
        await anyio.sleep(0.2)
    assert plugin.runs >= 3
    assert calls == plugin.runs


async def test_duplicate_instance_ids_are_refused() -> None:
    async with Scheduler(settings()) as scheduler:
        scheduler.add("c", make(Counter), interval=1)
        with pytest.raises(HomelabError, match="already scheduled"):
            scheduler.add("c", make(Counter), interval=1)


async def test_run_once_sets_up_collects_and_tears_down() -> None:
    plugin = make(Counter, series=3)
    execution, metrics, report = await run_once(plugin, instance_id="c", timeout=1)
    assert execution.status is ExecutionStatus.OK
    assert len(metrics) == 3
    assert all(m.timestamp is not None for m in metrics)
    assert report is None
    assert plugin.torn_down


async def test_run_once_reports_a_failed_setup() -> None:
    execution, metrics, _ = await run_once(make(FailsSetup), instance_id="f", timeout=1)
    assert execution.status is ExecutionStatus.ERROR
    assert execution.error == "setup failed: ConnectionError: not ready (attempt 1)"
    assert metrics == []


async def test_run_now_right_after_start_waits_for_the_first_setup(recorder: Recorder) -> None:
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("c", make(Counter), interval=10)
        execution = await scheduler.run_now("c")
    assert execution.status is ExecutionStatus.OK


async def test_run_now_while_setup_keeps_failing_gives_the_setup_error(
    recorder: Recorder,
) -> None:
    async with Scheduler(settings(setup_retry=[10]), sink=recorder) as scheduler:
        scheduler.add("late", make(FailsSetup), interval=10)
        with pytest.raises(HomelabError, match=r"not set up yet .*not ready \(attempt 1\)"):
            await scheduler.run_now("late")


async def test_run_now_during_a_scheduled_run_waits_for_it_then_runs(
    recorder: Recorder,
) -> None:
    plugin = make(Counter, delay=0.5)
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("slow", plugin, interval=10)
        await until(lambda: plugin.active)  # the scheduled run has started
        execution = await scheduler.run_now("slow")
    assert execution.status is ExecutionStatus.OK
    assert plugin.runs == 2
    assert plugin.max_active == 1


async def test_a_timed_out_sync_setup_is_not_retried_while_its_thread_runs(
    recorder: Recorder,
) -> None:
    plugin = make(SlowSetup)
    async with Scheduler(settings(setup_retry=[0.02]), sink=recorder) as scheduler:
        scheduler.add("slow", plugin, interval=0.1, timeout=0.1)
        await anyio.sleep(0.6)
        assert scheduler.health("slow").state is HealthState.OK
    setups = [e for e in recorder.executions("slow") if e.trigger == "setup"]
    assert [e.status for e in setups] == [ExecutionStatus.TIMEOUT]
    assert plugin.calls == 2
    assert plugin.max_active == 1


async def test_teardown_waits_for_a_blocked_collect_thread(recorder: Recorder) -> None:

    BlocksThenTearsDown.torn_down_while_blocked = None
    Blocks.release.clear()
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("b", make(BlocksThenTearsDown), interval=0.05, timeout=0.05)
        await anyio.sleep(0.1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.set_enabled, "b", False)
            await anyio.sleep(0.1)
            assert BlocksThenTearsDown.torn_down_while_blocked is None
            Blocks.release.set()
    assert BlocksThenTearsDown.torn_down_while_blocked is False


async def test_reenabling_never_overlaps_a_setup_still_running_in_its_thread(
    recorder: Recorder,
) -> None:
    plugin = make(SlowSetup)
    async with Scheduler(settings(setup_retry=[5]), sink=recorder) as scheduler:
        scheduler.add("slow", plugin, interval=0.1, timeout=0.1)
        await anyio.sleep(0.15)  # the first setup timed out; its thread runs on
        await scheduler.set_enabled("slow", False)
        await scheduler.set_enabled("slow", True)
        # The second setup waits for the first one's thread (0.3 s), then succeeds.
        await until(lambda: scheduler.health("slow").state is HealthState.OK)
    assert plugin.calls == 2
    assert plugin.max_active == 1


async def test_run_once_tears_down_only_after_a_timed_out_thread_returns() -> None:

    BlocksThenTearsDown.torn_down_while_blocked = None
    Blocks.release.clear()
    async with anyio.create_task_group() as tg:

        async def release_later() -> None:
            await anyio.sleep(0.3)
            Blocks.release.set()

        tg.start_soon(release_later)
        execution, _, _ = await run_once(make(BlocksThenTearsDown), instance_id="b", timeout=0.1)
    assert execution.status is ExecutionStatus.TIMEOUT
    assert BlocksThenTearsDown.torn_down_while_blocked is False


async def test_stopping_before_a_worker_thread_starts_leaves_the_instance_idle(
    recorder: Recorder,
) -> None:
    for _ in range(20):
        with anyio.fail_after(5):  # a stuck "busy" flag would wait out the 10 s teardown
            async with Scheduler(settings(), sink=recorder) as scheduler:
                scheduler.add("j", make(Judges), interval=1)
                await anyio.lowlevel.checkpoint()
        assert not scheduler.busy("j")


# -- held by this node (a cluster) ------------------------------------------------------------


async def test_an_instance_not_held_does_not_run_until_it_is(recorder: Recorder) -> None:
    plugin = make(Counter)
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("c", plugin, interval=0.05, held=False)
        await anyio.sleep(0.2)
        assert plugin.runs == 0
        with pytest.raises(HomelabError, match="runs on another node"):
            await scheduler.run_now("c")
        await scheduler.set_held("c", True)
        await until(lambda: plugin.runs >= 2)
        await scheduler.set_held("c", False)
        assert plugin.torn_down
        runs = plugin.runs
        await anyio.sleep(0.2)
        assert plugin.runs == runs
        assert scheduler.is_enabled("c"), "not holding it is not disabling it"
        # Enabled or disabled while not held, it still does not run here.
        await scheduler.set_enabled("c", False)
        await scheduler.set_enabled("c", True)
        await anyio.sleep(0.2)
        assert plugin.runs == runs


async def test_a_run_the_gate_refuses_is_skipped(recorder: Recorder) -> None:
    plugin = make(Counter)
    allowed = {"c": True}
    async with Scheduler(settings(), sink=recorder, may_run=lambda i: allowed[i]) as scheduler:
        scheduler.add("c", plugin, interval=0.05)
        await until(lambda: plugin.runs >= 1)
        allowed["c"] = False
        runs = plugin.runs
        await until(lambda: recorder.executions("c", ExecutionStatus.SKIPPED))
        assert plugin.runs <= runs + 1  # at most the run already under way
        skipped = recorder.executions("c", ExecutionStatus.SKIPPED)[0]
        assert "does not hold" in (skipped.error or "")


class SlowTeardown(Counter):
    """A counter whose teardown takes a while (it closes a connection, say)."""

    name = "slow_teardown"
    teardowns = 0

    async def teardown(self) -> None:
        await anyio.sleep(0.3)
        self.teardowns += 1


async def test_holding_again_while_a_stop_is_torn_down_waits_for_it(recorder: Recorder) -> None:
    """A stop cut short by its caller's deadline, then a start: never two tasks at once
    (the start found the instance still READY and tried to set it up again)."""
    plugin = make(SlowTeardown)
    async with Scheduler(settings(), sink=recorder) as scheduler:
        scheduler.add("c", plugin, interval=0.05)
        await until(lambda: plugin.runs >= 1)
        with anyio.move_on_after(0.05):  # the caller gives up; the stop goes on
            await scheduler.set_held("c", False)
        await scheduler.set_held("c", True)
        await until(lambda: plugin.runs >= 3)
        assert scheduler.running, scheduler.error
        assert plugin.teardowns == 1


@pytest.mark.parametrize(("late", "snapped"), [(0.0005, True), (0.05, False)])
async def test_a_run_that_starts_within_the_tolerance_is_stamped_with_its_tick(
    late: float, snapped: bool
) -> None:
    """Timestamps that step by exactly the interval cost almost nothing in the store."""
    runner = Runner("c", make(Counter, series=2), timeout=1)
    scheduled = anyio.current_time() - late
    before = time.time()
    _, metrics, _ = await runner.collect("schedule", scheduled=scheduled)
    after = time.time()
    stamps = {m.timestamp for m in metrics}
    assert len(stamps) == 1
    [stamp] = stamps
    assert late <= STAMP_TOLERANCE if snapped else late > STAMP_TOLERANCE
    if snapped:  # the wall-clock time of the tick: about ``late`` before the start
        assert before - late - 0.001 <= stamp <= after - late
    else:
        assert before <= stamp <= after
