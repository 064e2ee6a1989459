"""The MQTT exporter and Home Assistant discovery (issue 18), against a real mosquitto on
127.0.0.1 (the ``mosquitto`` fixture): what a subscriber receives, commands, the broker
going away and coming back, and discovery removed with what it described."""

from __future__ import annotations

import json
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import anyio
import attrs
import pytest
from ha_discovery import problems
from services import MosquittoBroker
from waiting import eventually

from homelab_core import ConfigError, Hub, InstanceSettings, PluginManager
from homelab_core.config import settings_from_mapping
from homelab_core.model import Health, HealthState, InstanceState, Metric
from homelab_core.mqtt.config import MqttSettings
from homelab_core.mqtt.discovery import (
    Topics,
    health_payload,
    sensor_config,
    series_key,
    state_payload,
    state_text,
)
from homelab_core.web import create_app

pytestmark = pytest.mark.anyio


class Listener:
    """A test's own MQTT client: every message on ``filters``, in order."""

    def __init__(self, broker: MosquittoBroker, *filters: str) -> None:
        self.broker = broker
        self.filters = filters or ("#",)
        self.messages: list[tuple[str, str, bool]] = []

    def on(self, topic: str) -> list[str]:
        return [payload for t, payload, _ in self.messages if t == topic]

    def last(self, topic: str) -> str | None:
        found = self.on(topic)
        return found[-1] if found else None

    def configs(self) -> dict[str, dict[str, Any]]:
        """The discovery configs now held (the last message of each config topic)."""
        held: dict[str, str] = {}
        for topic, payload, _ in self.messages:
            if topic.endswith("/config"):
                held[topic] = payload
        return {topic: json.loads(payload) for topic, payload in held.items() if payload}

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        async with aiomqtt.Client("127.0.0.1", self.broker.port) as client:
            await client.publish(topic, payload, qos=1, retain=retain)


@asynccontextmanager
async def listening(broker: MosquittoBroker, *filters: str) -> AsyncIterator[Listener]:
    listener = Listener(broker, *filters)
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        for topic in listener.filters:
            await client.subscribe(topic, qos=1)

        async def read() -> None:
            try:
                async for message in client.messages:
                    payload = message.payload
                    text = payload.decode() if isinstance(payload, bytes) else str(payload)
                    listener.messages.append((str(message.topic), text, message.retain))
            except aiomqtt.MqttError:
                pass  # the broker went away

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read)
            yield listener
            tasks.cancel_scope.cancel()


def mqtt(broker: MosquittoBroker, **options: Any) -> MqttSettings:
    options.setdefault("min_interval", 0.0)
    options.setdefault("reconnect_max", 0.5)
    return MqttSettings(url=broker.url, **options)


@pytest.fixture
def bundled() -> PluginManager:
    """The bundled plugins (the ``system`` type), through their entry points."""
    return PluginManager()


# -- what Home Assistant receives ----------------------------------------------------------


