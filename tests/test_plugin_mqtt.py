"""The bundled ``mqtt`` plugin, against a real mosquitto on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion
from services import MosquittoBroker, free_port, self_signed_certificate, unavailable
from waiting import eventually

from homelab_core import ConfigError, HealthState, MetricKind
from homelab_core.plugin import validate_plugin_type
from homelab_core.testing import (
    Clock,
    HubFactory,
    PluginHarness,
    PluginRun,
    run_plugin,
    run_plugin_async,
    wait_for_health,
    wait_for_metric,
)
from homelab_plugins.mqtt import (
    LOG_INTERVAL,
    Malformed,
    Mqtt,
    MqttConfig,
    TopicPattern,
    metric_name,
    parse_topic_pattern,
    read_payload,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


def publish(broker: MosquittoBroker, *messages: tuple[str, str | bytes]) -> None:
    """Publish ``(topic, payload)`` messages in order, each acknowledged by the broker."""
    client = Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=5)
            assert info.is_published(), f"the broker did not acknowledge {topic}"
    finally:
        client.disconnect()
        client.loop_stop()


async def run_until(
    harness: PluginHarness, check: Callable[[PluginRun], bool], what: str, timeout: float = 5
) -> PluginRun:
    """Run ``harness`` until a run passes ``check``; every run must succeed."""
    runs: list[PluginRun] = []

    async def attempt() -> bool:
        run = (await harness.run()).assert_ok()
        runs.append(run)
        return check(run)

    await eventually(attempt, timeout, what)
    return runs[-1]


def own_only(run: PluginRun) -> bool:
    """Whether the run reported only the plugin's own metrics."""
    return all(m.name.startswith("mqtt.") for m in run.metrics)


async def test_a_json_payload_becomes_metrics_labelled_from_the_topic(
    mosquitto: MosquittoBroker,
) -> None:
    async with PluginHarness(
        Mqtt,
        instance_id="tasmota",
        url=mosquitto.url,
        topics=["tele/{device}/SENSOR"],
        fields={"ENERGY.Power": "power", "Temp": "temperature", "ENERGY.Total": "energy"},
        units={"power": "W", "temperature": "°C", "energy": "kWh"},
        device_classes={"power": "power", "temperature": "temperature", "energy": "energy"},
        counters=["energy"],
    ) as harness:
        payload = {"ENERGY": {"Power": 12.5, "Total": 3.25}, "Temp": 21}
        publish(mosquitto, ("tele/kitchen/SENSOR", json.dumps(payload)))
        run = await run_until(harness, lambda r: r.has("power"), "the power reading")
    power = run.metric("power")
    assert (power.value, power.unit, power.device_class) == (12.5, "W", "power")
    assert power.labels == {"device": "kitchen"}
    assert power.kind is MetricKind.GAUGE
    temperature = run.metric("temperature", device="kitchen")
    assert (temperature.value, temperature.unit, temperature.device_class) == (
        21,
        "°C",
        "temperature",
    )
    energy = run.metric("energy", device="kitchen")
    assert (energy.value, energy.kind) == (3.25, MetricKind.COUNTER)
    assert run.value("mqtt.connected") == 1
    assert run.value("mqtt.messages") == 1
    assert run.value("mqtt.malformed") == 0
    assert run.metric("mqtt.messages").kind is MetricKind.COUNTER
    assert run.health is not None
    assert run.health.state == HealthState.OK
    assert f"connected to mqtt://127.0.0.1:{mosquitto.port}" in run.health.message


async def test_without_fields_every_numeric_leaf_is_a_metric_named_after_its_path(
    mosquitto: MosquittoBroker,
) -> None:
    async with PluginHarness(
        Mqtt, url=mosquitto.url, topics=["zigbee2mqtt/{device}"], payload="json"
    ) as harness:
        payload = {
            "temperature": 19.5,
            "occupancy": True,
            "state": "ON",
            "update": {"installed_version": 7, "state": "idle"},
            "values": [1, 2],
            "name": "hall sensor",
            "battery": None,
        }
        publish(mosquitto, ("zigbee2mqtt/hall", json.dumps(payload)))
        run = await run_until(harness, lambda r: r.has("temperature"), "the readings")
    found = {m.name: m.value for m in run.metrics if not m.name.startswith("mqtt.")}
    assert found == {
        "temperature": 19.5,
        "occupancy": 1,
        "state": 1,
        "update_installed_version": 7,
        "values_0": 1,
        "values_1": 2,
    }
    assert all(m.labels == {"device": "hall"} for m in run.metrics if m.name in found)
    assert run.value("mqtt.malformed") == 0


