"""The Redis bus across nodes, on a real redis-server: each node's events reach the others,
a node cut off resumes where it was, a Redis that goes away costs nothing to publishers."""

from __future__ import annotations

import anyio
import pytest
from redis.asyncio import Redis
from services import RedisServer
from waiting import eventually

from homelab_core import Event, Metric, MetricsCollected
from homelab_core.bus import Subscription
from homelab_core.bus_redis import RedisBus
from homelab_core.eventcodec import decode_event
from homelab_core.events import HealthChanged
from homelab_core.model import Health, HealthState

pytestmark = pytest.mark.anyio


def event(n: int, instance_id: str = "a") -> Event:
    return MetricsCollected(instance_id, [Metric("n", n, timestamp=1.0)], timestamp=2.0)


def number(event: Event) -> int:
    assert isinstance(event, MetricsCollected)
    return int(event.metrics[0].value)


def drain(sub: Subscription) -> list[Event]:
    out = []
    while True:
        try:
            out.append(sub.receive_nowait())
        except anyio.WouldBlock:
            return out


async def started(bus: RedisBus) -> RedisBus:
    """``bus`` started and positioned on the stream (it reads what is sent from now on)."""
    await bus.start()
    await eventually(lambda: bus.connected and bus.last_id is not None, 5, "the bus connected")
    return bus


async def test_two_nodes_see_each_others_events_and_their_own_once(redis_url: str) -> None:
    a = await started(RedisBus(redis_url, "node-a"))
    b = await started(RedisBus(redis_url, "node-b"))
    try:
        async with a.subscribe() as sub_a, b.subscribe() as sub_b:
            health = HealthChanged("x", Health(since=1.0), Health(HealthState.OK, since=2.0))
            a.publish(event(1))
            a.publish(health)
            b.publish(event(2, "y"))
            await eventually(lambda: a.received == 1 and b.received == 2, 5, "both ways")
            await eventually(lambda: a.sent == 2 and b.sent == 1, 5, "all sent")
            await anyio.sleep(0.2)  # anything twice would have arrived by now
            got_a, got_b = drain(sub_a), drain(sub_b)
        # Its own first (delivered when published), then the other node's, each once.
        assert got_a == [event(1), health, event(2, "y")]
        assert got_b == [event(2, "y"), event(1), health]
        assert a.counters()["bus_redis_published"] == 2
        assert a.gaps == b.gaps == a.dropped == b.dropped == 0
    finally:
        await a.close()
        await b.close()


async def test_subscriber_count_is_never_zero(redis_url: str) -> None:
    async with RedisBus(redis_url, "n") as bus:
        assert bus.subscriber_count == 1  # other nodes may listen: publishers must publish
        async with bus.subscribe(), bus.subscribe():
            assert bus.subscriber_count == 2


async def test_a_restarted_redis_is_reconnected_and_events_flow_again(
    own_redis: RedisServer,
) -> None:
    a = await started(RedisBus(own_redis.url, "node-a", timeout=0.5, block=0.2))
    b = await started(RedisBus(own_redis.url, "node-b", timeout=0.5, block=0.2))
    try:
        async with b.subscribe() as sub_b, a.subscribe() as sub_a:
            a.publish(event(1))
            await eventually(lambda: b.received == 1, 5, "the first event")
            own_redis.stop()
            await eventually(lambda: not a.connected and not b.connected, 5, "Redis lost")
            a.publish(event(2))  # delivered here at once, sent when Redis is back
            assert number(drain(sub_a)[-1]) == 2
            own_redis.start()
            await eventually(lambda: a.connected and b.connected, 10, "reconnected")
            assert a.reconnects >= 1 and b.reconnects >= 1
            await eventually(lambda: b.received == 2, 5, "the event queued while away")
            b.publish(event(3, "y"))
            await eventually(lambda: a.received == 1, 5, "events flow the other way")
            assert [number(e) for e in drain(sub_b)] == [1, 2, 3]
    finally:
        await a.close()
        await b.close()