async def test_the_system_plugins_series_arrive_with_discovery_then_states(
    mosquitto: MosquittoBroker, make_settings: Any, bundled: PluginManager
) -> None:
    settings = make_settings(
        InstanceSettings(id="host", type="system", interval=0.5), mqtt=mqtt(mosquitto)
    )
    topics = Topics("homelab", "homeassistant", settings.node.node_name)
    async with listening(mosquitto, "homeassistant/#", "homelab/#") as listener:
        async with Hub(settings, plugin_manager=bundled) as hub:
            uptime = topics.series("host", "uptime")
            await eventually(lambda: listener.on(uptime), 15, "a state of host's uptime")
            await eventually(
                lambda: len(listener.on(topics.series("host", "mem.percent"))) >= 2,
                15,
                "two states of mem.percent",
            )
            unique_ids = {c["unique_id"] for c in listener.configs().values()}
            stats = hub.counters()
        await eventually(  # said when the hub stopped
            lambda: listener.last(topics.status) == "offline", 5, "offline at the end"
        )

    configs = listener.configs()
    by_state_topic = {c.get("state_topic"): c for c in configs.values()}
    # Every config is one Home Assistant takes.
    for topic, config in configs.items():
        component = topic.split("/")[1]
        assert problems(component, config) == [], (topic, config)
        assert (
            config["availability_topic"] == topics.status
            if "availability_topic" in config
            else True
        )
    sensor = by_state_topic[uptime]
    assert sensor["device_class"] == "duration"
    assert sensor["unit_of_measurement"] == "s"
    assert sensor["state_class"] == "measurement"
    assert sensor["unique_id"].startswith("homelab_host_s")
    assert sensor["device"]["identifiers"] == ["homelab_instance_host"]
    assert sensor["device"]["via_device"] == f"homelab_node_{settings.node.node_name}"
    assert sensor["expire_after"] >= 3 * 0.5
    # A unit Home Assistant writes otherwise, and a device class it does not know.
    memory = by_state_topic[topics.series("host", "mem.used")]
    assert (memory["unit_of_measurement"], memory["device_class"]) == ("B", "data_size")
    percent = by_state_topic[topics.series("host", "mem.percent")]
    assert percent["unit_of_measurement"] == "%"
    assert "device_class" not in percent  # "percentage" is none of Home Assistant's
    # Counters grow: total_increasing.
    counters = [c for c in configs.values() if c.get("state_class") == "total_increasing"]
    assert counters, "the system plugin's network counters are total_increasing"
    # Labelled series: a readable, hashed key, the labels in the name.
    disks = [c for c in configs.values() if c.get("name", "").startswith("disk.percent (")]
    assert disks and all("/series/disk_percent" in c["state_topic"] for c in disks)
    # The instance's own entities.
    node_id = "homelab_host"
    for component, object_id in [
        ("binary_sensor", "up"),
        ("binary_sensor", "problem"),
        ("sensor", "health"),
        ("switch", "enabled"),
        ("button", "run"),
    ]:
        assert f"homeassistant/{component}/{node_id}/{object_id}/config" in configs
    health = json.loads(listener.last(topics.health("host")) or "{}")
    assert (health["state"], health["up"], health["problem"]) == ("ok", "ON", "OFF")
    assert listener.last(topics.enabled("host")) == "ON"
    # States come after their config, are numbers, and the state topic is not retained.
    first_config = next(
        i
        for i, (t, p, _) in enumerate(listener.messages)
        if t.endswith("/config") and p and json.loads(p).get("state_topic") == uptime
    )
    first_state = next(i for i, (t, _, _) in enumerate(listener.messages) if t == uptime)
    assert first_config < first_state
    assert float(listener.on(uptime)[-1]) > 0
    assert stats["mqtt_connected"] == 1 and stats["mqtt_published"] > len(configs)
    assert stats["mqtt_dropped"] == 0

    # Unique ids are the same after a restart.
    async with (
        listening(mosquitto, "homeassistant/#") as again,
        Hub(settings, plugin_manager=bundled),
    ):
        await eventually(
            lambda: {c["unique_id"] for c in again.configs().values()} >= unique_ids,
            15,
            "the same unique ids after a restart",
        )


async def test_min_interval_and_the_filters_leave_out_values_and_series(
    mosquitto: MosquittoBroker, make_settings: Any, manager: PluginManager
) -> None:
    settings = make_settings(
        InstanceSettings(id="fast", type="counter", interval=0.05, options={"series": 2}),
        InstanceSettings(id="hidden", type="counter", interval=0.05),
        mqtt=mqtt(mosquitto, min_interval=0.5, instances=["f*"], metrics=["count"]),
    )
    async with (
        listening(mosquitto, "homelab/#", "homeassistant/#") as listener,
        Hub(settings, plugin_manager=manager) as hub,
    ):
        await anyio.sleep(1.2)
        runs = hub.stats("fast").runs
    topic = (
        f"homelab/instances/fast/series/{series_key(Metric('count', 1, labels={'series': '0'}))}"
    )
    states = listener.on(topic)
    assert runs >= 15
    assert 2 <= len(states) <= 4, states  # every 0.5 s, not every 0.05 s
    assert not [t for t, _, _ in listener.messages if "/hidden" in t or "_hidden" in t]


