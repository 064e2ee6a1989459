"""Several nodes on one Redis: heartbeats, the live nodes, and the leases of instances.

Every node of a cluster loads the same instances (the same ``homelab.toml``, and the
instances of the API from the shared PostgreSQL). An instance pinned to a node
(``node = "nas"``) runs only there. Every other instance is *leased*: :class:`Cluster`
decides, on every node alike, which live node should run it (rendezvous hashing over the
live nodes: each instance goes to the node with the highest ``hash(node, instance)``, so
that a node joining or leaving moves only the instances it gains or loses), and that node
takes the instance's lease in Redis before it runs it.

Keys (all under ``homelab:``)::

    nodes              sorted set: node name -> its last heartbeat (Redis time, ms)
    node:<name>        hash: version, started_at, instances (JSON list) of the node
    lease:<instance>   "<node>:<fence>", with a TTL of ``[node] lease_ttl``
    fence:<instance>   counter: the fencing token of each new lease of the instance

A lease is taken with ``SET NX`` and renewed by its holder only (a script compares the
value); every new lease gets a new fencing token, recorded with each execution of the
instance together with the node's name. A node renews its leases every heartbeat and
stops an instance once its lease may have run out: the deadline it keeps is counted from
*before* the renewal was sent, and the instance is stopped a safety margin ahead of it,
so it stops before Redis lets another node take the lease, even when this node cannot
reach Redis at all. Before each run the scheduler asks :meth:`Cluster.may_run`, which
checks that deadline (no round trip). Time in Redis (``TIME``) orders heartbeats, so the
hosts' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .config import NodeSettings, Settings
from .errors import ClusterError, ConfigError, ConflictError, HomelabError
from .model import NodeInfo

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("homelab.cluster")

PREFIX = "homelab:"
NODES = PREFIX + "nodes"
#: What the ids of the cluster's shared work start with (``@maintenance``): an instance
#: id is a slug, so the two never meet.
DUTY = "@"
#: The channel on which a node says that it changed instances in the shared store.
CHANGES = PREFIX + "changes"
#: Heartbeats missed before a node counts as gone.
MISSED_HEARTBEATS = 3
#: Share of the lease TTL by which an instance is stopped before its lease may run out.
SAFETY = 0.25
#: A node gone this long (seconds) is dropped from the list of nodes.
FORGET_AFTER = 24 * 3600

# KEYS[1] lease, KEYS[2] fence counter; ARGV[1] node, ARGV[2] ttl ms.
# Returns the fence of the lease this node holds (new or renewed), or 0.
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then
  local node, fence = string.match(held, '^(.*):(%d+)$')
  if node == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(fence)
  end
  return 0
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return fence
"""