async def test_plain_numbers_with_two_named_levels(mosquitto: MosquittoBroker) -> None:
    async with PluginHarness(
        Mqtt,
        url=mosquitto.url,
        topics=["shellies/{device}/relay/{channel}/power", "shellies/{device}/online"],
        units={"power": "W"},
        device_classes={"power": "power"},
    ) as harness:
        publish(
            mosquitto,
            ("shellies/plug1/relay/0/power", "42.5"),
            ("shellies/plug1/relay/1/power", " 7 "),
            ("shellies/plug1/online", "true"),
            ("shellies/plug2/online", "OFF"),
        )
        run = await run_until(
            harness, lambda r: r.has("online", device="plug2"), "the last message"
        )
    power = run.metric("power", channel="0")
    assert power.labels == {"device": "plug1", "channel": "0"}
    assert (power.value, power.unit, power.device_class) == (42.5, "W", "power")
    assert run.value("power", device="plug1", channel="1") == 7
    assert run.metric("online", device="plug1").labels == {"device": "plug1"}
    assert run.value("online", device="plug1") == 1
    assert run.value("online", device="plug2") == 0


async def test_retained_values_are_in_the_first_run(mosquitto: MosquittoBroker) -> None:
    """Setup returns once the broker has sent the retained messages: ``--once`` sees them."""
    client = Client(CallbackAPIVersion.VERSION2)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        info = client.publish("zigbee2mqtt/porch", json.dumps({"battery": 87}), qos=1, retain=True)
        info.wait_for_publish(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()
    run = await run_plugin_async(
        Mqtt, url=mosquitto.url, topics=["zigbee2mqtt/{device}"], units={"battery": "%"}
    )
    run.assert_ok()
    battery = run.metric("battery")
    assert (battery.value, battery.unit, battery.labels) == (87, "%", {"device": "porch"})


async def test_a_named_metric_for_plain_payloads(mosquitto: MosquittoBroker) -> None:
    async with PluginHarness(
        Mqtt, url=mosquitto.url, topics=["sensors/+/{room}"], payload="number", name="celsius"
    ) as harness:
        publish(mosquitto, ("sensors/ground/kitchen", "20.25"))
        run = await run_until(harness, lambda r: r.has("celsius"), "the reading")
    assert run.metric("celsius").labels == {"room": "kitchen"}
    assert run.value("celsius") == 20.25


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [("latest", 60), ("mean", 30), ("max", 60), ("min", 10), ("sum", 90), ("count", 3)],
)
async def test_values_between_two_runs_are_aggregated(
    mosquitto: MosquittoBroker, aggregate: str, expected: float
) -> None:
    async with PluginHarness(
        Mqtt,
        url=mosquitto.url,
        topics=["home/{room}/temperature"],
        aggregate=aggregate,
        units={"temperature": "°C"},
    ) as harness:
        first = (await harness.run()).assert_ok()
        assert own_only(first)
        publish(
            mosquitto,
            ("home/a/temperature", "10"),
            ("home/a/temperature", "20"),
            ("home/a/temperature", "60"),
            ("home/b/temperature", "5"),
        )
        run = await run_until(harness, lambda r: r.has("temperature", room="b"), "room b")
        assert run.value("temperature", room="a") == expected
        unit = "" if aggregate == "count" else "°C"
        assert run.metric("temperature", room="a").unit == unit
        assert run.value("mqtt.messages") == 4

        # No new values: no samples, only the plugin's own metrics.
        quiet = (await harness.run()).assert_ok()
        assert own_only(quiet), quiet.metrics
        assert quiet.value("mqtt.messages") == 4

        # One series gets a value: only it has a sample.
        publish(mosquitto, ("home/b/temperature", "6"))
        later = await run_until(harness, lambda r: r.has("temperature"), "room b again")
        assert not later.has("temperature", room="a")
        assert later.value("temperature", room="b") == (1 if aggregate == "count" else 6)


async def test_a_counter_reports_its_latest_value_whatever_the_aggregate(
    mosquitto: MosquittoBroker,
) -> None:
    async with PluginHarness(
        Mqtt,
        url=mosquitto.url,
        topics=["meter/{meter}/total", "meter/{meter}/power"],
        aggregate="mean",
        counters=["total"],
    ) as harness:
        publish(
            mosquitto,
            ("meter/m1/total", "100"),
            ("meter/m1/power", "10"),
            ("meter/m1/total", "104"),
            ("meter/m1/power", "30"),
        )
        run = await run_until(harness, lambda r: r.value("mqtt.messages") == 4, "the four messages")
    assert run.value("total") == 104
    assert run.metric("total").kind is MetricKind.COUNTER
    assert run.value("power") == 20


