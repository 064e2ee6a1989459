"""The rule engine on its own: states of value, health and absence rules, advanced by
samples and by a clock given in the test (plain synchronous code, no I/O)."""

from __future__ import annotations

import tomllib
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from homelab_core import ConfigError, HealthState, Metric
from homelab_core.alerts import AlertEngine, Template, TemplateError, parse_rule
from homelab_core.alerts.silences import MaintenanceWindow, Silence, matches
from homelab_core.config import load_settings


def rule(text: str, rule_id: str = "r") -> Any:
    return parse_rule(rule_id, tomllib.loads(text), where="test", table=f"alerts.{rule_id}")


def engine(*rules: Any) -> AlertEngine:
    return AlertEngine(rules, type_of=lambda i: "system" if i.startswith("host") else "http")


def states(e: AlertEngine) -> dict[str, str]:
    return {f"{a.instance_id}/{a.metric or ''}{a.series or ''}": a.state for a in e.alerts.values()}


def sample(
    e: AlertEngine, value: float, at: float, *, instance: str = "host", **labels: str
) -> list[tuple[str, str]]:
    metric = Metric("disk.used", value, "%", labels=labels, timestamp=at)
    return [(t.old, t.new) for t in e.observe_metrics(instance, [metric], at)]


def test_a_value_rule_with_for_fires_after_the_duration_not_before_and_resolves() -> None:
    e = engine(rule('metric = "disk.*"\nthreshold = 90\nfor = 10'))
    assert sample(e, 50, 0) == []
    assert e.alerts == {}  # nothing is kept for a series that passes no threshold
    assert sample(e, 95, 1) == [("inactive", "pending")]
    assert sample(e, 96, 5) == []
    assert e.tick(10.9) == []
    assert [(t.old, t.new) for t in e.tick(11.0)] == [("pending", "firing")]
    assert sample(e, 97, 12) == []
    assert sample(e, 80, 13) == [("firing", "resolved")]
    (alert,) = e.alerts.values()
    assert alert.resolved_at == 13 and alert.fired_at == 11.0 and alert.active_since == 1


def test_a_pending_alert_whose_condition_ends_goes_back_to_inactive() -> None:
    e = engine(rule("threshold = 90\nfor = 10"))
    sample(e, 95, 0)
    assert sample(e, 10, 3) == [("pending", "inactive")]
    assert e.alerts == {}
    assert e.tick(20) == []


def test_for_zero_fires_on_the_sample_and_the_summary_is_rendered() -> None:
    e = engine(rule('threshold = 90\nsummary = "{instance}: {labels[mount]} at {value:.1f} %"'))
    assert sample(e, 93.25, 0, mount="/srv") == [("inactive", "firing")]
    (alert,) = e.alerts.values()
    assert alert.summary == "host: /srv at 93.2 %"
    assert alert.labels == {
        "mount": "/srv",
        "rule": "r",
        "severity": "warning",
        "instance": "host",
        "type": "system",
        "metric": "disk.used",
    }


def test_each_series_is_its_own_alert_and_label_matchers_select() -> None:
    e = engine(rule('threshold = 90\nmatch = { mount = "/s*" }'))
    sample(e, 95, 0, mount="/srv")
    sample(e, 95, 0, mount="/scratch")
    sample(e, 95, 0, mount="/boot")
    assert sorted(a.series["mount"] for a in e.alerts.values()) == ["/scratch", "/srv"]
    assert len({a.fingerprint for a in e.alerts.values()}) == 2


def test_instance_and_type_patterns_select() -> None:
    e = engine(
        rule('threshold = 1\ninstances = ["web-*"]'),
        rule('threshold = 1\ntypes = ["system"]', "sys"),
    )
    sample(e, 5, 0, instance="web-1")
    sample(e, 5, 0, instance="host")
    sample(e, 5, 0, instance="db")
    assert sorted((a.rule_id, a.instance_id) for a in e.alerts.values()) == [
        ("r", "web-1"),
        ("sys", "host"),
    ]