# -- commands --------------------------------------------------------------------------------


async def test_the_switch_disables_and_enables_and_the_button_runs_now(
    mosquitto: MosquittoBroker, make_settings: Any, manager: PluginManager
) -> None:
    settings = make_settings(
        InstanceSettings(id="c", type="counter", interval=3600), mqtt=mqtt(mosquitto)
    )
    app = create_app(settings, plugin_manager=manager)
    topics = Topics("homelab", "homeassistant", settings.node.node_name)
    # Left on the broker from before: a retained command is not carried out at connection.
    await Listener(mosquitto).publish(topics.enable_command("c"), "OFF", retain=True)
    async with app.test_app() as test_app, listening(mosquitto, "homelab/#") as listener:
        client = test_app.test_client()

        async def api_enabled() -> bool:
            body = await (await client.get("/api/plugins/c")).get_json()
            return bool(body["plugin"]["enabled"])

        async def executions() -> int:
            body = await (await client.get("/api/plugins/c/executions")).get_json()
            return len(body["executions"])

        await eventually(lambda: listener.last(topics.enabled("c")) == "ON", 10, "enabled: ON")
        await eventually(lambda: executions(), 10, "the first run")
        assert await api_enabled()  # the retained OFF was not carried out
        await listener.publish(topics.enable_command("c"), "OFF")
        await eventually(lambda: _not(api_enabled()), 10, "c disabled through MQTT")
        await eventually(lambda: listener.last(topics.enabled("c")) == "OFF", 10, "enabled: OFF")
        await eventually(
            lambda: (
                json.loads(listener.last(topics.health("c")) or "{}").get("state") == "disabled"
            ),
            10,
            "health: disabled",
        )

        await listener.publish(topics.enable_command("c"), "on")
        await eventually(api_enabled, 10, "c enabled again through MQTT")
        before = await executions()
        await listener.publish(topics.run_command("c"), "PRESS")
        await eventually(lambda: _more(executions(), before), 10, "a run now through the button")
        # An empty message (what clears a retained one) is no command at all.
        runs = await executions()
        await listener.publish(topics.run_command("c"), "")
        await listener.publish(topics.enable_command("c"), "")
        # Refused: a payload that is neither ON nor OFF, an unknown instance, a retained one.
        await listener.publish(topics.enable_command("c"), "maybe")
        await listener.publish(topics.run_command("nope"), "PRESS")
        metrics = ""

        async def refused() -> bool:
            nonlocal metrics
            metrics = await (await client.get("/metrics")).get_data(as_text=True)
            return "homelab_core_mqtt_commands_refused_total 3" in metrics

        await eventually(refused, 10, "three refused commands on /metrics")
        assert "homelab_core_mqtt_commands_total 3" in metrics
        await anyio.sleep(0.3)
        assert await executions() == runs  # the empty message ran nothing
        await listener.publish(topics.enable_command("c"), "", retain=True)  # clear it


async def _not(check: Any) -> bool:
    return not await check


async def _more(count: Any, than: int) -> bool:
    return int(await count) > than


# -- the broker goes away ------------------------------------------------------------------