# KEYS[1] lease; ARGV[1] the value this node set. Deletes the lease if it is still that one.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] nodes, KEYS[2] node:<name>; ARGV[1] name, ARGV[2] ttl ms of the hash,
# ARGV[3..] field/value pairs. Records the heartbeat at Redis' own time; returns that time.
_HEARTBEAT = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('ZADD', KEYS[1], ms, ARGV[1])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[2], 'heartbeat_ms', ms)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return ms
"""


def owner(instance_id: str, nodes: Iterable[str]) -> str | None:
    """The node that should run ``instance_id`` among ``nodes`` (rendezvous hashing)."""
    best: tuple[bytes, str] | None = None
    for node in nodes:
        score = hashlib.blake2b(f"{node}\0{instance_id}".encode(), digest_size=8).digest()
        if best is None or (score, node) > best:
            best = (score, node)
    return best[1] if best is not None else None


@attrs.define
class _Lease:
    fence: int
    #: ``time.monotonic()`` after which the lease may have run out in Redis.
    deadline: float


class Cluster:
    """This node's membership of a cluster, and the leases of the instances it runs.

    :param redis: a ``redis.asyncio.Redis`` client of the cluster's Redis.
    :param settings: ``[node]``.
    :param instances: the ids of every instance and the node each is pinned to (None: any),
        read again at every heartbeat (instances come and go at run time).
    :param hold: called with an instance id and True when this node should start running
        it, False when it must stop; returns once the instance is started or stopped.
    :param after_beat: called after every heartbeat, and at once when another node said
        it changed something (:meth:`poke`): the hub reads what other nodes changed.
    :param run_here: runs an instance now for another node (:meth:`run_elsewhere`) and
        returns the execution as JSON-ready values; a :class:`HomelabError` it raises is
        that node's answer.
    """

    def __init__(
        self,
        redis: Redis,
        settings: NodeSettings,
        *,
        version: str,
        instances: Callable[[], dict[str, str | None]],
        hold: Callable[[str, bool], Awaitable[None]],
        after_beat: Callable[[], Awaitable[None]] | None = None,
        run_here: Callable[[str], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        if settings.lease_ttl < MISSED_HEARTBEATS * settings.heartbeat:
            raise ValueError(
                f"[node] lease_ttl ({settings.lease_ttl:g} s) must be at least"
                f" {MISSED_HEARTBEATS} heartbeats ({MISSED_HEARTBEATS * settings.heartbeat:g} s)"
            )
        self.redis = redis
        self.settings = settings
        self.name = settings.node_name
        self.version = version
        self._instances = instances
        self._hold = hold
        self._after_beat = after_beat
        self._run_here = run_here
        # asyncio's: a cluster may be made outside the event loop (with its hub).
        self._poked = asyncio.Event()
        self._beaten = asyncio.Event()
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        #: For BLPOP, which waits longer than the commands' timeout allows.
        pool = redis.connection_pool
        self._blocking = type(redis)(
            connection_pool=type(pool)(
                connection_class=pool.connection_class,
                **{**pool.connection_kwargs, "socket_timeout": None},
            )
        )
        self._leases: dict[str, _Lease] = {}
        self._holding: dict[str, asyncio.Lock] = {}
        #: The instances this node runs now (pinned here, or leased).
        self.held: set[str] = set()
        #: The live nodes at the last heartbeat, this one included once Redis answered.
        self.live: list[str] = []
        #: The node that ran each instance at the last heartbeat (instances nobody ran
        #: are left out).
        self.holders: dict[str, str | None] = {}
        self.started_at = time.time()
        #: Whether the last heartbeat reached Redis.
        self.connected = False
        self.heartbeats_failed = 0
        self.leases_lost = 0

    # -- what the scheduler and the hub ask -------------------------------------------------

    def may_run(self, instance_id: str) -> bool:
        """Whether this node may start a run of the instance now (checked before each run)."""
        lease = self._leases.get(instance_id)
        if lease is None:
            return instance_id in self.held  # pinned here
        return time.monotonic() < lease.deadline - SAFETY * self.settings.lease_ttl

    def fence(self, instance_id: str) -> int | None:
        """The fencing token of this node's lease on the instance (None: not leased)."""
        lease = self._leases.get(instance_id)
        return lease.fence if lease is not None else None

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Heartbeat, place and renew every ``[node] heartbeat`` seconds until cancelled;
        on the way out, stop what this node holds and give its leases back.

        A watchdog of its own stops the instances whose lease may run out, so that a
        round stuck on a Redis that does not answer cannot keep them running.
        """
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_leases, name="homelab:lease-watchdog")
                tg.start_soon(self._listen, name="homelab:cluster-changes")
                if self._run_here is not None:
                    tg.start_soon(self._serve_runs, name="homelab:cluster-runs")
                if self._after_beat is not None:
                    tg.start_soon(self._follow_beats, self._after_beat, name="homelab:cluster-sync")
                while True:
                    with anyio.move_on_after(self.settings.lease_ttl * SAFETY):
                        await self.tick()
                    self._beaten.set()
                    with anyio.move_on_after(self.settings.heartbeat):
                        await self._poked.wait()
                    self._poked.clear()
        finally:
            with anyio.CancelScope(shield=True):
                await self._leave()

    async def _follow_beats(self, after_beat: Callable[[], Awaitable[None]]) -> None:
        """``after_beat`` after each heartbeat, in a task of its own: the renewals never
        wait on what it reads (the store), and it is never cut halfway by their deadline."""
        while True:
            await self._beaten.wait()
            self._beaten.clear()
            try:
                await after_beat()
            except Exception:
                log.exception("reading what other nodes changed failed; trying again")

    async def poke(self) -> None:
        """Tell every node (this one too) that something changed in the shared store."""
        try:
            await self.redis.publish(CHANGES, self.name)
        except Exception as exc:  # they read it at their next heartbeat
            log.debug("could not tell the other nodes of a change: %s", exc)

    async def _listen(self) -> None:
        """Wake the loop when a node says it changed something; reconnects by itself."""
        while True:
            try:
                # On the client without a read timeout: a quiet channel is not an error.
                async with self._blocking.pubsub() as pubsub:
                    await pubsub.subscribe(CHANGES)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._poked.set()
            except Exception as exc:
                log.debug("listening for changes: %s", exc)
            await anyio.sleep(self.settings.heartbeat)

    async def run_elsewhere(self, instance_id: str, node: str, timeout: float) -> dict[str, Any]:
        """Have ``node`` run the instance now; its execution, as JSON-ready values.

        The request is queued in Redis for that node (``homelab:run:<node>``) and the answer
        awaited on a key of its own; :class:`ClusterError` if none comes in ``timeout``
        seconds, the error the node answered (a :class:`ConflictError`) otherwise.
        """
        reply = PREFIX + f"reply:{uuid.uuid4().hex}"
        request = json.dumps({"instance": instance_id, "reply": reply, "from": self.name})
        try:
            await self.redis.lpush(PREFIX + f"run:{node}", request)
            answer = None
            deadline = time.monotonic() + timeout
            while answer is None and time.monotonic() < deadline:
                wait = max(0.1, min(5.0, deadline - time.monotonic()))
                answer = await self._blpop(reply, wait)
        except ClusterError:
            raise
        except Exception as exc:
            raise ClusterError(f"cannot ask node {node!r} to run {instance_id!r}: {exc}") from exc
        if answer is None:
            raise ClusterError(f"node {node!r} did not answer within {timeout:g} s")
        data = json.loads(answer)
        if "error" in data:
            raise ConflictError(f"node {node!r}: {data['error']}")
        return dict(data["execution"])

    async def _blpop(self, key: str, wait: float) -> str | None:
        """One BLPOP of ``wait`` s on a connection without the client's read timeout."""
        found = await self._blocking.blpop([key], timeout=wait)
        return None if found is None else _text(found[1])

    async def _serve_runs(self) -> None:
        """Run the instances other nodes ask this one to run now (see :meth:`run_elsewhere`)."""
        assert self._run_here is not None
        queue = PREFIX + f"run:{self.name}"
        while True:
            try:
                raw = await self._blpop(queue, 1)
            except Exception as exc:
                log.debug("waiting for runs asked by other nodes: %s", exc)
                await anyio.sleep(self.settings.heartbeat)
                continue
            if raw is None:
                continue
            request = json.loads(raw)
            try:
                answer: dict[str, Any] = {"execution": await self._run_here(request["instance"])}
            except HomelabError as exc:
                answer = {"error": str(exc)}
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.lpush(request["reply"], json.dumps(answer))
                    pipe.expire(request["reply"], 60)
                    await pipe.execute()
            except Exception as exc:
                log.warning("could not answer node %r: %s", request.get("from"), exc)

    async def _watch_leases(self) -> None:
        while True:
            await anyio.sleep(min(self.settings.heartbeat, self.settings.lease_ttl * SAFETY) / 4)
            await self._expire()

    async def tick(self) -> None:
        """One round: heartbeat, the live nodes, then take, renew or give back leases."""
        instances = self._instances()
        started = time.monotonic()
        try:
            live = await self._beat(instances)
        except Exception as exc:
            self.heartbeats_failed += 1
            if self.connected:
                log.warning("node %r cannot reach Redis: %s", self.name, exc)
            self.connected = False
            await self._expire()
            await self._pin(instances)
            return
        if not self.connected:
            log.info("node %r reached Redis; live nodes: %s", self.name, ", ".join(live))
        self.connected = True
        self.live = live
        await self._pin(instances)
        leased = [i for i, pinned in instances.items() if pinned is None]
        mine = [i for i in leased if owner(i, live) == self.name]
        # Every lease of this node is taken or renewed in one round trip, before anything
        # is started or stopped (a stop may wait for a teardown).
        try:
            fences = await self._acquire_all(mine)
        except Exception as exc:
            log.warning("node %r could not renew its leases: %s", self.name, exc)
            fences = []
        for instance_id, fence in zip(mine, fences, strict=False):
            await self._took(instance_id, fence, started)
        for instance_id in [i for i in leased if i in self._leases and i not in mine]:
            await self._give_back(instance_id)
        for instance_id in [i for i in self._leases if i not in instances]:
            await self._give_back(instance_id)  # the instance is gone
        await self._expire()
        await self._read_holders(instances, live)

    async def _read_holders(self, instances: dict[str, str | None], live: list[str]) -> None:
        """Who runs each instance now: the holder of its lease, or its node if pinned."""
        leased = [i for i, pinned in instances.items() if pinned is None]
        holders: dict[str, str | None] = {
            i: pinned for i, pinned in instances.items() if pinned in live
        }
        if leased:
            values = await self.redis.mget([PREFIX + f"lease:{i}" for i in leased])
            for instance_id, value in zip(leased, values, strict=True):
                if value is not None:
                    holders[instance_id] = _text(value).rsplit(":", 1)[0]
        self.holders = holders

    async def _beat(self, instances: dict[str, str | None]) -> list[str]:
        ttl_ms = int(self.settings.lease_ttl * 1000)
        fields = {
            "version": self.version,
            "started_at": repr(self.started_at),
            "instances": json.dumps(sorted(i for i in self.held if not i.startswith(DUTY))),
            "duties": json.dumps(sorted(i[1:] for i in self.held if i.startswith(DUTY))),
        }
        args: list[Any] = [self.name, max(ttl_ms, FORGET_AFTER * 1000)]
        for key, value in fields.items():
            args += [key, value]
        now_ms = int(await self._heartbeat(keys=[NODES, PREFIX + f"node:{self.name}"], args=args))
        window = int(MISSED_HEARTBEATS * self.settings.heartbeat * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(NODES, now_ms - window, "+inf")
            pipe.zremrangebyscore(NODES, "-inf", now_ms - FORGET_AFTER * 1000)
            names, _ = await pipe.execute()
        return sorted(_text(n) for n in names)

    async def _acquire_all(self, instance_ids: list[str]) -> list[int]:
        """Take or renew the leases of ``instance_ids`` in one pipeline: the fence of each
        lease this node holds now, 0 for one another node holds."""
        if not instance_ids:
            return []
        ttl_ms = int(self.settings.lease_ttl * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for instance_id in instance_ids:
                keys = [PREFIX + f"lease:{instance_id}", PREFIX + f"fence:{instance_id}"]
                await self._acquire(keys=keys, args=[self.name, ttl_ms], client=pipe)
            return [int(f) for f in await pipe.execute()]

    async def _took(self, instance_id: str, fence: int, started: float) -> None:
        """What a take or renewal of the instance's lease answered (``fence``, 0: refused)."""
        if not fence:
            # Another node holds it: the last owner gives it back, or its lease runs out.
            # (A lease of this node that another took is stopped: it ran out already.)
            if self._leases.pop(instance_id, None) is not None:
                self.leases_lost += 1
                await self._set_held(instance_id, False)
            return
        deadline = started + self.settings.lease_ttl
        lease = self._leases.get(instance_id)
        if lease is not None and lease.fence == fence:
            lease.deadline = deadline
            return
        self._leases[instance_id] = _Lease(fence, deadline)
        log.info("node %r took instance %r (fence %d)", self.name, instance_id, fence)
        await self._set_held(instance_id, True)

    async def _give_back(self, instance_id: str) -> None:
        """Stop the instance here first, then delete the lease (if it is still ours)."""
        lease = self._leases.pop(instance_id, None)
        await self._set_held(instance_id, False)
        if lease is None:
            return
        try:
            await self._release(
                keys=[PREFIX + f"lease:{instance_id}"], args=[f"{self.name}:{lease.fence}"]
            )
            log.info("node %r gave instance %r back", self.name, instance_id)
        except Exception as exc:  # it runs out by itself
            log.warning("could not give the lease of %r back: %s", instance_id, exc)

    async def _expire(self) -> None:
        """Stop every instance whose lease may run out before the next renewal."""
        for instance_id in list(self._leases):
            if not self.may_run(instance_id):
                self.leases_lost += 1
                log.warning(
                    "node %r stops instance %r: its lease could not be renewed in time",
                    self.name,
                    instance_id,
                )
                self._leases.pop(instance_id, None)
                await self._set_held(instance_id, False)

    async def _pin(self, instances: dict[str, str | None]) -> None:
        for instance_id, pinned in instances.items():
            if pinned is not None and (pinned == self.name) != (instance_id in self.held):
                await self._set_held(instance_id, pinned == self.name)

    async def _set_held(self, instance_id: str, held: bool) -> None:
        """Start or stop the instance here, one change of an instance at a time (the
        round and the lease watchdog may both change one)."""
        lock = self._holding.setdefault(instance_id, asyncio.Lock())
        async with lock:
            if held == (instance_id in self.held):
                return
            if held:
                self.held.add(instance_id)
            else:
                self.held.discard(instance_id)
            try:
                # Shielded: a round cut short by its deadline must not leave an instance
                # counted as held here that the scheduler never started (its lease would
                # be renewed for ever, and nobody would run it).
                with anyio.CancelScope(shield=True):
                    await self._hold(instance_id, held)
            except Exception:
                log.exception("could not %s instance %r", "start" if held else "stop", instance_id)

    async def _leave(self) -> None:
        for instance_id in list(self._leases):
            with anyio.move_on_after(self.settings.heartbeat):
                await self._give_back(instance_id)
        try:
            with anyio.move_on_after(self.settings.heartbeat):
                await self.redis.zrem(NODES, self.name)
        except Exception as exc:
            log.debug("could not leave the cluster cleanly: %s", exc)
        for client in (self._blocking, self.redis):
            try:
                await client.aclose()
            except Exception as exc:
                log.debug("could not close the connection to Redis: %s", exc)

    def counters(self) -> dict[str, float]:
        """This node's figures for ``/metrics``."""
        return {
            "cluster_connected": 1.0 if self.connected else 0.0,
            "cluster_live_nodes": float(len(self.live)),
            "cluster_instances_held": float(sum(not i.startswith(DUTY) for i in self.held)),
            "cluster_heartbeats_failed": float(self.heartbeats_failed),
            "cluster_leases_lost": float(self.leases_lost),
        }

    # -- what the API shows -----------------------------------------------------------------

    async def nodes(self) -> list[NodeInfo]:
        """Every node that sent a heartbeat lately (a day), the live ones first."""
        now_ms = float(await self._now_ms())
        window = MISSED_HEARTBEATS * self.settings.heartbeat * 1000
        beats: list[tuple[Any, float]] = await self.redis.zrange(NODES, 0, -1, withscores=True)  # type: ignore[assignment]
        found = []
        for raw, score in beats:
            name = _text(raw)
            stored = await self.redis.hgetall(PREFIX + f"node:{name}")
            info = {_text(k): _text(v) for k, v in stored.items()}
            found.append(
                NodeInfo(
                    name=name,
                    version=info.get("version", ""),
                    started_at=_float(info.get("started_at")),
                    heartbeat_at=score / 1000,
                    alive=score >= now_ms - window,
                    instances=json.loads(info.get("instances") or "[]"),
                    duties=json.loads(info.get("duties") or "[]"),
                )
            )
        found.sort(key=lambda n: (not n.alive, n.name))
        return found

    async def _now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: str | None) -> float:
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        number = math.nan
    return number if math.isfinite(number) else 0.0


def make_cluster(
    settings: Settings,
    instances: Callable[[], dict[str, str | None]],
    hold: Callable[[str, bool], Awaitable[None]],
    after_beat: Callable[[], Awaitable[None]] | None = None,
    run_here: Callable[[str], Awaitable[dict[str, Any]]] | None = None,
) -> Cluster:
    """The :class:`Cluster` of ``settings`` (``[node]``, on the Redis of ``[bus] url``)."""
    try:
        from redis.asyncio import Redis
    except ImportError:
        raise ConfigError(
            "several nodes need the 'redis' extra: pip install 'homelab-core[redis]'",
            table="bus",
            field="backend",
        ) from None
    from . import __version__

    node = settings.node
    # A command that Redis does not answer gives up within a heartbeat: the loop then
    # goes on, and the leases it could not renew are stopped in time.
    client = Redis.from_url(
        settings.bus.url,
        socket_timeout=node.heartbeat,
        socket_connect_timeout=node.heartbeat,
        health_check_interval=0,
    )
    return Cluster(
        client,
        node,
        version=__version__,
        instances=instances,
        hold=hold,
        after_beat=after_beat,
        run_here=run_here,
    )
