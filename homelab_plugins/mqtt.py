"""The bundled ``mqtt`` plugin: the values devices publish on MQTT topics, as series.

Tasmota, ESPHome, Zigbee2MQTT and Shelly devices publish their readings on MQTT topics,
as JSON documents or as plain numbers. An instance subscribes to topic patterns on one
broker and keeps what arrives between two runs; each run turns it into one sample per
series (the latest value, or the mean, minimum, maximum, sum or count of the values).

A topic level written ``{device}`` in a pattern subscribes as ``+`` and gives the series
the label ``device=<that level>``. A JSON payload gives one series per numeric leaf (or
per path named in ``fields``); a plain payload (``21.5``, ``ON``) gives one series named
after the topic's last level (or ``name``).

The subscription lives in paho-mqtt's network thread, between runs and independent of
the event loop; paho reconnects by itself with back-off and the plugin subscribes again
on every connection. A payload that cannot be read is counted (``mqtt.malformed``) and
logged, at most once per topic every :data:`LOG_INTERVAL` seconds; it never fails a run.
"""

from __future__ import annotations

import json
import math
import re
import ssl
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread
import attrs

from homelab_core import HealthReport, Metric, MetricKind, Plugin, hookimpl, option, redact_urls
from homelab_core.mqtt.config import SCHEMES, broker_url_problem

from .tcp import describe_connect_error

if TYPE_CHECKING:  # paho is imported when an instance starts, not with the plugin list
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

#: Seconds between two log lines about malformed payloads on the same topic.
LOG_INTERVAL = 300.0
#: Most topics whose malformed payloads are remembered between runs (the rest are counted).
MAX_PROBLEM_TOPICS = 1000
#: Prefix of the plugin's own metrics; the metrics read from topics may not use it.
OWN_PREFIX = "mqtt."
#: Plain payloads (and JSON text values) that read as 1 or 0, in lower case.
STATE_WORDS = {"on": 1.0, "off": 0.0, "true": 1.0, "false": 0.0}
#: A topic filter never subscribed to: unsubscribing from it is a round trip to the broker.
SYNC_TOPIC = "homelab/mqtt-plugin/sync"
#: Default ports of the two schemes.

Payload = Literal["auto", "json", "number"]
Aggregate = Literal["latest", "mean", "min", "max", "sum", "count"]

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMED_LEVEL = re.compile(r"\{(.*)\}")
_NOT_NAME = re.compile(r"[^a-z0-9_]")


# -- options -------------------------------------------------------------------------------


def _url(_: Any, __: attrs.Attribute[str], value: str) -> None:
    if broker_url_problem(value) is not None:
        raise ValueError(
            "'url' must be an mqtt:// or mqtts:// (TLS) URL of a broker, such as"
            f" mqtt://broker.lan or mqtts://broker.lan:8883, got {redact_urls(value)!r}"
        )


@attrs.frozen
class TopicPattern:
    """One subscription pattern: MQTT levels, where ``{name}`` levels become labels."""

    #: The pattern as configured (``tele/{device}/SENSOR``).
    text: str
    #: Its levels; a named level is kept as ``{name}``.
    levels: tuple[str, ...]
    #: Level index to label name, for the named levels.
    names: Mapping[int, str]

    @property
    def subscription(self) -> str:
        """The topic filter subscribed to: every named level as ``+``."""
        return "/".join("+" if i in self.names else level for i, level in enumerate(self.levels))

    def match(self, topic: str) -> dict[str, str] | None:
        """The labels of ``topic`` if it matches the pattern, else None.

        As MQTT filters do, a wildcard in the first level does not match a topic that
        starts with ``$`` (``$SYS/...``), and ``a/#`` matches ``a`` itself.
        """
        parts = topic.split("/")
        if topic.startswith("$") and (self.levels[0] in ("+", "#") or 0 in self.names):
            return None
        labels: dict[str, str] = {}
        for i, level in enumerate(self.levels):
            if level == "#":
                return labels
            if i >= len(parts):
                return None
            if i in self.names:
                labels[self.names[i]] = parts[i]
            elif level != "+" and level != parts[i]:
                return None
        return labels if len(parts) == len(self.levels) else None