async def test_a_malformed_payload_is_counted_and_logged_and_the_instance_goes_on(
    mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="homelab.plugin.plugs")
    clock = Clock()
    async with PluginHarness(
        Mqtt,
        instance_id="plugs",
        clock=clock,
        url=mosquitto.url,
        topics=["tele/{device}/SENSOR"],
        payload="json",
        fields={"ENERGY.Power": "power"},
    ) as harness:
        publish(
            mosquitto,
            ("tele/bad/SENSOR", "not json"),
            ("tele/worse/SENSOR", json.dumps({"ENERGY": {"Power": "high"}})),
            ("tele/empty/SENSOR", json.dumps({"ENERGY": {}})),
            ("tele/kitchen/SENSOR", json.dumps({"ENERGY": {"Power": 12.5}})),
        )
        run = await run_until(harness, lambda r: r.has("power"), "the good payload")
        assert run.value("mqtt.malformed") == 3
        assert run.value("mqtt.messages") == 4
        assert run.value("power", device="kitchen") == 12.5
        assert [m.labels for m in run.find("power")] == [{"device": "kitchen"}]
        assert run.health is not None
        assert run.health.state == HealthState.OK

        lines = [r.getMessage() for r in caplog.records if r.name == "homelab.plugin.plugs"]
        assert any("'tele/bad/SENSOR'" in line and "not valid JSON" in line for line in lines)
        assert any(
            "'tele/worse/SENSOR'" in line and "'ENERGY.Power' is not a number" in line
            for line in lines
        )
        assert any(
            "'tele/empty/SENSOR'" in line and "the JSON has no 'ENERGY.Power'" in line
            for line in lines
        )

        # The same device again: counted, not logged again so soon; good payloads go on.
        caplog.clear()
        publish(
            mosquitto,
            ("tele/bad/SENSOR", "still not json"),
            ("tele/kitchen/SENSOR", json.dumps({"ENERGY": {"Power": 13}})),
        )
        again = await run_until(harness, lambda r: r.has("power"), "the next good payload")
        assert again.value("mqtt.malformed") == 4
        assert again.value("power", device="kitchen") == 13
        assert not [r for r in caplog.records if "tele/bad/SENSOR" in r.getMessage()]

        # Once LOG_INTERVAL has passed, the topic is logged again, with the count since.
        clock.advance(LOG_INTERVAL)
        publish(
            mosquitto,
            ("tele/bad/SENSOR", "[1, "),
            ("tele/kitchen/SENSOR", json.dumps({"ENERGY": {"Power": 14}})),
        )
        await run_until(harness, lambda r: r.value("power") == 14, "the third good payload")
        lines = [r.getMessage() for r in caplog.records if "tele/bad/SENSOR" in r.getMessage()]
        assert lines == [
            "malformed payload on topic 'tele/bad/SENSOR': the payload is not valid JSON"
            " (2 malformed payloads on this topic since the last line about it)"
        ]


@pytest.mark.parametrize("isolation", ["none", "process"])
async def test_in_a_hub_a_malformed_payload_does_not_stop_the_instance(
    mosquitto: MosquittoBroker, homelab_hub: HubFactory, isolation: str
) -> None:
    instance = {
        "type": "mqtt",
        "interval": 0.1,
        "timeout": 10,  # setup (in a worker process) takes longer than an interval
        "isolation": isolation,
        "url": mosquitto.url,
        "topics": ["tele/{device}/SENSOR"],
        "fields": {"ENERGY.Power": "power"},
        "units": {"power": "W"},
    }
    async with homelab_hub(Mqtt, instances={"plugs": instance}) as hub:
        await wait_for_health(hub, "plugs", "ok", timeout=10)
        publish(mosquitto, ("tele/bad/SENSOR", "{oops"))

        async def malformed_seen() -> bool:
            latest = await hub.latest("plugs")
            return any(m.name == "mqtt.malformed" and m.value == 1 for m in latest)

        await eventually(malformed_seen, 10, "mqtt.malformed = 1 in the latest values")
        publish(mosquitto, ("tele/kitchen/SENSOR", json.dumps({"ENERGY": {"Power": 9.5}})))
        power = await wait_for_metric(hub, "plugs", "power", device="kitchen", timeout=10)
        assert (power.value, power.unit) == (9.5, "W")
        stats = hub.stats("plugs")
        assert stats.errors == 0 and stats.ok == stats.runs
        assert hub.health("plugs").state == HealthState.OK


