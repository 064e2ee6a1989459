"""The MQTT exporter: every series to a broker, Home Assistant discovery, commands back.

:class:`MqttExporter` is a service the hub enters when ``[mqtt] url`` is set. It reads
the hub's bus and reaches the rest of the core through :class:`~homelab_core.hub.Hub`'s
methods only, as the web layer does. Three tasks:

- the consumer turns bus events into what the broker should hold (retained discovery
  configs, health and enabled states: ``_retained``) and state messages waiting to be
  sent (``_states``). It never waits on the broker, so neither does the data path: a
  full subscription buffer drops events for the exporter alone (``mqtt_events_missed``).
- the connection keeps one aiomqtt client connected, with a last will of ``offline`` on
  the node's status topic, retrying with a pause that doubles from 0.5 s up to
  ``reconnect_max``. Each time it connects it sends ``online`` and every retained
  message again (the broker may have restarted without them), and it does the same when
  Home Assistant announces itself (its birth message, ``online`` on
  ``<discovery_prefix>/status``).
- the sender publishes what is waiting: retained messages first, then states. States are
  kept per topic (a newer value replaces one still waiting) and bounded by
  ``queue_size``: past it the oldest is dropped, counted in ``mqtt_dropped``.

Commands (the switch and the button of each instance) call :meth:`Hub.set_enabled` and
:meth:`Hub.run_now`, as the API does, in tasks of their own.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import ssl
import time
from collections import OrderedDict
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from ..errors import HomelabError
from ..events import Event, HealthChanged, InstanceChanged, MetricsCollected
from ..model import Health, InstanceInfo, Metric
from ..redact import redact_urls
from . import discovery
from .config import MqttSettings
from .discovery import OFF, OFFLINE, ON, ONLINE, Topics

if TYPE_CHECKING:
    import aiomqtt

    from ..hub import Hub

log = logging.getLogger("homelab.mqtt")

#: Collections of an instance in a row without a series before its sensor is removed.
ABSENT_RUNS = 3
#: Events the exporter's bus subscription may hold before it misses some.
BUS_BUFFER = 8192
#: Seconds the exporter waits to say ``offline`` when the hub stops.
CLOSE_TIMEOUT = 2.0
_FIRST_PAUSE = 0.5


@attrs.frozen
class _Series:
    """A series the exporter published: its config's topic ('' without discovery), its
    state topic, and its last metric (to build its config again)."""

    config_topic: str
    state_topic: str
    metric: Metric


@attrs.define
class _Exported:
    """What the exporter published for one instance."""

    info: InstanceInfo
    #: The topics of its own configs, health and enabled state (retained).
    own: list[str]
    #: Sensor object id -> each series.
    series: dict[str, _Series] = attrs.field(factory=dict)
    #: Sensor object id -> collections in a row without it.
    absent: dict[str, int] = attrs.field(factory=dict)


class MqttExporter:
    """Publishes a hub's instances and series to an MQTT broker (``[mqtt]``).

    An async context manager: entering subscribes to the bus and starts connecting (a
    broker that does not answer is retried; the hub starts anyway); leaving says
    ``offline`` and disconnects.
    """

    def __init__(self, settings: MqttSettings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        self.topics = Topics(settings.base_topic, settings.discovery_prefix, hub.node_name)
        self.client_id = settings.client_id or f"homelab-{hub.node_name}"
        self._version = _version()
        #: Topic -> payload of every retained message the broker should hold.
        self._retained: dict[str, str] = {}
        #: Retained topics to send (again), in order; a topic not in _retained is cleared.
        self._dirty: dict[str, None] = {}
        #: State topic -> payload waiting to be sent, oldest first.
        self._states: OrderedDict[str, str] = OrderedDict()
        #: The last state sent on each topic (sent again when Home Assistant restarts).
        self._last_state: dict[str, str] = {}
        #: Monotonic time of the last state taken for each topic (``min_interval``).
        self._last_taken: dict[str, float] = {}
        self._exported: dict[str, _Exported] = {}
        self._wanted_ids: dict[str, bool] = {}
        self._wake = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._stack: AsyncExitStack | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._subscription: Any = None
        self._was_connected = False
        self._failing_since: float | None = None
        self._reached = False
        #: Whether the broker is connected now.
        self.connected = False
        #: Messages published.
        self.published = 0
        #: State messages dropped because ``queue_size`` were waiting.
        self.dropped = 0
        #: Times the broker was reached again after the connection was lost.
        self.reconnects = 0
        #: Commands carried out, and refused (unknown instance, bad payload, an error).
        self.commands = 0
        self.commands_refused = 0

    # -- figures -------------------------------------------------------------------------

    def counters(self) -> dict[str, float]:
        """The figures of ``/metrics`` (``homelab_core_mqtt_*``)."""
        sub = self._subscription
        return {
            "mqtt_connected": 1.0 if self.connected else 0.0,
            "mqtt_published": self.published,
            "mqtt_dropped": self.dropped,
            "mqtt_queued": len(self._states) + len(self._dirty),
            "mqtt_reconnects": self.reconnects,
            "mqtt_commands": self.commands,
            "mqtt_commands_refused": self.commands_refused,
            "mqtt_events_missed": sub.missed if sub is not None else 0,
        }

    # -- life cycle ----------------------------------------------------------------------

    async def __aenter__(self) -> MqttExporter:
        stack = AsyncExitStack()
        try:
            self._subscription = await stack.enter_async_context(
                self.hub.subscribe(buffer=BUS_BUFFER, accept=_wanted_event)
            )
            await self._announce_all()
            tasks = await stack.enter_async_context(anyio.create_task_group())
            self._tasks = tasks
            stack.push_async_callback(self._stop, tasks)
            tasks.start_soon(self._consume, name="homelab:mqtt-consume")
            tasks.start_soon(self._connect_forever, name="homelab:mqtt-connect")
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _stop(self, tasks: anyio.abc.TaskGroup) -> None:
        client = self._client
        if client is not None and self.connected:
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                try:
                    await client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
                except Exception as exc:  # the broker went away meanwhile: its will says it
                    log.debug("MQTT: could not say offline: %s", exc)
        tasks.cancel_scope.cancel()

    # -- what to publish -----------------------------------------------------------------

    def _wanted(self, instance_id: str) -> bool:
        """Whether the instance is published by this node: it matches ``instances`` and
        runs here."""
        matches = self._wanted_ids.get(instance_id)
        if matches is None:
            matches = any(fnmatch.fnmatchcase(instance_id, p) for p in self.settings.instances)
            self._wanted_ids[instance_id] = matches
        return matches and self.hub.runs_here(instance_id)

    def _wanted_metric(self, metric: Metric) -> bool:
        return any(fnmatch.fnmatchcase(metric.name, p) for p in self.settings.metrics)

    def _set(self, topic: str, payload: str) -> None:
        """Have the broker hold ``payload`` on ``topic`` (retained)."""
        if self._retained.get(topic) != payload:
            self._retained[topic] = payload
            self._dirty[topic] = None
            self._wake.set()

    def _clear(self, topic: str) -> None:
        """Have the broker forget ``topic`` (an empty retained message)."""
        if self._retained.pop(topic, None) is not None:
            self._dirty[topic] = None
            self._wake.set()

    def _take_state(self, topic: str, payload: str) -> None:
        now = time.monotonic()
        last = self._last_taken.get(topic)
        if last is not None and now - last < self.settings.min_interval:
            return
        self._last_taken[topic] = now
        states = self._states
        if topic in states:
            states.move_to_end(topic)  # the stalest waiting state goes first
        elif len(states) >= self.settings.queue_size:
            states.popitem(last=False)
            self.dropped += 1
        states[topic] = payload
        self._wake.set()

    async def _announce_all(self) -> None:
        """Every published instance, with the series of its latest values."""
        if self.settings.discovery:
            for topic, config in discovery.node_configs(self.topics, self._version):
                self._set(topic, _json(config))
        for info in self.hub.instances():
            if self._wanted(info.id):
                self._announce(info)
                for metric in await self.hub.latest(info.id):
                    self._series(self._exported[info.id], metric)

    def _announce(self, info: InstanceInfo) -> _Exported:
        topics = self.topics
        own = [topics.health(info.id)]
        if self.settings.commands:
            own.append(topics.enabled(info.id))
        if self.settings.discovery:
            configs = discovery.instance_configs(
                topics, info, self._version, commands=self.settings.commands
            )
            for topic, config in configs:
                self._set(topic, _json(config))
                own.append(topic)
        exported = self._exported[info.id] = _Exported(info, own)
        self._health(info.id, info.health, info.enabled)
        return exported

    def _health(self, instance_id: str, health: Health, enabled: bool) -> None:
        self._set(self.topics.health(instance_id), discovery.health_payload(health, enabled))
        if self.settings.commands:
            self._set(self.topics.enabled(instance_id), ON if enabled else OFF)

    def _series(self, exported: _Exported, metric: Metric) -> str:
        """Announce a series if it is new (or its config changed); its object id."""
        object_id = discovery.sensor_object_id(metric)
        known = exported.series.get(object_id)
        if known is not None and (
            known.metric.unit,
            known.metric.device_class,
            known.metric.kind,
        ) == (
            metric.unit,
            metric.device_class,
            metric.kind,
        ):
            return object_id
        info = exported.info
        state_topic = self.topics.series(info.id, discovery.series_key(metric))
        config_topic = ""
        if self.settings.discovery:
            config_topic, config = discovery.sensor_config(
                self.topics,
                info,
                metric,
                self._version,
                expire_after=discovery.expire_after(
                    info.interval, info.timeout, self.settings.min_interval
                ),
            )
            self._set(config_topic, _json(config))
        if known is not None and known.config_topic not in ("", config_topic):
            self._clear(known.config_topic)  # a sensor that became a binary sensor, say
        exported.series[object_id] = _Series(config_topic, state_topic, metric)
        return object_id

    def instance_removed(self, instance_id: str) -> None:
        """An instance was deleted: its discovery configs and retained states go."""
        exported = self._exported.pop(instance_id, None)
        self._wanted_ids.pop(instance_id, None)
        if exported is None:
            return
        for topic in exported.own:
            self._clear(topic)
        for object_id in list(exported.series):
            self._forget_series(exported, object_id)
        log.info("MQTT: instance %r removed from the broker", instance_id)

    def instance_updated(self, instance_id: str) -> None:
        """An instance was changed (through the API): its device and sensors again, from
        its new settings (a config that did not change is not sent again)."""
        old = self._exported.get(instance_id)
        if old is None:
            return  # announced at its first event here
        if not self._wanted(instance_id):
            self._let_go(instance_id)  # it runs on another node now
            return
        del self._exported[instance_id]
        exported = self._announce(self.hub.instance(instance_id))
        for series in old.series.values():
            self._series(exported, series.metric)

    def _forget_series(self, exported: _Exported, object_id: str) -> None:
        series = exported.series.pop(object_id)
        exported.absent.pop(object_id, None)
        if series.config_topic:
            self._clear(series.config_topic)
        self._forget_state(series.state_topic)

    def _forget_state(self, topic: str) -> None:
        self._states.pop(topic, None)
        self._last_state.pop(topic, None)
        self._last_taken.pop(topic, None)

    def _let_go(self, instance_id: str) -> None:
        """Another node runs the instance now (or it is filtered out): forget what was
        published for it here, without clearing it on the broker, where the node that
        runs it has replaced it (or will)."""
        exported = self._exported.pop(instance_id, None)
        if exported is None:
            return
        topics = [*exported.own, *(s.config_topic for s in exported.series.values())]
        for topic in topics:
            self._retained.pop(topic, None)
            self._dirty.pop(topic, None)
        for series in exported.series.values():
            self._forget_state(series.state_topic)

    # -- the consumer --------------------------------------------------------------------

    async def _consume(self) -> None:
        async for event in self._subscription:
            try:
                self._on_event(event)
            except Exception:  # a bug here must not end the exporter: log it, go on
                log.exception("MQTT: could not publish %s", type(event).__name__)

    def _on_event(self, event: Event) -> None:
        instance_id = event.instance_id
        if not self._wanted(instance_id):
            # Now run by another node, which publishes it; a deleted instance is left to
            # instance_removed(), which clears what was published.
            if self.hub.knows(instance_id):
                self._let_go(instance_id)
            return
        exported = self._exported.get(instance_id)
        if exported is None:
            try:
                exported = self._announce(self.hub.instance(instance_id))
            except HomelabError:
                return  # deleted meanwhile
        if isinstance(event, MetricsCollected):
            self._collected(exported, event.metrics)
        elif isinstance(event, HealthChanged):
            self._health(instance_id, event.new, self.hub.is_enabled(instance_id))
        elif isinstance(event, InstanceChanged):
            self._health(instance_id, self.hub.health(instance_id), event.enabled)

    def _collected(self, exported: _Exported, metrics: list[Metric]) -> None:
        seen = set()
        for metric in metrics:
            if not self._wanted_metric(metric):
                continue
            object_id = self._series(exported, metric)
            seen.add(object_id)
            self._take_state(
                exported.series[object_id].state_topic, discovery.state_payload(metric)
            )
        for object_id in list(exported.series):
            if object_id in seen:
                exported.absent.pop(object_id, None)
                continue
            absent = exported.absent[object_id] = exported.absent.get(object_id, 0) + 1
            if absent >= ABSENT_RUNS:
                self._forget_series(exported, object_id)

    # -- the connection ------------------------------------------------------------------

    def _client_for(self) -> aiomqtt.Client:
        import aiomqtt

        settings = self.settings
        tls = None
        if settings.tls:
            tls = ssl.create_default_context(cafile=settings.ca_file or None)
            if not settings.tls_verify:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        username, password = settings.credentials()
        return aiomqtt.Client(
            settings.host,
            settings.port,
            username=username,
            password=password,
            identifier=self.client_id,
            will=aiomqtt.Will(self.topics.status, OFFLINE, qos=1, retain=True),
            keepalive=settings.keepalive,
            tls_context=tls,
            timeout=10.0,
        )

    async def _connect_forever(self) -> None:
        import aiomqtt

        pause = 0.0
        where = redact_urls(self.settings.url)
        while True:
            self._reached = False
            try:
                client = self._client_for()
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                self._failed(f"cannot use ca_file {self.settings.ca_file!r}: {exc}")
            else:
                try:
                    async with client:
                        self._client = client
                        await self._session(client)
                except* aiomqtt.MqttError as group:
                    self._failed(f"broker {where}: {group.exceptions[0]}")
                finally:
                    self._client = None
                    self.connected = False
            # After a connection, the pauses start again from the shortest.
            pause = 0.0 if self._reached else pause
            pause = min(max(pause * 2, _FIRST_PAUSE), self.settings.reconnect_max)
            await anyio.sleep(pause)

    def _failed(self, problem: str) -> None:
        """Log a failure to reach the broker: a warning when it starts, then debug lines."""
        if self._reached or self._failing_since is None:
            log.warning("MQTT: %s; retrying", problem)
            self._failing_since = time.monotonic()
        else:
            log.debug("MQTT: %s (still failing)", problem)

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection: say online, subscribe, send everything, then what comes."""
        await client.publish(self.topics.status, ONLINE, qos=1, retain=True)
        if self.settings.commands:
            for topic in self.topics.command_filters:
                await client.subscribe(topic, qos=1)
        if self.settings.discovery:
            await client.subscribe(self.topics.birth, qos=1)
        self.connected = self._reached = True
        if self._was_connected:
            self.reconnects += 1
            log.info("MQTT broker %s: connected again", redact_urls(self.settings.url))
        self._was_connected = True
        self._failing_since = None
        self._send_everything()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._send, client)
            async for message in client.messages:
                self._on_message(message)

    def _send_everything(self, *, states: bool = False) -> None:
        """Every retained message again (and with ``states`` the last state of each series)."""
        for instance_id in [i for i in self._exported if not self._wanted(i)]:
            if self.hub.knows(instance_id):
                self._let_go(instance_id)
        self._dirty.update(dict.fromkeys(self._retained))
        if states:
            for topic, payload in self._last_state.items():
                self._states.setdefault(topic, payload)
        self._wake.set()

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            if self._dirty:
                topic = next(iter(self._dirty))
                del self._dirty[topic]
                payload = self._retained.get(topic, "")
                try:
                    await client.publish(topic, payload, qos=1, retain=True)
                except BaseException:
                    if topic not in self._dirty:
                        self._dirty = {topic: None, **self._dirty}
                    raise
            elif self._states:
                topic, payload = self._states.popitem(last=False)
                try:
                    await client.publish(topic, payload, qos=0)
                except BaseException:
                    if topic not in self._states:
                        self._states[topic] = payload
                        self._states.move_to_end(topic, last=False)
                    raise
                self._last_state[topic] = payload
            else:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.published += 1

    # -- commands and Home Assistant's birth ---------------------------------------------

    def _on_message(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        payload = message.payload
        text = (
            payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
        ).strip()
        if topic == self.topics.birth:
            if text == ONLINE and not message.retain:
                log.info("MQTT: Home Assistant started; sending discovery again")
                self._send_everything(states=True)
            return
        command = self.topics.command(topic)
        if command is None or not text:
            return  # an empty message clears a retained one: it is no command
        if message.retain:
            # A retained command would be carried out again at every connection.
            log.warning("MQTT: retained command on %s ignored", topic)
            self.commands_refused += 1
            return
        instance_id, what = command
        if not self._wanted(instance_id) or instance_id not in self._exported:
            if self.hub.knows(instance_id) and not self.hub.runs_here(instance_id):
                return  # another node runs it: that node's exporter takes the command
            log.warning("MQTT: command on %s: no instance %r published here", topic, instance_id)
            self.commands_refused += 1
            return
        if what == "enable":
            if text.upper() not in (ON, OFF):
                log.warning("MQTT: command on %s: payload %r is neither ON nor OFF", topic, text)
                self.commands_refused += 1
                return
            enable = text.upper() == ON
            self._start(self._enable, instance_id, enable)
        else:
            self._start(self._run, instance_id)

    def _start(self, func: Any, *args: Any) -> None:
        assert self._tasks is not None
        self._tasks.start_soon(func, *args, name=f"homelab:mqtt-command-{args[0]}")

    async def _enable(self, instance_id: str, enable: bool) -> None:
        try:
            await self.hub.set_enabled(instance_id, enable)
        except HomelabError as exc:
            self._refused(instance_id, exc)
            # Put the switch back where the instance is.
            if instance_id in self._exported and self.hub.knows(instance_id):
                health = self.hub.health(instance_id)
                self._health(instance_id, health, self.hub.is_enabled(instance_id))
            return
        self.commands += 1
        log.info("MQTT: instance %r %s", instance_id, "enabled" if enable else "disabled")

    async def _run(self, instance_id: str) -> None:
        try:
            execution = await self.hub.run_now(instance_id)
        except HomelabError as exc:
            self._refused(instance_id, exc)
            return
        self.commands += 1
        log.info("MQTT: instance %r run now: %s", instance_id, execution.status)

    def _refused(self, instance_id: str, exc: HomelabError) -> None:
        self.commands_refused += 1
        log.warning("MQTT: command for %r refused: %s", instance_id, exc)


def _wanted_event(event: Event) -> bool:
    return isinstance(event, MetricsCollected | HealthChanged | InstanceChanged)


def _json(config: dict[str, Any]) -> str:
    from ..codec import to_json

    return to_json(config).decode()


def _version() -> str:
    from .. import __version__

    return str(__version__)