def parse_topic_pattern(text: str) -> TopicPattern:
    """Check one entry of ``topics`` and compile it.

    :raises ValueError: naming the pattern and what is wrong with it.
    """
    if not text:
        raise ValueError("'topics' must not hold an empty pattern")
    if "\x00" in text or len(text.encode("utf-8", "surrogatepass")) > 65535:
        raise ValueError(f"topic pattern {text!r} is not a valid MQTT topic filter")
    levels = tuple(text.split("/"))
    names: dict[int, str] = {}
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(
                f"topic pattern {text!r}: '#' must be a whole level and the last one"
                " ('zigbee2mqtt/#')"
            )
        if "+" in level and level != "+":
            raise ValueError(f"topic pattern {text!r}: '+' must be a whole level ('tele/+/STATE')")
        named = _NAMED_LEVEL.fullmatch(level)
        if named is None:
            if "{" in level or "}" in level:
                raise ValueError(
                    f"topic pattern {text!r}: a named level must be a whole level, like"
                    f" 'tele/{{device}}/SENSOR', got {level!r}"
                )
            continue
        name = named.group(1)
        if not _LABEL_NAME.fullmatch(name):
            raise ValueError(
                f"topic pattern {text!r}: {{{name}}} is not a valid label name (letters,"
                " digits and '_', not starting with a digit)"
            )
        if name in names.values():
            raise ValueError(f"topic pattern {text!r} names the level {{{name}}} twice")
        names[i] = name
    return TopicPattern(text, levels, names)


def _topics(_: Any, __: attrs.Attribute[list[str]], value: list[str]) -> None:
    seen: dict[str, str] = {}
    for text in value:
        pattern = parse_topic_pattern(text)
        other = seen.get(pattern.subscription)
        if other is not None:
            raise ValueError(
                f"topic patterns {other!r} and {text!r} both subscribe to"
                f" {pattern.subscription!r}; keep one"
            )
        seen[pattern.subscription] = text


def _check_metric_name(where: str, name: str) -> None:
    try:
        Metric(name, 0)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    if name.startswith(OWN_PREFIX):
        raise ValueError(f"{where}: names starting with {OWN_PREFIX!r} are the plugin's own")


def _fields(_: Any, __: attrs.Attribute[dict[str, str]], value: dict[str, str]) -> None:
    targets: dict[str, str] = {}
    for path, name in value.items():
        if not path or any(not part for part in path.split(".")):
            raise ValueError(
                f"'fields': {path!r} is not a JSON path; write the keys from the top,"
                " separated by dots ('ENERGY.Power', 'values.0')"
            )
        _check_metric_name(f"'fields' {path!r}", name)
        if name in targets:
            raise ValueError(f"'fields' maps both {targets[name]!r} and {path!r} to {name!r}")
        targets[name] = path


def _name(_: Any, __: attrs.Attribute[str], value: str) -> None:
    if value:
        _check_metric_name("'name'", value)


def _texts(field: str) -> Callable[[Any, attrs.Attribute[dict[str, str]], dict[str, str]], None]:
    """A validator: every value of the table is a valid ``field`` of a :class:`Metric`."""

    def check(_: Any, attribute: attrs.Attribute[dict[str, str]], value: dict[str, str]) -> None:
        for name, text in value.items():
            try:
                if field == "unit":
                    Metric("x", 0, unit=text)
                else:
                    Metric("x", 0, device_class=text)
            except (TypeError, ValueError) as exc:
                reason = str(exc).removeprefix("metric 'x': ")
                raise ValueError(f"'{attribute.name}' {name!r}: {reason}") from None

    return check


