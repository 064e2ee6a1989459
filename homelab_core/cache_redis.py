"""The latest values and health of every instance in Redis, shared by every node.

Keys (``prefix`` is ``homelab`` unless told otherwise):

- ``<prefix>:latest:<instance id>``: a hash, one field per series (its
  :attr:`~homelab_core.model.Metric.series_key`), the value the metric as JSON
  (:func:`~homelab_core.codec.to_json`);
- ``<prefix>:health:<instance id>``: the instance's :class:`~homelab_core.model.Health`
  as JSON, written by the node that runs it after each run.

The data path never waits on Redis: :meth:`RedisLatest.update` and
:meth:`RedisLatest.put_health` merge into a local copy at once and mark the change
pending; a background flusher writes what is pending, coalesced (the newest value of a
series, the newest health of an instance), in one pipeline per flush. What is pending is
bounded (``max_pending`` series); past that, changes of series not yet pending wait for
their next collection (counted in ``dropped``). When a flush fails the changes stay pending
(newer values win), ``write_failures`` counts it, ``connected`` turns false and the
flusher retries with a growing pause.

:meth:`RedisLatest.latest` and :meth:`RedisLatest.health` read Redis, so a node sees the
values of instances that other nodes run, with this node's own pending changes laid over
them (a reader woken by an event sees the values the event announced). While Redis cannot
be reached they answer from the local copy (only this node's instances) at once.

Runs on asyncio (redis-py's asyncio client); :meth:`start` starts the flusher and
:meth:`close` flushes what it can in ``close_timeout`` seconds and stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import msgspec

from .cache import LatestCache
from .codec import JsonEncoder
from .model import Health, Metric
from .redact import redact_urls

log = logging.getLogger("homelab.cache.redis")

_encode = JsonEncoder().encode
_metric = msgspec.json.Decoder(Metric)
_health = msgspec.json.Decoder(Health)
_FAILURES: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError)


def redis_client(url: str, timeout: float, **kwargs: Any) -> Any:
    """A redis-py asyncio client for ``url`` that fails at once instead of retrying (the
    callers retry in the background), with ``timeout`` seconds for connecting and reading."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    kwargs.setdefault("socket_timeout", timeout)
    return Redis.from_url(
        url, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), **kwargs
    )


async def stop_task(task: asyncio.Task[None], timeout: float = 5.0) -> None:
    """Cancel ``task`` and wait until it ends, cancelling again while it goes on.

    Once is not always enough: on Python 3.11 :func:`asyncio.wait_for`, which redis-py
    awaits around every send, can swallow a cancellation that arrives just as the send
    completes (fixed in Python 3.12), and the task would go on to its next command.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
        if asyncio.get_running_loop().time() > deadline:
            log.error("%s did not stop in %.0f s; left running", task.get_name(), timeout)
            return
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed: %r", task.get_name(), task.exception())


def redis_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean Redis could not be reached or did not answer in time."""
    from redis.exceptions import RedisError

    return (RedisError, *_FAILURES)