async def test_a_topic_level_that_is_no_valid_label_text_is_malformed(
    mosquitto: MosquittoBroker,
) -> None:
    async with PluginHarness(Mqtt, url=mosquitto.url, topics=["dev/{device}/value"]) as harness:
        publish(
            mosquitto,
            ("dev/" + "x" * 5000 + "/value", "1"),  # longer than a label value may be
            ("dev/nan/value", "nan"),
            ("dev/ok/value", "2"),
        )
        run = await run_until(harness, lambda r: r.has("value"), "the good value")
    assert run.value("mqtt.malformed") == 2
    assert [m.labels for m in run.find("value")] == [{"device": "ok"}]


async def test_series_beyond_max_series_are_dropped_and_counted(
    mosquitto: MosquittoBroker,
) -> None:
    async with PluginHarness(
        Mqtt, url=mosquitto.url, topics=["dev/{device}/value"], max_series=2
    ) as harness:
        publish(mosquitto, *((f"dev/d{i}/value", str(i)) for i in range(4)))
        run = await run_until(harness, lambda r: r.value("mqtt.messages") == 4, "the messages")
        assert [m.labels["device"] for m in run.find("value")] == ["d0", "d1"]
        assert run.value("mqtt.dropped") == 2
        assert run.health is not None
        assert run.health.state == HealthState.DEGRADED
        assert "dropped 2 value(s)" in run.health.message
        quiet = (await harness.run()).assert_ok()
        assert quiet.health is not None
        assert quiet.health.state == HealthState.OK


async def test_the_plugin_reconnects_after_the_broker_restarts(
    mosquitto: MosquittoBroker,
) -> None:
    url = f"mqtt://homelab:s3cret-word@127.0.0.1:{mosquitto.port}"
    async with PluginHarness(
        Mqtt, instance_id="restart", url=url, topics=["tele/{device}/SENSOR"]
    ) as harness:
        first = (await harness.run()).assert_ok()
        assert first.value("mqtt.connected") == 1

        mosquitto.stop()
        down = await run_until(
            harness, lambda r: r.value("mqtt.connected") == 0, "the plugin sees the broker gone"
        )
        assert down.health is not None
        assert down.health.state == HealthState.DEGRADED
        assert f"mqtt://127.0.0.1:{mosquitto.port}" in down.health.message
        assert "not connected" in down.health.message
        assert "s3cret-word" not in down.health.message

        mosquitto.start()
        up = await run_until(
            harness, lambda r: r.value("mqtt.connected") == 1, "the plugin reconnects", 20
        )
        assert up.health is not None
        assert up.health.state == HealthState.OK

        # Subscribed again (a clean session): a message published now arrives.
        publish(mosquitto, ("tele/garage/SENSOR", json.dumps({"Temp": 4.5})))
        run = await run_until(harness, lambda r: r.has("temp"), "a message after the restart")
        assert run.value("temp", device="garage") == 4.5


async def test_setup_against_a_port_with_nothing_listening_fails_naming_the_broker() -> None:
    port = free_port()
    run = await run_plugin_async(
        Mqtt, url=f"mqtt://127.0.0.1:{port}", topics=["#"], connect_timeout=2
    )
    assert not run.ok
    assert run.error is not None
    assert f"mqtt://127.0.0.1:{port} refused the connection" in run.error
    assert "MQTT broker" in run.error


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"), 30)


@pytest.fixture
def tls_broker(
    mosquitto: MosquittoBroker, certificate: tuple[Path, Path], tmp_path: Path
) -> Iterator[tuple[MosquittoBroker, str]]:
    """A broker with a TLS listener (its mqtts:// URL) and a plain one (``.port``)."""
    cert, key = certificate
    broker = MosquittoBroker(mosquitto.binary, tmp_path, free_port())
    tls_port = free_port()
    broker.config.write_text(
        f"per_listener_settings false\nallow_anonymous true\npersistence false\nuser root\n"
        f"log_dest stdout\nlistener {broker.port} 127.0.0.1\n"
        f"listener {tls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
    )
    broker.start()
    try:
        yield broker, f"mqtts://127.0.0.1:{tls_port}"
    finally:
        broker.stop()


