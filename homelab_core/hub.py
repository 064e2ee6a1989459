"""The Hub: builds and owns the plugin manager, store, cache, bus and scheduler."""

from __future__ import annotations

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
from anyio.abc import TaskGroup

from .bus import Bus, Event, MemoryBus
from .cache import AiocacheLatest, LatestCache
from .config import NO_FILE, InstanceSettings, Settings, load_settings
from .errors import ConfigError, HomelabError, UnknownPluginError
from .model import Execution, Health, HealthState, HistorySeries, Metric
from .options import build_config, config_to_dict
from .plugin import Plugin
from .plugins import PluginManager
from .scheduler import RunResult, RunStats, Scheduler
from .store import BatchWriter, Maintenance, Store, WriteQueue
from .store import history as store_history

log = logging.getLogger("homelab.hub")


@contextlib.contextmanager
def tuned_gc(threshold: int) -> Iterator[None]:
    """Python's garbage collector tuned for a running hub, for the ``with`` block.

    Every collection allocates thousands of short-lived objects; with Python's default
    young-generation threshold (700) the collector ran so often, over every live object of
    a large hub, that it took a quarter of the CPU and paused runs for hundreds of
    milliseconds at 100,000 samples/s. ``threshold`` new objects are allowed between
    young collections instead, and everything alive now (plugins, settings, modules) is
    frozen out of later collections. Both are undone afterwards; ``0`` changes nothing.
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


@attrs.frozen
class InstanceInfo:
    """A configured plugin instance as the hub sees it (config with secrets redacted)."""

    id: str
    type: str
    title: str
    category: str
    enabled: bool
    interval: float
    timeout: float
    config: dict[str, Any]
    health: Health

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of the instance."""
        return {
            "id": self.id,
            "type": self.type,
            "title": self.title,
            "category": self.category,
            "enabled": self.enabled,
            "interval": self.interval,
            "timeout": self.timeout,
            "config": self.config,
            "health": self.health.to_dict(),
        }


@attrs.define
class _Instance:
    settings: InstanceSettings
    plugin_type: type[Plugin]
    plugin: Plugin
    interval: float
    timeout: float


def plugin_type_for(
    types: Mapping[str, type[Plugin]], settings: InstanceSettings, source: str | None = None
) -> type[Plugin]:
    """The installed type an instance names, or a :class:`ConfigError` pointing at it."""
    plugin_type = types.get(settings.type)
    if plugin_type is None:
        raise ConfigError(
            f"unknown plugin type {settings.type!r}; installed types:"
            f" {', '.join(sorted(types)) or 'none'}",
            file=source or NO_FILE,
            table=f"plugins.{settings.id}",
            field="type",
        )
    return plugin_type