async def test_a_broker_restart_reconnects_republishes_and_leaves_the_scheduler_alone(
    mosquitto: MosquittoBroker, make_settings: Any, manager: PluginManager
) -> None:
    settings = make_settings(
        InstanceSettings(id="fast", type="counter", interval=0.1, options={"series": 5}),
        mqtt=mqtt(mosquitto, queue_size=3, reconnect_max=1.0),
    )
    config_topic_count = 0
    async with Hub(settings, plugin_manager=manager) as hub:
        async with listening(mosquitto, "homeassistant/#") as listener:
            await eventually(lambda: len(listener.configs()) >= 5 + 5 + 1, 10, "the configs")
            config_topic_count = len(listener.configs())
        await eventually(lambda: hub.counters()["mqtt_connected"] == 1, 10, "connected")
        before = attrs.evolve(hub.stats("fast"))
        mosquitto.stop()
        stopped = anyio.current_time()
        await eventually(lambda: hub.counters()["mqtt_connected"] == 0, 10, "disconnected")
        await anyio.sleep(10 - (anyio.current_time() - stopped))
        during = attrs.evolve(hub.stats("fast"))
        mosquitto.start()  # with no retained messages: it kept nothing
        await eventually(lambda: hub.counters()["mqtt_connected"] == 1, 10, "connected again")
        figures = hub.counters()
        async with listening(mosquitto, "homeassistant/#") as again:
            await eventually(
                lambda: len(again.configs()) == config_topic_count,
                10,
                "every discovery config again, retained",
            )
        executions = await hub.executions("fast", limit=200)

    assert figures["mqtt_reconnects"] == 1
    # 5 series at 10 runs a second for 10 s, 3 of them held: the others were dropped.
    assert figures["mqtt_dropped"] > 100
    # The scheduler went on as before: every run on time, none skipped.
    runs = during.runs - before.runs
    assert runs >= 80, runs
    assert during.skipped == before.skipped
    lags = [e.lag for e in executions]
    assert statistics.median(lags) < 0.05, lags


