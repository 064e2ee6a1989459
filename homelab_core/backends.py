"""The configured cache and bus (``[cache]`` and ``[bus]``), and their background tasks.

``memory`` (the default of both) is :class:`~homelab_core.cache.AiocacheLatest` and
:class:`~homelab_core.bus.MemoryBus`, in this process, with nothing to start. ``redis`` is
:class:`~homelab_core.cache_redis.RedisLatest` and :class:`~homelab_core.bus_redis.RedisBus`,
shared by every node on that Redis; they need the ``redis`` extra
(``pip install homelab-core[redis]``) and run background tasks, which :func:`running`
starts and stops around a hub's run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol, runtime_checkable

from .bus import Bus, MemoryBus
from .cache import AiocacheLatest, LatestCache
from .config import Settings
from .errors import ConfigError


@runtime_checkable
class Background(Protocol):
    """A backend with background work: started before the hub runs, closed after."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def _need_redis(settings: Settings, section: str) -> None:
    if importlib.util.find_spec("redis") is None:
        raise ConfigError(
            "'redis' needs the redis client library, which is not installed:"
            " pip install homelab-core[redis]",
            file=settings.source,
            table=section,
            field="backend",
        )


def make_cache(settings: Settings) -> LatestCache:
    """The latest-values cache ``[cache]`` names."""
    if settings.cache.backend == "redis":
        _need_redis(settings, "cache")
        from .cache_redis import RedisLatest

        return RedisLatest(settings.cache.url)
    return AiocacheLatest()


def make_bus(settings: Settings) -> Bus:
    """The event bus ``[bus]`` names (a Redis bus sends as ``[node] name``)."""
    if settings.bus.backend == "redis":
        _need_redis(settings, "bus")
        from .bus_redis import RedisBus

        return RedisBus(
            settings.bus.url, settings.node.node_name, stream_length=settings.bus.stream_length
        )
    return MemoryBus()


@asynccontextmanager
async def running(cache: LatestCache, bus: Bus) -> AsyncIterator[None]:
    """Start the background work of the cache and the bus if they have some (the memory
    backends have none), and close them on the way out, the bus first.

    A Redis bus beside a Redis cache flushes the cache before it sends events, so that a
    node woken by an event reads the values the event announces.
    """
    flush = getattr(cache, "flush", None)
    if hasattr(bus, "before_send") and callable(flush) and bus.before_send is None:
        bus.before_send = flush
    async with AsyncExitStack() as stack:
        for part in (cache, bus):
            if isinstance(part, Background):
                await part.start()
                stack.push_async_callback(part.close)
        yield