def build_instance(
    settings: InstanceSettings,
    plugin_type: type[Plugin],
    *,
    default_timeout: float,
    source: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> tuple[Plugin, float, float]:
    """Validate an instance's options and create its plugin object.

    ``overrides`` are ``--set key=value`` strings, parsed to the field types.
    :return: the plugin, its interval and its timeout.
    """
    table = f"plugins.{settings.id}"
    where = source or NO_FILE
    options = {**settings.options, **(overrides or {})}
    # Text from the environment or --set is parsed to each field's type; TOML values are not.
    text_fields = {*settings.from_environment, *(overrides or {})}
    try:
        config: Any = build_config(
            plugin_type.Config, options, file=where, table=table, text_fields=text_fields
        )
    except ConfigError as exc:
        variable = settings.from_environment.get(exc.field or "")
        if variable is None or exc.field in (overrides or {}):
            raise
        raise exc.set_by(variable) from None
    interval = settings.interval or float(plugin_type.default_interval)
    timeout = settings.timeout or plugin_type.default_timeout or min(default_timeout, interval)
    return plugin_type(config, instance_id=settings.id), interval, timeout


class Hub:
    """Everything a running Homelab Core needs, started and stopped together.

    ::

        async with Hub(load_settings("homelab.toml")) as hub:
            for info in hub.instances():
                print(info.id, info.health.state)

    Runs on asyncio (the store and cache are asyncio libraries). Nothing here needs Quart.
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
        self.cache: LatestCache = cache if cache is not None else AiocacheLatest()
        self.bus: Bus = bus if bus is not None else MemoryBus()
        self.store = Store(self.settings.database.url)
        self.queue = WriteQueue(self.settings.store.queue_size, self.settings.store.batch_size)
        self.writer = BatchWriter(self.store, self.queue, self.settings.store)
        self.maintenance = Maintenance(self.store, self.settings.retention)
        self.scheduler = Scheduler(self.settings.scheduler, sink=self._on_result)
        self._instances: dict[str, _Instance] = {}
        self._stack: AsyncExitStack | None = None
        self._tasks: TaskGroup | None = None
        self._background: anyio.CancelScope | None = None
        self.started_at: float | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Hub:
        self._build_instances()
        stack = AsyncExitStack()
        try:
            await self.store.open()
            stack.push_async_callback(self._close_resources)
            await self._sync_instances()
            self._tasks = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._drain)
            self._tasks.start_soon(self.writer.run, name="homelab:writer")
            self._background = anyio.CancelScope()
            self._tasks.start_soon(self._run_maintenance, name="homelab:maintenance")
            await stack.enter_async_context(self.scheduler)
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

    async def _run_maintenance(self) -> None:
        assert self._background is not None
        with self._background:
            await self.maintenance.run()

    async def _drain(self) -> None:
        """Stop background work and write everything still queued (the task group waits)."""
        if self._background is not None:
            self._background.cancel()
        self.queue.close()

    async def _close_resources(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.store.close()
            await self.cache.close()

    def _build_instances(self) -> None:
        types = self.plugins.plugin_types()
        source = self.settings.source
        for instance_id, inst in self.settings.plugins.items():
            plugin_type = plugin_type_for(types, inst, source)
            plugin, interval, timeout = build_instance(
                inst,
                plugin_type,
                default_timeout=self.settings.scheduler.default_timeout,
                source=source,
            )
            self._instances[instance_id] = _Instance(inst, plugin_type, plugin, interval, timeout)

    async def _sync_instances(self) -> None:
        """Reconcile enabled state with the store and schedule every instance.

        The stored state wins unless the config file changed ``enabled`` since last time.
        """
        states = await self.store.instance_states()
        for instance_id, inst in self._instances.items():
            wanted = inst.settings.enabled
            state = states.get(instance_id)
            enabled = wanted if state is None or state.config_enabled != wanted else state.enabled
            await self.store.save_instance(
                instance_id,
                type_name=inst.plugin_type.name,
                enabled=enabled,
                config_enabled=wanted,
                config=config_to_dict(inst.plugin.config),
                interval=inst.interval,
            )
            self.scheduler.add(
                instance_id,
                inst.plugin,
                interval=inst.interval,
                timeout=inst.timeout,
                enabled=enabled,
            )
            await self.cache.set_health(instance_id, self.scheduler.health(instance_id))

    # -- the data path ---------------------------------------------------------------------

    async def _on_result(self, result: RunResult) -> None:
        instance_id = result.instance_id
        if result.metrics:
            await self.cache.update(instance_id, result.metrics, result.health)
        else:
            await self.cache.set_health(instance_id, result.health)
        execution = result.execution
        if result.metrics:
            if self.bus.subscriber_count:
                data = [m.to_dict() for m in result.metrics]
                self.bus.publish(Event("metrics", instance_id, data))
            self.queue.put_metrics(instance_id, result.metrics)
            await self._notify("metrics_collected", instance_id=instance_id, metrics=result.metrics)
        if execution is not None:
            self.bus.publish(Event("execution", instance_id, execution.to_dict()))
            self.queue.put_execution(execution)
            await self._notify("execution_finished", execution=execution)
        if result.health_changed:
            self.bus.publish(Event("status", instance_id, result.health.to_dict()))
            self.queue.put_transition(instance_id, result.previous_health, result.health)
            await self._notify(
                "health_changed",
                instance_id=instance_id,
                old=result.previous_health,
                new=result.health,
            )

    async def _notify(self, hook: str, **kwargs: Any) -> None:
        if self.plugins.has_implementations(hook):
            await self.plugins.notify(hook, **kwargs)

    # -- what an embedder uses ---------------------------------------------------------------

    def _get(self, instance_id: str) -> _Instance:
        try:
            return self._instances[instance_id]
        except KeyError:
            raise UnknownPluginError(instance_id) from None

    def instances(self) -> list[InstanceInfo]:
        """Every configured instance, in configuration order."""
        return [self.instance(i) for i in self._instances]

    def instance(self, instance_id: str) -> InstanceInfo:
        """One instance; :class:`UnknownPluginError` if there is none by that id."""
        inst = self._get(instance_id)
        kind = inst.plugin_type
        return InstanceInfo(
            id=instance_id,
            type=kind.name,
            title=kind.title or kind.name,
            category=kind.category,
            enabled=self.scheduler.is_enabled(instance_id),
            interval=inst.interval,
            timeout=inst.timeout,
            config=config_to_dict(inst.plugin.config),
            health=self.scheduler.health(instance_id),
        )

    def plugin_type(self, instance_id: str) -> type[Plugin]:
        """The plugin type of an instance."""
        return self._get(instance_id).plugin_type

    def health(self, instance_id: str) -> Health:
        """An instance's current health."""
        self._get(instance_id)
        return self.scheduler.health(instance_id)

    def stats(self, instance_id: str) -> RunStats:
        """An instance's run counters since the hub started."""
        self._get(instance_id)
        return self.scheduler.stats(instance_id)

    async def set_enabled(self, instance_id: str, enabled: bool) -> InstanceInfo:
        """Enable or disable an instance at once and persist the choice."""
        self._get(instance_id)
        await self.store.set_enabled(instance_id, enabled)
        await self.scheduler.set_enabled(instance_id, enabled)
        self.bus.publish(Event("plugin", instance_id, {"enabled": enabled}))
        return self.instance(instance_id)

    async def run_now(self, instance_id: str) -> Execution:
        """Run an instance immediately and return the execution record."""
        self._get(instance_id)
        return await self.scheduler.run_now(instance_id)

    async def latest(self, instance_id: str) -> list[Metric]:
        """The latest value of every series of the instance."""
        self._get(instance_id)
        return await self.cache.latest(instance_id)

    async def history(
        self,
        instance_id: str,
        metric: str,
        *,
        since: float,
        until: float | None = None,
        step: float | None = None,
        agg: str = "avg",
        labels: Mapping[str, str] | None = None,
        max_points: int = 500,
    ) -> list[HistorySeries]:
        """Bucketed history of one metric of an instance (see :mod:`homelab_core.store`)."""
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
            raise HomelabError("limit must be at least 1")
        return await self.store.executions(instance_id, status=status, limit=limit, before=before)

    def subscribe(self, **kwargs: Any) -> Any:
        """Subscribe to live events (see :meth:`homelab_core.bus.MemoryBus.subscribe`)."""
        return self.bus.subscribe(**kwargs)

    async def flush(self) -> None:
        """Write everything queued so far to the store before returning."""
        while len(self.queue):
            await self.writer.write_batch(self.queue.take())

    def counters(self) -> dict[str, float]:
        """Framework counters: runs, failures, skipped runs, samples, queue depth."""
        all_stats = self.scheduler.all_stats().values()
        return {
            "runs": sum(s.runs for s in all_stats),
            "failures": sum(s.errors + s.timeouts for s in all_stats),
            "skipped": sum(s.skipped for s in all_stats),
            "samples_written": self.store.samples_written,
            "samples_dropped": self.queue.dropped_samples,
            "executions_dropped": self.queue.dropped_executions,
            "queue_depth": self.queue.pending_samples,
            "subscribers": self.bus.subscriber_count,
        }

    def unhealthy(self) -> list[str]:
        """Ids of enabled instances whose state is failing."""
        return [
            i.id for i in self.instances() if i.enabled and i.health.state is HealthState.FAILING
        ]