class RedisLatest(LatestCache):
    """Latest values and health in Redis (see the module's documentation).

    :param url: ``redis://host:port/db`` (``rediss://`` for TLS).
    :param prefix: the first part of every key.
    :param flush_interval: seconds between two flushes (changes of that time are coalesced).
    :param max_pending: series whose changes may wait for a flush.
    :param timeout: seconds a Redis command may take before it counts as failed.
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "homelab",
        flush_interval: float = 0.05,
        max_pending: int = 100_000,
        timeout: float = 1.0,
        close_timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.timeout = timeout
        self.close_timeout = close_timeout
        self._errors = redis_errors()
        self._redis: Any = None
        self._local: dict[str, dict[str, Metric]] = {}
        self._local_health: dict[str, Health] = {}
        # Pending changes, coalesced: series per instance, health per instance, deletions.
        self._pending: dict[str, dict[str, Metric]] = {}
        self._pending_health: dict[str, Health] = {}
        self._pending_forget: set[str] = set()
        self._pending_count = 0
        # What the running flush writes (laid over Redis reads until it is written).
        self._flushing: dict[str, dict[str, Metric]] = {}
        self._flushing_health: dict[str, Health] = {}
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        #: Whether the last command reached Redis.
        self.connected = False
        #: Flushes (pipelines) that failed.
        self.write_failures = 0
        #: Reads that failed and were answered from the local copy.
        self.read_failures = 0
        #: Changes not kept for a flush because ``max_pending`` series were pending.
        self.dropped = 0
        #: Flushes written.
        self.flushes = 0

    def _key(self, instance_id: str) -> str:
        return f"{self.prefix}:latest:{instance_id}"

    def _health_key(self, instance_id: str) -> str:
        return f"{self.prefix}:health:{instance_id}"

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and start the flusher (a Redis that does not answer yet is retried)."""
        if self._task is not None:
            return
        self._redis = redis_client(self.url, self.timeout)
        try:
            await self._redis.ping()
            self.connected = True
        except self._errors as exc:
            log.warning("Redis cache at %s: %s (retrying)", redact_urls(self.url), exc)
        self._task = asyncio.create_task(self._flusher(), name="homelab:cache-redis")

    async def close(self) -> None:
        """Write what is pending (for at most ``close_timeout`` s) and stop."""
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task)
            if self._has_pending():
                try:
                    await asyncio.wait_for(self._flush(), self.close_timeout)
                except self._errors:  # a timeout too
                    log.warning(
                        "Redis cache: %d pending series not written at shutdown",
                        self._pending_count,
                    )
        redis, self._redis = self._redis, None
        if redis is not None:
            await redis.aclose()

    async def __aenter__(self) -> RedisLatest:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def counters(self) -> dict[str, float]:
        """The figures of ``/metrics`` (``homelab_core_cache_redis_*``)."""
        return {
            "cache_redis_connected": 1.0 if self.connected else 0.0,
            "cache_redis_write_failures": self.write_failures,
            "cache_redis_read_failures": self.read_failures,
            "cache_redis_dropped": self.dropped,
            "cache_redis_pending": self._pending_count,
        }

    # -- the data path: local at once, Redis later -----------------------------------------

    async def update(self, instance_id: str, metrics: Sequence[Metric]) -> None:
        local = self._local.setdefault(instance_id, {})
        pending = self._pending.get(instance_id)
        if pending is None:
            pending = self._pending[instance_id] = {}
        room = self.max_pending - self._pending_count
        for metric in metrics:
            key = metric.series_key
            local[key] = metric
            if key in pending:
                pending[key] = metric
            elif room > 0:
                pending[key] = metric
                room -= 1
                self._pending_count += 1
            else:
                self.dropped += 1
        self._wake.set()

    async def put_health(self, instance_id: str, health: Health) -> None:
        self._local_health[instance_id] = health
        self._pending_health[instance_id] = health
        self._wake.set()

    async def forget(self, instance_id: str) -> None:
        self._local.pop(instance_id, None)
        self._local_health.pop(instance_id, None)
        self._pending_count -= len(self._pending.pop(instance_id, {}))
        self._pending_health.pop(instance_id, None)
        self._flushing.pop(instance_id, None)
        self._flushing_health.pop(instance_id, None)
        self._pending_forget.add(instance_id)
        self._wake.set()

    # -- reads: Redis, then what this node has not written yet -----------------------------

    async def latest(self, instance_id: str) -> list[Metric]:
        stored: dict[str, Metric] | None = None
        if self.connected and self._redis is not None:
            try:
                raw = await self._redis.hgetall(self._key(instance_id))
                self.connected = True
                stored = {k.decode(): _metric.decode(v) for k, v in raw.items()}
            except self._errors as exc:
                self._lost(exc)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                log.warning("Redis cache: bad value under %s: %s", self._key(instance_id), exc)
        if stored is None:
            stored = dict(self._local.get(instance_id, {}))
        else:
            if instance_id in self._pending_forget:
                stored = {}  # forgotten here, not deleted in Redis yet
            stored.update(self._flushing.get(instance_id, {}))
            stored.update(self._pending.get(instance_id, {}))
        return [stored[k] for k in sorted(stored)]

    async def health(self, instance_id: str) -> Health | None:
        own = self._pending_health.get(instance_id) or self._flushing_health.get(instance_id)
        if own is not None:
            return own
        if self.connected and self._redis is not None:
            try:
                raw = await self._redis.get(self._health_key(instance_id))
                return None if raw is None else _health.decode(raw)
            except self._errors as exc:
                self._lost(exc)
            except msgspec.DecodeError as exc:
                log.warning("Redis cache: bad health of %s: %s", instance_id, exc)
        return self._local_health.get(instance_id)

    def _lost(self, exc: BaseException) -> None:
        self.read_failures += 1
        if self.connected:
            log.warning("Redis cache at %s lost: %s", redact_urls(self.url), exc)
        self.connected = False
        self._wake.set()  # the flusher checks the connection again

    # -- the flusher -----------------------------------------------------------------------

    def _has_pending(self) -> bool:
        return bool(self._pending or self._pending_health or self._pending_forget)

    async def _flusher(self) -> None:
        pause = self.flush_interval
        while True:
            if not self._has_pending() and self.connected:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(pause)  # coalesce what arrives meanwhile
            try:
                if self._has_pending():
                    await self._flush()
                else:
                    await self._redis.ping()
                if not self.connected:
                    log.info("Redis cache at %s reachable again", redact_urls(self.url))
                self.connected = True
                pause = self.flush_interval
            except self._errors as exc:
                self.write_failures += 1
                if self.connected:
                    log.warning(
                        "Redis cache at %s: writes fail (%s); kept and retried",
                        redact_urls(self.url),
                        exc,
                    )
                self.connected = False
                pause = min(max(pause * 2, 0.1), 2.0)

    async def flush(self) -> None:
        """Write what is pending now, unless Redis is known to be away (then the flusher
        writes it when it is back).

        A Redis bus calls this before it sends events (:func:`homelab_core.backends.running`
        links them), so that a node woken by an event reads the values it announces.
        """
        if not self.connected or self._redis is None or not self._has_pending():
            return
        try:
            await self._flush()
        except self._errors as exc:
            self.write_failures += 1
            self._lost(exc)

    async def _flush(self) -> None:
        """Write everything pending in one pipeline; on failure it is pending again."""
        async with self._flush_lock:  # one flush at a time: the flusher's or flush()'s
            await self._flush_pending()

    async def _flush_pending(self) -> None:
        pending, self._pending = self._pending, {}
        health, self._pending_health = self._pending_health, {}
        forget, self._pending_forget = self._pending_forget, set()
        self._pending_count = 0
        self._flushing, self._flushing_health = pending, health
        try:
            pipe = self._redis.pipeline(transaction=False)
            for instance_id in forget:
                pipe.delete(self._key(instance_id), self._health_key(instance_id))
            for instance_id, series in pending.items():
                if series:
                    pipe.hset(
                        self._key(instance_id),
                        mapping={k: _encode(m) for k, m in series.items()},
                    )
            for instance_id, value in health.items():
                pipe.set(self._health_key(instance_id), _encode(value))
            await pipe.execute()
            self.flushes += 1
        except BaseException:
            self._restore(pending, health, forget)
            raise
        finally:
            self._flushing, self._flushing_health = {}, {}

    def _restore(
        self,
        pending: dict[str, dict[str, Metric]],
        health: dict[str, Health],
        forget: set[str],
    ) -> None:
        """Put a failed flush back under what became pending since (newer values win)."""
        for instance_id, series in pending.items():
            if instance_id in self._pending_forget:
                continue  # forgotten since
            newer = self._pending.get(instance_id, {})
            merged = {**series, **newer}
            self._pending_count += len(merged) - len(newer)
            self._pending[instance_id] = merged
        for instance_id, value in health.items():
            if instance_id not in self._pending_forget:
                self._pending_health.setdefault(instance_id, value)
        # Deleted again before what was updated since (the flush deletes first).
        self._pending_forget |= forget