def test_a_resolve_threshold_keeps_it_firing_until_the_value_falls_below_it() -> None:
    e = engine(rule("threshold = 90\nresolve_threshold = 80"))
    assert sample(e, 91, 0) == [("inactive", "firing")]
    assert sample(e, 85, 1) == []  # under 90 but over 80: no flapping
    assert sample(e, 89, 2) == []
    assert sample(e, 79, 3) == [("firing", "resolved")]
    assert sample(e, 85, 4) == []  # firing again takes the threshold, not the resolve one
    assert sample(e, 91, 5) == [("resolved", "firing")]


def test_keep_firing_for_holds_a_firing_alert_through_a_short_dip() -> None:
    e = engine(rule("threshold = 90\nkeep_firing_for = 5"))
    sample(e, 95, 0)
    assert sample(e, 10, 1) == []
    assert sample(e, 95, 2) == []  # back above: the dip did not resolve it
    assert sample(e, 10, 3) == []
    assert e.tick(6.9) == []  # 5 s after the condition last held (at 2)
    assert [(t.old, t.new) for t in e.tick(7.0)] == [("firing", "resolved")]


@pytest.mark.parametrize(
    ("function", "values", "fires"),
    [
        ("avg", [80, 100, 100], True),  # avg 93.3
        ("avg", [50, 100, 100], False),  # avg 83.3
        ("min", [95, 91, 99], True),
        ("min", [95, 89, 99], False),
        ("max", [10, 95, 10], True),
    ],
)
def test_window_functions(function: str, values: list[float], fires: bool) -> None:
    e = engine(rule(f'threshold = 90\nwindow = 60\nfunction = "{function}"'))
    for n, value in enumerate(values):
        sample(e, value, n * 10)
    firing = [a for a in e.alerts.values() if a.state == "firing"]
    assert bool(firing) == fires


def test_the_window_drops_samples_older_than_it() -> None:
    e = engine(rule('threshold = 90\nwindow = 15\nfunction = "avg"'))
    sample(e, 0, 0)
    sample(e, 100, 10)  # avg 50
    assert sample(e, 100, 20) == [("inactive", "firing")]  # the sample at 0 left the window


def test_rate_is_the_change_per_second_over_the_window() -> None:
    e = engine(rule('threshold = 10\nwindow = 60\nfunction = "rate"'))
    assert sample(e, 0, 0) == []  # one sample: no rate yet
    assert sample(e, 50, 10) == []  # 5 per second
    assert sample(e, 250, 20) == [("inactive", "firing")]  # 12.5 per second
    (alert,) = e.alerts.values()
    assert alert.value == 12.5


def test_a_health_rule_fires_after_for_and_resolves_when_the_instance_recovers() -> None:
    e = engine(rule('kind = "health"\nfor = 5\nsummary = "{instance} is {state}"'))
    assert e.observe_health("web", HealthState.OK, 0) == []
    assert [(t.old, t.new) for t in e.observe_health("web", HealthState.FAILING, 1)] == [
        ("inactive", "pending")
    ]
    assert e.observe_health("web", HealthState.FAILED, 2) == []  # still a matched state
    assert [(t.old, t.new) for t in e.tick(6)] == [("pending", "firing")]
    (alert,) = e.alerts.values()
    assert alert.summary == "web is firing" and alert.instance_id == "web"
    assert [(t.old, t.new) for t in e.observe_health("web", HealthState.OK, 7)] == [
        ("firing", "resolved")
    ]


def test_a_health_rule_takes_only_its_states() -> None:
    e = engine(rule('kind = "health"\nstates = ["degraded"]'))
    assert e.observe_health("web", HealthState.FAILING, 0) == []
    assert [(t.old, t.new) for t in e.observe_health("web", HealthState.DEGRADED, 1)] == [
        ("inactive", "firing")
    ]


