"""Latest value of every series of every instance.

:class:`AiocacheLatest` keeps them in an aiocache backend (the in-memory one by default,
Redis later). It is written once per collection with a single ``set``: aiocache wraps each
call in a timeout and the memory backend arms a timer per key, so per-sample writes would
cost far more than the data. The in-memory backend runs without that timeout (a dict
lookup cannot hang), which makes a collection's cache update much cheaper
(docs/performance.md, ``pipeline``).

Health: the scheduler owns each instance's health (one owner, so no two places disagree).
A cache shared by several nodes (:attr:`LatestCache.shared`, the Redis backend of
:mod:`homelab_core.cache_redis`) also keeps a copy of every instance's health, written by
the node that runs it (:meth:`LatestCache.put_health`), so that any node can show it. The
memory backend is not shared and keeps none: the data path does not call it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from aiocache import SimpleMemoryCache

from .model import Health, Metric


class LatestCache(abc.ABC):
    """Interface of the latest-values cache."""

    #: Whether other nodes read this cache (then the data path also writes every
    #: instance's health into it, after each run).
    shared: bool = False

    @abc.abstractmethod
    async def update(self, instance_id: str, metrics: Sequence[Metric]) -> None:
        """Merge ``metrics`` into the instance's latest values."""

    @abc.abstractmethod
    async def latest(self, instance_id: str) -> list[Metric]:
        """The latest value of every series of the instance, sorted by series key."""

    @abc.abstractmethod
    async def forget(self, instance_id: str) -> None:
        """Drop everything cached for the instance."""

    async def put_health(self, instance_id: str, health: Health) -> None:  # noqa: B027
        """Record the instance's health for other nodes (a cache that is not shared keeps
        none: the scheduler owns it)."""

    async def health(self, instance_id: str) -> Health | None:
        """The instance's health as its node last recorded it (None if none has)."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook with a default
        """Release the backend's resources."""


def _latest_key(instance_id: str) -> str:
    return f"latest:{instance_id}"


class AiocacheLatest(LatestCache):
    """Latest values in an aiocache backend, one key per instance.

    The per-instance value maps series keys to :class:`Metric` objects (a serialising
    backend such as Redis needs aiocache's pickle serializer); it is read, merged and
    written back in one pass per collection, and only the hub's collection path writes it.
    """

    def __init__(self, backend: Any | None = None) -> None:
        self._cache = backend if backend is not None else SimpleMemoryCache(timeout=None)

    async def update(self, instance_id: str, metrics: Sequence[Metric]) -> None:
        key = _latest_key(instance_id)
        current: dict[str, Metric] = await self._cache.get(key) or {}
        merged = dict(current)
        for metric in metrics:
            merged[metric.series_key] = metric
        await self._cache.set(key, merged)

    async def latest(self, instance_id: str) -> list[Metric]:
        stored: dict[str, Metric] = await self._cache.get(_latest_key(instance_id)) or {}
        return [stored[k] for k in sorted(stored)]

    async def forget(self, instance_id: str) -> None:
        await self._cache.delete(_latest_key(instance_id))

    async def close(self) -> None:
        await self._cache.close()
