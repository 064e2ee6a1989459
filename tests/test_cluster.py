"""Nodes and leases (homelab_core/cluster.py) on a real redis-server."""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from services import RedisServer

from homelab_core.cluster import Cluster, owner
from homelab_core.config import NodeSettings

pytestmark = pytest.mark.anyio

IDS = [f"check-{i:02d}" for i in range(30)]


def test_rendezvous_spreads_instances_evenly_and_is_the_same_everywhere() -> None:
    nodes = ["nas", "pi", "hypervisor"]
    placed = collections.Counter(owner(i, nodes) for i in IDS)
    assert sum(placed.values()) == 30 and max(placed.values()) <= 15
    assert all(owner(i, nodes) == owner(i, list(reversed(nodes))) for i in IDS)
    assert owner("x", []) is None


def test_a_node_leaving_moves_only_its_own_instances() -> None:
    nodes = ["a", "b", "c", "d"]
    before = {i: owner(i, nodes) for i in IDS}
    after = {i: owner(i, ["a", "b", "d"]) for i in IDS}
    moved = {i for i in IDS if before[i] != after[i]}
    assert moved == {i for i in IDS if before[i] == "c"}


class Node:
    """A Cluster whose 'scheduler' is a set of held instances, with the history of holds."""

    def __init__(self, redis_url: str, name: str, instances: dict[str, str | None]) -> None:
        from redis.asyncio import Redis

        self.settings = NodeSettings(name=name, heartbeat=0.1, lease_ttl=0.6)
        self.instances = instances
        self.held: set[str] = set()
        self.events: list[tuple[float, str, bool]] = []
        client = Redis.from_url(redis_url, socket_timeout=0.1, socket_connect_timeout=0.1)
        self.cluster = Cluster(
            client, self.settings, version="test", instances=lambda: self.instances, hold=self.hold
        )

    async def hold(self, instance_id: str, held: bool) -> None:
        (self.held.add if held else self.held.discard)(instance_id)
        self.events.append((time.monotonic(), instance_id, held))

    @asynccontextmanager
    async def running(self, *, killed: bool = False) -> AsyncIterator[None]:
        """Run the node; ``killed``: it ends as if its process were killed (no goodbye)."""
        if killed:
            self.cluster._leave = _nothing  # type: ignore[method-assign]
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.cluster.run)
                yield
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.cluster.redis.aclose()


async def _nothing() -> None:
    return None


async def until(condition: object, limit: float = 5.0) -> None:
    with anyio.fail_after(limit):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - polling state
            await anyio.sleep(0.02)


def overlaps(nodes: list[Node]) -> list[str]:
    """Instances that two nodes held at the same time, from their hold histories."""
    spans: dict[str, list[tuple[float, float, str]]] = collections.defaultdict(list)
    end = time.monotonic()
    for node in nodes:
        opened: dict[str, float] = {}
        for at, instance_id, held in node.events:
            if held:
                opened[instance_id] = at
            else:
                spans[instance_id].append((opened.pop(instance_id), at, node.cluster.name))
        for instance_id, at in opened.items():
            spans[instance_id].append((at, end, node.cluster.name))
    found = []
    for instance_id, items in spans.items():
        items.sort()
        for (_, end1, n1), (start2, _, n2) in itertools.pairwise(items):
            if n1 != n2 and start2 < end1:
                found.append(instance_id)
    return found


async def test_each_instance_runs_on_exactly_one_node_and_pins_stay_home(redis_url: str) -> None:
    instances: dict[str, str | None] = dict.fromkeys(IDS) | {"nas-disks": "nas"}
    nodes = [Node(redis_url, name, dict(instances)) for name in ("nas", "pi", "vm")]
    async with nodes[0].running(), nodes[1].running(), nodes[2].running():
        await until(lambda: sum(len(n.held) for n in nodes) == 31)
        await anyio.sleep(0.5)  # settled: nothing moves
        assert sum(len(n.held) for n in nodes) == 31
        assert "nas-disks" in nodes[0].held
        assert max(len(n.held) for n in nodes) <= 15
        listed = await nodes[1].cluster.nodes()
        assert [(n.name, n.alive) for n in listed] == [("nas", True), ("pi", True), ("vm", True)]
        assert sorted(listed[0].instances) == sorted(nodes[0].held)
        assert nodes[2].cluster.holders == {i: n.cluster.name for n in nodes for i in n.held}
    assert overlaps(nodes) == []


