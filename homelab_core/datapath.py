"""The data path: where every result of the scheduler goes, in order.

::

    collect() -> validate -> cache (latest) -> bus (typed events) -> write queue -> store
                                                                  -> event hooks

:class:`DataPath` is the scheduler's sink. The cache is updated before the event is
published, so that a consumer woken by the event reads the new values; nothing here waits
on the store (the write queue is bounded and never blocks).
"""

from __future__ import annotations

from typing import Any

from .bus import Bus
from .cache import LatestCache
from .events import ExecutionFinished, HealthChanged, MetricsCollected
from .plugins import PluginManager
from .scheduler import RunResult
from .store import WriteQueue


class DataPath:
    """Hands each run's metrics, execution and health change to the cache, the bus, the
    write queue and the plugins' event hooks."""

    def __init__(
        self, cache: LatestCache, bus: Bus, queue: WriteQueue, plugins: PluginManager
    ) -> None:
        self.cache = cache
        self.bus = bus
        self.queue = queue
        self.plugins = plugins
        #: Read once: a shared cache also gets every run's health (other nodes show it).
        self._shared = cache.shared

    async def __call__(self, result: RunResult) -> None:
        instance_id, metrics, execution = result.instance_id, result.metrics, result.execution
        bus = self.bus
        if self._shared:  # before the events, like the metrics: readers see the new health
            await self.cache.put_health(instance_id, result.health)
        if metrics:
            await self.cache.update(instance_id, metrics)
            if bus.subscriber_count:  # no event is built for nobody
                bus.publish(MetricsCollected(instance_id, metrics))
            self.queue.put_metrics(instance_id, metrics)
            await self._notify("metrics_collected", instance_id=instance_id, metrics=metrics)
        if execution is not None:
            if bus.subscriber_count:
                bus.publish(ExecutionFinished(instance_id, execution))
            self.queue.put_execution(execution)
            await self._notify("execution_finished", execution=execution)
        if result.health_changed:
            old, new = result.previous_health, result.health
            bus.publish(HealthChanged(instance_id, old, new))
            self.queue.put_transition(instance_id, old, new)
            await self._notify("health_changed", instance_id=instance_id, old=old, new=new)

    async def _notify(self, hook: str, **kwargs: Any) -> None:
        if self.plugins.has_implementations(hook):
            await self.plugins.notify(hook, **kwargs)
