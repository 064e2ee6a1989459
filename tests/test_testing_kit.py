"""The plugin author's kit, homelab_core.testing, used through its pytest plugin."""

from __future__ import annotations

import time
from importlib.metadata import entry_points
from typing import Any

import attrs
import pytest

from homelab_core import HealthReport, HealthState, InstanceSettings, Metric, Plugin, option
from homelab_core import clock as framework_clock
from homelab_core.config import SchedulerSettings
from homelab_core.errors import ConfigError
from homelab_core.testing import (
    Clock,
    HubFactory,
    PluginHarness,
    plugin_harness,
    run_plugin,
    run_plugin_async,
    wait_for_health,
    wait_for_metric,
    wait_for_runs,
)

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.anyio


@attrs.define
class RateConfig:
    step: int = option(120, description="How much the counter grows per run.")


class CounterRate(Plugin[RateConfig]):
    """A counter, and its rate per second since the previous run (the framework's clock)."""

    name = "counter_rate"
    default_interval = 0.05
    # Runs are started by hand here; a timeout as short as the interval (the default) made
    # a run on a loaded machine time out before its thread started.
    default_timeout = 5.0

    def __init__(self, config: RateConfig, *, instance_id: str) -> None:
        super().__init__(config, instance_id=instance_id)
        self.total = 0
        self.previous: tuple[int, float] | None = None

    def collect(self) -> list[Metric]:
        self.total += self.config.step
        now = self.monotonic()
        metrics = [Metric("requests_total", self.total, kind="counter", labels={"path": "/"})]
        if self.previous is not None:
            total, then = self.previous
            metrics.append(Metric("requests_rate", (self.total - total) / (now - then)))
        self.previous = (self.total, now)
        return metrics


@attrs.define
class FlakyConfig:
    fail: bool = option(False, description="Raise in collect().")
    state: str = option("ok", description="The health state to report.")


class Flaky(Plugin[FlakyConfig]):
    name = "flaky"
    default_interval = 0.05

    async def collect(self) -> list[Metric]:
        if self.config.fail:
            raise RuntimeError("the router said no")
        return [
            Metric("up", 1, labels={"port": "1"}),
            Metric("up", 0, labels={"port": "2"}),
            Metric("temperature", 41.5, unit="°C"),
        ]

    async def health(self) -> HealthReport:
        return HealthReport(HealthState(self.config.state), f"reported {self.config.state}")


# -- run_plugin ----------------------------------------------------------------------------


def test_run_plugin_returns_metrics_by_name_and_labels() -> None:
    run = run_plugin(Flaky)
    run.assert_ok()
    assert run.status.value == "ok" and run.error is None
    assert run.value("up", port="2") == 0
    assert run.value("temperature") == 41.5
    assert run.has("up", port="1") and not run.has("up", port="3")
    assert run.health is not None and run.health.state is HealthState.OK
    assert run.execution.instance_id == "flaky" and run.execution.metric_count == 3


async def test_run_plugin_async_takes_options_and_an_instance_id() -> None:
    run = await run_plugin_async(Flaky, instance_id="router", state="degraded")
    assert run.execution.instance_id == "router"
    assert run.health == HealthReport(HealthState.DEGRADED, "reported degraded")


def test_a_missing_metric_names_the_metrics_that_were_there() -> None:
    run = run_plugin(Flaky)
    with pytest.raises(AssertionError) as caught:
        run.metric("up", port="3")
    message = str(caught.value)
    assert "no metric 'up' {port='3'} in the run of 'flaky'" in message
    assert "it returned 3 metric(s):\n  - 'up' {port='1'} = 1.0\n" in message
    assert "  - 'temperature' = 41.5 °C" in message


def test_several_matches_ask_for_more_labels() -> None:
    with pytest.raises(AssertionError, match=r"2 metrics match 'up'; give more labels"):
        run_plugin(Flaky).metric("up")


def test_assert_ok_and_a_failed_lookup_give_the_error() -> None:
    run = run_plugin(Flaky, fail=True)
    assert run.status.value == "error" and run.metrics == []
    with pytest.raises(AssertionError) as caught:
        run.assert_ok()
    assert str(caught.value) == "run of 'flaky' ended error: RuntimeError: the router said no"
    with pytest.raises(AssertionError, match="the run ended error: RuntimeError: the router said"):
        run.value("up")


def test_options_are_validated_as_the_hub_does() -> None:
    with pytest.raises(ConfigError) as caught:
        run_plugin(Flaky, fail="sometimes")
    assert "fail" in str(caught.value)
    with pytest.raises(ConfigError, match="unknown"):
        run_plugin(Flaky, colour="red")


def test_a_type_name_is_looked_up_among_installed_types() -> None:
    with pytest.raises(ConfigError, match=r"unknown plugin type 'no_such_type'; installed types"):
        run_plugin("no_such_type")


def test_a_class_that_is_no_plugin_type_is_refused() -> None:
    with pytest.raises(TypeError, match="does not implement collect"):
        run_plugin(type("Empty", (Plugin,), {"name": "empty"}))


async def test_the_sync_form_refuses_to_run_inside_an_event_loop() -> None:
    with pytest.raises(RuntimeError, match=r"use await run_plugin_async\(\.\.\.\)"):
        run_plugin(Flaky)


# -- the clock -----------------------------------------------------------------------------


def test_two_runs_60_s_apart_give_the_rate_without_sleeping() -> None:
    clock = Clock()
    with plugin_harness(CounterRate, clock=clock, step=120) as harness:
        first = harness.run()
        assert first.execution.status == "ok" and not first.has("requests_rate")
        clock.advance(60)
        second = harness.run()
    assert second.value("requests_total", path="/") == 240
    assert second.value("requests_rate") == 2.0


