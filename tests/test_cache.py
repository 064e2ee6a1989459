"""The latest-values cache: every behaviour test runs against the memory backend and the
Redis backend (a real redis-server); then what only a shared cache does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from services import RedisServer
from waiting import eventually

from homelab_core.cache import AiocacheLatest, LatestCache
from homelab_core.cache_redis import RedisLatest
from homelab_core.model import Health, HealthState, Metric, MetricKind

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[LatestCache]:
    if request.param == "memory":
        memory = AiocacheLatest()
        yield memory
        await memory.close()
        return
    async with RedisLatest(request.getfixturevalue("redis_url")) as redis_cache:
        yield redis_cache


def m(name: str, value: float, **labels: str) -> Metric:
    return Metric(name, value, labels=labels, timestamp=1795970969.25)


async def test_latest_is_the_newest_value_of_every_series_sorted(cache: LatestCache) -> None:
    await cache.update("nas", [m("cpu", 1.0, core="1"), m("cpu", 2.0, core="0"), m("mem", 3.0)])
    await cache.update("nas", [m("cpu", 5.0, core="1")])
    latest = await cache.latest("nas")
    assert [(x.name, x.labels, x.value) for x in latest] == [
        ("cpu", {"core": "0"}, 2.0),
        ("cpu", {"core": "1"}, 5.0),
        ("mem", {}, 3.0),
    ]
    assert [x.series_key for x in latest] == sorted(x.series_key for x in latest)


async def test_metrics_come_back_equal(cache: LatestCache) -> None:
    metric = Metric(
        "net.bytes",
        0.1 + 0.2,
        "B",
        {"if": "eth0", "é": "ü 🌡"},
        timestamp=1795970969.123456,
        kind=MetricKind.COUNTER,
        device_class="data_size",
    )
    await cache.update("nas", [metric])
    assert await cache.latest("nas") == [metric]


async def test_instances_are_apart_and_unknown_ones_empty(cache: LatestCache) -> None:
    await cache.update("a", [m("x", 1.0)])
    await cache.update("b", [m("x", 2.0)])
    assert [x.value for x in await cache.latest("a")] == [1.0]
    assert [x.value for x in await cache.latest("b")] == [2.0]
    assert await cache.latest("nope") == []


async def test_forget_drops_an_instance(cache: LatestCache) -> None:
    await cache.update("a", [m("x", 1.0)])
    await cache.update("b", [m("x", 2.0)])
    await cache.forget("a")
    assert await cache.latest("a") == []
    assert [x.value for x in await cache.latest("b")] == [2.0]
    await cache.update("a", [m("y", 3.0)])
    assert [x.name for x in await cache.latest("a")] == ["y"]


async def test_health_is_shared_only_by_a_shared_cache(cache: LatestCache) -> None:
    health = Health(HealthState.DEGRADED, "slow", since=1.5, consecutive_failures=2)
    await cache.put_health("a", health)
    if cache.shared:
        assert await cache.health("a") == health
    else:
        assert await cache.health("a") is None  # the scheduler owns it
    assert await cache.health("nope") is None


# -- what only the Redis cache does ----------------------------------------------------------


async def test_a_value_written_by_another_node_is_served(redis_url: str) -> None:
    health = Health(HealthState.OK, "fine", since=2.0, last_success=3.0)
    async with RedisLatest(redis_url) as writer, RedisLatest(redis_url) as reader:
        await writer.update("nas", [m("cpu", 7.0, core="0")])
        await writer.put_health("nas", health)

        async def seen() -> bool:
            return [x.value for x in await reader.latest("nas")] == [7.0]

        await eventually(seen, 5, "the other node's value in Redis")
        assert await reader.health("nas") == health
        await writer.forget("nas")

        async def gone() -> bool:
            return await reader.latest("nas") == [] and await reader.health("nas") is None

        await eventually(gone, 5, "the forgotten instance gone from Redis")
        assert writer.connected and reader.connected
        assert writer.write_failures == 0


async def test_changes_are_coalesced_into_few_flushes(redis_url: str) -> None:
    async with RedisLatest(redis_url, flush_interval=0.2) as cache:
        for n in range(200):
            await cache.update("nas", [m("cpu", float(n))])
        await eventually(lambda: cache.counters()["cache_redis_pending"] == 0, 5, "flushed")
        assert cache.flushes <= 2
        async with RedisLatest(redis_url) as reader:
            assert [x.value for x in await reader.latest("nas")] == [199.0]


async def test_pending_changes_are_bounded_and_counted(redis_url: str) -> None:
    async with RedisLatest(redis_url, flush_interval=0.3, max_pending=3) as cache:
        await cache.update("nas", [m("s", 1.0, n=str(n)) for n in range(5)])
        assert cache.dropped == 2
        assert cache.counters()["cache_redis_pending"] == 3
        await eventually(lambda: cache.flushes >= 1, 5, "a flush")
        assert len(await cache.latest("nas")) == 3
        # The next collection writes what was dropped.
        await cache.update("nas", [m("s", 2.0, n=str(n)) for n in (3, 4)])
        await eventually(lambda: cache.flushes >= 2, 5, "a second flush")
        async with RedisLatest(redis_url) as reader:
            values = {x.labels["n"]: x.value for x in await reader.latest("nas")}
        assert values == {"0": 1.0, "1": 1.0, "2": 1.0, "3": 2.0, "4": 2.0}


async def test_the_data_path_never_waits_on_a_redis_that_is_away(own_redis: RedisServer) -> None:
    health = Health(HealthState.FAILING, "down", since=4.0)
    async with RedisLatest(own_redis.url, timeout=0.5) as cache:
        await cache.update("nas", [m("cpu", 1.0)])
        await eventually(lambda: cache.flushes >= 1, 5, "the first flush")
        own_redis.stop()
        with anyio.fail_after(2):  # merged locally, nothing waits on Redis
            for n in range(1000):
                await cache.update("nas", [m("cpu", float(n))])
            await cache.put_health("nas", health)
        await eventually(lambda: cache.write_failures >= 1, 5, "a failed flush")
        assert not cache.connected
        # Answered from the local copy while Redis is away.
        assert [x.value for x in await cache.latest("nas")] == [999.0]
        assert await cache.health("nas") == health
        own_redis.start()
        await eventually(lambda: cache.connected, 10, "the cache reconnected")
        await eventually(lambda: not cache.counters()["cache_redis_pending"], 5, "flushed")
    async with RedisLatest(own_redis.url) as reader:
        assert [x.value for x in await reader.latest("nas")] == [999.0]
        assert await reader.health("nas") == health


async def test_a_redis_that_never_answered_falls_back_to_the_local_copy(
    own_redis: RedisServer,
) -> None:
    own_redis.stop()
    async with RedisLatest(own_redis.url, timeout=0.5) as cache:
        assert not cache.connected
        await cache.update("nas", [m("cpu", 1.0)])
        assert [x.value for x in await cache.latest("nas")] == [1.0]
        assert await cache.latest("other") == []


async def test_a_frozen_redis_is_answered_from_the_local_copy(own_redis: RedisServer) -> None:
    async with RedisLatest(own_redis.url, timeout=0.3) as cache:
        await cache.update("nas", [m("cpu", 1.0)])
        await eventually(lambda: cache.flushes >= 1, 5, "the first flush")
        assert own_redis.command("CLIENT", "PAUSE", "3000") == b"+OK"
        with anyio.fail_after(2):  # the read gives up after its timeout
            assert [x.value for x in await cache.latest("nas")] == [1.0]
        assert not cache.connected and cache.read_failures == 1
        await eventually(lambda: cache.connected, 10, "Redis answers again")