async def test_a_broker_that_is_not_there_at_start_is_reached_later(
    mosquitto: MosquittoBroker, make_settings: Any, manager: PluginManager
) -> None:
    mosquitto.stop()
    settings = make_settings(
        InstanceSettings(id="c", type="counter", interval=0.1), mqtt=mqtt(mosquitto)
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        await eventually(lambda: hub.stats("c").runs >= 3, 10, "runs without a broker")
        assert hub.counters()["mqtt_connected"] == 0
        mosquitto.start()
        await eventually(lambda: hub.counters()["mqtt_connected"] == 1, 10, "connected")
        assert hub.counters()["mqtt_reconnects"] == 0  # a first connection, not a reconnection


async def test_the_pause_between_attempts_starts_again_small_after_a_connection(
    mosquitto: MosquittoBroker, make_settings: Any, manager: PluginManager
) -> None:
    settings = make_settings(
        InstanceSettings(id="c", type="counter", interval=3600),
        mqtt=mqtt(mosquitto, reconnect_max=4.0),
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        await eventually(lambda: hub.counters()["mqtt_connected"] == 1, 10, "connected")
        mosquitto.stop()
        await anyio.sleep(4.0)  # attempts after 0.5, 1 and 2 s: the pause reached 4 s
        mosquitto.start()
        await eventually(lambda: hub.counters()["mqtt_reconnects"] == 1, 10, "back")
        # A second loss right away: retried after 0.5 s, not after the last pause, 4 s.
        mosquitto.stop()
        mosquitto.start()
        await eventually(
            lambda: hub.counters()["mqtt_reconnects"] == 2, 2.5, "back soon the second time"
        )


async def test_a_ca_file_that_does_not_load_is_logged_and_the_hub_goes_on(
    mosquitto: MosquittoBroker,
    make_settings: Any,
    manager: PluginManager,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    settings = make_settings(
        InstanceSettings(id="c", type="counter", interval=0.1),
        mqtt=MqttSettings(url=f"mqtts://127.0.0.1:{mosquitto.port}", ca_file=str(garbage)),
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        await eventually(lambda: hub.stats("c").runs >= 5, 10, "runs go on")
        assert hub.counters()["mqtt_connected"] == 0
    assert any(str(garbage) in r.getMessage() for r in caplog.records), caplog.text


def test_a_missing_ca_file_is_refused_with_the_settings(tmp_path: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(
            {"mqtt": {"url": "mqtts://broker", "ca_file": str(tmp_path / "nope.pem")}}
        )
    assert "ca_file" in str(caught.value) and "nope.pem" in str(caught.value)


async def test_home_assistants_birth_message_has_discovery_sent_again(
    mosquitto: MosquittoBroker, make_settings: Any, manager: PluginManager
) -> None:
    settings = make_settings(
        InstanceSettings(id="c", type="counter", interval=3600), mqtt=mqtt(mosquitto)
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        await eventually(lambda: _all_sent(hub), 10, "everything sent")
        async with listening(mosquitto, "homeassistant/+/+/+/config") as listener:
            await eventually(lambda: len(listener.configs()) >= 7, 10, "the configs")
            await anyio.sleep(0.2)
            retained = len(listener.messages)
            assert all(r for _, _, r in listener.messages)  # all of them held by the broker
            await listener.publish("homeassistant/status", "online")
            await eventually(
                lambda: len(listener.messages) >= 2 * retained, 10, "every config again"
            )
            again = listener.messages[retained:]
            assert {t for t, _, _ in again} == {t for t, _, _ in listener.messages[:retained]}


def _all_sent(hub: Hub) -> bool:
    figures = hub.counters()
    return figures["mqtt_connected"] == 1 and figures["mqtt_queued"] == 0


# -- discovery removed -----------------------------------------------------------------------


async def test_a_deleted_instance_and_a_vanished_series_lose_their_discovery(
    mosquitto: MosquittoBroker, make_settings: Any, manager: PluginManager
) -> None:
    settings = make_settings(mqtt=mqtt(mosquitto))
    async with (
        Hub(settings, plugin_manager=manager) as hub,
        listening(mosquitto, "homeassistant/#") as listener,
    ):
        await hub.create_instance("made", {"type": "counter", "interval": 0.05, "series": 3})
        await eventually(
            lambda: sum("homelab_made/s" in t for t in listener.configs()) == 3,
            10,
            "three sensors of made",
        )
        await hub.update_instance("made", {"series": 1})
        await eventually(
            lambda: sum("homelab_made/s" in t for t in listener.configs()) == 1,
            10,
            "two sensors removed when their series stopped coming",
        )
        held = [t for t in listener.configs() if "homelab_made" in t]
        assert len(held) == 1 + 5  # one sensor, the instance's five entities
        await hub.delete_instance("made")
        await eventually(
            lambda: not [t for t in listener.configs() if "homelab_made" in t],
            10,
            "every config of made removed",
        )
        cleared = {t for t, p, _ in listener.messages if not p}
        assert set(held) <= cleared
    # The broker holds none of them any more.
    async with listening(mosquitto, "homeassistant/#") as after:
        await anyio.sleep(0.3)
        assert not [t for t in after.configs() if "homelab_made" in t]


async def test_an_instance_changed_by_a_reload_is_announced_again(
    mosquitto: MosquittoBroker, make_settings: Any, manager: PluginManager
) -> None:
    def settings(interval: float) -> Any:
        return make_settings(
            InstanceSettings(id="c", type="counter", interval=interval, timeout=1.0),
            mqtt=mqtt(mosquitto),
        )

    def expire_after(listener: Listener) -> set[int]:
        return {
            c["expire_after"]
            for t, c in listener.configs().items()
            if t.startswith("homeassistant/sensor/homelab_c/s")
        }

    async with (
        listening(mosquitto, "homeassistant/#") as listener,
        Hub(settings(0.1), plugin_manager=manager) as hub,
    ):
        await eventually(lambda: expire_after(listener) == {2}, 10, "3 x 0.1 s + 1 s")
        await hub.reload(settings(10.0))
        await eventually(lambda: expire_after(listener) == {31}, 10, "3 x 10 s + 1 s")


# -- several nodes ---------------------------------------------------------------------------


@pytest.fixture
def cluster_node(
    mosquitto: MosquittoBroker,
    make_settings: Any,
    manager: PluginManager,
    postgres_url: str,
    redis_url: str,
) -> Any:
    """Makes a hub that is node ``name`` of a cluster on one PostgreSQL and one Redis."""
    from homelab_core.config import BusSettings, NodeSettings

    def hub(name: str, *instances: InstanceSettings) -> Hub:
        settings = make_settings(
            *instances,
            bus=BusSettings(backend="redis", url=redis_url),
            node=NodeSettings(name=name, heartbeat=0.2, lease_ttl=1.0),
            mqtt=mqtt(mosquitto),
        )
        settings.database.url = postgres_url
        return Hub(settings, plugin_manager=manager)

    return hub


async def test_each_node_publishes_the_instances_it_runs_with_its_own_availability(
    mosquitto: MosquittoBroker, cluster_node: Any
) -> None:
    pinned = [
        InstanceSettings(id="on-a", type="counter", interval=0.1, node="a"),
        InstanceSettings(id="on-b", type="counter", interval=0.1, node="b"),
    ]

    def hub(name: str) -> Hub:
        return cluster_node(name, *pinned)  # type: ignore[no-any-return]

    async with listening(mosquitto, "homeassistant/#", "homelab/#") as listener:
        async with hub("a") as first, hub("b") as second:
            await eventually(
                lambda: len([c for c in listener.configs() if "/homelab_on-" in c]) == 2 * 6,
                15,
                "the configs of both instances",
            )
            # A command reaches the node that runs the instance; the other leaves it alone.
            await listener.publish("homelab/instances/on-b/run", "PRESS")
            await eventually(lambda: second.counters()["mqtt_commands"] == 1, 10, "run on b")
            assert first.counters()["mqtt_commands_refused"] == 0
            assert first.counters()["mqtt_commands"] == 0
        for node in ("a", "b"):
            await eventually(
                lambda node=node: listener.last(f"homelab/nodes/{node}/status") == "offline",
                5,
                f"node {node} offline at the end",
            )
        configs = listener.configs()
    for instance_id, node in (("on-a", "a"), ("on-b", "b")):
        mine = [c for t, c in configs.items() if f"/homelab_{instance_id}/" in t]
        assert {c["availability_topic"] for c in mine} == {f"homelab/nodes/{node}/status"}
        assert {c["device"]["via_device"] for c in mine} == {f"homelab_node_{node}"}


async def test_an_instance_that_moves_is_published_by_its_new_node_alone(
    mosquitto: MosquittoBroker, cluster_node: Any
) -> None:
    hub = cluster_node

    def availability(listener: Listener) -> set[str]:
        return {
            c["availability_topic"]
            for t, c in listener.configs().items()
            if "/homelab_roamer/" in t
        }

    async with (
        listening(mosquitto, "homeassistant/#") as listener,
        hub("a") as first,
        hub("b") as second,
    ):
        await first.create_instance("roamer", {"type": "counter", "interval": 0.1, "node": "a"})
        await eventually(lambda: availability(listener) == {"homelab/nodes/a/status"}, 10, "on a")
        await first.update_instance("roamer", {"node": "b"})
        await eventually(
            lambda: availability(listener) == {"homelab/nodes/b/status"}, 10, "moved to b"
        )
        await eventually(lambda: _all_sent(first) and _all_sent(second), 10, "all sent")
        # Home Assistant restarts: both nodes send what they hold, a no longer roamer.
        mark = len(listener.messages)
        await listener.publish("homeassistant/status", "online")
        await eventually(
            lambda: any("/homelab_roamer/" in t for t, _, _ in listener.messages[mark:]),
            10,
            "roamer's configs again",
        )
        await eventually(lambda: _all_sent(first) and _all_sent(second), 10, "all sent")
        await anyio.sleep(0.2)
        again = [
            json.loads(p)["availability_topic"]
            for t, p, _ in listener.messages[mark:]
            if "/homelab_roamer/" in t and p
        ]
        assert set(again) == {"homelab/nodes/b/status"}, again
        assert availability(listener) == {"homelab/nodes/b/status"}


# -- settings and pure parts -----------------------------------------------------------------


def test_no_url_no_exporter(make_settings: Any, manager: PluginManager) -> None:
    hub = Hub(make_settings(), plugin_manager=manager)
    assert hub.mqtt is None
    assert not [k for k in hub.counters() if k.startswith("mqtt")]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"url": "http://broker"}, "mqtt:// or mqtts://"),
        ({"url": "mqtt://"}, "names no host"),
        ({"url": "mqtt://broker:99999"}, "port"),
        ({"url": "mqtt://broker/path"}, "no path"),
        ({"base_topic": "home/#"}, "without wildcards"),
        ({"base_topic": "/homelab"}, "starts"),
        ({"discovery_prefix": "a//b"}, "empty topic level"),
        ({"instances": [""]}, "empty entry"),
        ({"queue_size": 0}, "queue_size"),
    ],
)
def test_bad_mqtt_settings_are_refused_naming_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"mqtt": table})
    text = str(caught.value)
    assert "[mqtt]" in text and message in text, text


