"""``scaleout``: several nodes on one PostgreSQL and one Redis (docs/scale-out.md).

A throw-away PostgreSQL and ``redis-server`` on 127.0.0.1 serve every part; each part has a
database of its own. What ran where is read from the executions table, which records the
node and the fencing token of every run.

- ``scaleout.failover``: three real ``homelab agent --node`` processes share 30 leased
  instances (a ``tcp`` check every 0.5 s; heartbeat 0.25 s, lease TTL 1.5 s). One node is
  killed with SIGKILL (its leases held); the figure is the seconds from the kill to the
  first run elsewhere of each of its instances, the maximum over them, as a ratio of the
  lease TTL. The full run kills and restarts three times (the worst round counts).
- ``scaleout.duplicates``: runs of one instance on two nodes whose times overlap, over the
  whole failover part (start, kills, restarts, stop).
- ``scaleout.event_p99``: a ``command`` instance pinned to node ``b`` (``homelab agent``,
  two events per run every 0.2 s) and WebSocket clients on node ``a``'s ``homelab serve``,
  every event crossing the Redis stream; baseline, at the same time on the same machine,
  the same instance and clients on one ``homelab serve`` with the memory bus. Latency is
  receive time minus the event's ``ts`` (one clock).
- ``scaleout.pipeline``: samples/s stored (timestamps in the window, counted after a grace)
  by two nodes (``bench/scaleout_node.py``: ``homelab agent``'s loop with the ``bench_burst``
  type) sharing leased instances that together offer more than one node stores, against
  one node alone (memory bus) with the same instances on the same PostgreSQL, measured
  just before. No target: both share two cores with PostgreSQL.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from homelab_core import Execution
from homelab_core.store import Store

from .common import (
    ROOT,
    Result,
    clean_env,
    free_port,
    log,
    percentile,
    process,
    ratio_target,
    result,
    value_target,
    wait_http,
    workdir,
)

HEARTBEAT = 0.25
LEASE_TTL = 1.5
CLI = [sys.executable, "-m", "homelab_core.cli", "--log-level", "INFO"]
START_TIMEOUT = 90.0
FAILOVER_INSTANCES = [f"port-{i:02d}" for i in range(30)]
FAILOVER_NODES = ["n1", "n2", "n3"]
EVENT_INSTANCE = "ups"
EVENT_INTERVAL = 0.2


@dataclass(frozen=True)
class Plan:
    kills: int  # failover rounds
    event_rounds: int  # windows measured on each server
    event_window: float  # seconds of events in each
    event_clients: int  # WebSocket clients on each server
    burst_instances: int  # pipeline: bench_burst instances, pinned in turn to each node
    burst_metrics: int  # metrics per run of each
    pipeline_window: float
    pipeline_warmup: float


QUICK = Plan(1, 2, 4.0, 20, 200, 100, 6.0, 2.0)
FULL = Plan(3, 4, 8.0, 50, 200, 100, 30.0, 6.0)
#: Seconds after a pipeline window that its samples may take to reach the database.
GRACE = 3.0


# -- services ------------------------------------------------------------------------------


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return str(found)


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start on port {port}") from None
            time.sleep(0.1)


@contextmanager
def postgres(directory: Path) -> Iterator[str]:
    """A throw-away PostgreSQL on 127.0.0.1 (as user ``postgres`` when run as root);
    yields the URL of the server (database ``postgres``)."""
    initdb, server = _postgres_bin("initdb"), _postgres_bin("postgres")
    root = directory / "pg"
    root.mkdir()
    (root / "run").mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (root, root / "run"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    command = [
        *prefix, server, "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
        "-k", str(root / "run"), "-c", "fsync=off", "-c", "full_page_writes=off",
        "-c", "max_connections=200",
    ]  # fmt: skip
    with (root / "server.log").open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, "PostgreSQL")
        yield f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        try:  # under runuser, proc is runuser: signal the postmaster itself
            os.kill(int((data / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
        except (OSError, ValueError, IndexError):
            proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def create_database(server_url: str, name: str) -> str:
    subprocess.run(
        [
            _postgres_bin("psql"),
            server_url,
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            f'CREATE DATABASE "{name}"',
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def redis(directory: Path) -> Iterator[str]:
    """A throw-away ``redis-server`` on 127.0.0.1 without persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if not binary:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    root = directory / "redis"
    root.mkdir()
    port = free_port()
    command = [
        binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
        "--appendonly", "no", "--dir", str(root), "--logfile", str(root / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(10)


def flush_redis(url: str) -> None:
    """Empty Redis between parts (each part's nodes start on a clean cluster)."""
    from redis import Redis

    client = Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


T = TypeVar("T")


def with_store(url: str, use: Callable[[Store], Awaitable[T]]) -> T:
    """What ``use`` returns of a store opened on ``url`` (and closed after), from sync code."""

    async def run() -> T:
        store = Store(url)
        await store.open()
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


def executions(url: str) -> list[Execution]:
    return with_store(url, lambda store: store.executions(limit=1_000_000))


def fetch(url: str, query: str, *values: Any) -> list[dict[str, Any]]:
    return with_store(url, lambda store: store.fetch(query, list(values)))


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


def last_runner(found: list[Execution]) -> dict[str, str | None]:
    """The node of each instance's newest run."""
    newest: dict[str, Execution] = {}
    for e in found:
        if e.status == "skipped":
            continue
        if e.instance_id not in newest or e.started_at > newest[e.instance_id].started_at:
            newest[e.instance_id] = e
    return {i: e.node for i, e in newest.items()}


# -- nodes ---------------------------------------------------------------------------------


class Nodes:
    """Node processes, one per name, in one directory; SIGKILL on demand, SIGTERM at the end."""

    def __init__(self, directory: Path, command: list[str]) -> None:
        self.directory = directory
        self.command = command  # the node's name is appended
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        with (self.directory / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                [*self.command, name, *extra],
                cwd=self.directory,
                env=clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> float:
        """SIGKILL (the node dies with its leases held); the time of the kill."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
        proc.wait(10)
        return killed_at

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs.clear()

    def tails(self) -> str:
        """The end of every node's log (for an error)."""
        return "\n".join(
            f"--- {path.name}\n" + path.read_text(errors="replace")[-1500:]
            for path in sorted(self.directory.glob("*.log"))
        )

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.directory / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"node {name} exited ({proc.returncode}): {tail}")


@contextmanager
def nodes(directory: Path, command: list[str]) -> Iterator[Nodes]:
    running = Nodes(directory, command)
    try:
        yield running
    finally:
        running.stop_all()


def wait_until(condition: Any, url: str, limit: float, group: Nodes) -> list[Execution]:
    """Read the executions until ``condition(executions)`` holds; the last ones read."""
    deadline = time.monotonic() + limit
    while True:
        found = executions(url)
        if condition(found):
            return found
        group.check()
        if time.monotonic() > deadline:
            runners = collections.Counter(last_runner(found).values())
            raise RuntimeError(
                f"the nodes did not get there within {limit:g} s (runs by node: {runners}):\n"
                + group.tails()
            )
        time.sleep(0.2)


# -- failover and duplicates ---------------------------------------------------------------


def failover_config(database: str, redis_url: str) -> str:
    lines = [
        f'[database]\nurl = "{database}"\n',
        f'[bus]\nbackend = "redis"\nurl = "{redis_url}"\n',
        f"[node]\nheartbeat = {HEARTBEAT}\nlease_ttl = {LEASE_TTL}\n",
        "[scheduler]\njitter = 0.0\n",
        "[store]\nflush_interval = 0.1\n",
    ]
    for instance_id in FAILOVER_INSTANCES:
        lines.append(
            f'[plugins.{instance_id}]\ntype = "tcp"\ninterval = 0.5\nhost = "127.0.0.1"\nport = 1\n'
        )
    return "\n".join(lines)


def runs_elsewhere(
    found: list[Execution], instance_id: str, victim: str, killed_at: float
) -> list[Execution]:
    """The runs of the instance on another node than ``victim`` since it was killed."""
    return [
        e
        for e in found
        if e.instance_id == instance_id
        and e.node != victim
        and e.started_at > killed_at
        and e.status != "skipped"
    ]


def measure_failover(directory: Path, database: str, redis_url: str, kills: int) -> dict[str, Any]:
    folder = directory / "failover"
    folder.mkdir()
    config = folder / "homelab.toml"
    config.write_text(failover_config(database, redis_url))
    rounds: list[dict[str, Any]] = []
    with nodes(folder, [*CLI, "agent", "-c", str(config), "--node"]) as group:
        for name in FAILOVER_NODES:
            group.start(name)
        for round_no in range(kills):
            victim = FAILOVER_NODES[round_no % len(FAILOVER_NODES)]
            since = time.time()

            def settled(found: list[Execution], since: float = since) -> bool:
                recent = [e for e in found if e.started_at > since]
                runners = last_runner(recent)
                return set(runners) == set(FAILOVER_INSTANCES) and set(runners.values()) == set(
                    FAILOVER_NODES
                )

            wait_until(settled, database, START_TIMEOUT, group)
            time.sleep(4 * HEARTBEAT + 1.0)  # placement settles (nodes joined one by one)
            runners = last_runner(executions(database))
            victims = [i for i in FAILOVER_INSTANCES if runners.get(i) == victim]
            if not victims:
                raise RuntimeError(f"node {victim} runs no instance: {runners}")
            killed_at = group.kill(victim)

            found = wait_until(
                lambda found, v=victim, vs=victims, t=killed_at: all(
                    runs_elsewhere(found, i, v, t) for i in vs
                ),
                database,
                10 * LEASE_TTL + 10,
                group,
            )
            delays = {
                i: min(e.started_at for e in runs_elsewhere(found, i, victim, killed_at))
                - killed_at
                for i in victims
            }
            seconds = max(delays.values())
            rounds.append(
                {
                    "killed": victim,
                    "instances": len(victims),
                    "seconds": round(seconds, 3),
                    "median_s": round(sorted(delays.values())[len(delays) // 2], 3),
                }
            )
            log(f"failover round {round_no + 1}/{kills}: {rounds[-1]}")
            group.start(victim)  # back for the next round (and for the hand-back's overlaps)
        time.sleep(4 * HEARTBEAT + 1.0)
        group.stop_all()
    found = executions(database)
    pairs = overlapping_runs(found)
    unfenced = [e for e in found if e.status != "skipped" and not e.fence]
    return {
        "failover_s": max(r["seconds"] for r in rounds),
        "rounds": rounds,
        "duplicates": len(pairs),
        "duplicate_examples": [
            [
                (e.instance_id, e.node, e.fence, round(e.started_at, 3), round(e.duration, 3))
                for e in p
            ]
            for p in pairs[:5]
        ],
        "executions": len(found),
        "unfenced_runs": len(unfenced),
        "unfenced_examples": [
            (e.instance_id, e.node, e.status, round(e.started_at, 3), e.error) for e in unfenced[:5]
        ],
    }


# -- events across nodes -------------------------------------------------------------------


def event_config(database: str, bus: str, redis_url: str | None, output: Path) -> str:
    lines = [f'[database]\nurl = "{database}"\n', "[scheduler]\njitter = 0.0\n"]
    if redis_url is not None:
        lines += [
            f'[bus]\nbackend = "redis"\nurl = "{redis_url}"\n',
            f'[cache]\nbackend = "redis"\nurl = "{redis_url}"\n',
            f"[node]\nheartbeat = {HEARTBEAT}\nlease_ttl = {LEASE_TTL}\n",
        ]
    pinned = 'node = "b"\n' if redis_url is not None else ""
    lines.append(
        f'[plugins.{EVENT_INSTANCE}]\ntype = "command"\ninterval = {EVENT_INTERVAL}\n{pinned}'
        f'command = ["cat", "{output}"]\nformat = "json"\n'
    )
    del bus
    return "\n".join(lines)


class Listeners(threading.Thread):
    """WebSocket clients of ``/ws/metrics``, subscribed to the event instance, on one
    asyncio loop in a thread of their own: (``ts``, receive time - ``ts``) of every event
    each receives, per server."""

    def __init__(self, urls: dict[str, str], clients: int) -> None:
        super().__init__(daemon=True, name="scaleout-clients")
        self.urls = {k: u.replace("http://", "ws://") + "/ws/metrics" for k, u in urls.items()}
        self.clients = clients
        self.received: dict[str, list[tuple[float, float]]] = {k: [] for k in urls}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the bench
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        from websockets.asyncio.client import connect

        async with AsyncExitStack() as stack:
            sockets = []
            for name, url in self.urls.items():
                for _ in range(self.clients):
                    ws = await stack.enter_async_context(connect(url, open_timeout=20))
                    await ws.send(json.dumps({"type": "subscribe", "plugins": [EVENT_INSTANCE]}))
                    sockets.append((name, ws))
            self.ready.set()
            await asyncio.gather(*(self._read(name, ws) for name, ws in sockets))

    async def _read(self, name: str, ws: Any) -> None:
        out = self.received[name]
        while not self.stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            now = time.time()
            message = json.loads(raw)
            ts = message.get("ts")
            if message.get("type") in ("metrics", "execution") and ts is not None:
                out.append((ts, now - ts))


def set_enabled(url: str, enabled: bool) -> None:
    answer = httpx.post(
        f"{url}/api/plugins/{EVENT_INSTANCE}/enable", json={"enabled": enabled}, timeout=10
    )
    answer.raise_for_status()


def serve_command(config: Path, port: int, *extra: str) -> list[str]:
    return [*CLI, "serve", "--config", str(config), "--port", str(port), *extra]


def measure_events(directory: Path, server_url: str, redis_url: str, plan: Plan) -> dict[str, Any]:
    folder = directory / "events"
    folder.mkdir()
    output = folder / "metrics.json"
    output.write_text(
        json.dumps(
            [
                {"name": "ups.load", "value": 23.0 + i, "unit": "%", "labels": {"ups": f"ups{i}"}}
                for i in range(8)
            ]
        )
    )
    single_db = create_database(server_url, "events_single")
    cluster_db = create_database(server_url, "events_cluster")
    single_cfg, cluster_cfg = folder / "single.toml", folder / "cluster.toml"
    single_cfg.write_text(event_config(single_db, "memory", None, output))
    cluster_cfg.write_text(event_config(cluster_db, "redis", redis_url, output))
    single_port, a_port = free_port(), free_port()
    with ExitStack() as stack:
        single = stack.enter_context(
            process(serve_command(single_cfg, single_port), cwd=folder, name="single")
        )
        node_b = stack.enter_context(
            process([*CLI, "agent", "-c", str(cluster_cfg), "--node", "b"], cwd=folder, name="b")
        )
        node_a = stack.enter_context(
            process(serve_command(cluster_cfg, a_port, "--node", "a"), cwd=folder, name="a")
        )
        single_url, a_url = f"http://127.0.0.1:{single_port}", f"http://127.0.0.1:{a_port}"
        wait_http(single_url + "/api/health", START_TIMEOUT, single)
        wait_http(a_url + "/api/health", START_TIMEOUT, node_a)
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # b runs the instance: a's API says so
            if node_b.poll() is not None:
                raise RuntimeError(f"node b exited ({node_b.returncode})")
            plugin = httpx.get(f"{a_url}/api/plugins/{EVENT_INSTANCE}", timeout=5).json()
            if plugin["plugin"].get("running_on") == "b":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"node b did not run {EVENT_INSTANCE}: {plugin}")
            time.sleep(0.2)
        urls = {"single": single_url, "cluster": a_url}
        listeners = Listeners(urls, plan.event_clients)
        listeners.start()
        windows: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
        try:
            listeners.ready.wait(60)
            if listeners.error is not None:
                raise RuntimeError(f"the WebSocket clients failed: {listeners.error!r}")
            # One server sends at a time: the other's instance is disabled (the cluster's
            # through a's API, which reaches b). Windows alternate; the first is a warm-up.
            order = ["cluster", "single"] * plan.event_rounds
            for n, name in enumerate(["single", *order]):
                other = "single" if name == "cluster" else "cluster"
                set_enabled(urls[other], False)
                set_enabled(urls[name], True)
                time.sleep(1.0)  # the other's last events are in; this one's flow
                start = time.time()
                time.sleep(plan.event_window)
                if n:
                    windows[name].append((start, time.time()))
            time.sleep(0.5)
            if listeners.error is not None:
                raise RuntimeError(f"the WebSocket clients failed: {listeners.error!r}")
        finally:
            listeners.stop.set()
            listeners.join(10)
    figures: dict[str, Any] = {
        "clients_per_server": plan.event_clients,
        "windows_per_server": plan.event_rounds,
        "window_s": plan.event_window,
    }
    for name in urls:
        latencies = [
            latency * 1000
            for ts, latency in listeners.received[name]
            if any(start <= ts < end for start, end in windows[name])
        ]
        figures[name] = {
            "events_received": len(latencies),
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "max_ms": round(max(latencies), 2) if latencies else None,
        }
    if not all(figures[name]["events_received"] for name in urls):
        raise RuntimeError(f"a server's clients received no events: {figures}")
    return figures


# -- pipeline ------------------------------------------------------------------------------


def pipeline_config(database: str, redis_url: str | None, plan: Plan, names: list[str]) -> str:
    lines = [
        f'[database]\nurl = "{database}"\n',
        "[scheduler]\njitter = 1.0\n",
    ]
    if redis_url is not None:
        lines += [
            f'[bus]\nbackend = "redis"\nurl = "{redis_url}"\n',
            "[node]\nheartbeat = 1.0\nlease_ttl = 10.0\n",
        ]
    # Several nodes: pinned in turn to each (pinned, so that what is measured is the
    # store's path, not the leases of hundreds of instances on busy nodes).
    pins = [f'node = "{name}"\n' for name in names] if len(names) > 1 else [""]
    for i in range(plan.burst_instances):
        lines.append(
            f'[plugins.burst{i:04d}]\ntype = "bench_burst"\ninterval = 1.0\n'
            f"metrics = {plan.burst_metrics}\n{pins[i % len(pins)]}"
        )
    return "\n".join(lines)


def stored_rate(
    folder: Path, name: str, database: str, redis_url: str | None, names: list[str], plan: Plan
) -> dict[str, Any]:
    """Samples/s stored by ``names`` node processes (timestamps in the window)."""
    config = folder / f"{name}.toml"
    config.write_text(pipeline_config(database, redis_url, plan, names))
    command = [sys.executable, str(ROOT / "bench" / "scaleout_node.py"), str(config)]
    with nodes(folder, command) as group:
        for node in names:
            group.start(node)
        wait_until(
            lambda found: (
                len({e.node for e in found}) == len(names)
                and len({e.instance_id for e in found}) == plan.burst_instances
            ),
            database,
            START_TIMEOUT,
            group,
        )
        # Every series exists (creating 40,000 series takes a while): samples only, then.
        series = plan.burst_instances * plan.burst_metrics
        deadline = time.monotonic() + START_TIMEOUT
        while int(fetch(database, "SELECT COUNT(*) AS n FROM homelab_series")[0]["n"]) < series:
            group.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the nodes did not create {series} series in time")
            time.sleep(0.5)
        time.sleep(plan.pipeline_warmup)
        t0 = time.time()
        time.sleep(plan.pipeline_window)
        t1 = time.time()
        time.sleep(GRACE)
        group.check()
        stored = with_store(database, lambda store: store.count_samples(t0, t1))
        runs = fetch(
            database,
            "SELECT node, COUNT(*) AS n FROM homelab_execution"
            " WHERE started_at >= ? AND started_at < ? GROUP BY node",
            t0,
            t1,
        )
    return {
        "stored_per_s": stored / (t1 - t0),
        "runs_in_window": {str(r["node"]): int(r["n"]) for r in runs},
    }


def measure_pipeline(
    directory: Path, server_url: str, redis_url: str, plan: Plan
) -> dict[str, Any]:
    folder = directory / "pipeline"
    folder.mkdir()
    single = stored_rate(
        folder, "single", create_database(server_url, "pipeline_single"), None, ["p0"], plan
    )
    log(f"pipeline, one node: {single}")
    flush_redis(redis_url)
    two = stored_rate(
        folder, "two", create_database(server_url, "pipeline_two"), redis_url, ["p1", "p2"], plan
    )
    log(f"pipeline, two nodes: {two}")
    return {
        "offered_per_s": plan.burst_instances * plan.burst_metrics,
        "single": single,
        "two": two,
    }


# -- the benchmark -------------------------------------------------------------------------


def run(quick: bool) -> list[Result]:
    plan = QUICK if quick else FULL
    with workdir("scaleout") as directory:
        directory.chmod(0o755)  # the postgres user walks into it
        with postgres(directory) as server_url, redis(directory) as redis_url:
            began = time.monotonic()
            failover = measure_failover(
                directory, create_database(server_url, "failover"), redis_url, plan.kills
            )
            log(f"failover: {failover} ({time.monotonic() - began:.0f} s)")
            flush_redis(redis_url)
            began = time.monotonic()
            events = measure_events(directory, server_url, redis_url, plan)
            log(f"events: {events} ({time.monotonic() - began:.0f} s)")
            flush_redis(redis_url)
            began = time.monotonic()
            pipeline = measure_pipeline(directory, server_url, redis_url, plan)
            log(f"pipeline: ({time.monotonic() - began:.0f} s)")
    return [
        result(
            "scaleout.failover",
            failover["failover_s"],
            "s",
            ratio_target("<=", 2.0),
            baseline=LEASE_TTL,
            baseline_name="lease TTL",
            details={
                k: failover[k]
                for k in ("rounds", "executions", "unfenced_runs", "unfenced_examples")
            }
            | {"heartbeat_s": HEARTBEAT, "nodes": len(FAILOVER_NODES)},
        ),
        result(
            "scaleout.duplicates",
            failover["duplicates"],
            "overlapping runs",
            value_target("==", 0),
            details={
                "examples": failover["duplicate_examples"],
                "executions": failover["executions"],
            },
        ),
        result(
            "scaleout.event_p99",
            events["cluster"]["p99_ms"],
            "ms",
            ratio_target("<=", 1.5),
            baseline=events["single"]["p99_ms"],
            baseline_name="same clients on one memory-bus node",
            details=events,
        ),
        result(
            "scaleout.pipeline",
            pipeline["two"]["stored_per_s"],
            "samples/s",
            value_target(">", 0),
            baseline=pipeline["single"]["stored_per_s"],
            baseline_name="one node on the same PostgreSQL",
            details=pipeline,
        ),
    ]