async def test_mqtts_with_the_broker_s_ca_file(
    tls_broker: tuple[MosquittoBroker, str], certificate: tuple[Path, Path]
) -> None:
    broker, url = tls_broker
    async with PluginHarness(
        Mqtt, url=url, topics=["tele/{device}/SENSOR"], ca_file=str(certificate[0])
    ) as harness:
        publish(broker, ("tele/attic/SENSOR", json.dumps({"Temp": 30})))
        run = await run_until(harness, lambda r: r.has("temp"), "a message over TLS")
    assert run.value("temp", device="attic") == 30
    assert run.health is not None
    assert f"connected to {url}" in run.health.message


async def test_mqtts_with_an_untrusted_certificate_fails_setup_clearly(
    tls_broker: tuple[MosquittoBroker, str],
) -> None:
    _, url = tls_broker
    run = await run_plugin_async(Mqtt, url=url, topics=["#"])
    assert not run.ok
    assert run.error is not None
    assert f"{url} failed TLS certificate verification" in run.error


async def test_mqtts_without_verification_connects(
    tls_broker: tuple[MosquittoBroker, str],
) -> None:
    _, url = tls_broker
    run = await run_plugin_async(Mqtt, url=url, topics=["#"], tls_verify=False)
    run.assert_ok()
    assert run.value("mqtt.connected") == 1


