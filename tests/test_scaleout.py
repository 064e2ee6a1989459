"""Several node processes on one PostgreSQL and one Redis (docs/scale-out.md).

Each node is a real ``homelab agent --node NAME`` process; what ran where is read from the
executions table, which records the node and the fencing token of every run.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from live_server import server_env

from homelab_core import Execution
from homelab_core.store import Store

pytestmark = pytest.mark.anyio

UNPINNED = [f"port-{i:02d}" for i in range(30)]
HEARTBEAT = 0.25
LEASE_TTL = 1.5
AGENT = [sys.executable, "-m", "homelab_core.cli", "--log-level", "INFO", "agent"]
#: How long a node may take to start (imports, migrations) and take its first leases.
START_TIMEOUT = 60.0


def cluster_config(postgres_url: str, redis_url: str) -> str:
    """30 unpinned checks of a closed port (cheap, in the process) and one pinned to n2."""
    lines = [
        f'[database]\nurl = "{postgres_url}"\n',
        f'[bus]\nbackend = "redis"\nurl = "{redis_url}"\n',
        f"[node]\nheartbeat = {HEARTBEAT}\nlease_ttl = {LEASE_TTL}\n",
        "[scheduler]\njitter = 0.0\n",
        "[store]\nflush_interval = 0.1\n",
    ]
    for instance_id in UNPINNED:
        lines.append(
            f'[plugins.{instance_id}]\ntype = "tcp"\ninterval = 0.5\nhost = "127.0.0.1"\nport = 1\n'
        )
    lines.append(
        '[plugins.pinned]\ntype = "tcp"\ninterval = 0.5\nnode = "n2"\n'
        'host = "127.0.0.1"\nport = 1\n'
    )
    return "\n".join(lines)


class Nodes:
    """``homelab agent`` processes, one per node name, in one directory."""

    def __init__(self, directory: Path, config: Path) -> None:
        self.directory = directory
        self.config = config
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        with (self.directory / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                [*AGENT, "--node", name, "-c", str(self.config)],
                cwd=self.directory,
                env=server_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self, name: str) -> None:
        """SIGKILL: the node dies with its leases held."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                pytest.fail(f"node {name} did not stop on SIGTERM")
        self.procs.clear()

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")


@contextmanager
def running_nodes(directory: Path, config: str, names: list[str]) -> Iterator[Nodes]:
    path = directory / "homelab.toml"
    path.write_text(config)
    nodes = Nodes(directory, path)
    try:
        for name in names:
            nodes.start(name)
        yield nodes
    finally:
        for proc in nodes.procs.values():
            if proc.poll() is None:
                proc.kill()
        nodes.stop_all()


async def executions(url: str) -> list[Execution]:
    store = Store(url)
    await store.open()
    try:
        return await store.executions(limit=100_000)
    finally:
        await store.close()


def last_runner(found: list[Execution]) -> dict[str, str | None]:
    """The node of each instance's newest execution."""
    newest: dict[str, Execution] = {}
    for e in found:
        if e.instance_id not in newest or e.started_at > newest[e.instance_id].started_at:
            newest[e.instance_id] = e
    return {i: e.node for i, e in newest.items()}


def overlapping_runs(found: list[Execution]) -> list[tuple[Execution, Execution]]:
    """Pairs of runs of one instance on two nodes whose times overlap."""
    by_instance: dict[str, list[Execution]] = collections.defaultdict(list)
    for e in found:
        if e.status != "skipped":
            by_instance[e.instance_id].append(e)
    pairs = []
    for runs in by_instance.values():
        runs.sort(key=lambda e: e.started_at)
        for i, first in enumerate(runs):
            for later in runs[i + 1 :]:
                if later.started_at >= first.started_at + first.duration:
                    break
                if later.node != first.node:
                    pairs.append((first, later))
    return pairs