async def test_publish_never_waits_while_redis_is_down(own_redis: RedisServer) -> None:
    bus = await started(RedisBus(own_redis.url, "node-a", timeout=0.5, max_queue=1000))
    try:
        own_redis.stop()
        async with bus.subscribe(buffer=20_000) as sub:
            for n in range(5000):  # synchronous: nothing in it can wait on Redis
                bus.publish(event(n))
            assert len(drain(sub)) == 5000  # every local subscriber has every event
        assert bus.published == 5000
        await eventually(lambda: not bus.connected, 5, "Redis lost")
        assert bus.queued <= 1000
        assert bus.dropped >= 5000 - 1000 - bus.batch
        own_redis.start()
        # The reader may reconnect a moment after the sender has sent the queue.
        await eventually(
            lambda: bus.sent + bus.dropped == 5000 and bus.connected, 10, "the queue sent"
        )
        assert not bus.queued
        # The newest were kept and sent, in order.
        client = Redis.from_url(own_redis.url)
        try:
            entries = await client.xrange(bus.stream)
        finally:
            await client.aclose()
        sent = [decode_event(fields[b"e"]).event for _, fields in entries]
        assert [number(e) for e in sent] == list(range(5000 - bus.sent, 5000))
    finally:
        await bus.close()


async def test_a_node_cut_off_resumes_from_the_last_id_it_read(redis_url: str) -> None:
    a = await started(RedisBus(redis_url, "node-a"))
    b = await started(RedisBus(redis_url, "node-b"))
    try:
        async with b.subscribe(buffer=1000) as sub:
            a.publish(event(0))
            await eventually(lambda: b.received == 1, 5, "the first event")
            await b.close()  # cut off
            for n in range(1, 51):
                a.publish(event(n))
            await eventually(lambda: a.sent == 51, 5, "sent while b was away")
            await b.start()
            await eventually(lambda: b.received == 51, 5, "what was sent meanwhile")
            assert [number(e) for e in drain(sub)] == list(range(51))
            assert sub.missed == 0 and b.gaps == 0
    finally:
        await a.close()
        await b.close()


async def test_events_trimmed_while_cut_off_count_as_missed(redis_url: str) -> None:
    a = await started(RedisBus(redis_url, "node-a", stream_length=100))
    b = await started(RedisBus(redis_url, "node-b", stream_length=100))
    try:
        async with b.subscribe(buffer=5000) as sub:
            a.publish(event(0))
            await eventually(lambda: b.received == 1, 5, "the first event")
            await b.close()  # cut off, while the stream is trimmed past its last id
            for n in range(1, 1001):
                a.publish(event(n))
            await eventually(lambda: a.sent == 1001, 5, "sent while b was away")
            await b.start()
            await eventually(lambda: b.received + b.gaps == 1001, 5, "read or counted")
            got = [number(e) for e in drain(sub)]
            assert b.gaps > 0 and sub.missed == b.gaps
            # What it read is the newest, in order, after the first.
            assert got == [0, *range(1001 - len(got) + 1, 1001)]
    finally:
        await a.close()
        await b.close()


async def test_an_entry_that_is_no_event_is_skipped(redis_url: str) -> None:
    a = await started(RedisBus(redis_url, "node-a"))
    try:
        async with a.subscribe() as sub:
            client = Redis.from_url(redis_url)
            try:
                await client.xadd(a.stream, {"e": b"\xff not json"})
                await client.xadd(a.stream, {"other": b"x"})
            finally:
                await client.aclose()
            b = await started(RedisBus(redis_url, "node-b"))
            try:
                b.publish(event(7))
                await eventually(lambda: a.received == 1, 5, "the event after them")
            finally:
                await b.close()
            assert [number(e) for e in drain(sub)] == [7]
            assert a.undecodable == 1
    finally:
        await a.close()
