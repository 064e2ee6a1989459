"""The topics of the MQTT exporter and its Home Assistant discovery configs.

Pure functions, no I/O: :class:`Topics` lays out every topic of one node, and the
``*_configs`` functions build the retained discovery messages Home Assistant's MQTT
integration reads (``<prefix>/<component>/<node_id>/<object_id>/config``, a JSON object
per entity). docs/home-assistant.md has the tables.

Identifiers are stable across restarts: they are made of the base topic, the instance id,
and a hash of a series' name and labels, never of anything that changes from one start to
the next.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
from collections.abc import Iterable
from typing import Any

import attrs

from ..codec import labels_json
from ..model import Health, HealthState, InstanceInfo, Metric, MetricKind

ONLINE = "online"
OFFLINE = "offline"
#: What Home Assistant's binary sensors read as on, off and unknown.
ON, OFF, NONE = "ON", "OFF", "None"
#: The payload of a button press (Home Assistant's default ``payload_press``).
PRESS = "PRESS"
MANUFACTURER = "Homelab Core"

_SLUG = re.compile(r"[^a-z0-9_-]+")
#: A metric name used as is as a topic level: plain characters, and not the shape of a
#: hashed key (so that a name can never be another series' key).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_HASHED = re.compile(r".*-[0-9a-f]{8}")

#: Home Assistant's sensor device classes (``SensorDeviceClass``); a config naming any other
#: is refused by Home Assistant as a whole, so another device class is left out.
SENSOR_DEVICE_CLASSES = frozenset(
    {
        "absolute_humidity", "apparent_power", "aqi", "area", "atmospheric_pressure",
        "battery", "blood_glucose_concentration", "carbon_dioxide", "carbon_monoxide",
        "conductivity", "current", "data_rate", "data_size", "date", "distance", "duration",
        "energy", "energy_distance", "energy_storage", "enum", "frequency", "gas", "humidity",
        "illuminance", "irradiance", "moisture", "monetary", "nitrogen_dioxide",
        "nitrogen_monoxide", "nitrous_oxide", "ozone", "ph", "pm1", "pm10", "pm25", "pm4",
        "power", "power_factor", "precipitation", "precipitation_intensity", "pressure",
        "reactive_energy", "reactive_power", "signal_strength", "sound_pressure", "speed",
        "sulphur_dioxide", "temperature", "timestamp", "volatile_organic_compounds",
        "volatile_organic_compounds_parts", "voltage", "volume", "volume_flow_rate",
        "volume_storage", "water", "weight", "wind_direction", "wind_speed",
    }
)  # fmt: skip
#: The units Home Assistant accepts with the device classes the bundled plugins use (it
#: warns about, and will refuse, a device class with another unit). A device class whose
#: unit is not among them is left out; the unit stays.
DEVICE_CLASS_UNITS: dict[str, frozenset[str]] = {
    "battery": frozenset({"%"}),
    "data_rate": frozenset(
        {"bit/s", "kbit/s", "Mbit/s", "Gbit/s", "B/s", "kB/s", "MB/s", "GB/s"}
        | {"KiB/s", "MiB/s", "GiB/s"}
    ),
    "data_size": frozenset(
        {"bit", "kbit", "Mbit", "Gbit", "B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"}
        | {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"}
    ),
    "duration": frozenset({"d", "h", "min", "s", "ms", "μs"}),
    "frequency": frozenset({"Hz", "kHz", "MHz", "GHz"}),
    "humidity": frozenset({"%"}),
    "power": frozenset({"mW", "W", "kW", "MW", "GW", "TW", "BTU/h"}),
    "energy": frozenset({"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh"}),
    "temperature": frozenset({"°C", "°F", "K"}),
    "voltage": frozenset({"V", "mV", "μV", "kV", "MV"}),
    "current": frozenset({"A", "mA"}),
    "signal_strength": frozenset({"dB", "dBm"}),
}
#: Units the bundled plugins write otherwise than Home Assistant does.
HA_UNITS = {"bytes": "B", "bytes/s": "B/s", "seconds": "s", "days": "d", "hours": "h"}
#: Home Assistant's binary sensor device classes that are no sensor's: a series with one
#: of them (a plugin's ``up``, say: 1 or 0) is a binary sensor, on at 1.
BINARY_DEVICE_CLASSES = frozenset(
    {
        "battery_charging", "cold", "connectivity", "door", "garage_door", "heat", "light",
        "lock", "motion", "moving", "occupancy", "opening", "plug", "presence", "problem",
        "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window",
    }
)  # fmt: skip
#: Device classes whose state is not a number: no state class goes with them.
_NOT_NUMERIC = frozenset({"date", "enum", "timestamp"})
#: The health states an instance's ``health`` sensor takes (an ``enum`` sensor).
HEALTH_STATES = [state.value for state in HealthState]


def slug(text: str) -> str:
    """``text`` lowercased with every run of other characters than ``a-z0-9_-`` as ``_``."""
    return _SLUG.sub("_", text.lower()).strip("_") or "_"


def series_key(metric: Metric) -> str:
    """The topic level of a series: its name where that is plain text and it has no
    labels; otherwise a readable slug of the name and label values, and a hash of both."""
    if (
        not metric.labels
        and _PLAIN_NAME.fullmatch(metric.name)
        and not _HASHED.fullmatch(metric.name)
    ):
        return metric.name
    parts = [slug(part) for part in (metric.name, *metric.labels.values())]
    readable = "_".join(part for part in parts if part != "_")[:60].rstrip("_-") or "series"
    return f"{readable}-{_digest(metric.name, labels_json(metric.labels))[:8]}"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "backslashreplace")).hexdigest()


def series_name(metric: Metric) -> str:
    """The entity name of a series: the metric name, its labels in brackets."""
    if not metric.labels:
        return metric.name
    inner = ", ".join(f"{key}={value}" for key, value in metric.labels.items())
    return f"{metric.name} ({inner})"


def state_payload(metric: Metric) -> str:
    """A series' state message: its value as text, or for a ``timestamp`` series the time
    it holds (epoch seconds) as ISO 8601, which is what Home Assistant reads."""
    if metric.device_class == "timestamp":
        return datetime.datetime.fromtimestamp(metric.value, datetime.UTC).isoformat()
    return state_text(metric.value)


def state_text(value: float) -> str:
    """A value as the text of a state message: whole numbers without a fraction."""
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def health_payload(health: Health, enabled: bool) -> str:
    """The retained JSON of an instance's health topic, read by its binary sensors (``up``,
    ``problem``) and its ``health`` sensor, with the message as an attribute."""
    state = health.state
    if state in (HealthState.OK, HealthState.DEGRADED):
        up = ON
    elif state in (HealthState.FAILING, HealthState.FAILED):
        up = OFF
    else:
        up = NONE
    if state == HealthState.OK:
        problem = OFF
    elif state in (HealthState.DEGRADED, HealthState.FAILING, HealthState.FAILED):
        problem = ON
    else:
        problem = NONE
    return json.dumps(
        {
            "state": state.value,
            "message": health.message,
            "up": up,
            "problem": problem,
            "enabled": ON if enabled else OFF,
        },
        ensure_ascii=False,
    )


@attrs.frozen
class Topics:
    """Every topic of one node's exporter."""

    #: ``[mqtt] base_topic``.
    base: str
    #: ``[mqtt] discovery_prefix``.
    prefix: str
    #: This node's name.
    node: str

    @property
    def uid(self) -> str:
        """The first part of every unique id and device identifier: the base topic as a
        slug (two hubs on one broker have different base topics)."""
        return slug(self.base)

    @property
    def status(self) -> str:
        """This node's availability: ``online``, or ``offline`` (also its last will)."""
        return f"{self.base}/nodes/{self.node}/status"

    @property
    def birth(self) -> str:
        """Where Home Assistant says ``online`` when it (re)starts."""
        return f"{self.prefix}/status"

    def instance(self, instance_id: str) -> str:
        """The topic under which an instance's topics are."""
        return f"{self.base}/instances/{instance_id}"

    def health(self, instance_id: str) -> str:
        return f"{self.instance(instance_id)}/health"

    def enabled(self, instance_id: str) -> str:
        return f"{self.instance(instance_id)}/enabled"

    def enable_command(self, instance_id: str) -> str:
        return f"{self.enabled(instance_id)}/set"

    def run_command(self, instance_id: str) -> str:
        return f"{self.instance(instance_id)}/run"

    def series(self, instance_id: str, key: str) -> str:
        return f"{self.instance(instance_id)}/series/{key}"

    @property
    def command_filters(self) -> list[str]:
        """The subscriptions of the command topics of every instance."""
        return [self.enable_command("+"), self.run_command("+")]

    def command(self, topic: str) -> tuple[str, str] | None:
        """``(instance id, "enable" or "run")`` of a command topic, else None."""
        head = f"{self.base}/instances/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :].split("/")
        if len(rest) == 3 and rest[1:] == ["enabled", "set"]:
            return rest[0], "enable"
        if len(rest) == 2 and rest[1] == "run":
            return rest[0], "run"
        return None

    def config(self, component: str, node_id: str, object_id: str) -> str:
        """A discovery config's topic."""
        return f"{self.prefix}/{component}/{node_id}/{object_id}/config"

    # -- identifiers ------------------------------------------------------------------------

    def node_device_id(self) -> str:
        return f"{self.uid}_node_{slug(self.node)}"

    def instance_device_id(self, instance_id: str) -> str:
        return f"{self.uid}_instance_{slug(instance_id)}"

    def instance_node_id(self, instance_id: str) -> str:
        """The ``node_id`` level of an instance's discovery topics."""
        return f"{self.uid}_{slug(instance_id)}"