@pytest.fixture
def auth_broker(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker that lets in only the user ``homelab`` with the password ``right-pass``."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        unavailable("mosquitto_passwd is not installed (it comes with mosquitto)")
        raise AssertionError  # unreachable
    passwords = tmp_path / "passwords"
    subprocess.run(
        [tool, "-b", "-c", str(passwords), "homelab", "right-pass"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    broker = MosquittoBroker(mosquitto.binary, tmp_path, free_port())
    broker.config.write_text(
        f"listener {broker.port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
        "persistence false\nuser root\nlog_dest stdout\n"
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def test_refused_credentials_fail_setup_naming_the_broker_and_the_reason(
    auth_broker: MosquittoBroker,
) -> None:
    url = f"mqtt://homelab:wrong-pass@127.0.0.1:{auth_broker.port}"
    run = await run_plugin_async(Mqtt, url=url, topics=["#"])
    assert not run.ok
    assert run.error is not None
    assert (
        f"mqtt://127.0.0.1:{auth_broker.port} refused the connection: Not authorized" in run.error
    )
    assert "wrong-pass" not in run.error


async def test_username_and_password_options_log_in(auth_broker: MosquittoBroker) -> None:
    run = await run_plugin_async(
        Mqtt,
        url=f"mqtt://127.0.0.1:{auth_broker.port}",
        topics=["#"],
        username="homelab",
        password="right-pass",
    )
    run.assert_ok()
    assert run.value("mqtt.connected") == 1


async def test_a_missing_ca_file_fails_setup(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    run = await run_plugin_async(
        Mqtt,
        url=f"mqtts://127.0.0.1:{mosquitto.port}",
        topics=["#"],
        ca_file=str(tmp_path / "missing.pem"),
    )
    assert not run.ok
    assert run.error is not None
    assert "No such file" in run.error


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://broker:1883"}, "'url' must be an mqtt:// or mqtts://"),
        ({"url": "mqtt://"}, "'url' must be an mqtt:// or mqtts://"),
        ({"url": "mqtt://broker/topic"}, "'url' must be an mqtt:// or mqtts://"),
        ({"topics": []}, "'topics' must have at least 1 item"),
        ({"topics": ["a/#/b"]}, "'a/#/b': '#' must be a whole level and the last one"),
        ({"topics": ["a/b#"]}, "'#' must be a whole level"),
        ({"topics": ["a/x+"]}, "'+' must be a whole level"),
        ({"topics": ["tele/dev{device}"]}, "a named level must be a whole level"),
        ({"topics": ["tele/{1device}/x"]}, "{1device} is not a valid label name"),
        ({"topics": ["tele/{a}/{a}"]}, "names the level {a} twice"),
        ({"topics": ["tele/{a}/x", "tele/+/x"]}, "both subscribe to 'tele/+/x'"),
        ({"payload": "xml"}, "payload"),
        ({"aggregate": "median"}, "aggregate"),
        ({"qos": 3}, "'qos' must be between 0 and 2"),
        ({"fields": {"a..b": "x"}}, "'a..b' is not a JSON path"),
        ({"fields": {"a": "1x"}}, "metric name '1x' is invalid"),
        ({"fields": {"a": "mqtt.connected"}}, "are the plugin's own"),
        ({"fields": {"a": "x", "b": "x"}}, "maps both 'a' and 'b' to 'x'"),
        ({"units": {"x": "u" * 40}}, "'units' 'x': unit is 40 characters long"),
        ({"device_classes": {"x": "d\x00"}}, "'device_classes' 'x': device_class contains a NUL"),
        ({"password": "pw"}, "'password' needs a 'username'"),
        ({"ca_file": "/etc/ca.pem"}, "apply to mqtts:// URLs only"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(
    options: dict[str, Any], message: str
) -> None:
    config = {"url": "mqtt://broker", "topics": ["tele/{device}/SENSOR"], **options}
    with pytest.raises(ConfigError) as caught:
        run_plugin(Mqtt, **config)
    assert message in str(caught.value)


def test_a_password_in_the_url_is_not_shown_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        run_plugin(Mqtt, url="http://user:hunter22@broker", topics=["#"])
    assert "hunter22" not in str(caught.value)


def test_topic_patterns_match_as_mqtt_filters_do() -> None:
    pattern = parse_topic_pattern("shellies/{device}/relay/{channel}/power")
    assert pattern.subscription == "shellies/+/relay/+/power"
    assert pattern.match("shellies/p1/relay/0/power") == {"device": "p1", "channel": "0"}
    assert pattern.match("shellies/p1/relay/0/energy") is None
    assert pattern.match("shellies/p1/relay/0") is None
    assert pattern.match("shellies/p1/relay/0/power/x") is None
    everything = parse_topic_pattern("#")
    assert everything.match("a/b") == {}
    assert everything.match("$SYS/broker/uptime") is None
    tail = parse_topic_pattern("zigbee2mqtt/#")
    assert tail.match("zigbee2mqtt") == {}
    assert tail.match("zigbee2mqtt/hall/set") == {}
    assert isinstance(tail, TopicPattern)


def payload_problem(data: bytes, /, **options: Any) -> str:
    """Why ``read_payload`` refuses ``data`` with these options."""
    config = MqttConfig(url="mqtt://broker", topics=["t/{device}"], **options)
    with pytest.raises(Malformed) as caught:
        read_payload(data, config, "t/x")
    return str(caught.value)


def test_what_makes_a_payload_malformed() -> None:
    assert payload_problem(b"") == "the payload is empty"
    assert payload_problem(b"12 W") == "the payload is not a number: '12 W'"
    assert payload_problem(b"inf") == "the payload is not a finite number"
    assert payload_problem(b"\xff") == "the payload is not UTF-8 text"
    assert payload_problem(b"{") == "the payload is not valid JSON"
    assert payload_problem(b"42", payload="json") == (
        "the payload is a number in JSON, not an object or an array"
    )
    assert payload_problem(b'{"a": NaN}') == "the JSON holds NaN, not a finite number"
    assert payload_problem(b'{"a": 1e999}') == "'a' is not a finite number"
    assert payload_problem(b"[" * 100_000 + b"]" * 100_000) in (
        "the payload is not valid JSON",
        "the JSON is nested too deeply",
    )
    assert payload_problem(b'{"a": {"b": [1]}}', fields={"a.b": "x"}) == (
        "'a.b' is not a number but an array"
    )
    assert payload_problem(b'{"a": [1]}', fields={"a.1": "x"}) == "the JSON has no 'a.1'"


def test_a_document_with_some_of_the_fields_gives_those_and_says_what_is_missing() -> None:
    config = MqttConfig(
        url="mqtt://broker", topics=["t/{device}"], fields={"a": "x", "b.0": "y", "c": "z"}
    )
    readings, problems = read_payload(b'{"a": "ON", "b": ["2.5"]}', config, "t/x")
    assert readings == [("x", 1.0), ("y", 2.5)]
    assert problems == ["the JSON has no 'c'"]


def test_names_from_paths_and_levels() -> None:
    assert metric_name("ENERGY.Power") == "energy_power"
    assert metric_name("values.0") == "values_0"
    assert metric_name("0") == "_0"
    assert metric_name("Température ext") == "temp_rature_ext"


def test_the_type_is_valid_and_described() -> None:
    assert validate_plugin_type(Mqtt) == []
    schema = Mqtt.config_schema()
    assert schema["required"] == ["url", "topics"]
    assert schema["properties"]["aggregate"]["default"] == "latest"


def test_importing_the_plugin_does_not_import_paho() -> None:
    code = "import sys, homelab_plugins.mqtt; print('paho' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