@attrs.define
class MqttConfig:
    """Options of an ``mqtt`` instance."""

    url: str = option(
        description="The broker: mqtt://host[:1883] or mqtts://host[:8883] (TLS);"
        " mqtt://user:password@host works too.",
        validator=_url,
    )
    topics: list[str] = option(
        description="Topic patterns to subscribe to: MQTT filters with '+' and '#', where a"
        " level written {name} subscribes as '+' and gives the label name=<that level>"
        " ('tele/{device}/SENSOR').",
        min_length=1,
        validator=_topics,
    )
    payload: Payload = option(
        "auto",
        description="How payloads are read: 'json', 'number' (a plain number, or ON/OFF/"
        "true/false as 1/0), or 'auto' (JSON if it is an object or an array, else a number).",
    )
    fields: dict[str, str] = option(
        factory=dict,
        description='JSON path to metric name ({"ENERGY.Power" = "power"}); dotted keys, list'
        " indexes as numbers. Empty: every numeric or boolean leaf, named after its path"
        " (lower case, '_' for '.' and other characters: 'energy_power').",
        validator=_fields,
    )
    name: str = option(
        "",
        description="Metric name of a plain-number payload; empty: the topic's last level"
        " (lower case, like the JSON leaves).",
        validator=_name,
    )
    units: dict[str, str] = option(
        factory=dict,
        description='Metric name to unit ({"power" = "W"}).',
        validator=_texts("unit"),
    )
    device_classes: dict[str, str] = option(
        factory=dict,
        description='Metric name to Home Assistant device class ({"power" = "power"}).',
        validator=_texts("device_class"),
    )
    counters: list[str] = option(
        factory=list,
        description="Metric names that are counters (ever-growing totals, such as energy in"
        " kWh); they always report their latest value. The others are gauges.",
    )
    aggregate: Aggregate = option(
        "latest",
        description="How the values a series got between two runs become its sample:"
        " 'latest', 'mean', 'min', 'max', 'sum' or 'count'.",
    )
    username: str | None = option(
        None, description="User name at the broker (instead of the one in 'url')."
    )
    password: str | None = option(
        None, description="Password at the broker (instead of the one in 'url').", secret=True
    )
    ca_file: str = option(
        "", description="mqtts: PEM file of the CAs to trust; empty: the system's CAs."
    )
    tls_verify: bool = option(
        True, description="mqtts: check the broker's certificate and host name."
    )
    qos: int = option(0, description="QoS of the subscriptions, 0 to 2.", minimum=0, maximum=2)
    client_id: str = option(
        "", description="MQTT client id; empty: a random one, new at each start."
    )
    keepalive: int = option(
        60,
        description="Seconds between keep-alive pings, 5 to 65535.",
        minimum=5,
        maximum=65535,
    )
    connect_timeout: float = option(
        5.0,
        description="Seconds setup waits for the broker to accept the connection and the"
        " subscriptions.",
        exclusive_minimum=0,
    )
    max_series: int = option(
        1000,
        description="Most series kept between two runs; values of further series are"
        " dropped and counted in mqtt.dropped.",
        minimum=1,
    )

    def __attrs_post_init__(self) -> None:
        parts = urlsplit(self.url)
        if self.password is not None and self.username is None and parts.username is None:
            raise ValueError("'password' needs a 'username' (an option or in 'url')")
        if parts.scheme == "mqtt" and (self.ca_file or not self.tls_verify):
            raise ValueError("'ca_file' and 'tls_verify' apply to mqtts:// URLs only")
        for name in self.counters:
            _check_metric_name("'counters'", name)


# -- payloads ------------------------------------------------------------------------------


class Malformed(ValueError):
    """A payload, or part of one, that cannot be read as metrics."""


def metric_name(path: str) -> str:
    """The metric name of a JSON path or a topic level: lower case, with ``_`` for dots and
    every other character a name may not hold (``ENERGY.Power`` gives ``energy_power``)."""
    name = _NOT_NAME.sub("_", path.lower())
    return name if name and not name[0].isdigit() else f"_{name}"


def _finite(value: float, where: str) -> float:
    if not math.isfinite(value):
        raise Malformed(f"{where} is not a finite number")
    return value


