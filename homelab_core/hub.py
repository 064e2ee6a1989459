"""The Hub: builds and owns the plugin manager, store, cache, bus and scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
import attrs

from . import __version__
from .alerts.service import AlertService, build_notifier
from .backends import make_bus, make_cache, running
from .bus import Bus
from .cache import LatestCache
from .cluster import DUTY, Cluster, make_cluster
from .config import (
    Settings,
    StatusPageSettings,
    instance_settings,
    isolation_for,
    load_settings,
)
from .datapath import DataPath
from .errors import (
    ClusterError,
    ConfigError,
    ConflictError,
    HomelabError,
    InvalidArgumentError,
    UnknownInstanceError,
)
from .events import InstanceChanged
from .figures import Figures
from .instances import Instance, build_instance, build_instances, plugin_type_for
from .lifecycle import resolve_enabled
from .limits import Limits
from .model import (
    Execution,
    Health,
    HealthTransition,
    HistorySeries,
    InstanceInfo,
    InstanceState,
    Metric,
    NodeInfo,
    Readiness,
    RunStats,
    Summary,
    TypeInfo,
    WorkerInfo,
)
from .mqtt.exporter import MqttExporter
from .options import REDACTED, config_to_dict, secret_fields
from .plugin import Plugin
from .plugins import PluginManager
from .scheduler import Scheduler
from .status import StatusPage, status_figures
from .store import BatchWriter, Maintenance, Store, WriteQueue
from .store import history as store_history

log = logging.getLogger("homelab.hub")

#: The lease of the store's rollups and retention in a cluster (not an instance id: those
#: are slugs).
MAINTENANCE = DUTY + "maintenance"
#: The lease of the alert service: its evaluation and its notifications.
ALERTS = DUTY + "alerts"

#: Sections a reload cannot apply to a running hub (it says they need a restart).
_RESTART_SECTIONS = (
    "server",
    "database",
    "cache",
    "bus",
    "retention",
    "scheduler",
    "store",
    "status_page",
    "mqtt",
    "alerts",
)


@attrs.frozen
class ReloadResult:
    """What a reload changed, and what it could not."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    #: Sections that differ from the running settings and apply only after a restart.
    restart_needed: list[str]

    def describe(self) -> str:
        """One line for the log and the CLI."""
        parts = [
            f"{label} {', '.join(ids)}"
            for label, ids in (
                ("added", self.added),
                ("removed", self.removed),
                ("restarted", self.changed),
            )
            if ids
        ] or ["no instance changed"]
        if self.restart_needed:
            parts.append(
                f"[{'], ['.join(self.restart_needed)}] changed: they apply after a restart"
            )
        return "; ".join(parts)


def _without_file(exc: ConfigError) -> str:
    """A config error of an API body, said without the file (there is none)."""
    where = f"[{exc.table}]" if exc.table else ""
    if exc.field:
        where = f"{where} {exc.field}" if where else exc.field
    return f"{where}: {exc.reason}" if where else exc.reason


@contextlib.contextmanager
def tuned_gc(threshold: int) -> Iterator[None]:
    """Python's garbage collector tuned for a running hub, for the ``with`` block.

    Every collection allocates thousands of short-lived objects; with Python's default
    young-generation threshold (700) the collector ran so often, over every live object of
    a large hub, that it took a large share of the CPU and paused runs for long enough to
    make them late (docs/performance.md, ``pipeline``). ``threshold`` new objects are
    allowed between young collections instead, and everything alive now (plugins,
    settings, modules) is frozen out of later collections. Both are undone afterwards;
    ``0`` changes nothing.
    """
    if threshold <= 0:
        yield
        return
    previous = gc.get_threshold()
    gc.set_threshold(threshold, *previous[1:])
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*previous)