def _origin(version: str) -> dict[str, str]:
    return {"name": MANUFACTURER, "sw_version": version}


def _availability(topics: Topics) -> dict[str, str]:
    return {
        "availability_topic": topics.status,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
    }


def instance_device(topics: Topics, info: InstanceInfo, version: str) -> dict[str, Any]:
    """The Home Assistant device of an instance, shown as connected through its node's."""
    return {
        "identifiers": [topics.instance_device_id(info.id)],
        "name": info.id,
        "manufacturer": MANUFACTURER,
        "model": f"{info.title} ({info.type})",
        "sw_version": version,
        "via_device": topics.node_device_id(),
    }


def node_configs(topics: Topics, version: str) -> list[tuple[str, dict[str, Any]]]:
    """The node's device: a connectivity binary sensor on its status topic."""
    device_id = topics.node_device_id()
    return [
        (
            topics.config("binary_sensor", device_id, "online"),
            {
                "name": "Online",
                "unique_id": f"{device_id}_online",
                "state_topic": topics.status,
                "payload_on": ONLINE,
                "payload_off": OFFLINE,
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "device": {
                    "identifiers": [device_id],
                    "name": f"Homelab node {topics.node}",
                    "manufacturer": MANUFACTURER,
                    "model": "Hub node",
                    "sw_version": version,
                },
                "origin": _origin(version),
            },
        )
    ]