async def test_a_dead_nodes_instances_move_within_twice_the_lease(redis_url: str) -> None:
    instances: dict[str, str | None] = dict.fromkeys(IDS[:10])
    a, b = Node(redis_url, "a", instances), Node(redis_url, "b", instances)
    async with b.running():
        # Killed: no goodbye, its leases stay in Redis until they run out.
        async with a.running(killed=True):
            await until(lambda: len(a.held) + len(b.held) == 10 and a.held and b.held)
            fences = {i: a.cluster.fence(i) for i in a.held}
        died = time.monotonic()
        await until(lambda: len(b.held) == 10, limit=2 * a.settings.lease_ttl + 1)
        moved_after = time.monotonic() - died
        # Each moved instance has a new lease, with a greater fencing token.
        for instance_id, fence in fences.items():
            assert fence is not None and (b.cluster.fence(instance_id) or 0) > fence
    assert moved_after <= 2 * a.settings.lease_ttl


async def test_a_node_that_leaves_gives_its_instances_back_at_once(redis_url: str) -> None:
    instances: dict[str, str | None] = dict.fromkeys(IDS[:10])
    a, b = Node(redis_url, "a", instances), Node(redis_url, "b", instances)
    async with b.running():
        async with a.running():
            await until(lambda: len(a.held) + len(b.held) == 10 and a.held)
        assert a.held == set(), "a node that stops stops its instances"
        await until(lambda: len(b.held) == 10, limit=a.settings.lease_ttl)
    assert overlaps([a, b]) == []


async def test_a_node_cut_off_from_redis_stops_before_its_leases_run_out(
    own_redis: RedisServer,
) -> None:
    instances: dict[str, str | None] = dict.fromkeys(IDS[:6]) | {"here": "a"}
    a = Node(own_redis.url, "a", instances)
    async with a.running():
        await until(lambda: len(a.held) == 7)
        lease_ends = time.monotonic() + a.settings.lease_ttl  # at the latest
        assert own_redis.command("CLIENT", "PAUSE", "3000", "ALL") == b"+OK"
        await until(lambda: a.held == {"here"}, limit=a.settings.lease_ttl)
        assert time.monotonic() < lease_ends, "stopped before another node could take them"
        assert not any(a.cluster.may_run(i) for i in IDS[:6])
        assert a.cluster.may_run("here"), "a pinned instance keeps running"
        # Redis answers again: the node takes its instances back.
        await until(lambda: len(a.held) == 7, limit=5)


async def test_lease_ttl_shorter_than_three_heartbeats_is_refused(redis_url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        with pytest.raises(ValueError, match="lease_ttl"):
            Cluster(
                client,
                NodeSettings(name="a", heartbeat=1.0, lease_ttl=2.0),
                version="test",
                instances=dict,
                hold=lambda i, h: _nothing(),
            )
    finally:
        await client.aclose()


async def test_a_start_slower_than_a_round_is_not_left_half_done(redis_url: str) -> None:
    """A round cut short by its deadline while it started an instance left the cluster
    counting it as held though its scheduler never started it: nobody ran it."""
    instances: dict[str, str | None] = dict.fromkeys(IDS[:3])
    node = Node(redis_url, "a", instances)
    plain_hold = node.hold

    async def slow_hold(instance_id: str, held: bool) -> None:
        if held:
            await anyio.sleep(0.2)  # longer than a round may take (a quarter of the TTL)
        await plain_hold(instance_id, held)

    node.cluster._hold = slow_hold
    async with node.running():
        await until(lambda: len(node.cluster.held) == 3)
        await until(lambda: node.held == node.cluster.held, limit=3)