class Hub:
    """Everything a running Homelab Core needs, started and stopped together.

    ::

        async with Hub(load_settings("homelab.toml")) as hub:
            for info in hub.instances():
                print(info.id, info.health.state)

    Runs on asyncio (the store and cache are asyncio libraries). Nothing here needs Quart.
    The web layer reaches the core only through the methods of this class.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        plugin_manager: PluginManager | None = None,
        cache: LatestCache | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.plugins = plugin_manager if plugin_manager is not None else PluginManager()
        self.cache: LatestCache = cache if cache is not None else make_cache(self.settings)
        self.bus: Bus = bus if bus is not None else make_bus(self.settings)
        self.store = Store(self.settings.database.url)
        self.queue = WriteQueue(self.settings.store.queue_size, self.settings.store.batch_size)
        self.writer = BatchWriter(self.store, self.queue, self.settings.store)
        self.maintenance = Maintenance(self.store, self.settings.retention)
        sink = DataPath(self.cache, self.bus, self.queue, self.plugins)
        #: This node's name (``[node] name``, or the host's), recorded with each execution.
        self.node_name = self.settings.node.node_name
        #: This node's part in a cluster (``[bus] backend = "redis"``), else None.
        self.cluster: Cluster | None = (
            make_cluster(
                self.settings,
                self._placement,
                self._hold,
                self._sync_cluster,
                self._run_for_another_node,
            )
            if self.settings.bus.backend == "redis"
            else None
        )
        cluster = self.cluster
        self.scheduler = Scheduler(
            self.settings.scheduler,
            sink=sink,
            node=self.node_name,
            may_run=cluster.may_run if cluster is not None else None,
            fence=cluster.fence if cluster is not None else None,
        )
        self._instances: dict[str, Instance] = {}
        #: The table each instance of the API was built from (a node of a cluster
        #: rebuilds one whose stored table another node changed).
        self._api_bodies: dict[str, dict[str, Any]] = {}
        #: Held while instances are made, changed, deleted, enabled or disabled, so that
        #: reading what other nodes changed never interleaves with a change of this one.
        self._changing = asyncio.Lock()
        #: In a cluster: the health of the instances other nodes run, from the cache.
        self._shared_health: dict[str, Health] = {}
        self._stack: AsyncExitStack | None = None
        self._background: anyio.CancelScope | None = None
        #: In a cluster: set while this node holds the maintenance lease.
        self._maintaining = asyncio.Event()
        self._maintenance_scope: anyio.CancelScope | None = None
        #: Rules, silences and notifiers; runs only when some are configured (in a
        #: cluster, on the one node that holds the ``@alerts`` lease: a new service each
        #: time it takes it, which reads the states the last one stored).
        self.alerts = self._new_alert_service()
        # asyncio's, not anyio's: a hub may be made outside the event loop (it runs on
        # asyncio only), and these bind to the loop when first used.
        self._alerting = asyncio.Event()
        self._alerting_ends = asyncio.Event()
        self._alerts_scope: anyio.CancelScope | None = None
        self.figures = Figures(
            self.scheduler, self.store, self.queue, self.bus, self.writer, self.alerts, self.cache
        )
        if self.cluster is not None:
            self.figures.add_part(self.cluster)
        #: The MQTT exporter (``[mqtt] url``), else None; on every node of a cluster, each
        #: publishing the instances it runs.
        self.mqtt: MqttExporter | None = None
        if self.settings.mqtt.enabled:
            self.mqtt = MqttExporter(self.settings.mqtt, self)
            self.figures.add_part(self.mqtt)
        self.started_at: float | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Hub:
        self._instances = build_instances(self.settings, self.plugins.plugin_types())
        stack = AsyncExitStack()
        try:
            await self.store.open()
            stack.push_async_callback(self._close_resources)
            await stack.enter_async_context(running(self.cache, self.bus))
            await self._load_api_instances()
            await self._sync_instances()
            tasks = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._drain)
            tasks.start_soon(self.writer.run, name="homelab:writer")
            self._background = anyio.CancelScope()
            self._alerts_scope = anyio.CancelScope()
            tasks.start_soon(self._run_maintenance, name="homelab:maintenance")
            if self.cluster is None:
                # Subscribed before the first run, stopped after the last.
                await stack.enter_async_context(self.alerts)
            else:
                tasks.start_soon(self._run_alerts, name="homelab:alerts-duty")
            if self.mqtt is not None:
                # Like the alerts: subscribed before the first run, stopped after the last.
                await stack.enter_async_context(self.mqtt)
            await stack.enter_async_context(self.scheduler)
            if self.cluster is not None:
                # Stopped before the scheduler: it stops its instances and gives their
                # leases back while the scheduler still runs.
                placing = anyio.CancelScope()
                stack.callback(placing.cancel)
                tasks.start_soon(self._run_cluster, placing, name="homelab:cluster")
            stack.enter_context(tuned_gc(self.settings.scheduler.gc_threshold))
            self.started_at = time.time()
            await self.plugins.notify("hub_startup", hub=self)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        try:
            with anyio.CancelScope(shield=True):
                await self.plugins.notify("hub_shutdown", hub=self)
        finally:
            stack, self._stack = self._stack, None
            await stack.__aexit__(exc_type, exc, tb)

    async def _run_cluster(self, scope: anyio.CancelScope) -> None:
        assert self.cluster is not None
        with scope:
            await self.cluster.run()

    def _new_alert_service(self) -> AlertService:
        return AlertService(
            self.settings.alerts,
            bus=self.bus,
            store=self.store,
            plugins=self.plugins,
            type_of=self._type_name,
            instances=lambda: [(i, self.health(i).state) for i in self._instances],
            source=self.settings.source,
        )

    async def _run_alerts(self) -> None:
        """In a cluster: the alert service, while this node holds its lease (:data:`ALERTS`).

        Each time the lease is taken, a new service reads the rules, states and delivered
        marks the last holder stored (every 0.5 s, and when it stops), so that what it
        sent is not sent again."""
        assert self._alerts_scope is not None
        with self._alerts_scope:
            while True:
                await self._alerting.wait()
                service = self._new_alert_service()
                async with service:
                    self.alerts = self.figures.alerts = service
                    log.info("node %r evaluates the alerts", self.node_name)
                    await self._alerting_ends.wait()
                log.info("node %r no longer evaluates the alerts", self.node_name)

    def _forget_instance(self, instance_id: str) -> None:
        """An instance was deleted: the services that keep something of it let it go."""
        self.alerts.instance_removed(instance_id)
        if self.mqtt is not None:
            self.mqtt.instance_removed(instance_id)

    def _placement(self) -> dict[str, str | None]:
        """Every instance and the node it is pinned to (None: any), and the cluster's
        shared work, for the cluster to place."""
        placed: dict[str, str | None] = {
            i: inst.settings.node for i, inst in self._instances.items()
        }
        placed[MAINTENANCE] = None
        placed[ALERTS] = None
        return placed

    async def _hold(self, instance_id: str, held: bool) -> None:
        if instance_id == MAINTENANCE:
            if held:
                self._maintaining.set()
                log.info("node %r does the store's rollups and retention", self.node_name)
            else:
                self._maintaining.clear()
                if self._maintenance_scope is not None:
                    self._maintenance_scope.cancel()
        elif instance_id == ALERTS:
            if held:
                self._alerting_ends.clear()
                self._alerting.set()
            else:
                self._alerting.clear()
                self._alerting_ends.set()
        elif instance_id in self._instances:
            await self.scheduler.set_held(instance_id, held)

    def _held_here(self, instance_id: str, inst: Instance) -> bool:
        """Whether this node runs the instance: in a cluster, the cluster decides (nothing
        runs before it has a lease, and an instance it holds stays held when it is
        rebuilt); alone, unless pinned to another node."""
        if self.cluster is not None:
            return instance_id in self.cluster.held
        return inst.settings.node in (None, self.node_name)

    async def _sync_cluster_unlocked(self) -> None:
        """What other nodes changed, from the shared store, after every heartbeat: the
        instances made, changed or deleted through their API, and enabling or disabling
        (applied to this node's scheduler only: the store has them already)."""
        try:
            bodies = await self.store.api_instances()
            states = await self.store.instance_states()
        except HomelabError as exc:
            log.warning("could not read the instances other nodes changed: %s", exc)
            return
        for instance_id in [
            i for i, inst in self._instances.items() if inst.source == "api" and i not in bodies
        ]:
            await self.scheduler.remove(instance_id)
            del self._instances[instance_id]
            self._api_bodies.pop(instance_id, None)
            self._forget_instance(instance_id)
        for instance_id, body in bodies.items():
            old = self._instances.get(instance_id)
            if (old is not None and old.source == "file") or self._api_bodies.get(
                instance_id
            ) == body:
                continue
            try:
                new = self._build_api_instance(instance_id, body)
            except HomelabError as exc:
                if self._api_bodies.get(instance_id) is None:
                    log.error("instance %r of another node cannot run here: %s", instance_id, exc)
                self._api_bodies[instance_id] = body
                continue
            if old is not None:
                await self.scheduler.remove(instance_id)
            self._instances[instance_id] = new
            self._api_bodies[instance_id] = body
            await self._schedule(instance_id, new, states.get(instance_id), save=False)
            if old is not None and self.mqtt is not None:
                self.mqtt.instance_updated(instance_id)
            if old is None:
                self.alerts.instance_added(
                    instance_id, enabled=self.scheduler.is_enabled(instance_id)
                )
        for instance_id, known in states.items():
            if (
                instance_id in self._instances
                and self.scheduler.is_enabled(instance_id) != known.enabled
            ):
                await self.scheduler.set_enabled(instance_id, known.enabled)

    async def _tell_cluster(self) -> None:
        """Have the other nodes read the changes at once rather than at their next beat."""
        if self.cluster is not None:
            await self.cluster.poke()

    async def _run_maintenance(self) -> None:
        """Rollups and retention; in a cluster, only while this node holds their lease
        (:data:`MAINTENANCE`): one node at a time does the work for every node."""
        assert self._background is not None
        with self._background:
            if self.cluster is None:
                await self.maintenance.run()
                return
            while True:
                await self._maintaining.wait()
                with anyio.CancelScope() as self._maintenance_scope:
                    await self.maintenance.run()
                self._maintenance_scope = None

    async def _drain(self) -> None:
        """Stop background work and write everything still queued (the task group waits)."""
        if self._background is not None:
            self._background.cancel()
        if self._alerts_scope is not None:
            self._alerts_scope.cancel()
        self.queue.close()

    async def _close_resources(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.store.close()
            await self.cache.close()

    async def _sync_instances(self) -> None:
        """Schedule every instance, enabled as :func:`resolve_enabled` decides, and save it."""
        stored = await self.store.instance_states()
        for instance_id, inst in self._instances.items():
            await self._schedule(instance_id, inst, stored.get(instance_id))

    async def _schedule(
        self, instance_id: str, inst: Instance, known: Any = None, *, save: bool = True
    ) -> None:
        """Save an instance's row (unless not ``save``) and add it to the scheduler (it
        starts when enabled)."""
        wanted = inst.settings.enabled
        enabled = resolve_enabled(
            wanted,
            known.enabled if known else None,
            known.config_enabled if known else None,
        )
        if save:
            await self._save_row(instance_id, inst, enabled, wanted)
        held = self._held_here(instance_id, inst)
        if not held and self.cluster is None:
            log.warning(
                "instance %r is pinned to node %r; this is node %r, not in a cluster"
                ' ([bus] backend = "redis"): it does not run here',
                instance_id,
                inst.settings.node,
                self.node_name,
            )
        self.scheduler.add(
            instance_id,
            inst.plugin,
            interval=inst.interval,
            timeout=inst.timeout,
            enabled=enabled,
            limits=Limits.of(inst.settings, self.settings.scheduler),
            held=held,
            isolation=isolation_for(inst.settings, self.settings.scheduler),
        )

    async def _save_row(
        self, instance_id: str, inst: Instance, enabled: bool, wanted: bool
    ) -> None:
        await self.store.save_instance(
            instance_id,
            type_name=inst.plugin_type.name,
            enabled=enabled,
            config_enabled=wanted,
            config=config_to_dict(inst.plugin.config),
            interval=inst.interval,
        )

    async def _load_api_instances(self) -> None:
        """Build the instances created through the API, as stored; one that cannot be built
        any more (its type uninstalled, its options no longer valid) is logged and left out
        (its stored table is kept, so that it comes back once the cause is fixed)."""
        for instance_id, body in (await self.store.api_instances()).items():
            if instance_id in self._instances:
                log.warning(
                    "instance %r created through the API is shadowed by [plugins.%s] of %s;"
                    " the file's applies (delete one of them)",
                    instance_id,
                    instance_id,
                    self.settings.source or "the settings",
                )
                continue
            self._api_bodies[instance_id] = body
            try:
                self._instances[instance_id] = self._build_api_instance(instance_id, body)
            except HomelabError as exc:
                log.error("instance %r created through the API cannot start: %s", instance_id, exc)

    def _type_name(self, instance_id: str) -> str | None:
        inst = self._instances.get(instance_id)
        return inst.plugin_type.name if inst is not None else None

    # -- what an embedder uses ---------------------------------------------------------------

    def _get(self, instance_id: str) -> Instance:
        try:
            return self._instances[instance_id]
        except KeyError:
            raise UnknownInstanceError(instance_id) from None

    def instances(self) -> list[InstanceInfo]:
        """Every configured instance, in configuration order."""
        return [self.instance(i) for i in self._instances]

    def instance(self, instance_id: str) -> InstanceInfo:
        """One instance; :class:`UnknownInstanceError` if there is none by that id."""
        inst = self._get(instance_id)
        kind = inst.type_info
        lifecycle = self.scheduler.state(instance_id)
        return InstanceInfo(
            id=instance_id,
            type=kind.name,
            title=kind.title,
            category=kind.category,
            enabled=lifecycle.enabled,
            state=lifecycle.state,
            interval=inst.interval,
            timeout=inst.timeout,
            config=config_to_dict(inst.plugin.config),
            health=self.health(instance_id),
            source=inst.source,
            node=inst.settings.node,
            running_on=self._running_on(instance_id),
        )

    def knows(self, instance_id: str) -> bool:
        """Whether there is an instance by that id (of the file or of the API)."""
        return instance_id in self._instances

    def is_enabled(self, instance_id: str) -> bool:
        """Whether the instance is enabled; :class:`UnknownInstanceError` if there is none."""
        self._get(instance_id)
        return self.scheduler.is_enabled(instance_id)

    def runs_here(self, instance_id: str) -> bool:
        """Whether this node runs the instance (False for an unknown id)."""
        if instance_id not in self._instances:
            return False
        try:
            return self.scheduler.is_held(instance_id)
        except UnknownInstanceError:
            return False  # being changed: between its old and its new schedule

    def _running_on(self, instance_id: str) -> str | None:
        if self.scheduler.is_held(instance_id):
            return self.node_name
        if self.cluster is not None:
            return self.cluster.holders.get(instance_id)
        return None

    async def nodes(self) -> list[NodeInfo]:
        """The nodes of the cluster (their last heartbeat, version and instances), or this
        node alone when it is not in one."""
        if self.cluster is not None:
            try:
                return await self.cluster.nodes()
            except Exception as exc:
                raise ClusterError(f"cannot read the nodes from Redis: {exc}") from exc
        now = time.time()
        held = [i for i in self._instances if self.scheduler.is_held(i)]
        started = self.started_at if self.started_at is not None else now
        duties = ["alerts", "maintenance"]
        return [NodeInfo(self.node_name, __version__, started, now, True, held, duties)]

    def plugin_type(self, instance_id: str) -> type[Plugin]:
        """The plugin type of an instance."""
        return self._get(instance_id).plugin_type

    def plugin_types(self) -> list[tuple[TypeInfo, str, dict[str, Any]]]:
        """Every installed plugin type: its metadata, the plugin that registered it, and
        the JSON Schema of its options; by name."""
        types = self.plugins.plugin_types()
        return [self.plugin_type_details(name) for name in sorted(types)]

    def plugin_type_details(self, type_name: str) -> tuple[TypeInfo, str, dict[str, Any]]:
        """One installed type (:class:`UnknownPluginTypeError` if there is none)."""
        kind = self.plugins.get_type(type_name)
        return kind.describe(), self.plugins.source_of(type_name), kind.config_schema()

    def type_info(self, instance_id: str) -> TypeInfo:
        """The metadata of an instance's plugin type."""
        return self._get(instance_id).type_info

    def config_schema(self, instance_id: str) -> dict[str, Any]:
        """The JSON Schema of an instance's config."""
        return self._get(instance_id).plugin_type.config_schema()

    def health(self, instance_id: str) -> Health:
        """An instance's current health: this node's, or, for an instance another node of
        the cluster runs, the one that node put in the shared cache (read at every
        heartbeat)."""
        self._get(instance_id)
        if self.cluster is not None and not self.scheduler.is_held(instance_id):
            shared = self._shared_health.get(instance_id)
            if shared is not None:
                return shared
        return self.scheduler.health(instance_id)

    def stats(self, instance_id: str) -> RunStats:
        """An instance's run counters since the hub started."""
        self._get(instance_id)
        return self.scheduler.stats(instance_id)

    async def _set_enabled(self, instance_id: str, enabled: bool) -> InstanceInfo:
        """Enable or disable an instance at once and persist the choice."""
        self._get(instance_id)
        await self.store.set_enabled(instance_id, enabled)
        await self.scheduler.set_enabled(instance_id, enabled)
        state = self.scheduler.state(instance_id).state
        self.bus.publish(InstanceChanged(instance_id, enabled, state))
        await self._tell_cluster()
        return self.instance(instance_id)

    # -- instances at run time -----------------------------------------------------------

    def _build_api_instance(self, instance_id: str, body: Mapping[str, Any]) -> Instance:
        """An instance from an API body (a ``[plugins.<id>]`` table), checked by exactly the
        file's rules; :class:`InvalidArgumentError` with the file's message otherwise."""
        try:
            settings = instance_settings(instance_id, body, where=None)
            plugin_type = plugin_type_for(self.plugins.plugin_types(), settings, None)
            plugin, interval, timeout = build_instance(
                settings, plugin_type, default_timeout=self.settings.scheduler.default_timeout
            )
        except ConfigError as exc:
            raise InvalidArgumentError(_without_file(exc)) from None
        return Instance(
            settings, plugin_type, plugin, interval, timeout, plugin_type.describe(), "api"
        )

    def _owned_by_api(self, instance_id: str) -> Instance:
        inst = self._get(instance_id)
        if inst.source != "api":
            raise ConflictError(
                f"instance {instance_id!r} is defined in"
                f" {self.settings.source or 'the settings'}; edit [plugins.{instance_id}] there"
            )
        return inst

    async def _create_instance(self, instance_id: str, body: Mapping[str, Any]) -> InstanceInfo:
        """Create an instance owned by the store: ``body`` is what a ``[plugins.<id>]``
        table holds (``type``, ``interval``, ``timeout``, ``enabled``, the options),
        checked by the file's rules. It is stored, restored at every start, and starts at
        once; other instances are not touched."""
        if instance_id in self._instances:
            source = self._instances[instance_id].source
            raise ConflictError(
                f"instance id {instance_id!r} is taken (by an instance of the"
                f" {'file' if source == 'file' else 'API'})"
            )
        inst = self._build_api_instance(instance_id, body)
        await self.store.save_api_instance(instance_id, inst.plugin_type.name, dict(body))
        self._instances[instance_id] = inst
        self._api_bodies[instance_id] = dict(body)
        await self._schedule(instance_id, inst)
        self.alerts.instance_added(instance_id, enabled=self.scheduler.is_enabled(instance_id))
        self.bus.publish(
            InstanceChanged(
                instance_id, inst.settings.enabled, self.scheduler.state(instance_id).state
            )
        )
        await self._tell_cluster()
        return self.instance(instance_id)

    async def _update_instance(self, instance_id: str, changes: Mapping[str, Any]) -> InstanceInfo:
        """Change an instance of the API: ``changes`` holds the keys to change (a key set
        to None goes back to its default). A secret left out, or sent back as the
        redacted text the API shows, keeps its stored value. The instance restarts with
        its new table; an instance of the file is a :class:`ConflictError`."""
        inst = self._owned_by_api(instance_id)
        stored = (await self.store.api_instances()).get(instance_id, {})
        if "type" in changes and changes["type"] != inst.plugin_type.name:
            raise InvalidArgumentError(
                f"[plugins.{instance_id}] type: the type of an instance cannot change"
                f" (it is {inst.plugin_type.name!r}); delete it and create another"
            )
        secrets = secret_fields(inst.plugin_type.Config)
        body = dict(stored)
        for key, value in changes.items():
            if value is None:
                body.pop(key, None)
            elif key in secrets and value == REDACTED:
                continue  # sent back as shown: unchanged
            else:
                body[key] = value
        new = self._build_api_instance(instance_id, body)
        enabled = self.scheduler.is_enabled(instance_id)
        await self.store.save_api_instance(instance_id, new.plugin_type.name, body)
        await self.scheduler.remove(instance_id)
        self._instances[instance_id] = new
        self._api_bodies[instance_id] = body
        known = attrs.evolve(
            (await self.store.instance_states())[instance_id],
            enabled=new.settings.enabled if "enabled" in changes else enabled,
            config_enabled=new.settings.enabled,
        )
        await self._schedule(instance_id, new, known)
        if self.mqtt is not None:
            self.mqtt.instance_updated(instance_id)
        await self._tell_cluster()
        return self.instance(instance_id)

    async def _delete_instance(self, instance_id: str, *, purge: bool = False) -> None:
        """Stop and delete an instance of the API; its history stays unless ``purge``."""
        self._owned_by_api(instance_id)
        await self.scheduler.remove(instance_id)
        del self._instances[instance_id]
        self._forget_instance(instance_id)
        await self.cache.forget(instance_id)
        await self.store.delete_instance(instance_id, purge=purge)
        self._api_bodies.pop(instance_id, None)
        self.bus.publish(InstanceChanged(instance_id, False, InstanceState.STOPPED))
        await self._tell_cluster()

    async def set_enabled(self, instance_id: str, enabled: bool) -> InstanceInfo:
        """Enable or disable an instance at once and persist the choice."""
        async with self._changing:
            return await self._set_enabled(instance_id, enabled)

    async def create_instance(self, instance_id: str, body: Mapping[str, Any]) -> InstanceInfo:
        """Create an instance owned by the store: ``body`` is what a ``[plugins.<id>]``
        table holds (``type``, ``interval``, ``timeout``, ``enabled``, the options),
        checked by the file's rules. It is stored, restored at every start, and starts at
        once (in a cluster, on the node its lease gives it); other instances are not
        touched."""
        async with self._changing:
            return await self._create_instance(instance_id, body)

    async def update_instance(self, instance_id: str, changes: Mapping[str, Any]) -> InstanceInfo:
        """Change an instance of the API: ``changes`` holds the keys to change (a key set
        to None goes back to its default). A secret left out, or sent back as the
        redacted text the API shows, keeps its stored value. The instance restarts with
        its new table; an instance of the file is a :class:`ConflictError`."""
        async with self._changing:
            return await self._update_instance(instance_id, changes)

    async def delete_instance(self, instance_id: str, *, purge: bool = False) -> None:
        """Stop and delete an instance of the API; its history stays unless ``purge``."""
        async with self._changing:
            await self._delete_instance(instance_id, purge=purge)

    async def _sync_cluster(self) -> None:
        async with self._changing:
            await self._sync_cluster_unlocked()
        if self.alerts.running:
            await self.alerts.refresh_rules()  # rules made through other nodes' API
        else:
            await self.alerts.mirror()  # what the evaluating node stored
        if self.cache.shared:
            for instance_id in [i for i in self._instances if not self.scheduler.is_held(i)]:
                health = await self.cache.health(instance_id)
                if health is not None:
                    self._shared_health[instance_id] = health

    async def reload(self, settings: Settings | None = None) -> ReloadResult:
        """Read the config file again (or take ``settings``) and apply the difference to the
        instances of the file: new ones start, removed ones stop, changed ones restart, and
        the others run on untouched. A file with any error is a :class:`ConfigError` and
        nothing changes. Sections that cannot change while running are named in the result.
        """
        async with self._changing:
            return await self._reload(settings)

    async def _reload(self, settings: Settings | None = None) -> ReloadResult:
        if settings is None:
            if self.settings.source is None:
                raise ConflictError("these settings were not read from a file: nothing to reload")
            settings = load_settings(self.settings.source)
        types = self.plugins.plugin_types()
        built = build_instances(settings, types)  # the first bad table raises: nothing changes
        for notifier in settings.alerts.notifiers.values():
            build_notifier(notifier, self.plugins, where=settings.source)
        for instance_id in built:
            inst = self._instances.get(instance_id)
            if inst is not None and inst.source == "api":
                raise ConfigError(
                    "this id is taken by an instance created through the API; rename the"
                    " table, or delete that instance first",
                    file=settings.source,
                    table=f"plugins.{instance_id}",
                )
        current = {i: x for i, x in self._instances.items() if x.source == "file"}
        removed = [i for i in current if i not in built]
        added = [i for i in built if i not in current]
        changed = [i for i in built if i in current and built[i].settings != current[i].settings]
        for instance_id in removed + changed:
            await self.scheduler.remove(instance_id)
            del self._instances[instance_id]
        for instance_id in removed:
            self._forget_instance(instance_id)
            await self.cache.forget(instance_id)
        stored = await self.store.instance_states()
        for instance_id in added + changed:
            self._instances[instance_id] = built[instance_id]
            await self._schedule(instance_id, built[instance_id], stored.get(instance_id))
            self.alerts.instance_added(instance_id, enabled=self.scheduler.is_enabled(instance_id))
            if self.mqtt is not None and instance_id in changed:
                self.mqtt.instance_updated(instance_id)
        # Keep the order of the file, then the instances of the API.
        self._instances = {
            **{i: self._instances[i] for i in built},
            **{i: x for i, x in self._instances.items() if x.source == "api"},
        }
        restart = [
            name
            for name in _RESTART_SECTIONS
            if getattr(settings, name) != getattr(self.settings, name)
        ]
        self.settings.plugins = settings.plugins
        result = ReloadResult(added, removed, changed, restart)
        log.info("reloaded %s: %s", settings.source, result.describe())
        return result

    async def run_now(self, instance_id: str) -> Execution:
        """Run an instance immediately and return the execution record (in a cluster, on
        the node that runs it)."""
        inst = self._get(instance_id)
        cluster = self.cluster
        if cluster is None or self.scheduler.is_held(instance_id):
            return await self.scheduler.run_now(instance_id)
        node = cluster.holders.get(instance_id)
        if node is None or node == self.node_name:
            raise ConflictError(f"plugin instance {instance_id!r} runs on no node now")
        done = await cluster.run_elsewhere(instance_id, node, timeout=inst.timeout + 10)
        return Execution(**done)

    async def _run_for_another_node(self, instance_id: str) -> dict[str, Any]:
        self._get(instance_id)
        execution = await self.scheduler.run_now(instance_id)
        return execution.to_dict()

    async def latest(self, instance_id: str) -> list[Metric]:
        """The latest value of every series of the instance."""
        self._get(instance_id)
        return await self.cache.latest(instance_id)

    async def history(
        self,
        instance_id: str,
        metric: str | None,
        *,
        since: float,
        until: float | None = None,
        step: float | None = None,
        agg: str = "avg",
        labels: Mapping[str, str] | None = None,
        max_points: int = 500,
    ) -> list[HistorySeries]:
        """Bucketed history of one metric of an instance (None: of every metric; see
        :mod:`homelab_core.store`)."""
        self._get(instance_id)
        return await store_history(
            self.store,
            self.maintenance,
            instance_id,
            metric,
            since=since,
            until=time.time() if until is None else until,
            step=step,
            agg=agg,  # type: ignore[arg-type]
            labels=labels,
            max_points=max_points,
        )

    async def executions(
        self,
        instance_id: str,
        *,
        status: str | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[Execution]:
        """Stored executions of an instance, newest first."""
        self._get(instance_id)
        if limit < 1:
            raise InvalidArgumentError("limit must be at least 1")
        return await self.store.executions(instance_id, status=status, limit=limit, before=before)

    async def health_history(
        self, instance_id: str, *, limit: int = 100, before: int | None = None
    ) -> list[HealthTransition]:
        """Stored health transitions of an instance, newest first (kept for
        ``[retention] health_days``)."""
        self._get(instance_id)
        if limit < 1:
            raise InvalidArgumentError("limit must be at least 1")
        return await self.store.health_history(instance_id, limit=limit, before=before)

    async def status_page(
        self, settings: StatusPageSettings | None = None, *, now: float | None = None
    ) -> StatusPage:
        """The public status page's figures for the instances ``settings`` (by default
        ``[status_page]``) chooses: up or down now, uptime over 24 h, 7 d and 30 d from the
        stored health transitions (one query for all), and their firing alerts."""
        return await status_figures(self, settings or self.settings.status_page, now)

    # -- alerts ------------------------------------------------------------------------------

    def alerts_list(self, *, state: str | None = None, severity: str | None = None) -> list[Any]:
        """Current alerts (:class:`~homelab_core.alerts.AlertInfo`), firing first."""
        return self.alerts.alerts(state=state, severity=severity)

    async def alert_history(
        self, *, rule: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[Any]:
        """Stored alert transitions, newest first."""
        return await self.alerts.history(rule=rule, limit=limit, before=before)

    def alert_rules(self) -> list[tuple[Any, str]]:
        """Every rule (:class:`~homelab_core.alerts.RuleSettings`) with its source,
        ``file`` or ``api``."""
        return self.alerts.rules()

    async def put_alert_rule(
        self, rule_id: str, body: Mapping[str, Any], *, create: bool = True
    ) -> Any:
        """Make (or replace) a rule owned by the API, with the rules of ``[alerts.<id>]``."""
        return await self.alerts.put_rule(rule_id, body, create=create)

    async def remove_alert_rule(self, rule_id: str) -> None:
        """Delete a rule owned by the API."""
        await self.alerts.remove_rule(rule_id)

    def silences(self, *, include_expired: bool = False) -> list[Any]:
        """Silences that have not ended (:class:`~homelab_core.alerts.Silence`)."""
        return self.alerts.list_silences(include_expired=include_expired)

    async def add_silence(self, matchers: Mapping[str, str], **kwargs: Any) -> Any:
        """Make a silence (see :meth:`AlertService.add_silence`)."""
        return await self.alerts.add_silence(dict(matchers), **kwargs)

    async def remove_silence(self, silence_id: str) -> None:
        """Remove a silence by id."""
        await self.alerts.remove_silence(silence_id)

    def notifiers(self) -> list[Any]:
        """The configured notifiers with their counters."""
        return self.alerts.notifiers()

    async def test_notifier(self, notifier_id: str) -> str | None:
        """Send a test message; None when delivered, else the error."""
        return await self.alerts.test_notifier(notifier_id)

    async def notification_attempts(
        self, *, notifier: str | None = None, limit: int = 100
    ) -> list[Any]:
        """Recorded notification attempts, newest first."""
        return await self.alerts.attempts(notifier=notifier, limit=limit)

    def subscribe(self, **kwargs: Any) -> Any:
        """Subscribe to live events (see :meth:`homelab_core.bus.MemoryBus.subscribe`)."""
        return self.bus.subscribe(**kwargs)

    async def flush(self) -> None:
        """Write everything queued so far to the store before returning."""
        while len(self.queue):
            await self.writer.write_batch(self.queue.take())

    # -- figures -------------------------------------------------------------------------------

    def counters(self) -> dict[str, float]:
        """Framework counters: runs, failures, skipped runs, samples, queue depth."""
        return self.figures.counters()

    def workers(self) -> list[WorkerInfo]:
        """The worker processes of the isolated instances (``isolation = "process"``), by
        name: their pid, starts, losses, CPU time and memory."""
        return [
            WorkerInfo(w.name, w.pid, w.starts, w.losses, w.cpu_seconds, w.rss, w.peak_rss)
            for w in self.scheduler.workers.stats()
        ]

    async def samples_stored(self) -> int:
        """The number of stored raw samples (counted at most every 30 s: it is slow)."""
        return await self.figures.samples_stored()

    async def summary(self) -> Summary:
        """Counts by state, runs and failures of the last hour, samples, uptime."""
        return await self.figures.summary(self.instances(), self.started_at)

    async def readiness(self) -> Readiness:
        """Whether the store answers, its writes succeed, and the scheduler runs."""
        scheduler = self.scheduler
        return Readiness(
            store_answers=await self.store.ping(),
            scheduler_runs=scheduler.running,
            writes_succeed=not self.writer.failing,
            write_error=self.writer.last_error if self.writer.failing else None,
            scheduler_error=scheduler.error,
            redis_answers=self._redis_answers(),
        )

    def _redis_answers(self) -> bool:
        """Whether the Redis of every part that uses one answered last time (True alone)."""
        parts = [self.cluster, self.bus, self.cache]
        return all(getattr(part, "connected", True) for part in parts if part is not None)