def number_text(text: str, where: str = "the payload") -> float:
    """A plain payload as a number: a decimal, or ON/OFF/true/false as 1/0."""
    word = text.strip()
    if not word:
        raise Malformed(f"{where} is empty")
    state = STATE_WORDS.get(word.lower())
    if state is not None:
        return state
    try:
        value = float(word)
    except ValueError:
        raise Malformed(f"{where} is not a number: {word[:40]!r}") from None
    return _finite(value, where)


def _json_number(value: Any, where: str, *, strict: bool) -> float | None:
    """A JSON value as a number; None for a text or null that ``strict`` does not need."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            return _finite(float(value), where)
        except OverflowError:
            raise Malformed(f"{where} is not a finite number") from None
    if isinstance(value, str):
        state = STATE_WORDS.get(value.strip().lower())
        if state is not None:
            return state
        if strict:
            return number_text(value, where)
        return None
    if strict:
        raise Malformed(f"{where} is not a number but {_json_type(value)}")
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a text"
    return "a number"


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every scalar in a JSON document, with its dotted path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}.{index}" if path else str(index))
    else:
        yield path, value


def _lookup(document: Any, path: str) -> Any:
    current = document
    for key in path.split("."):
        if isinstance(current, dict) and key in current:
            current = current[key]
        elif isinstance(current, list) and key.isdigit() and int(key) < len(current):
            current = current[int(key)]
        else:
            raise Malformed(f"the JSON has no {path!r}")
    return current


def _no_constant(name: str) -> Any:
    raise Malformed(f"the JSON holds {name}, not a finite number")


def parse_json(payload: bytes) -> Any:
    """A payload as a JSON object or array."""
    try:
        document = json.loads(payload, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, Malformed):
            raise
        raise Malformed("the payload is not valid JSON") from None
    if not isinstance(document, dict | list):
        raise Malformed(f"the payload is {_json_type(document)} in JSON, not an object or an array")
    return document


def read_payload(
    payload: bytes, config: MqttConfig, topic: str
) -> tuple[list[tuple[str, float]], list[str]]:
    """The ``(metric name, value)`` pairs of one message, and what could not be read.

    :raises Malformed: nothing of the payload could be read.
    """
    kind = config.payload
    if kind == "auto":
        kind = "json" if payload.lstrip()[:1] in (b"{", b"[") else "number"
    if kind == "number":
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("the payload is not UTF-8 text") from None
        name = config.name or metric_name(topic.rpartition("/")[2])
        return [(name, number_text(text))], []
    document = parse_json(payload)
    readings: list[tuple[str, float]] = []
    problems: list[str] = []
    if config.fields:
        for path, name in config.fields.items():
            try:
                value = _json_number(_lookup(document, path), repr(path), strict=True)
            except Malformed as exc:
                problems.append(str(exc))
                continue
            if value is not None:
                readings.append((name, value))
        if not readings:
            raise Malformed("; ".join(problems))
        return readings, problems
    try:
        for path, leaf in _leaves(document, ""):
            value = _json_number(leaf, repr(path), strict=False)
            if value is not None:
                readings.append((metric_name(path), value))
    except RecursionError:
        raise Malformed("the JSON is nested too deeply") from None
    return readings, problems


def describe_error(broker: str, exc: BaseException, timeout: float) -> str:
    """A sentence saying why connecting to ``broker`` failed (TLS failures included)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        return f"{broker} failed TLS certificate verification: {reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {broker} failed: {exc.reason or exc}"
    return describe_connect_error(broker, exc, timeout)


