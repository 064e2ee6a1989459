"""Home Assistant's MQTT discovery payloads as JSON Schemas, written from its documentation
of MQTT discovery and of the MQTT sensor, binary sensor, switch and button platforms.

Each schema requires what the platform requires (``state_topic`` of a sensor and a binary
sensor, ``command_topic`` of a switch and a button) and what an entity of a device needs
(``unique_id``; a ``device`` with ``identifiers``), checks the types and values of the keys
Home Assistant validates (device and state classes, availability, ``expire_after``), and
refuses keys the platform does not know, so a misspelt key fails here as it would be lost
there.
"""

from __future__ import annotations

from typing import Any

#: ``SensorStateClass``.
STATE_CLASSES = ["measurement", "measurement_angle", "total", "total_increasing"]
#: ``SensorDeviceClass``, Home Assistant 2025.
SENSOR_DEVICE_CLASSES = [
    "absolute_humidity",
    "apparent_power",
    "aqi",
    "area",
    "atmospheric_pressure",
    "battery",
    "blood_glucose_concentration",
    "carbon_dioxide",
    "carbon_monoxide",
    "conductivity",
    "current",
    "data_rate",
    "data_size",
    "date",
    "distance",
    "duration",
    "energy",
    "energy_distance",
    "energy_storage",
    "enum",
    "frequency",
    "gas",
    "humidity",
    "illuminance",
    "irradiance",
    "moisture",
    "monetary",
    "nitrogen_dioxide",
    "nitrogen_monoxide",
    "nitrous_oxide",
    "ozone",
    "ph",
    "pm1",
    "pm10",
    "pm25",
    "pm4",
    "power",
    "power_factor",
    "precipitation",
    "precipitation_intensity",
    "pressure",
    "reactive_energy",
    "reactive_power",
    "signal_strength",
    "sound_pressure",
    "speed",
    "sulphur_dioxide",
    "temperature",
    "timestamp",
    "volatile_organic_compounds",
    "volatile_organic_compounds_parts",
    "voltage",
    "volume",
    "volume_flow_rate",
    "volume_storage",
    "water",
    "weight",
    "wind_direction",
    "wind_speed",
]
#: Sensor device classes whose state is not a number (no state class, unit or precision).
NOT_NUMERIC = {"date", "enum", "timestamp"}
#: ``BinarySensorDeviceClass``.
BINARY_SENSOR_DEVICE_CLASSES = list(
    {
        "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
        "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving",
        "occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety",
        "smoke", "sound", "tamper", "update", "vibration", "window",
    }
)  # fmt: skip

_TEXT = {"type": "string", "minLength": 1}
_TOPIC = {"type": "string", "minLength": 1, "not": {"pattern": "[+#]"}}

DEVICE = {
    "type": "object",
    "required": ["identifiers"],
    "additionalProperties": False,
    "properties": {
        "identifiers": {"type": "array", "minItems": 1, "items": _TEXT},
        "connections": {"type": "array"},
        "name": _TEXT,
        "manufacturer": _TEXT,
        "model": _TEXT,
        "model_id": _TEXT,
        "serial_number": _TEXT,
        "hw_version": _TEXT,
        "sw_version": _TEXT,
        "suggested_area": _TEXT,
        "configuration_url": _TEXT,
        "via_device": _TEXT,
    },
}
ORIGIN = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": _TEXT, "sw_version": _TEXT, "support_url": _TEXT},
}
#: Keys every MQTT entity may have (``MQTT_ENTITY_COMMON_SCHEMA`` and availability).
_COMMON: dict[str, Any] = {
    "name": {"type": ["string", "null"]},
    "unique_id": _TEXT,
    "object_id": _TEXT,
    "default_entity_id": _TEXT,
    "device": DEVICE,
    "origin": ORIGIN,
    "availability_topic": _TOPIC,
    "availability_mode": {"enum": ["all", "any", "latest"]},
    "payload_available": _TEXT,
    "payload_not_available": _TEXT,
    "entity_category": {"enum": ["config", "diagnostic"]},
    "enabled_by_default": {"type": "boolean"},
    "icon": _TEXT,
    "json_attributes_topic": _TOPIC,
    "json_attributes_template": _TEXT,
    "qos": {"enum": [0, 1, 2]},
    "encoding": {"type": "string"},
}


def _schema(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["unique_id", "device", *required],
        "additionalProperties": False,
        "properties": {**_COMMON, **properties},
    }


def problems(component: str, config: dict[str, Any]) -> list[str]:
    """What Home Assistant would refuse in ``config``: its schema, then the rules across
    keys that its sensor platform checks."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMAS[component])
    found = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(config)]
    if component == "sensor":
        device_class = config.get("device_class")
        if "options" in config and (
            device_class != "enum" or "state_class" in config or "unit_of_measurement" in config
        ):
            found.append("options go with device class enum only, without state class or unit")
        if device_class in NOT_NUMERIC and "state_class" in config:
            found.append(f"no state class goes with device class {device_class}")
    return found


def _schemas() -> dict[str, dict[str, Any]]:
    sensor_device_classes = SENSOR_DEVICE_CLASSES
    return {
        "sensor": _schema(
            ["state_topic"],
            state_topic=_TOPIC,
            value_template=_TEXT,
            unit_of_measurement={"type": "string"},
            device_class={"enum": sensor_device_classes},
            state_class={"enum": STATE_CLASSES},
            expire_after={"type": "integer", "minimum": 0},
            force_update={"type": "boolean"},
            suggested_display_precision={"type": "integer", "minimum": 0},
            options={"type": "array", "minItems": 1, "items": _TEXT},
        ),
        "binary_sensor": _schema(
            ["state_topic"],
            state_topic=_TOPIC,
            value_template=_TEXT,
            payload_on=_TEXT,
            payload_off=_TEXT,
            device_class={"enum": BINARY_SENSOR_DEVICE_CLASSES},
            expire_after={"type": "integer", "minimum": 0},
            off_delay={"type": "integer", "minimum": 0},
        ),
        "switch": _schema(
            ["command_topic"],
            command_topic=_TOPIC,
            state_topic=_TOPIC,
            payload_on=_TEXT,
            payload_off=_TEXT,
            state_on=_TEXT,
            state_off=_TEXT,
            optimistic={"type": "boolean"},
            retain={"type": "boolean"},
            device_class={"enum": ["outlet", "switch"]},
        ),
        "button": _schema(
            ["command_topic"],
            command_topic=_TOPIC,
            payload_press=_TEXT,
            retain={"type": "boolean"},
            device_class={"enum": ["identify", "restart", "update"]},
        ),
    }


SCHEMAS = _schemas()