def instance_configs(
    topics: Topics, info: InstanceInfo, version: str, *, commands: bool
) -> list[tuple[str, dict[str, Any]]]:
    """An instance's own entities: ``up`` and ``problem`` binary sensors and a ``health``
    sensor (all on its health topic), and with ``commands`` its switch and button."""
    node_id = topics.instance_node_id(info.id)
    common = {
        **_availability(topics),
        "device": instance_device(topics, info, version),
        "origin": _origin(version),
    }
    health = topics.health(info.id)
    entities: list[tuple[str, dict[str, Any]]] = [
        (
            topics.config("binary_sensor", node_id, "up"),
            {
                "name": "Up",
                "unique_id": f"{node_id}_up",
                "state_topic": health,
                "value_template": "{{ value_json.up }}",
                "payload_on": ON,
                "payload_off": OFF,
                "device_class": "connectivity",
                **common,
            },
        ),
        (
            topics.config("binary_sensor", node_id, "problem"),
            {
                "name": "Problem",
                "unique_id": f"{node_id}_problem",
                "state_topic": health,
                "value_template": "{{ value_json.problem }}",
                "payload_on": ON,
                "payload_off": OFF,
                "device_class": "problem",
                "json_attributes_topic": health,
                **common,
            },
        ),
        (
            topics.config("sensor", node_id, "health"),
            {
                "name": "Health",
                "unique_id": f"{node_id}_health",
                "state_topic": health,
                "value_template": "{{ value_json.state }}",
                "device_class": "enum",
                "options": HEALTH_STATES,
                "entity_category": "diagnostic",
                "json_attributes_topic": health,
                **common,
            },
        ),
    ]
    if commands:
        entities += [
            (
                topics.config("switch", node_id, "enabled"),
                {
                    "name": "Enabled",
                    "unique_id": f"{node_id}_enabled",
                    "command_topic": topics.enable_command(info.id),
                    "state_topic": topics.enabled(info.id),
                    "payload_on": ON,
                    "payload_off": OFF,
                    "entity_category": "config",
                    **common,
                },
            ),
            (
                topics.config("button", node_id, "run"),
                {
                    "name": "Run now",
                    "unique_id": f"{node_id}_run",
                    "command_topic": topics.run_command(info.id),
                    "payload_press": PRESS,
                    **common,
                },
            ),
        ]
    return entities