class _ClosingSSLSocket(ssl.SSLSocket):
    """A TLS socket that closes itself when its handshake fails: paho-mqtt leaves such a
    socket to the garbage collector, one per failed attempt to connect."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


# -- the buffer between runs -------------------------------------------------------------


@attrs.define
class _Series:
    """The values one series got since the last run."""

    name: str
    labels: dict[str, str]
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    last: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        self.last = value

    def result(self, aggregate: Aggregate) -> float:
        if aggregate == "mean":
            return self.total / self.count
        if aggregate == "min":
            return self.low
        if aggregate == "max":
            return self.high
        if aggregate == "sum":
            return self.total
        if aggregate == "count":
            return float(self.count)
        return self.last


@attrs.define
class _Problem:
    """The malformed payloads of one topic since the last run."""

    reason: str
    count: int = 0


@attrs.define
class _State:
    """What paho's thread and the runs share; every access holds :attr:`lock`."""

    lock: threading.Lock = attrs.field(factory=threading.Lock)
    connected: bool = False
    #: Why the client is not connected (a sentence naming the broker).
    reason: str = ""
    #: Set when the broker answered the subscriptions of the current connection.
    subscribed: threading.Event = attrs.field(factory=threading.Event)
    #: Why setup cannot go on (the broker refused the connection), if it said so.
    refused: str = ""
    refused_topics: list[str] = attrs.field(factory=list)
    series: dict[tuple[str, tuple[tuple[str, str], ...]], _Series] = attrs.field(factory=dict)
    problems: dict[str, _Problem] = attrs.field(factory=dict)
    messages: int = 0
    malformed: int = 0
    dropped: int = 0
    #: Values dropped since the last run.
    dropped_now: int = 0


