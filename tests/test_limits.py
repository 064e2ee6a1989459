"""Per-instance limits on samples per run and on series (issue 10, item 7): a plugin that
invents new label values every run stops growing at its instance's limit, with the drop
counted and its health degraded, while other instances are not touched."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from homelab_core import (
    ConfigError,
    Execution,
    ExecutionStatus,
    HealthReport,
    HealthState,
    Hub,
    InstanceSettings,
    Metric,
    Plugin,
    PluginManager,
    hookimpl,
)
from homelab_core.config import SchedulerSettings, load_settings
from homelab_core.limits import Limiter, Limits
from homelab_core.web.prometheus import exposition

# -- the limiter alone ---------------------------------------------------------------------


def ran(count: int) -> Execution:
    return Execution(instance_id="x", started_at=1.0, duration=0.0, status="ok", metric_count=count)


def series(*values: str) -> list[Metric]:
    return [Metric("m", 1.0, labels={"v": v}) for v in values]


def test_new_series_beyond_the_limit_are_dropped_and_known_ones_keep_flowing() -> None:
    limiter = Limiter("x", Limits(max_samples_per_run=100, max_series=3))
    first = limiter.check(ran(2), series("a", "b"), None)
    assert [m.labels["v"] for m in first.metrics] == ["a", "b"]
    assert first.report is None
    second = limiter.check(ran(4), series("a", "b", "c", "d"), None)
    assert [m.labels["v"] for m in second.metrics] == ["a", "b", "c"]
    assert second.execution.metric_count == 3
    assert second.report is not None
    assert second.report.state is HealthState.DEGRADED
    assert "max_series (3) reached" in second.report.message
    assert "1 sample(s) of new series dropped in this run (1 since start)" in (
        second.report.message
    )
    third = limiter.check(ran(4), series("d", "e", "a", "b"), None)
    assert [m.labels["v"] for m in third.metrics] == ["a", "b"]
    assert "2 sample(s) of new series dropped in this run (3 since start)" in (
        third.report.message if third.report else ""
    )
    assert (limiter.stats.series, limiter.stats.samples_over_series_limit) == (3, 3)
    back = limiter.check(ran(3), series("c", "a", "b"), None)
    assert (len(back.metrics), back.report) == (3, None), "within the limit again: healthy"


def test_a_run_over_max_samples_per_run_is_refused_whole() -> None:
    limiter = Limiter("x", Limits(max_samples_per_run=3, max_series=100))
    checked = limiter.check(ran(4), series("a", "b", "c", "d"), HealthReport("ok"))
    assert checked.metrics == []
    assert checked.execution.status is ExecutionStatus.ERROR
    assert checked.execution.metric_count == 0
    assert checked.execution.error == (
        "collect() returned 4 samples, more than max_samples_per_run (3):"
        " the run is refused and its 4 samples are dropped"
    )
    assert limiter.stats.samples_over_run_limit == 4
    assert limiter.stats.series == 0, "a refused run adds no series"
    fits = limiter.check(ran(3), series("a", "b", "c"), None)
    assert (fits.execution.status, len(fits.metrics)) == (ExecutionStatus.OK, 3)


def test_zero_means_no_limit() -> None:
    limiter = Limiter("x", Limits(max_samples_per_run=0, max_series=0))
    values = [str(n) for n in range(5_000)]
    checked = limiter.check(ran(5_000), series(*values), None)
    assert (len(checked.metrics), checked.report, limiter.stats.series) == (5_000, None, 0)


def test_failed_runs_pass_unchanged() -> None:
    limiter = Limiter("x", Limits(max_samples_per_run=1, max_series=1))
    failed = Execution(instance_id="x", started_at=1.0, duration=0.0, status="error", error="e")
    assert limiter.check(failed, [], None).execution is failed


def test_a_worse_report_of_the_plugin_is_kept_and_both_messages_shown() -> None:
    limiter = Limiter("x", Limits(max_samples_per_run=100, max_series=1))
    checked = limiter.check(ran(2), series("a", "b"), HealthReport("failing", "disk is dying"))
    assert checked.report is not None
    assert checked.report.state is HealthState.FAILING
    assert checked.report.message.startswith("disk is dying; max_series (1) reached")
    mild = limiter.check(ran(2), series("a", "b"), HealthReport("ok", "fine"))
    assert mild.report is not None and mild.report.state is HealthState.DEGRADED


def test_hitting_a_limit_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    limiter = Limiter("x", Limits(max_samples_per_run=5, max_series=2))
    with caplog.at_level(logging.INFO, logger="homelab.limits"):
        for n in range(5):  # a new series every run, all dropped
            limiter.check(ran(3), series("a", "b", f"new{n}"), None)
        limiter.check(ran(2), series("a", "b"), None)
        for _ in range(3):
            limiter.check(ran(6), series(*"abcdef"), None)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0][0] == "WARNING" and "plugin instance 'x': max_series (2) reached" in lines[0][1]
    assert lines[1] == ("INFO", "plugin instance 'x' is back within its limits")
    assert lines[2][0] == "WARNING" and "more than max_samples_per_run (5)" in lines[2][1]


# -- the settings --------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "homelab.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_limits_are_instance_keys_with_scheduler_wide_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[scheduler]\nmax_series = 500\n\n"
        "[plugins.nas]\nmax_samples_per_run = 100\n\n[plugins.box]\nmax_series = 0\n",
    )
    settings = load_settings(path, environ={"HOMELAB_PLUGINS__WEB__MAX_SERIES": "7"})
    nas, box, web = settings.plugins["nas"], settings.plugins["box"], settings.plugins["web"]
    assert (nas.max_samples_per_run, nas.max_series, nas.options) == (100, None, {})
    assert (box.max_samples_per_run, box.max_series) == (None, 0)
    assert web.max_series == 7
    assert settings.scheduler.max_series == 500
    defaults = SchedulerSettings()
    assert (defaults.max_samples_per_run, defaults.max_series) == (20_000, 50_000)
    assert Limits.of(nas, settings.scheduler) == Limits(100, 500)
    assert Limits.of(box, settings.scheduler) == Limits(20_000, 0)


@pytest.mark.parametrize("value", ["-1", "2.5", "true", '"100"'])
def test_a_limit_that_is_not_a_count_is_refused(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"[plugins.nas]\nmax_series = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert (info.value.table, info.value.field) == ("plugins.nas", "max_series")
    assert "expected a whole number, 0 or more (0: no limit)" in info.value.reason


def test_a_limit_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    env = {"HOMELAB_PLUGINS__WEB__MAX_SAMPLES_PER_RUN": "-5"}
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ""), environ=env)
    assert str(info.value).endswith("got -5 (set by $HOMELAB_PLUGINS__WEB__MAX_SAMPLES_PER_RUN)")


# -- in a hub, beside a normal instance ----------------------------------------------------


class FreshLabels(Plugin):
    """Invents ``PER_RUN`` new label values every run, beside one series that never changes."""

    name = "fresh_labels"
    PER_RUN = 10

    def __init__(self, config: Any, *, instance_id: str) -> None:
        super().__init__(config, instance_id=instance_id)
        self.runs = 0

    async def collect(self) -> list[Metric]:
        self.runs += 1
        first = self.runs * self.PER_RUN
        return [
            Metric("steady", float(self.runs)),
            *(Metric("request", 1.0, labels={"id": str(n)}) for n in range(first, first + 10)),
        ]


class LimitPlugins:
    @hookimpl
    def register_plugins(self, register: Callable[[type[Plugin]], None]) -> None:
        register(FreshLabels)


def series_counts(settings: Any) -> dict[str, int]:
    path = settings.database.url.removeprefix("sqlite://")
    with closing(sqlite3.connect(path)) as conn, conn:
        query = "SELECT instance_id, COUNT(*) FROM homelab_series GROUP BY instance_id"
        return dict(conn.execute(query).fetchall())


def stored(settings: Any, instance_id: str, name: str) -> int:
    """The samples stored of the instance's series of that name."""
    path = settings.database.url.removeprefix("sqlite://")
    with closing(sqlite3.connect(path)) as conn, conn:
        query = (
            "SELECT COUNT(*) FROM homelab_head JOIN homelab_series"
            " ON homelab_head.series_id = homelab_series.id"
            " WHERE homelab_series.instance_id = ? AND homelab_series.name = ?"
        )
        return int(conn.execute(query, (instance_id, name)).fetchone()[0])