def test_an_absence_of_runs_fires_when_an_instance_stops_and_resolves_on_its_next_run() -> None:
    e = engine(rule('kind = "absence"\nof = "runs"\nfor = 30\ninstances = ["nas"]'))
    e.track_instance("nas", 0)
    e.track_instance("other", 0)
    e.observe_run("nas", True, 10)
    assert e.tick(39) == []
    assert [(t.old, t.new) for t in e.tick(40)] == [("inactive", "firing")]
    assert e.tick(50) == []  # fires once
    e.observe_run("nas", False, 55)  # a failed run is no sign of life
    assert [(t.old, t.new) for t in e.observe_run("nas", True, 60)] == [("firing", "resolved")]
    assert {a.instance_id for a in e.alerts.values()} == {"nas"}


def test_a_disabled_instance_is_not_absent() -> None:
    e = engine(rule('kind = "absence"\nof = "runs"\nfor = 30'))
    e.track_instance("nas", 0)
    e.observe_health("nas", HealthState.DISABLED, 5)
    assert e.tick(100) == []
    e.observe_health("nas", HealthState.OK, 100)  # enabled again: watched from now
    assert e.tick(129) == []
    assert len(e.tick(130)) == 1


def test_an_absence_of_a_series_fires_when_its_samples_stop() -> None:
    e = engine(rule('kind = "absence"\nmetric = "disk.used"\nfor = 20'))
    sample(e, 1, 0, mount="/a")
    sample(e, 1, 0, mount="/b")
    sample(e, 1, 15, mount="/a")
    assert [(t.alert.series["mount"], t.new) for t in e.tick(21)] == [("/b", "firing")]
    assert sample(e, 1, 22, mount="/b") == [("firing", "resolved")]


def test_resolved_alerts_are_forgotten_after_the_retention_once_their_news_is_out() -> None:
    e = engine(rule("threshold = 90"))
    sample(e, 95, 0)
    (alert,) = e.alerts.values()
    alert.notified_at = 0
    sample(e, 10, 1)
    assert alert.state == "resolved" and not alert.resolved_notified
    assert e.evict(1000, 60) == []  # the resolution was not sent yet
    alert.resolved_notified = True
    assert e.evict(30, 60) == []
    assert e.evict(61, 60) == [alert]
    assert e.alerts == {}


def test_restored_alerts_carry_on_from_their_state() -> None:
    e = engine(rule("threshold = 90\nfor = 10"))
    sample(e, 95, 0)
    saved = list(e.alerts.values())
    again = engine(rule("threshold = 90\nfor = 10"))
    again.restore(saved)
    assert sample(again, 95, 10) == [("pending", "firing")]  # its for began before


# -- templates, silences, maintenance -----------------------------------------------------


def test_templates_check_names_and_specs_when_compiled() -> None:
    assert Template("{value:.1f} {labels[x]}!").render({"value": 2.25, "labels": {}}) == "2.2 !"
    assert Template("{value} of {threshold}").render({"value": 93.0, "threshold": 90.0}) == (
        "93 of 90"
    )
    for bad, why in [
        ("{nope}", "unknown name 'nope'"),
        ("{value.real}", "attribute access"),
        ("{}", "positional"),
        ("{value:.2q}", "Unknown format code"),
        ("{labels}", r"labels\[name\]"),
        ("{value", "expected '}'"),
    ]:
        with pytest.raises(TemplateError, match=why):
            Template(bad)


def test_silence_matchers_take_patterns_and_times() -> None:
    labels = {"instance": "nas-1", "rule": "disk"}
    assert matches({"instance": "nas*"}, labels)
    assert not matches({"instance": "nas*", "rule": "cpu"}, labels)
    silence = Silence.create({"instance": "nas*"}, starts_at=100, ends_at=200, now=50)
    assert silence.state(99) == "pending" and silence.active(100) and not silence.active(200)