async def wait_for(condition: object, url: str, limit: float) -> list[Execution]:
    """Read the executions until ``condition(executions)`` holds; the last ones read."""
    with anyio.fail_after(limit):
        while True:
            found = await executions(url)
            if condition(found):  # type: ignore[operator]
                return found
            await anyio.sleep(0.25)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "cluster"
    directory.mkdir()
    return directory


async def test_three_nodes_share_the_instances_and_take_over_from_a_dead_one(
    cluster_dir: Path, postgres_url: str, redis_url: str
) -> None:
    config = cluster_config(postgres_url, redis_url)
    with running_nodes(cluster_dir, config, ["n1", "n2", "n3"]) as nodes:
        every = {*UNPINNED, "pinned"}

        def settled(found: list[Execution]) -> bool:
            runners = last_runner(found)
            return set(runners) == every and set(runners.values()) == {"n1", "n2", "n3"}

        try:
            found = await wait_for(settled, postgres_url, START_TIMEOUT)
            # Let placement settle (nodes started one after the other), then look again.
            await anyio.sleep(3 * HEARTBEAT + 1.0)
            found = await executions(postgres_url)
        except TimeoutError:
            pytest.fail("the nodes did not run every instance:\n" + nodes.log("n1")[-3000:])
        runners = last_runner(found)
        spread = collections.Counter(runners[i] for i in UNPINNED)
        assert sum(spread.values()) == 30 and max(spread.values()) <= 15, spread
        assert {e.node for e in found if e.instance_id == "pinned"} == {"n2"}
        assert all(e.fence is None for e in found if e.instance_id == "pinned")
        assert all(e.fence for e in found if e.instance_id != "pinned" and e.status != "skipped")

        victims = [i for i in UNPINNED if runners[i] == "n1"]
        assert victims
        nodes.kill("n1")
        killed_at = time.time()

        def elsewhere(found: list[Execution], instance_id: str) -> list[Execution]:
            """The runs of the instance on another node since n1 died."""
            return [
                e
                for e in found
                if e.instance_id == instance_id and e.node != "n1" and e.started_at > killed_at
            ]

        def moved(found: list[Execution]) -> bool:
            return all(elsewhere(found, i) for i in victims)

        found = await wait_for(moved, postgres_url, 4 * LEASE_TTL + 10)
        first_elsewhere = max(min(e.started_at for e in elsewhere(found, i)) for i in victims)
        assert first_elsewhere - killed_at <= 2 * LEASE_TTL, first_elsewhere - killed_at
        # The new leases have greater fencing tokens than n1's.
        for i in victims:
            old = max(e.fence or 0 for e in found if e.instance_id == i and e.node == "n1")
            new = min(e.fence or 0 for e in elsewhere(found, i))
            assert new > old
        nodes.stop_all()
    found = await executions(postgres_url)
    assert overlapping_runs(found) == []


async def node_names(api: httpx.AsyncClient) -> set[str]:
    return {n["name"] for n in (await api.get("/api/nodes")).json()["nodes"] if n["alive"]}


@contextmanager
def two_servers(directory: Path, config: str) -> Iterator[Any]:
    """``homelab serve --node a`` and ``--node b`` on ``config``; yields node a's server."""
    from live_server import live_server

    with (
        live_server(directory / "a", config=config, args=["--node", "a"], port=0) as a,
        live_server(directory / "b", config=config, args=["--node", "b"], port=0),
    ):
        yield a


def serve_config(postgres_url: str, redis_url: str) -> str:
    return "\n".join(
        [
            f'[database]\nurl = "{postgres_url}"\n',
            f'[bus]\nbackend = "redis"\nurl = "{redis_url}"\n',
            f'[cache]\nbackend = "redis"\nurl = "{redis_url}"\n',
            f"[node]\nheartbeat = {HEARTBEAT}\nlease_ttl = {LEASE_TTL}\n",
            "[scheduler]\njitter = 0.0\n",
            "[store]\nflush_interval = 0.1\n",
            '[plugins.on-b]\ntype = "tcp"\ninterval = 0.5\nnode = "b"\n'
            'host = "127.0.0.1"\nport = 1\n',
        ]
    )