def sensor_object_id(metric: Metric) -> str:
    """The ``object_id`` (and the end of the unique id) of a series' sensor."""
    return f"s{_digest(metric.name, labels_json(metric.labels))[:16]}"


def sensor_config(
    topics: Topics, info: InstanceInfo, metric: Metric, version: str, *, expire_after: int
) -> tuple[str, dict[str, Any]]:
    """A series' entity: a sensor with its state topic, unit, device class, state class and
    unique id; a binary sensor for a device class only binary sensors have."""
    node_id = topics.instance_node_id(info.id)
    object_id = sensor_object_id(metric)
    payload: dict[str, Any] = {
        "name": series_name(metric),
        "unique_id": f"{node_id}_{object_id}",
        "state_topic": topics.series(info.id, series_key(metric)),
        **_availability(topics),
        "device": instance_device(topics, info, version),
        "origin": _origin(version),
    }
    if expire_after > 0:
        payload["expire_after"] = expire_after
    if metric.device_class in BINARY_DEVICE_CLASSES:
        payload.update(device_class=metric.device_class, payload_on="1", payload_off="0")
        return topics.config("binary_sensor", node_id, object_id), payload
    device_class = ha_device_class(metric)
    if metric.unit and device_class not in _NOT_NUMERIC:
        payload["unit_of_measurement"] = ha_unit(metric.unit)
    if device_class:
        payload["device_class"] = device_class
    if device_class not in _NOT_NUMERIC:
        payload["state_class"] = (
            "total_increasing" if metric.kind == MetricKind.COUNTER else "measurement"
        )
    return topics.config("sensor", node_id, object_id), payload


def ha_device_class(metric: Metric) -> str | None:
    """The metric's device class where Home Assistant accepts it with its unit, else None."""
    device_class = metric.device_class
    if not device_class or device_class not in SENSOR_DEVICE_CLASSES:
        return None
    units = DEVICE_CLASS_UNITS.get(device_class)
    if device_class not in _NOT_NUMERIC and units is not None and ha_unit(metric.unit) not in units:
        return None
    return device_class


def ha_unit(unit: str) -> str:
    """``unit`` as Home Assistant writes it (``bytes`` is ``B``)."""
    return HA_UNITS.get(unit, unit)


def expire_after(interval: float, timeout: float, min_interval: float) -> int:
    """Seconds after which Home Assistant shows a series unavailable without a new state:
    three publishing intervals and a run's timeout."""
    return math.ceil(3 * max(interval, min_interval) + timeout)


def topics_of(configs: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """The topics of some configs (to remove them: an empty retained message on each)."""
    return [topic for topic, _ in configs]