def test_the_url_gives_host_port_tls_and_credentials() -> None:
    plain = MqttSettings(url="mqtt://bob:s%40cret@broker")
    assert (plain.host, plain.port, plain.tls) == ("broker", 1883, False)
    assert plain.credentials() == ("bob", "s@cret")
    tls = MqttSettings(url="mqtts://broker", username="ann", password="pw")
    assert (tls.port, tls.tls, tls.credentials()) == (8883, True, ("ann", "pw"))
    assert "pw" not in repr(tls)


def test_series_keys_are_stable_readable_and_distinct() -> None:
    plain = Metric("cpu.percent", 1.0)
    labelled = Metric("disk.percent", 1.0, labels={"mount": "/"})
    other = Metric("disk.percent", 1.0, labels={"mount": "/boot"})
    assert series_key(plain) == "cpu.percent"
    assert series_key(labelled).startswith("disk_percent-")
    assert series_key(other).startswith("disk_percent_boot-")
    assert series_key(labelled) == series_key(Metric("disk.percent", 2.0, labels={"mount": "/"}))
    assert len({series_key(plain), series_key(labelled), series_key(other)}) == 3
    # A name shaped like a hashed key, or with a character topics should not carry, is hashed.
    assert series_key(Metric("x-0123abcd", 1.0)) != "x-0123abcd"
    wild = series_key(Metric("x", 1.0, labels={"q": "a+b/#"}))
    assert not set("+#/") & set(wild), wild


