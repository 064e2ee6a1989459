"""The broadcast bus: the memory bus on asyncio and trio, the Redis bus (asyncio only) on
a real redis-server; every behaviour test runs against both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from homelab_core import Event, MemoryBus, Metric, MetricsCollected
from homelab_core.bus import Bus

pytestmark = pytest.mark.anyio


#: (event loop, bus backend): the Redis bus runs on asyncio only (redis-py).
COMBINATIONS = [("asyncio", "memory"), ("trio", "memory"), ("asyncio", "redis")]


@pytest.fixture(params=COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def combination(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(combination: tuple[str, str]) -> str:
    return combination[0]


@pytest.fixture
async def bus(
    request: pytest.FixtureRequest, combination: tuple[str, str]
) -> AsyncIterator[MemoryBus]:
    """A memory bus, and a started Redis bus (the same local behaviour, plus the stream)."""
    if combination[1] == "memory":
        yield MemoryBus()
        return
    from homelab_core.bus_redis import RedisBus

    async with RedisBus(request.getfixturevalue("redis_url"), "test-node") as redis_bus:
        yield redis_bus


def idle_subscribers(bus: Bus) -> int:
    """What ``subscriber_count`` says with no local subscriber: 0 in memory, 1 for a bus that
    other nodes may listen to."""
    return 0 if type(bus) is MemoryBus else 1


def event(n: int, instance_id: str = "a") -> Event:
    return MetricsCollected(instance_id, [Metric("n", n)])


def number(event: Event) -> int:
    assert isinstance(event, MetricsCollected)
    return int(event.metrics[0].value)


async def test_every_subscriber_receives_every_event_in_order(bus: MemoryBus) -> None:
    async with bus.subscribe() as first, bus.subscribe() as second:
        for n in range(5):
            bus.publish(event(n))
        for sub in (first, second):
            assert [number(await sub.receive()) for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_a_slow_subscriber_misses_events_and_counts_them(bus: MemoryBus) -> None:
    async with bus.subscribe(buffer=3) as slow, bus.subscribe(buffer=100) as fast:
        for n in range(10):
            bus.publish(event(n))
        assert slow.missed == 7
        assert [number(slow.receive_nowait()) for _ in range(3)] == [0, 1, 2]
        assert fast.missed == 0
        assert [number(fast.receive_nowait()) for _ in range(10)] == list(range(10))
        assert slow.take_missed() == 7
        assert slow.missed == 0


async def test_publish_never_waits_for_a_stalled_subscriber(bus: MemoryBus) -> None:
    async with bus.subscribe(buffer=1) as stalled:
        # publish() is synchronous: it cannot wait, whatever the subscriber does.
        for n in range(10_000):
            bus.publish(event(n))
        assert stalled.missed == 9_999


async def test_accept_filters_before_using_buffer_space(bus: MemoryBus) -> None:
    async with bus.subscribe(buffer=2, accept=lambda e: e.instance_id == "b") as sub:
        for n in range(5):
            bus.publish(event(n, "a"))
        bus.publish(event(99, "b"))
        assert sub.missed == 0
        assert number(sub.receive_nowait()) == 99
        with pytest.raises(anyio.WouldBlock):
            sub.receive_nowait()


async def test_closing_a_subscription_unregisters_it(bus: MemoryBus) -> None:
    async with bus.subscribe() as first:
        assert bus.subscriber_count == 1
        async with bus.subscribe():
            assert bus.subscriber_count == 2
        bus.publish(event(1))
        assert number(first.receive_nowait()) == 1
    assert bus.subscriber_count == idle_subscribers(bus)
    bus.publish(event(2))
    assert bus.published == 2


async def test_async_iteration_delivers_live_events(bus: MemoryBus) -> None:
    received: list[int] = []
    async with anyio.create_task_group() as tg, bus.subscribe() as sub:

        async def consume() -> None:
            async for item in sub:
                received.append(number(item))
                if len(received) == 3:
                    return

        tg.start_soon(consume)
        for n in range(3):
            await anyio.sleep(0.01)
            bus.publish(event(n))
    assert received == [0, 1, 2]