async def test_the_async_harness_sets_up_once_and_runs_many_times(homelab_clock: Clock) -> None:
    async with PluginHarness(CounterRate, step=30) as harness:
        await harness.run()
        homelab_clock.advance(10)
        second = await harness.run()
        homelab_clock.advance(20)
        third = await harness.run()
    assert (second.value("requests_rate"), third.value("requests_rate")) == (3.0, 1.5)
    assert len(harness.runs) == 3


def test_the_clock_stamps_metrics_and_is_what_plugins_see(homelab_clock: Clock) -> None:
    homelab_clock.set(1_000_000.0)
    run = run_plugin(Flaky)
    assert {m.timestamp for m in run.metrics} == {1_000_000.0}
    plugin = CounterRate(RateConfig(), instance_id="x")
    homelab_clock.advance(5)
    assert (plugin.now(), plugin.monotonic()) == (1_000_005.0, 5.0)


def test_the_clock_fixture_is_restored_after_the_test() -> None:
    assert framework_clock.current() is None
    assert abs(framework_clock.wall() - time.time()) < 5


def test_a_clock_given_to_one_run_is_removed_after_it() -> None:
    clock = Clock(0.0)
    assert {m.timestamp for m in run_plugin(Flaky, clock=clock).metrics} == {0.0}
    assert framework_clock.current() is None


def test_the_clock_refuses_to_go_back() -> None:
    clock = Clock(monotonic=10)
    with pytest.raises(ValueError, match="non-negative"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="monotonic time cannot go back: it is 10, asked for 3"):
        clock.set(monotonic=3)
    clock.set(5.0)  # the wall clock may jump back
    assert clock.now() == 5.0


# -- a real hub ----------------------------------------------------------------------------


async def test_a_hub_runs_the_given_classes_and_the_waits_see_it(homelab_hub: HubFactory) -> None:
    instances: dict[str, Any] = {
        "good": {"type": "flaky"},
        "bad": {"type": "flaky", "fail": True},
        "rate": {"type": "counter_rate", "step": 10},
    }
    async with homelab_hub(Flaky, CounterRate, instances=instances) as hub:
        stats = await wait_for_runs(hub, "good", 2)
        assert stats.runs >= 2 and stats.ok == stats.runs
        metric = await wait_for_metric(hub, "good", "up", port="2")
        assert metric.value == 0
        await wait_for_health(hub, "bad", "failing")
        assert (await wait_for_metric(hub, "rate", "requests_total", path="/")).value >= 10
    assert hub.settings.scheduler.jitter == 0.0
    assert hub.settings.database.url.startswith("sqlite://")


async def test_wait_failures_say_what_was_seen_instead(homelab_hub: HubFactory) -> None:
    async with homelab_hub(Flaky, instances={"bad": {"type": "flaky", "fail": True}}) as hub:
        with pytest.raises(AssertionError) as runs:
            await wait_for_runs(hub, "bad", 10_000, timeout=0.2)
        await wait_for_health(hub, "bad", HealthState.FAILING)
        with pytest.raises(AssertionError) as health:
            await wait_for_health(hub, "bad", "ok", timeout=0.1)
        with pytest.raises(AssertionError) as metric:
            await wait_for_metric(hub, "bad", "up", timeout=0.1, port="1")
    assert "instance 'bad' ran " in str(runs.value)
    assert "expected 10000" in str(runs.value)
    assert "the last ended error: RuntimeError: the router said no" in str(runs.value)
    assert "health of 'bad' did not become ok in 0.1 s; it is failing" in str(health.value)
    assert "states seen: failing" in str(health.value)
    assert (
        "no metric 'up' {port='1'} from 'bad' in 0.1 s; its latest values were none;"
        " its last run: RuntimeError: the router said no"
    ) in str(metric.value)


async def test_without_instances_each_class_gets_one_by_its_name(homelab_hub: HubFactory) -> None:
    async with homelab_hub(Flaky, scheduler={"concurrency": 3}) as hub:
        assert [info.id for info in hub.instances()] == ["flaky"]
        assert hub.settings.scheduler.concurrency == 3
        assert hub.settings.scheduler.jitter == 0.0
        await wait_for_metric(hub, "flaky", "temperature")


async def test_instances_and_sections_may_be_settings_objects(homelab_hub: HubFactory) -> None:
    instances = [InstanceSettings(id="slow", type="counter_rate", options={"step": 7})]
    scheduler = SchedulerSettings(jitter=0.0, concurrency=2)
    async with homelab_hub(CounterRate, instances=instances, scheduler=scheduler) as hub:
        assert hub.settings.scheduler is scheduler
        assert (await wait_for_metric(hub, "slow", "requests_total")).value % 7 == 0


# -- the pytest plugin ---------------------------------------------------------------------

KIT_TEST = """
def test_fixtures(homelab_clock, homelab_hub):
    homelab_clock.advance(1)
"""


def test_the_pytest_plugin_is_registered_by_its_entry_point(pytester: pytest.Pytester) -> None:
    declared = [ep.value for ep in entry_points(group="pytest11", name="homelab")]
    assert declared == ["homelab_core.testing"], (
        f"the pytest11 entry point 'homelab' is {declared or 'not installed'};"
        " after changing pyproject.toml, run `pip install -e .` again"
    )
    pytester.makepyfile(KIT_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_pytest_plugin_can_be_switched_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(KIT_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:homelab")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'homelab_clock' not found*"])
