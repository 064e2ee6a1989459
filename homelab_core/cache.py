"""Latest value of every series and the health of every instance.

:class:`AiocacheLatest` keeps them in an aiocache backend (the in-memory one by default,
Redis later). It is written once per collection with a single ``multi_set``: aiocache wraps
each call in a timeout and the memory backend arms a timer per key, so per-sample writes
would cost far more than the data. The in-memory backend runs without that timeout (a dict
lookup cannot hang), which halves the cost of a collection's cache update.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import Any

from aiocache import SimpleMemoryCache

from .model import Health, Metric


class LatestCache(abc.ABC):
    """Interface of the latest-values cache."""

    @abc.abstractmethod
    async def update(
        self, instance_id: str, metrics: Sequence[Metric], health: Health | None = None
    ) -> None:
        """Merge ``metrics`` into the instance's latest values (and set its health)."""

    @abc.abstractmethod
    async def latest(self, instance_id: str) -> list[Metric]:
        """The latest value of every series of the instance, sorted by series key."""

    @abc.abstractmethod
    async def set_health(self, instance_id: str, health: Health) -> None:
        """Record the instance's health."""

    @abc.abstractmethod
    async def health(self, instance_id: str) -> Health | None:
        """The instance's health, or None if never recorded."""

    @abc.abstractmethod
    async def health_many(self, instance_ids: Iterable[str]) -> dict[str, Health]:
        """Health of several instances in one round trip."""

    @abc.abstractmethod
    async def forget(self, instance_id: str) -> None:
        """Drop everything cached for the instance."""

    async def close(self) -> None:  # noqa: B027 - optional hook with a default
        """Release the backend's resources."""


def _latest_key(instance_id: str) -> str:
    return f"latest:{instance_id}"


def _health_key(instance_id: str) -> str:
    return f"health:{instance_id}"


class AiocacheLatest(LatestCache):
    """Latest values in an aiocache backend, one key per instance for metrics and health.

    The per-instance value maps series keys to :class:`Metric` objects (a serialising
    backend such as Redis needs aiocache's pickle serializer); it is read, merged and
    written back in one pass per collection, and only the hub's collection path writes it.
    Health is stored as a plain mapping.
    """

    def __init__(self, backend: Any | None = None) -> None:
        self._cache = backend if backend is not None else SimpleMemoryCache(timeout=None)

    async def update(
        self, instance_id: str, metrics: Sequence[Metric], health: Health | None = None
    ) -> None:
        key = _latest_key(instance_id)
        current: dict[str, Metric] = await self._cache.get(key) or {}
        merged = dict(current)
        for metric in metrics:
            merged[metric.series_key] = metric
        pairs: list[tuple[str, Any]] = [(key, merged)]
        if health is not None:
            pairs.append((_health_key(instance_id), health.to_dict()))
        await self._cache.multi_set(pairs)

    async def latest(self, instance_id: str) -> list[Metric]:
        stored: dict[str, Metric] = await self._cache.get(_latest_key(instance_id)) or {}
        return [stored[k] for k in sorted(stored)]

    async def set_health(self, instance_id: str, health: Health) -> None:
        await self._cache.set(_health_key(instance_id), health.to_dict())

    async def health(self, instance_id: str) -> Health | None:
        stored = await self._cache.get(_health_key(instance_id))
        return Health.from_dict(stored) if stored else None

    async def health_many(self, instance_ids: Iterable[str]) -> dict[str, Health]:
        ids = list(instance_ids)
        if not ids:
            return {}
        values = await self._cache.multi_get([_health_key(i) for i in ids])
        return {i: Health.from_dict(v) for i, v in zip(ids, values, strict=True) if v}

    async def forget(self, instance_id: str) -> None:
        await self._cache.delete(_latest_key(instance_id))
        await self._cache.delete(_health_key(instance_id))

    async def close(self) -> None:
        await self._cache.close()