@pytest.mark.anyio
async def test_an_instance_inventing_label_values_stops_at_its_series_limit(
    manager: PluginManager, make_settings: Any
) -> None:
    manager.register(LimitPlugins(), name="limit_plugins")
    settings = make_settings(
        InstanceSettings(id="fresh", type="fresh_labels", interval=0.05, max_series=31),
        InstanceSettings(
            id="good", type="counter", interval=0.05, options={"series": 3}, max_series=31
        ),
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        with anyio.fail_after(10):
            while hub.stats("fresh").ok < 8 or hub.stats("good").ok < 8:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        await hub.flush()
        fresh, good = hub.stats("fresh"), hub.stats("good")
        health, good_health = hub.health("fresh"), hub.health("good")
        counters = hub.counters()
        text = await exposition(hub)
    assert series_counts(settings) == {"fresh": 31, "good": 3}
    assert fresh.series == 31
    # Runs of 11 samples, 10 of them new series: the first three make 31 series; from the
    # fourth on, only the steady series is kept and 10 samples a run are dropped.
    assert fresh.samples_over_series_limit == 10 * (fresh.ok - 3)
    assert fresh.errors == 0, "the runs themselves succeeded"
    assert stored(settings, "fresh", "steady") == fresh.ok, "the known series kept flowing"
    assert stored(settings, "fresh", "request") == 30
    assert health.state is HealthState.DEGRADED
    assert "max_series (31) reached" in health.message
    assert "sample(s) of new series dropped in this run" in health.message
    assert (good.series, good.samples_over_series_limit, good.samples_over_run_limit) == (3, 0, 0)
    assert good_health.state is HealthState.OK
    assert counters["samples_over_series_limit"] >= fresh.samples_over_series_limit
    assert counters["samples_over_run_limit"] == 0
    assert "# TYPE homelab_core_samples_over_series_limit_total counter" in text
    assert "homelab_core_samples_over_run_limit_total 0.0" in text


@pytest.mark.anyio
async def test_a_run_over_its_sample_limit_is_an_error_that_stores_nothing(
    manager: PluginManager, make_settings: Any
) -> None:
    settings = make_settings(
        InstanceSettings(
            id="wide", type="counter", interval=0.05, options={"series": 8}, max_samples_per_run=5
        ),
        InstanceSettings(id="good", type="counter", interval=0.05, options={"series": 8}),
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        with anyio.fail_after(10):
            while hub.stats("wide").errors < 1 or hub.stats("good").ok < 3:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        await hub.flush()
        errors = await hub.executions("wide", status="error")
        health, stats = hub.health("wide"), hub.stats("wide")
        counters = hub.counters()
        latest = await hub.latest("wide")
    assert errors[0].error == (
        "collect() returned 8 samples, more than max_samples_per_run (5):"
        " the run is refused and its 8 samples are dropped"
    )
    assert health.state in (HealthState.DEGRADED, HealthState.FAILING)
    assert "max_samples_per_run (5)" in health.message
    assert stats.samples_over_run_limit == 8 * stats.errors
    assert counters["samples_over_run_limit"] >= stats.samples_over_run_limit
    assert latest == []
    assert series_counts(settings) == {"good": 8}
