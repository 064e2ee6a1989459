"""Value types: metrics, series keys, health and execution records."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homelab_core.codec import from_builtins
from homelab_core.model import (
    Execution,
    ExecutionStatus,
    Health,
    HealthReport,
    HealthState,
    HistorySeries,
    Metric,
    MetricKind,
    Point,
    series_key,
)

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
values = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
#: Text a database stores: no NUL, no lone surrogates (the Metric boundary refuses both).
storable = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8
)
label_maps = st.dictionaries(storable, storable, max_size=5)


# --- Metric -------------------------------------------------------------------------------


def test_metric_converts_int_value_to_float() -> None:
    metric = Metric("cpu", 3)

    assert metric.value == 3.0
    assert isinstance(metric.value, float)


def test_metric_converts_bool_value_to_float() -> None:
    assert Metric("up", True).value == 1.0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_metric_rejects_non_finite_value(value: float) -> None:
    with pytest.raises(ValueError, match="must be finite"):
        Metric("cpu", value)


@pytest.mark.parametrize("value", ["1.5", None, [1.0]])
def test_metric_rejects_value_that_is_not_a_number(value: Any) -> None:
    with pytest.raises(TypeError, match="metric value must be a number"):
        Metric("cpu", value)


@pytest.mark.parametrize("name", ["", "1cpu", "-cpu", "cpu load", "cpu/load", "cpu{core=0}"])
def test_metric_rejects_invalid_name(name: str) -> None:
    with pytest.raises(ValueError, match="is invalid"):
        Metric(name, 1.0)


def test_metric_rejects_name_with_trailing_newline() -> None:
    with pytest.raises(ValueError, match="is invalid"):
        Metric("cpu\n", 1.0)


@pytest.mark.parametrize("name", ["cpu", "_cpu", "cpu.load_1m", "disk:read-bytes", "A9"])
def test_metric_accepts_valid_name(name: str) -> None:
    assert Metric(name, 1.0).name == name


def test_metric_label_values_are_stringified() -> None:
    assert Metric("cpu", 1.0, labels={"core": 0, "up": True}).labels == {"core": "0", "up": "True"}


def test_metric_label_keys_are_stringified() -> None:
    labels: dict[Any, Any] = {0: "user", 1: "system"}

    assert Metric("cpu", 1.0, labels=labels).labels == {"0": "user", "1": "system"}


def test_metric_labels_are_sorted_by_key() -> None:
    metric = Metric("cpu", 1.0, labels={"mode": "user", "core": "0", "host": "nas"})

    assert list(metric.labels) == ["core", "host", "mode"]


def test_metric_labels_with_mixed_key_types_are_stringified_then_sorted() -> None:
    labels: dict[Any, Any] = {"b": 1, 2: "x"}

    metric = Metric("cpu", 1.0, labels=labels)

    assert list(metric.labels.items()) == [("2", "x"), ("b", "1")]


def test_metric_labels_none_becomes_empty_dict() -> None:
    assert Metric("cpu", 1.0, labels=None).labels == {}


def test_metric_kind_defaults_to_gauge() -> None:
    assert Metric("cpu", 1.0).kind is MetricKind.GAUGE


def test_metric_kind_is_converted_from_text() -> None:
    assert Metric("bytes", 1.0, kind="counter").kind is MetricKind.COUNTER


def test_metric_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        Metric("cpu", 1.0, kind="histogram")


def test_metric_is_hashable_despite_labels() -> None:
    first = Metric("cpu", 1.0, labels={"core": "0"})
    second = Metric("cpu", 1.0, labels={"core": "0"})

    assert first == second
    assert len({first, second}) == 1


def test_metric_is_frozen() -> None:
    metric = Metric("cpu", 1.0)

    with pytest.raises(AttributeError):
        metric.value = 2.0  # type: ignore[misc]


def test_metric_to_dict() -> None:
    metric = Metric(
        "disk.used",
        10,
        unit="B",
        labels={"mount": "/"},
        timestamp=1700000000.0,
        kind=MetricKind.COUNTER,
        device_class="data_size",
    )

    assert metric.to_dict() == {
        "name": "disk.used",
        "value": 10.0,
        "unit": "B",
        "labels": {"mount": "/"},
        "timestamp": 1700000000.0,
        "kind": "counter",
        "device_class": "data_size",
    }


def test_metric_to_dict_kind_is_plain_text() -> None:
    assert type(Metric("cpu", 1.0).to_dict()["kind"]) is str


def test_metric_from_dict_round_trips_to_dict() -> None:
    metric = Metric("cpu", 12.5, unit="%", labels={"core": "1"}, timestamp=1.0)

    assert Metric.from_dict(metric.to_dict()) == metric


@settings(database=None)
@given(
    name=names,
    value=values,
    labels=label_maps,
    unit=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=5
    ),
    timestamp=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    kind=st.sampled_from(MetricKind),
)
def test_metric_from_dict_of_to_dict_is_the_same_metric(
    name: str,
    value: float,
    labels: dict[str, str],
    unit: str,
    timestamp: float | None,
    kind: MetricKind,
) -> None:
    metric = Metric(name, value, unit=unit, labels=labels, timestamp=timestamp, kind=kind)

    assert Metric.from_dict(metric.to_dict()) == metric


# --- series_key ---------------------------------------------------------------------------


def test_series_key_without_labels_is_the_name() -> None:
    assert series_key("cpu", {}) == "cpu"


def test_series_key_lists_labels_as_sorted_json() -> None:
    assert series_key("cpu", {"mode": "user", "core": "0"}) == 'cpu{"core":"0","mode":"user"}'


def test_series_keys_of_different_label_sets_never_collide() -> None:
    assert series_key("m", {"a": "1,b=2"}) != series_key("m", {"a": "1", "b": "2"})


def test_metric_series_key_uses_name_and_labels() -> None:
    metric = Metric("cpu", 1.0, labels={"mode": "user", "core": 0})

    assert metric.series_key == 'cpu{"core":"0","mode":"user"}'


@settings(database=None)
@given(name=names, labels=label_maps, data=st.data())
def test_series_key_is_stable_under_label_order(
    name: str, labels: dict[str, str], data: st.DataObject
) -> None:
    shuffled = dict(data.draw(st.permutations(list(labels.items()))))

    assert series_key(name, shuffled) == series_key(name, labels)
    assert (
        Metric(name, 1.0, labels=shuffled).series_key == Metric(name, 1.0, labels=labels).series_key
    )


# --- health -------------------------------------------------------------------------------


def test_health_report_converts_text_state() -> None:
    assert HealthReport("degraded", "disk almost full").state is HealthState.DEGRADED


def test_health_report_rejects_unknown_state() -> None:
    with pytest.raises(ValueError):
        HealthReport("broken")


def test_health_defaults_to_unknown_since_now() -> None:
    before = time.time()

    health = Health()

    assert health.state is HealthState.UNKNOWN
    assert before <= health.since <= time.time()
    assert health.consecutive_failures == 0


def test_health_to_dict() -> None:
    health = Health(
        HealthState.FAILING,
        "timed out",
        since=10.0,
        last_success=5.0,
        last_error="TimeoutError",
        last_error_at=9.0,
        consecutive_failures=3,
    )

    assert health.to_dict() == {
        "state": "failing",
        "message": "timed out",
        "since": 10.0,
        "last_success": 5.0,
        "last_error": "TimeoutError",
        "last_error_at": 9.0,
        "consecutive_failures": 3,
    }


def test_health_round_trips_through_the_codec() -> None:
    health = Health(HealthState.OK, "fine", since=10.0, last_success=12.0)

    rebuilt = from_builtins(health.to_dict(), Health)

    assert rebuilt == health
    assert rebuilt.state is HealthState.OK


# --- executions and history ---------------------------------------------------------------


def test_execution_converts_text_status() -> None:
    execution = Execution("nas", 1.0, 0.5, "timeout")

    assert execution.status is ExecutionStatus.TIMEOUT


def test_execution_to_dict() -> None:
    execution = Execution(
        instance_id="nas",
        started_at=100.0,
        duration=0.25,
        status=ExecutionStatus.ERROR,
        error="ConnectionError: refused",
        metric_count=0,
        trigger="manual",
        lag=0.1,
        node="nas-box",
        fence=7,
        id=42,
    )

    assert execution.to_dict() == {
        "instance_id": "nas",
        "started_at": 100.0,
        "duration": 0.25,
        "status": "error",
        "error": "ConnectionError: refused",
        "metric_count": 0,
        "trigger": "manual",
        "lag": 0.1,
        "node": "nas-box",
        "fence": 7,
        "cpu": None,
        "peak_rss": None,
        "id": 42,
    }


def test_execution_to_dict_defaults() -> None:
    data = Execution("nas", 1.0, 0.5, ExecutionStatus.OK).to_dict()

    assert (data["error"], data["metric_count"], data["trigger"], data["lag"], data["id"]) == (
        None,
        0,
        "schedule",
        0.0,
        None,
    )


def test_history_series_to_dict_gives_points_as_pairs() -> None:
    series = HistorySeries(
        name="cpu",
        labels={"core": "0"},
        unit="%",
        points=[Point(60.0, 1.5), Point(120.0, 2.5)],
        resolution=60.0,
    )

    assert series.to_dict() == {
        "name": "cpu",
        "labels": {"core": "0"},
        "unit": "%",
        "resolution": 60.0,
        "points": [[60.0, 1.5], [120.0, 2.5]],
    }


def test_metric_keeps_its_own_copy_of_ordered_text_labels() -> None:
    labels = {"core": "0", "mode": "user"}  # already in order: the fast path
    metric = Metric("cpu", 1.0, labels=labels)
    labels["mode"] = "system"
    labels["zone"] = "x"
    assert metric.labels == {"core": "0", "mode": "user"}


def test_metric_names_are_checked_every_time_despite_the_cache() -> None:
    Metric("cpu.total", 1.0)  # a valid name, now remembered
    with pytest.raises(ValueError, match="metric name 'cpu total' is invalid"):
        Metric("cpu total", 1.0)
    with pytest.raises(TypeError):
        Metric(42, 1.0)  # type: ignore[arg-type]


def test_with_timestamp_copies_every_field_and_leaves_the_original() -> None:
    original = Metric(
        "disk.used", 3, unit="%", labels={"mount": "/"}, kind="counter", device_class="data"
    )
    stamped = original.with_timestamp(1_700_000_000)
    assert original.timestamp is None
    assert stamped == Metric(
        "disk.used",
        3.0,
        unit="%",
        labels={"mount": "/"},
        timestamp=1_700_000_000.0,
        kind="counter",
        device_class="data",
    )
    assert isinstance(stamped.timestamp, float)
