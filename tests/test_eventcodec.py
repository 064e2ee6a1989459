"""Events to bytes and back (the Redis bus's wire form)."""

from __future__ import annotations

import json

import pytest

from homelab_core.codec import utf8_text
from homelab_core.eventcodec import (
    EVENT_TYPES,
    EventCodecError,
    decode_event,
    encode_event,
)
from homelab_core.events import (
    AlertChanged,
    Event,
    ExecutionFinished,
    HealthChanged,
    InstanceChanged,
    MetricsCollected,
)
from homelab_core.model import (
    Execution,
    ExecutionStatus,
    Health,
    HealthState,
    InstanceState,
    Metric,
    MetricKind,
)

HEALTH = Health(
    HealthState.DEGRADED,
    "slow: 900 ms",
    since=1795970969.123456789,
    last_success=1795970970.1,
    last_error="timed out",
    last_error_at=1795970900.000001,
    consecutive_failures=3,
)

EVENTS: list[Event] = [
    MetricsCollected(
        "nas",
        [
            Metric("cpu.percent", 12.5, "%", {"core": "0"}, timestamp=1795970969.15),
            Metric(
                "net.bytes",
                1e300,
                "B",
                {"if": "eth0", "é": "ü"},
                timestamp=0.1 + 0.2,
                kind=MetricKind.COUNTER,
                device_class="data_size",
            ),
            Metric("zero", -0.0, timestamp=1.0),
        ],
        timestamp=1795970969.2,
    ),
    HealthChanged("nas", Health(since=1.5), HEALTH, timestamp=2.5),
    ExecutionFinished(
        "nas",
        Execution(
            "nas",
            1795970969.15,
            0.042,
            ExecutionStatus.TIMEOUT,
            error="took longer than 10 s",
            metric_count=7,
            trigger="manual",
            lag=0.003,
            id=1024,
        ),
    ),
    ExecutionFinished("nas", Execution("nas", 1.0, 0.0, "ok")),
    InstanceChanged("nas", False, InstanceState.STOPPED),
    AlertChanged(
        "nas",
        rule="disk-full",
        fingerprint="abc123",
        old="pending",
        new="firing",
        severity="critical",
        labels={"mount": "/"},
        summary="disk / is 97 % full",
        value=97.25,
        silenced=False,
    ),
    AlertChanged(
        "",
        rule="r",
        fingerprint="f",
        old="firing",
        new="resolved",
        severity="warning",
        labels={},
        summary="",
        value=None,
        silenced=True,
    ),
]


def test_every_event_type_is_covered() -> None:
    assert {type(e) for e in EVENTS} == set(EVENT_TYPES.values())


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_an_event_round_trips_exactly_with_its_node(event: Event) -> None:
    data = encode_event(event, "pi-4")
    decoded = decode_event(data)
    assert decoded.node == "pi-4"
    assert decoded.event == event
    assert type(decoded.event) is type(event)
    assert decoded.event.timestamp == event.timestamp


def test_enums_come_back_as_enums() -> None:
    decoded = decode_event(encode_event(EVENTS[0], "a")).event
    assert isinstance(decoded, MetricsCollected)
    assert decoded.metrics[1].kind is MetricKind.COUNTER
    health = decode_event(encode_event(EVENTS[1], "a")).event
    assert isinstance(health, HealthChanged)
    assert health.new.state is HealthState.DEGRADED
    execution = decode_event(encode_event(EVENTS[2], "a")).event
    assert isinstance(execution, ExecutionFinished)
    assert execution.execution.status is ExecutionStatus.TIMEOUT


def test_the_encoding_is_compact_json_with_node_and_type_first() -> None:
    data = encode_event(EVENTS[4], "nas")
    assert b" " not in data
    node, kind, fields = json.loads(data)
    assert (node, kind) == ("nas", "plugin")
    assert fields["state"] == "stopped"


def test_lone_surrogates_are_escaped_not_fatal() -> None:
    bad = "disk \udce9 gone"
    event = HealthChanged(
        "nas", Health(), Health(HealthState.FAILING, bad, last_error=bad), timestamp=3.0
    )
    decoded = decode_event(encode_event(event, "nas")).event
    assert isinstance(decoded, HealthChanged)
    assert decoded.new.message == utf8_text(bad) == "disk \\udce9 gone"
    assert decoded.new.last_error == utf8_text(bad)
    assert decoded.old == event.old
    alert = AlertChanged(
        "nas",
        rule="r",
        fingerprint="f",
        old="inactive",
        new="firing",
        severity="warning",
        labels={"path\udcff": "x\udcfe"},
        summary=bad,
        value=1.0,
        silenced=False,
    )
    back = decode_event(encode_event(alert, "nas")).event
    assert isinstance(back, AlertChanged)
    assert back.labels == {"path\\udcff": "x\\udcfe"}
    assert back.summary == utf8_text(bad)


def test_other_unicode_round_trips_unchanged() -> None:
    text = 'température 🌡 \u2028 \x7f "quoted" \\ back'
    event = HealthChanged("nas", Health(since=1.0), Health(message=text, since=2.0))
    assert decode_event(encode_event(event, "nas")).event == event


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"not json", "bad JSON"),
        (b'{"a":1}', "not an encoded event"),
        (b'["n","nope",{}]', "unknown event type 'nope' from node 'n'"),
        (b'["n","plugin",{"instance_id":"a"}]', "type 'plugin' from node 'n' does not decode"),
        (
            b'["n","metrics",{"instance_id":"a","timestamp":1.0,"metrics":[{"name":1}]}]',
            "does not decode",
        ),
    ],
)
def test_bytes_that_are_no_event_raise_a_named_error(data: bytes, words: str) -> None:
    with pytest.raises(EventCodecError, match=words):
        decode_event(data)


def test_a_non_event_is_refused() -> None:
    with pytest.raises(TypeError, match="not a bus event type: Event"):
        encode_event(Event("a"), "n")