def test_a_maintenance_window_is_active_from_each_cron_start_for_its_duration() -> None:
    from datetime import datetime

    window = MaintenanceWindow("m", "0 3 * * *", 3600, {}, "UTC")
    at = datetime(2026, 5, 4, 3, 30, tzinfo=UTC).timestamp()
    assert window.current(at) == (at - 1800, at + 1800)
    assert window.current(at + 1800) is None
    assert window.current(at - 1801) is None
    assert window.next_start(at) == at - 1800 + 86400
    zoned = MaintenanceWindow("z", "0 3 * * *", 3600, {}, "Europe/Berlin")
    assert zoned.current(at) is None  # 03:30 UTC is 05:30 in Berlin in May
    assert zoned.current(at - 2 * 3600) is not None


# -- configuration errors name file, table and field --------------------------------------


@pytest.mark.parametrize(
    ("text", "table", "field", "says"),
    [
        (
            '[alerts.a]\nthreshold = 1\nnotifiers = ["pager"]',
            "alerts.a",
            "notifiers",
            "unknown notifier 'pager'",
        ),
        (
            '[alerts.a]\nthreshold = 1\nsummary = "{valeu}"',
            "alerts.a",
            "summary",
            "unknown name 'valeu'",
        ),
        (
            '[maintenance.m]\ncron = "0 25 * * *"\nduration = 60',
            "maintenance.m",
            "cron",
            "not a cron expression",
        ),
        ('[alerts.a]\nthreshold = 1\nop = "=>"', "alerts.a", "op", "expected '>'"),
        ('[alerts.a]\nop = ">"', "alerts.a", "threshold", "needs a threshold"),
        ('[alerts.a]\nkind = "health"\nthreshold = 1', "alerts.a", "threshold", "only value rules"),
        ('[alerts.a]\nkind = "absence"', "alerts.a", "for", "needs 'for'"),
        ('[alerts.a]\nthreshold = 1\nfor = "soon"', "alerts.a", "for", "expected a duration"),
        ('[alerts.a]\nthreshold = 1\nfunction = "avg"', "alerts.a", "window", "needs a window"),
        ('[alerts.a]\nthreshold = 1\nseverity = "page"', "alerts.a", "severity", "expected"),
        ('[routes.r]\nnotifiers = ["x"]', "routes.r", "notifiers", "unknown notifier 'x'"),
        (
            '[maintenance.m]\ncron = "0 3 * * *"\nduration = 60\ntimezone = "Mars/Base"',
            "maintenance.m",
            "timezone",
            "unknown time zone",
        ),
        ('[notifiers.n]\nurl = "x"', "notifiers.n", "type", "expected a notifier type"),
        ("[alerts.A]\nthreshold = 1", "alerts.A", None, "lowercase slug"),
    ],
)
def test_bad_alert_config_is_an_error_naming_file_table_and_field(
    tmp_path: Path, text: str, table: str, field: str | None, says: str
) -> None:
    path = tmp_path / "homelab.toml"
    path.write_text(text, "utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    error = caught.value
    assert (error.file, error.table, error.field) == (str(path), table, field), str(error)
    assert says in str(error)
    assert str(path) in str(error)


def test_a_window_is_active_to_its_last_second_even_next_to_the_next_start() -> None:
    from datetime import datetime

    window = MaintenanceWindow("m", "* * * * *", 60, {}, "UTC")
    start = datetime(2026, 5, 4, 3, 30, tzinfo=UTC).timestamp()
    for offset in (0.0, 0.5, 30.0, 59.0, 59.5, 59.999):
        assert window.current(start + offset) == (start, start + 60), offset
    hourly = MaintenanceWindow("h", "0 * * * *", 60, {}, "UTC")
    assert hourly.current(start + 1800 - 0.5) is None  # 03:59:59.5: the 04:00 one is not yet