async def test_actions_and_instances_of_one_nodes_api_reach_the_node_that_runs_them(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    from homelab_core.cluster import owner

    with two_servers(tmp_path, serve_config(postgres_url, redis_url)) as a:
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as api:
            with anyio.fail_after(20):
                while await node_names(api) != {"a", "b"}:  # noqa: ASYNC110 - polling an API
                    await anyio.sleep(0.1)
            # Made through a's API, it runs where its lease puts it.
            body = {"id": "made-on-a", "type": "tcp", "interval": 0.5}
            body["options"] = {"host": "127.0.0.1", "port": 1}
            assert (await api.post("/api/plugins", json=body)).status_code == 201
            expected = owner("made-on-a", ["a", "b"])
            found = await wait_for(
                lambda runs: any(e.instance_id == "made-on-a" for e in runs), postgres_url, 20
            )
            assert {e.node for e in found if e.instance_id == "made-on-a"} == {expected}
            # Run now through a's API: b runs it, and a answers with b's execution.
            await wait_for(
                lambda runs: any(e.instance_id == "on-b" for e in runs), postgres_url, 20
            )
            ran = await api.post("/api/plugins/on-b/run", json={})
            assert ran.status_code == 200, ran.text
            assert (ran.json()["node"], ran.json()["trigger"]) == ("b", "manual")
            # Disabled through a's API, on-b stops on b within one interval.
            answer = await api.post("/api/plugins/on-b/enable", json={"enabled": False})
            assert answer.status_code == 200
            disabled_at = time.time()
            await anyio.sleep(2.0)
            found = await executions(postgres_url)
            late = [
                e for e in found if e.instance_id == "on-b" and e.started_at > disabled_at + 0.5
            ]
            assert late == []
            assert {e.node for e in found if e.instance_id == "on-b"} == {"b"}
            shown = (await api.get("/api/plugins/on-b")).json()["plugin"]
            assert (shown["enabled"], shown["node"], shown["running_on"]) == (False, "b", "b")


async def test_the_stream_and_the_api_of_one_node_show_an_instance_another_runs(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    from websockets.asyncio.client import connect

    with two_servers(tmp_path, serve_config(postgres_url, redis_url)) as a:
        ws_url = a.url.replace("http://", "ws://") + "/ws/metrics"
        async with connect(ws_url) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            await ws.send(json.dumps({"type": "subscribe", "plugins": ["on-b"]}))
            with anyio.fail_after(20):
                while True:
                    message = json.loads(await ws.recv())
                    if message["type"] == "metrics" and message["plugin_id"] == "on-b":
                        break
        assert [m["name"] for m in message["data"]] and message["seq"] > 0
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as api:
            latest = (await api.get("/api/plugins/on-b/metrics")).json()["metrics"]
            plugin = (await api.get("/api/plugins/on-b")).json()["plugin"]
        assert {m["name"] for m in latest} >= {m["name"] for m in message["data"]}
        # b's health, through the shared cache: b cannot reach port 1, so it fails.
        assert plugin["running_on"] == "b"
        assert plugin["health"]["state"] in ("degraded", "failing")


async def test_one_node_at_a_time_does_the_maintenance_and_another_takes_over(
    make_settings: Any, postgres_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from homelab_core import Hub
    from homelab_core.config import BusSettings, NodeSettings, RetentionSettings
    from homelab_core.store import Maintenance

    done: list[str] = []

    async def run_once(self: Maintenance, now: float | None = None) -> None:
        done.append(self.node)  # type: ignore[attr-defined]

    monkeypatch.setattr(Maintenance, "run_once", run_once)

    def hub(name: str) -> Hub:
        settings = make_settings(
            bus=BusSettings(backend="redis", url=redis_url),
            node=NodeSettings(name=name, heartbeat=HEARTBEAT, lease_ttl=LEASE_TTL),
            retention=RetentionSettings(maintenance_interval=0.05),
        )
        settings.database.url = postgres_url
        made = Hub(settings)
        made.maintenance.node = name  # type: ignore[attr-defined]
        return made

    hubs = {name: hub(name) for name in ("m1", "m2")}
    stops = {name: anyio.Event() for name in hubs}

    async def run(name: str) -> None:
        async with hubs[name]:
            await stops[name].wait()

    async with anyio.create_task_group() as tg:
        for name in hubs:
            tg.start_soon(run, name)
        # Settled (the first node to start had it until the other joined): one node does it.
        with anyio.fail_after(20):
            while len(done) < 10 or len(set(done[-10:])) > 1:  # noqa: ASYNC110 - polling
                await anyio.sleep(0.05)
        doer = done[-1]
        other = ({"m1", "m2"} - {doer}).pop()
        duties = {n.name: n.duties for n in await hubs[other].nodes()}
        assert "maintenance" in duties[doer] and "maintenance" not in duties[other]
        # The alerts are evaluated on one node too.
        assert sorted(d for each in duties.values() for d in each) == ["alerts", "maintenance"]
        assert sum(h.alerts.running for h in hubs.values()) == 1
        # The node doing it stops: the other takes over.
        stops[doer].set()
        mark = len(done)
        with anyio.fail_after(2 * LEASE_TTL + 2):
            while other not in done[mark:]:  # noqa: ASYNC110 - as above
                await anyio.sleep(0.05)
        stops[other].set()


async def test_a_node_whose_redis_is_gone_is_not_ready_and_keeps_its_pinned_instance(
    make_settings: Any, manager: Any, postgres_url: str, own_redis: Any
) -> None:
    from homelab_core import Hub, InstanceSettings
    from homelab_core.config import BusSettings, CacheSettings, NodeSettings

    pinned = InstanceSettings(id="here", type="counter", interval=0.1, node="n1")
    leased = InstanceSettings(id="anywhere", type="counter", interval=0.1)
    settings = make_settings(
        pinned,
        leased,
        bus=BusSettings(backend="redis", url=own_redis.url),
        cache=CacheSettings(backend="redis", url=own_redis.url),
        node=NodeSettings(name="n1", heartbeat=HEARTBEAT, lease_ttl=LEASE_TTL),
    )
    settings.database.url = postgres_url
    async with Hub(settings, plugin_manager=manager) as hub:
        with anyio.fail_after(10):
            while not (hub.scheduler.is_held("anywhere") and (await hub.readiness()).ready):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        own_redis.stop()
        with anyio.fail_after(LEASE_TTL + 2):
            while hub.scheduler.is_held("anywhere"):  # noqa: ASYNC110 - polling state
                await anyio.sleep(0.05)
        readiness = await hub.readiness()
        assert not readiness.ready and not readiness.redis_answers
        assert "Redis does not answer" in readiness.reason
        assert hub.scheduler.is_held("here"), "a pinned instance runs on"
        runs = hub.stats("here").runs
        await anyio.sleep(0.5)
        assert hub.stats("here").runs > runs
        assert hub.counters()["cluster_connected"] == 0.0


def alert_config(postgres_url: str, redis_url: str, hook: str, pinned_to: str) -> str:
    return "\n".join(
        [
            f'[database]\nurl = "{postgres_url}"\n',
            f'[bus]\nbackend = "redis"\nurl = "{redis_url}"\n',
            f'[cache]\nbackend = "redis"\nurl = "{redis_url}"\n',
            f"[node]\nheartbeat = {HEARTBEAT}\nlease_ttl = {LEASE_TTL}\n",
            "[scheduler]\njitter = 0.0\n",
            "[store]\nflush_interval = 0.1\n",
            "[alerting]\ngroup_wait = 0\n",
            f'[plugins.down]\ntype = "tcp"\ninterval = 0.5\nnode = "{pinned_to}"\n'
            'host = "127.0.0.1"\nport = 1\n',
            '[alerts.port-down]\nmetric = "tcp.up"\nop = "<"\nthreshold = 1\n'
            'severity = "critical"\nsummary = "{instance} is down"\n',
            f'[notifiers.hook]\ntype = "webhook"\nurl = "{hook}"\n',
        ]
    )


async def test_the_alerts_move_with_their_node_and_nothing_is_sent_twice(
    cluster_dir: Path, postgres_url: str, redis_url: str
) -> None:
    from test_notifiers import receiver

    from homelab_core.cluster import owner

    # Two names such that the first evaluates the alerts; the instance runs on the second.
    names = next(
        (x, y)
        for x, y in (("n1", "n2"), ("n2", "n1"), ("n3", "n4"), ("n4", "n3"))
        if owner("@alerts", [x, y]) == x
    )
    evaluator, other = names

    def firing(got: Any) -> list[dict[str, Any]]:
        bodies = [json.loads(r.body) for r in got.requests]
        return [b for b in bodies if b["status"] == "firing" and not b["test"]]

    with receiver() as hook:
        config = alert_config(postgres_url, redis_url, hook.url, pinned_to=other)
        with running_nodes(cluster_dir, config, [evaluator, other]) as nodes:
            with anyio.fail_after(START_TIMEOUT):
                while not firing(hook):  # noqa: ASYNC110 - polling the receiver
                    await anyio.sleep(0.1)
            assert f"node {evaluator!r} evaluates the alerts" in nodes.log(evaluator)
            await anyio.sleep(1.5)  # its delivered mark is stored (every 0.5 s)
            nodes.kill(evaluator)
            with anyio.fail_after(2 * LEASE_TTL + 5):
                while "evaluates the alerts" not in nodes.log(other):  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            await anyio.sleep(3.0)  # the alert still fires: evaluated, not sent again
            sent = firing(hook)
            nodes.stop_all()
    fingerprints = [a["fingerprint"] for body in sent for a in body["alerts"]]
    assert len(sent) == 1, [b["title"] for b in sent]
    assert len(fingerprints) == 1


async def test_a_node_that_does_not_evaluate_the_alerts_shows_the_evaluators(
    make_settings: Any, manager: Any, postgres_url: str, redis_url: str
) -> None:
    from homelab_core import Hub, InstanceSettings
    from homelab_core.alerts.config import parse_alerts_config
    from homelab_core.config import BusSettings, CacheSettings, NodeSettings

    rules = parse_alerts_config(
        {"alerts": {"counting": {"metric": "count", "op": ">=", "threshold": 1}}}, "test"
    )

    def hub(name: str) -> Hub:
        settings = make_settings(
            InstanceSettings(id="c", type="counter", interval=0.1),
            bus=BusSettings(backend="redis", url=redis_url),
            cache=CacheSettings(backend="redis", url=redis_url),
            node=NodeSettings(name=name, heartbeat=HEARTBEAT, lease_ttl=LEASE_TTL),
        )
        settings.database.url = postgres_url
        settings.alerts = rules
        return Hub(settings, plugin_manager=manager)

    async with hub("m1") as first, hub("m2") as second:
        with anyio.fail_after(15):
            while True:
                evaluators = [h for h in (first, second) if h.alerts.running]
                if len(evaluators) == 1 and evaluators[0].alerts_list(state="firing"):
                    break
                await anyio.sleep(0.05)
        [evaluator] = evaluators
        watcher = second if evaluator is first else first
        with anyio.fail_after(5):
            while not watcher.alerts_list(state="firing"):  # noqa: ASYNC110 - polling
                await anyio.sleep(0.05)
        assert [a.rule for a in watcher.alerts_list(state="firing")] == ["counting"]
        assert not watcher.alerts.running
        # A rule made through the API of the node that does not evaluate applies too.
        await watcher.put_alert_rule("many", {"metric": "count", "op": ">=", "threshold": 2})
        with anyio.fail_after(5):
            while "many" not in {a.rule for a in evaluator.alerts_list(state="firing")}:  # noqa: ASYNC110
                await anyio.sleep(0.05)
