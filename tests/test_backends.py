"""[cache] and [bus] choose the backends; a hub on Redis shares its values, health and
events with other nodes (a real redis-server)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from waiting import eventually

from homelab_core import ConfigError, HealthState, Hub, InstanceSettings, PluginManager
from homelab_core.backends import make_bus, make_cache
from homelab_core.bus import MemoryBus
from homelab_core.bus_redis import RedisBus
from homelab_core.cache import AiocacheLatest
from homelab_core.cache_redis import RedisLatest
from homelab_core.config import BusSettings, CacheSettings, NodeSettings
from homelab_core.events import MetricsCollected

pytestmark = pytest.mark.anyio

Build = Callable[..., Any]


def test_the_defaults_are_the_memory_backends(make_settings: Build) -> None:
    settings = make_settings()
    assert type(make_cache(settings)) is AiocacheLatest
    assert type(make_bus(settings)) is MemoryBus
    assert make_cache(settings).shared is False


def test_redis_backends_take_their_settings(make_settings: Build) -> None:
    settings = make_settings(
        cache=CacheSettings(backend="redis", url="redis://10.0.0.5:6379/1"),
        bus=BusSettings(backend="redis", url="redis://10.0.0.6:6379/2", stream_length=5000),
        node=NodeSettings(name="nas"),
    )
    cache, bus = make_cache(settings), make_bus(settings)
    assert isinstance(cache, RedisLatest) and cache.url == "redis://10.0.0.5:6379/1"
    assert cache.shared is True
    assert isinstance(bus, RedisBus)
    assert (bus.url, bus.node, bus.stream_length) == ("redis://10.0.0.6:6379/2", "nas", 5000)


def test_a_missing_redis_library_is_a_clear_error(
    make_settings: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if it were not installed
    settings = make_settings(bus=BusSettings(backend="redis"))
    assert type(make_cache(settings)) is AiocacheLatest
    with pytest.raises(ConfigError, match=r"\[bus\] backend: .*pip install homelab-core\[redis\]"):
        make_bus(settings)
    with pytest.raises(ConfigError, match=r"\[cache\] backend: 'redis' needs the redis client"):
        make_cache(make_settings(cache=CacheSettings(backend="redis")))


async def test_a_hub_on_redis_shares_values_health_and_events(
    manager: PluginManager, make_settings: Build, redis_url: str
) -> None:
    settings = make_settings(
        InstanceSettings(id="c", type="counter", interval=0.1, options={"series": 2}),
        cache=CacheSettings(backend="redis", url=redis_url),
        bus=BusSettings(backend="redis", url=redis_url),
        node=NodeSettings(name="node-a"),
    )
    async with RedisBus(redis_url, "node-b") as other_bus, other_bus.subscribe() as sub:
        await eventually(lambda: other_bus.last_id is not None, 5, "the other bus positioned")
        async with Hub(settings, plugin_manager=manager) as hub:
            assert isinstance(hub.cache, RedisLatest) and isinstance(hub.bus, RedisBus)
            async with RedisLatest(redis_url) as other:

                async def values() -> bool:
                    return len(await other.latest("c")) == 2

                await eventually(values, 10, "the hub's latest values in Redis")
                health = await other.health("c")
                assert health is not None and health.state is HealthState.OK
                assert [m.series_key for m in await other.latest("c")] == [
                    m.series_key for m in await hub.latest("c")
                ]
            with anyio.fail_after(5):
                while not isinstance(event := await sub.receive(), MetricsCollected):
                    pass
            assert event.instance_id == "c"
            counters = hub.counters()
            assert counters["bus_redis_connected"] == counters["cache_redis_connected"] == 1.0
            assert counters["bus_redis_sent"] >= 1
        # Closed with the hub: their tasks are stopped.
        assert not hub.bus._tasks  # type: ignore[attr-defined]


async def test_a_memory_hub_has_no_redis_counters(
    manager: PluginManager, make_settings: Build
) -> None:
    async with Hub(make_settings(), plugin_manager=manager) as hub:
        assert type(hub.bus) is MemoryBus and type(hub.cache) is AiocacheLatest
        assert not [k for k in hub.counters() if "redis" in k]


async def test_given_backends_are_used_and_started(
    manager: PluginManager, make_settings: Build, redis_url: str
) -> None:
    bus = RedisBus(redis_url, "given")
    async with Hub(make_settings(), plugin_manager=manager, bus=bus) as hub:
        assert hub.bus is bus
        await eventually(lambda: bus.connected, 5, "the given bus started by the hub")
    assert not bus._tasks


async def test_an_event_is_sent_after_the_values_it_announces(redis_url: str) -> None:
    from homelab_core.backends import running
    from homelab_core.model import Metric

    # The cache alone would write only after 30 s; the bus flushes it before it sends.
    cache = RedisLatest(redis_url, flush_interval=30.0)
    bus = RedisBus(redis_url, "node-a")
    async with RedisBus(redis_url, "node-b") as other, other.subscribe() as sub:
        await eventually(lambda: other.last_id is not None, 5, "the other bus positioned")
        async with running(cache, bus), RedisLatest(redis_url) as reader:
            await cache.update("c", [Metric("n", 42.0)])
            bus.publish(MetricsCollected("c", [Metric("n", 42.0)]))
            with anyio.fail_after(5):
                await sub.receive()
            assert [m.value for m in await reader.latest("c")] == [42.0]
        assert not bus._tasks and cache._task is None


class CountingCache(AiocacheLatest):
    """The memory cache, counting the health it is given."""

    def __init__(self, shared: bool) -> None:
        super().__init__()
        self.shared = shared
        self.healths: list[Any] = []

    async def put_health(self, instance_id: str, health: Any) -> None:
        self.healths.append((instance_id, health.state))


@pytest.mark.parametrize("shared", [False, True])
async def test_the_data_path_gives_health_only_to_a_shared_cache(
    manager: PluginManager, make_settings: Build, shared: bool
) -> None:
    cache = CountingCache(shared)
    settings = make_settings(InstanceSettings(id="c", type="counter", interval=60))
    async with Hub(settings, plugin_manager=manager, cache=cache) as hub:
        await hub.run_now("c")
    if shared:
        assert ("c", HealthState.OK) in cache.healths
    else:
        assert cache.healths == []