class Mqtt(Plugin[MqttConfig]):
    """Subscribes to topics on an MQTT broker and reports what they carried between runs."""

    name = "mqtt"
    title = "MQTT topics"
    category = "service"
    description = (
        "Values that devices (Tasmota, ESPHome, Zigbee2MQTT, Shelly) publish on MQTT topics:"
        " JSON or plain numbers, with labels from topic levels."
    )
    version = "1.0.0"
    default_interval = 60.0

    _client: Client | None = None
    _patterns: list[TopicPattern]
    _state: _State
    #: The broker as shown in texts: scheme, host and port, never the credentials.
    _broker: str = ""
    #: Topic to when its malformed payloads were last logged, and how many since.
    _logged: dict[str, tuple[float, int]]
    #: Values dropped in the last run (its health says so).
    _dropped_now: int = 0

    # -- paho's thread -------------------------------------------------------------------

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        state = self._state
        if reason_code.is_failure:
            with state.lock:
                state.connected = False
                state.refused = state.reason = (
                    f"{self._broker} refused the connection: {reason_code}"
                )
            return
        with state.lock:
            state.connected, state.reason, state.refused = True, "", ""
        qos = self.config.qos
        client.subscribe([(pattern.subscription, qos) for pattern in self._patterns])

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [
            pattern.text
            for pattern, code in zip(self._patterns, reason_codes, strict=False)
            if code.is_failure
        ]
        with self._state.lock:
            self._state.refused_topics = refused
        # The broker sends the retained messages of the topics after this acknowledgement.
        # Its answer to one more request comes after them: once it is in, setup is done,
        # and a first run has the retained values (`homelab run mqtt --once`).
        client.unsubscribe(SYNC_TOPIC)

    def _on_unsubscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._state.subscribed.set()

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        state = self._state
        with state.lock:
            state.connected = False
            if not state.refused:
                state.reason = f"lost the connection to {self._broker}"
        state.subscribed.clear()

    def _on_connect_fail(self, client: Client, userdata: Any) -> None:
        # paho calls this from the handler of the connection's OSError: it is the reason.
        error = sys.exc_info()[1]
        reason = (
            describe_error(self._broker, error, self.config.connect_timeout)
            if error is not None
            else f"cannot connect to {self._broker}"
        )
        with self._state.lock:
            self._state.connected = False
            self._state.reason = reason

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers refuse such topics; counted if one does not
            with self._state.lock:
                self._state.messages += 1
                self._state.malformed += 1
            return
        try:
            self._take(topic, bytes(message.payload))
        except Exception as exc:  # a message must never end paho's thread
            self.log.exception("cannot handle a message: %s", exc)

    def _take(self, topic: str, payload: bytes) -> None:
        """Read one message into the buffer (in paho's thread)."""
        state, config = self._state, self.config
        labels: dict[str, str] | None = None
        for pattern in self._patterns:
            labels = pattern.match(topic)
            if labels is not None:
                break
        problems: list[str] = []
        readings: list[tuple[str, float]] = []
        if labels is not None:
            try:
                readings, problems = read_payload(payload, config, topic)
            except Malformed as exc:
                problems = [str(exc)]
        counters = config.counters
        with state.lock:
            state.messages += 1
            if labels is None:  # a retained message of an old subscription, say
                return
            label_items = tuple(sorted(labels.items()))
            for name, value in readings:
                key = (name, label_items)
                series = state.series.get(key)
                if series is None:
                    if len(state.series) >= config.max_series:
                        state.dropped += 1
                        state.dropped_now += 1
                        continue
                    try:  # a new series: are the topic's levels valid label text?
                        self._metric(name, value, labels, counters)
                    except (TypeError, ValueError) as exc:
                        problems.append(str(exc))
                        continue
                    series = state.series[key] = _Series(name, labels)
                series.add(value)
            if problems:
                state.malformed += 1
                problem = state.problems.get(topic)
                if problem is None and len(state.problems) < MAX_PROBLEM_TOPICS:
                    problem = state.problems[topic] = _Problem("; ".join(problems))
                if problem is not None:
                    problem.reason = "; ".join(problems)
                    problem.count += 1

    def _metric(
        self, name: str, value: float, labels: dict[str, str], counters: list[str]
    ) -> Metric:
        config = self.config
        counter = name in counters
        plain = config.aggregate == "count" and not counter
        return Metric(
            name,
            value,
            "" if plain else config.units.get(name, ""),
            labels=labels,
            kind=MetricKind.COUNTER if counter else MetricKind.GAUGE,
            device_class=None if plain else config.device_classes.get(name),
        )

    # -- the runs --------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.config.ca_file or None)
        if not self.config.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.sslsocket_class = _ClosingSSLSocket
        return context

    async def setup(self) -> None:
        """Connect to the broker and subscribe; raise (naming the broker) if it cannot be
        reached or refuses, so that the framework tries again."""
        from paho.mqtt.client import Client
        from paho.mqtt.enums import CallbackAPIVersion

        config = self.config
        parts = urlsplit(config.url)
        host, port = parts.hostname or "", parts.port or SCHEMES[parts.scheme]
        shown = f"[{host}]" if ":" in host else host
        self._broker = f"{parts.scheme}://{shown}:{port}"
        self._patterns = [parse_topic_pattern(text) for text in config.topics]
        self._state = _State()
        self._logged = {}
        username = config.username
        if username is None and parts.username is not None:
            username = unquote(parts.username)
        password = config.password
        if password is None and parts.password is not None and config.username is None:
            password = unquote(parts.password)

        client = Client(CallbackAPIVersion.VERSION2, client_id=config.client_id)
        client.suppress_exceptions = True
        if username is not None:
            client.username_pw_set(username, password)
        if parts.scheme == "mqtts":
            client.tls_set_context(self._tls_context())  # raises if ca_file cannot be read
            # Without verification paho must not check the host name either.
            client.tls_insecure_set(not config.tls_verify)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.connect_timeout = config.connect_timeout
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        timeout = config.connect_timeout
        try:
            # Not abandoned if the run is cancelled: the connection it may still open must
            # be closed below. paho bounds connecting and the TLS handshake by
            # connect_timeout (resolving the host name, by the resolver's own timeouts).
            await anyio.to_thread.run_sync(partial(client.connect, host, port, config.keepalive))
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ConnectionError(
                "cannot connect to the MQTT broker: " + describe_error(self._broker, exc, timeout)
            ) from None
        except BaseException:  # cancelled: close what the thread may have opened
            sock = client.socket()
            if sock is not None:
                sock.close()
            raise
        client.loop_start()
        self._client = client
        try:
            with anyio.fail_after(timeout):
                while not self._state.subscribed.is_set():
                    with self._state.lock:
                        refused = self._state.refused
                    if refused:
                        raise ConnectionError(f"cannot connect to the MQTT broker: {refused}")
                    await anyio.sleep(0.01)
        except TimeoutError:
            with anyio.CancelScope(shield=True):
                await self.teardown()
            raise ConnectionError(
                f"cannot connect to the MQTT broker: {self._broker} did not accept the"
                f" connection and the subscriptions within {timeout:g} s"
            ) from None
        except BaseException:  # refused, or cancelled: stop paho's thread all the same
            with anyio.CancelScope(shield=True):
                await self.teardown()
            raise

    async def teardown(self) -> None:
        """Disconnect and stop paho's thread (waiting a few seconds at most)."""
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        with anyio.move_on_after(5):
            await anyio.to_thread.run_sync(client.loop_stop, abandon_on_cancel=True)

    async def collect(self) -> list[Metric]:
        """One sample per series that got values since the last run, and the plugin's own
        figures."""
        state, config = self._state, self.config
        with state.lock:
            series, state.series = state.series, {}
            problems, state.problems = state.problems, {}
            connected = state.connected and state.subscribed.is_set()
            messages = state.messages
            malformed, dropped, dropped_now = state.malformed, state.dropped, state.dropped_now
            state.dropped_now = 0
        self._dropped_now = dropped_now
        self._log_problems(problems)
        if dropped_now:
            self.log.warning(
                "dropped %d value(s): more than max_series = %d series got values since the"
                " last run",
                dropped_now,
                config.max_series,
            )
        metrics = [
            Metric("mqtt.connected", connected, device_class="connectivity"),
            Metric("mqtt.messages", messages, kind=MetricKind.COUNTER),
            Metric("mqtt.malformed", malformed, kind=MetricKind.COUNTER),
            Metric("mqtt.dropped", dropped, kind=MetricKind.COUNTER),
        ]
        counters = config.counters
        for item in series.values():
            aggregate: Aggregate = "latest" if item.name in counters else config.aggregate
            try:
                metrics.append(
                    self._metric(item.name, item.result(aggregate), item.labels, counters)
                )
            except (TypeError, ValueError) as exc:  # a sum that overflowed, say
                self.log.warning("cannot report %s %s: %s", item.name, item.labels, exc)
        return metrics

    def _log_problems(self, problems: dict[str, _Problem]) -> None:
        """Log each topic's malformed payloads, once per :data:`LOG_INTERVAL` at most."""
        now, logged = self.monotonic(), self._logged
        for topic, problem in problems.items():
            last, unlogged = logged.get(topic, (-math.inf, 0))
            unlogged += problem.count
            if now - last < LOG_INTERVAL:
                logged[topic] = (last, unlogged)
                continue
            logged.pop(topic, None)
            logged[topic] = (now, 0)
            more = ""
            if unlogged > 1:
                since = "" if last == -math.inf else " since the last line about it"
                more = f" ({unlogged} malformed payloads on this topic{since})"
            self.log.warning("malformed payload on topic %r: %s%s", topic, problem.reason, more)
        while len(logged) > MAX_PROBLEM_TOPICS:
            del logged[next(iter(logged))]

    async def health(self) -> HealthReport | None:
        """ok while connected and subscribed; degraded (saying why) while not."""
        state = self._state
        with state.lock:
            connected, reason, refused = state.connected, state.reason, state.refused_topics
        if connected and not state.subscribed.is_set():
            connected = False
            reason = f"{self._broker} has not acknowledged the subscriptions yet"
        if not connected:
            return HealthReport(
                "degraded",
                redact_urls(f"not connected to the MQTT broker: {reason}; reconnecting"),
            )
        if refused:
            return HealthReport(
                "degraded",
                f"connected to {self._broker}, but it refused the subscription to"
                f" {', '.join(map(repr, refused))}",
            )
        message = (
            f"connected to {self._broker}, subscribed to {len(self._patterns)} topic pattern(s)"
        )
        if self._dropped_now:
            return HealthReport(
                "degraded",
                f"{message}; dropped {self._dropped_now} value(s) of series beyond max_series"
                f" = {self.config.max_series}",
            )
        return HealthReport("ok", message)


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``mqtt`` plugin type."""
    register(Mqtt)