def test_a_timestamp_is_iso_text_and_a_binary_device_class_a_binary_sensor() -> None:
    from homelab_core.model import InstanceInfo

    topics = Topics("homelab", "homeassistant", "n1")
    info = InstanceInfo(
        id="web",
        type="tls_cert",
        title="TLS",
        category="network",
        enabled=True,
        state=InstanceState.READY,
        interval=60.0,
        timeout=10.0,
        config={},
        health=Health(HealthState.OK),
        source="file",
    )
    expires = Metric("tls.expires_at", 1_800_000_000.0, "s", device_class="timestamp")
    topic, config = sensor_config(topics, info, expires, "1", expire_after=0)
    assert problems("sensor", config) == []
    assert "unit_of_measurement" not in config and "state_class" not in config
    assert state_payload(expires) == "2027-01-15T08:00:00+00:00"
    days = Metric("tls.days_left", 30.0, "days", device_class="duration")
    _, config = sensor_config(topics, info, days, "1", expire_after=0)
    assert (config["unit_of_measurement"], config["device_class"]) == ("d", "duration")
    up = Metric("tcp.up", 1.0, device_class="connectivity")
    topic, config = sensor_config(topics, info, up, "1", expire_after=0)
    assert topic.startswith("homeassistant/binary_sensor/")
    assert problems("binary_sensor", config) == []
    assert (config["payload_on"], config["payload_off"]) == ("1", "0")
    assert state_payload(up) == "1"


def test_states_and_health_payloads() -> None:
    assert [state_text(v) for v in (42.0, 0.5, -3.0, 1e20)] == ["42", "0.5", "-3", "1e+20"]
    ok = json.loads(health_payload(Health(HealthState.OK), True))
    assert (ok["up"], ok["problem"], ok["enabled"]) == ("ON", "OFF", "ON")
    failing = json.loads(health_payload(Health(HealthState.FAILING, "refused"), True))
    assert (failing["up"], failing["problem"], failing["message"]) == ("OFF", "ON", "refused")
    off = json.loads(health_payload(Health(HealthState.DISABLED), False))
    assert (off["up"], off["problem"], off["enabled"]) == ("None", "None", "OFF")
