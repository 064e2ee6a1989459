"""Process isolation: what one process cannot contain, a worker process does.

Real worker processes, a real hub on a real SQLite file, and a real ``homelab serve``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import isolation_plugins
import psutil
import pytest
from live_server import live_server, sqlite_url
from sample_plugins import Counter, make
from waiting import eventually

from homelab_core import (
    ExecutionStatus,
    HealthState,
    Hub,
    InstanceSettings,
    Metric,
    Plugin,
    PluginManager,
    Scheduler,
)
from homelab_core.config import (
    Isolation,
    SchedulerSettings,
    Settings,
    StoreSettings,
    load_settings,
)
from homelab_core.errors import ConfigError, InvalidArgumentError
from homelab_core.testing import Clock, PluginHarness, run_plugin_async, use_isolation

pytestmark = pytest.mark.anyio

MB = 1024 * 1024


@pytest.fixture
def manager() -> Iterator[PluginManager]:
    pm = PluginManager(load_entry_points=False)
    pm.register(isolation_plugins, name="isolation_plugins")
    import sample_plugins

    pm.register(sample_plugins, name="sample_plugins")
    yield pm


@pytest.fixture
def settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(*instances: InstanceSettings, **scheduler: Any) -> Settings:
        scheduler.setdefault("jitter", 0.0)
        scheduler.setdefault("setup_retry", [0.2])
        scheduler.setdefault("worker_kill_grace", 0.5)
        result = Settings(
            plugins={i.id: i for i in instances},
            scheduler=SchedulerSettings(**scheduler),
            store=StoreSettings(flush_interval=0.05),
        )
        result.database.url = f"sqlite://{tmp_path / 'homelab.db'}"
        return result

    return build


def process(instance_id: str, kind: str, **fields: Any) -> InstanceSettings:
    return InstanceSettings(id=instance_id, type=kind, isolation="process", **fields)


def workers_of(pid: int) -> list[psutil.Process]:
    """The worker processes among ``pid``'s children."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if "homelab_core.isolation" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


async def test_what_one_process_cannot_contain_stays_in_its_worker(
    manager: PluginManager, settings: Callable[..., Settings]
) -> None:
    hub_settings = settings(
        InstanceSettings(id="healthy", type="counter", interval=0.1),
        process("exits", "exits"),
        process("segfaults", "segfaults"),
        process("sleeps", "sleeps_in_async", timeout=0.3),
        process("leaks", "leaks", memory_limit=200 * MB, interval=0.1, timeout=1.0),
        process("loops", "loops_in_setup", timeout=0.3),
        process("system-exit", "raises_system_exit"),
    )
    async with Hub(hub_settings, plugin_manager=manager) as hub:
        started = time.monotonic()
        await eventually(
            lambda: (
                all(
                    hub.stats(i).errors + hub.stats(i).timeouts >= 2
                    for i in ("exits", "segfaults", "sleeps", "system-exit", "leaks")
                )
                and hub.stats("leaks").ok >= 21
            ),
            30,
            "two failed runs of each faulty instance, and the leak past its limit",
        )
        await anyio.sleep(0.3)
        elapsed = time.monotonic() - started
        healthy = hub.stats("healthy")
        assert hub.instance("healthy").health.state is HealthState.OK
        assert hub.scheduler.running and hub.scheduler.error == ""
        errors = {
            i: {
                e.error
                for e in await hub.executions(i, limit=50)
                if e.error and e.status.value != "skipped"  # ticks while a worker restarted
            }
            for i in ("exits", "segfaults", "sleeps", "leaks", "loops", "system-exit")
        }
        loops = hub.instance("loops")
        workers = {w.name: w for w in hub.workers()}
    # The in-process instance ran on schedule the whole time (10 runs a second).
    assert healthy.errors == healthy.timeouts == 0
    assert healthy.ok >= 0.6 * elapsed / 0.1
    assert any("exited with status 1, during collect()" in e for e in errors["exits"])
    assert any("was killed by SIGSEGV, during collect()" in e for e in errors["segfaults"])
    assert "timed out after 0.3 s" in errors["sleeps"]
    assert any(
        "more than its memory_limit of 200 MB and ended, during collect()" in e
        for e in errors["leaks"]
    ), errors["leaks"]
    assert "setup timed out after 0.3 s" in errors["loops"]
    assert loops.state.value in ("setting_up", "setup_retry")  # retried, never ready
    assert workers["loops"].losses >= 1  # each timed-out setup ended its worker
    assert "SystemExit: 3" in errors["system-exit"]
    crashes = errors["exits"] | errors["segfaults"]
    assert all(e.startswith("WorkerLost: ") for e in crashes), crashes


async def test_a_run_past_its_timeout_kills_its_worker_and_the_next_starts_a_fresh_one(
    manager: PluginManager, settings: Callable[..., Settings]
) -> None:
    hub_settings = settings(process("sleeps", "sleeps_in_async", timeout=0.2, interval=0.3))
    async with Hub(hub_settings, plugin_manager=manager) as hub:
        pids: set[int] = set()
        deadline = time.monotonic() + 20
        while hub.stats("sleeps").timeouts < 3 and time.monotonic() < deadline:
            pids.update(w.pid for w in hub.workers() if w.pid is not None)
            await anyio.sleep(0.02)
        (info,) = hub.workers()
    assert hub.stats("sleeps").timeouts >= 3
    assert len(pids) >= 2  # each timed-out run's worker was replaced
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert info.starts >= 3 and info.losses >= 2


async def test_a_run_given_up_in_a_worker_still_runs_the_plugins_clean_up(
    tmp_path: Path,
) -> None:
    """SIGTERM cancels the worker's calls, so their ``finally`` runs (a command plugin
    kills its child there) before the worker exits; SIGKILL only if that takes too long."""
    mark = tmp_path / "mark"
    run = await run_plugin_async(
        isolation_plugins.CleansUp, timeout=0.5, isolation="process", mark=str(mark)
    )
    assert run.status is ExecutionStatus.TIMEOUT
    assert mark.read_text(encoding="utf-8") == "cleaned up"


async def test_instances_of_a_group_share_a_worker_and_a_crash_restarts_the_group(
    manager: PluginManager, settings: Callable[..., Settings]
) -> None:
    hub_settings = settings(
        process("a", "where", worker="group"),
        process("b", "where", worker="group"),
        process("crash", "exits", worker="group", interval=1.0),
        process("alone", "where"),
    )
    async with Hub(hub_settings, plugin_manager=manager) as hub:
        await eventually(lambda: hub.stats("crash").errors >= 1, 20, "the crash")
        before = {i: hub.stats(i).ok for i in ("a", "b")}
        await eventually(
            lambda: all(hub.stats(i).ok >= before[i] + 3 for i in ("a", "b")),
            20,
            "three runs of a and b after the crash",
        )
        latest = {i: {m.name: m.value for m in await hub.latest(i)} for i in ("a", "b", "alone")}
        crash_errors = {e.error for e in await hub.executions("crash", limit=20) if e.error}
        names = {w.name for w in hub.workers()}
    assert latest["a"]["pid"] == latest["b"]["pid"] != latest["alone"]["pid"]
    assert latest["a"]["pid"] != os.getpid() and latest["a"]["ppid"] == os.getpid()
    # The crash took the group's worker down: a and b were set up again in a new one.
    assert latest["a"]["setups"] == 1 and latest["b"]["setups"] == 1
    assert any("worker process 'group'" in e and "exited with status 1" in e for e in crash_errors)
    assert names == {"group", "alone"}


async def test_a_group_member_in_flight_when_another_times_out_fails_with_the_reason(
    manager: PluginManager, settings: Callable[..., Settings], tmp_path: Path
) -> None:
    hub_settings = settings(
        process(
            "waits", "cleans_up", worker="g", timeout=0.5, options={"mark": str(tmp_path / "m")}
        ),
        process("slow", "where", worker="g", interval=0.1, timeout=5.0, options={"delay": 1.0}),
    )
    async with Hub(hub_settings, plugin_manager=manager) as hub:

        async def errors() -> set[str | None]:
            executions = await hub.executions("slow", limit=20)
            return {e.error for e in executions if e.status.value == "error"}

        async def cut_short() -> bool:
            return bool(await errors())

        await eventually(cut_short, 20, "slow's run cut short, stored")
        (error,) = await errors()
    assert error is not None and error.startswith("WorkerLost: the worker process 'g'"), error
    assert "was stopped: collect() of 'waits' was given up" in error


async def test_a_worker_that_ends_before_it_is_ready_is_that_setups_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    started = time.monotonic()
    run = await run_plugin_async(isolation_plugins.Where, isolation="process")
    assert run.status is ExecutionStatus.ERROR
    assert "exited with status 1" in (run.error or "")
    assert time.monotonic() - started < 10  # not the 30 s start timeout


async def test_a_worker_starts_at_first_use_is_reused_and_stops_with_its_instance(
    manager: PluginManager, settings: Callable[..., Settings]
) -> None:
    hub_settings = settings(process("w", "where", interval=0.05))
    # A hub already big: a worker's peak memory is its own, not its parent's high-water
    # mark (which Linux carries over fork and exec in ru_maxrss).
    ballast = bytearray(b"\x01") * (300 * MB)
    async with Hub(hub_settings, plugin_manager=manager) as hub:
        await eventually(lambda: hub.stats("w").ok >= 5, 20, "five runs")
        pids = {m.value for m in await hub.latest("w") if m.name == "pid"}
        (first,) = hub.workers()
        assert first.pid in pids and first.starts == 1
        await hub.set_enabled("w", False)
        (stopped,) = hub.workers()
        assert stopped.pid is None
        assert not psutil.pid_exists(first.pid) or psutil.Process(first.pid).status() == "zombie"
        await hub.set_enabled("w", True)
        await eventually(lambda: hub.stats("w").ok >= 8, 20, "runs after enabling")
        (again,) = hub.workers()
        executions = await hub.executions("w", limit=3)
    assert again.pid not in (None, first.pid) and again.starts == 2 and again.losses == 0
    ran = [e for e in executions if e.status.value == "ok"]
    assert ran and all(e.cpu is not None and e.cpu >= 0 for e in ran)
    assert all(e.peak_rss and 5 * MB < e.peak_rss < 200 * MB for e in ran), ran
    assert len(ballast) == 300 * MB
    # The worker ended with the hub.
    assert not psutil.pid_exists(again.pid) or psutil.Process(again.pid).status() == "zombie"


async def test_secrets_reach_the_worker_over_its_pipe_not_its_environment_or_arguments(
    manager: PluginManager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-token-value"
    config = tmp_path / "homelab.toml"
    config.write_text(
        f'[database]\nurl = "sqlite://{tmp_path / "h.db"}"\n[scheduler]\njitter = 0\n'
        '[plugins.s]\ntype = "where"\nisolation = "process"\nsay = "hello"\n',
        encoding="utf-8",
    )
    environ = {**os.environ, "HOMELAB_PLUGINS__S__TOKEN": secret}
    hub_settings = load_settings(config, environ=environ)
    os.environ["HOMELAB_PLUGINS__S__TOKEN"] = secret  # as if the hub's own environment
    try:
        with caplog.at_level(logging.WARNING, logger="homelab.plugin.s"):
            async with Hub(hub_settings, plugin_manager=manager) as hub:
                await eventually(lambda: hub.stats("s").ok >= 1, 20, "a run")
                (worker,) = hub.workers()
                assert worker.pid is not None
                environment = await anyio.Path(f"/proc/{worker.pid}/environ").read_bytes()
                arguments = await anyio.Path(f"/proc/{worker.pid}/cmdline").read_bytes()
                values = {m.name: m.value for m in await hub.latest("s")}
    finally:
        del os.environ["HOMELAB_PLUGINS__S__TOKEN"]
    assert values["token_length"] == len(secret)
    assert secret.encode() not in environment and secret.encode() not in arguments
    assert b"HOMELAB_" not in environment
    # The plugin's log line came back to the hub's logger, with the secret redacted.
    lines = [r.getMessage() for r in caplog.records if r.name == "homelab.plugin.s"]
    assert any(line.startswith("hello (token ") for line in lines), lines
    assert not any(secret in line for line in lines)


def test_kill_9_of_the_server_leaves_no_worker_behind(tmp_path: Path) -> None:
    config = (
        f'[database]\nurl = "{sqlite_url(tmp_path)}"\n\n[scheduler]\njitter = 0\n\n'
        '[plugins.one]\ntype = "tcp"\nisolation = "process"\nhost = "127.0.0.1"\nport = 1\n'
        "interval = 0.2\n\n"
        '[plugins.two]\ntype = "system"\nworker = "shared"\ninterval = 0.5\n'
    )
    with live_server(tmp_path, config=config) as server:
        deadline = time.monotonic() + 30
        workers: list[psutil.Process] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = workers_of(server.process.pid)
            time.sleep(0.05)
        assert len(workers) == 2, "two worker processes: one instance's, one group's"
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert 'homelab_core_worker_starts_total{worker="shared"} 1' in metrics
        assert "homelab_core_workers 2" in metrics
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        gone_by = time.monotonic() + 2.0
        while time.monotonic() < gone_by and any(w.is_running() for w in workers):
            time.sleep(0.02)
        left = [w.pid for w in workers if w.is_running() and w.status() != "zombie"]
    assert left == [], f"worker processes {left} outlived the server by 2 s"


def test_a_stopped_server_stops_its_workers(tmp_path: Path) -> None:
    config = (
        f'[database]\nurl = "{sqlite_url(tmp_path)}"\n\n'
        '[plugins.one]\ntype = "system"\nisolation = "process"\ninterval = 0.2\n'
    )
    with live_server(tmp_path, config=config) as server:
        deadline = time.monotonic() + 30
        workers: list[psutil.Process] = []
        while not workers and time.monotonic() < deadline:
            workers = workers_of(server.process.pid)
            time.sleep(0.05)
        assert workers
        assert server.stop(signal.SIGTERM) == 0
    assert not any(w.is_running() and w.status() != "zombie" for w in workers)


async def test_run_once_and_the_test_kit_honour_isolation() -> None:
    run = await run_plugin_async(isolation_plugins.Where, isolation="process")
    assert run.ok, run.error
    assert run.value("pid") != os.getpid() and run.value("ppid") == os.getpid()
    assert run.execution.cpu is not None and run.execution.peak_rss
    in_process = await run_plugin_async(isolation_plugins.Where)
    assert in_process.value("pid") == os.getpid() and in_process.execution.cpu is None
    with use_isolation("process"):
        assert (await run_plugin_async(isolation_plugins.Where)).value("pid") != os.getpid()


async def test_a_test_clock_is_seen_in_the_worker() -> None:
    clock = Clock(start=1_800_000_000.0)
    async with PluginHarness(isolation_plugins.Where, clock=clock, isolation="process") as h:
        first = await h.run()
        clock.advance(60)
        second = await h.run()
    assert first.value("now") == 1_800_000_000.0
    assert second.value("now") == 1_800_000_060.0
    assert second.metric("now").timestamp == 1_800_000_060.0


def test_homelab_run_once_runs_an_isolated_instance_in_a_worker(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from homelab_core.cli import cli

    config = tmp_path / "homelab.toml"
    config.write_text(
        '[plugins.w]\ntype = "system"\nisolation = "process"\nmemory_limit = "256MB"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["run", "w", "--once", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert '"status": "ok"' in result.output
    assert '"worker"' in result.output and '"peak_rss_bytes"' in result.output


class _Local(Plugin):
    name = "local"

    def collect(self) -> list[Metric]:
        return []


async def test_a_plugin_a_worker_cannot_import_is_refused_with_the_reason() -> None:
    def local_type() -> type[Plugin]:
        class Inner(Plugin):
            name = "inner"

            def collect(self) -> list[Metric]:
                return []

        return Inner

    async with Scheduler(SchedulerSettings()) as scheduler:
        with pytest.raises(InvalidArgumentError) as caught:
            scheduler.add("x", make(local_type(), "x"), interval=1.0, isolation=Isolation())
        message = str(caught.value)
        assert "plugin instance 'x'" in message and "cannot run in a worker process" in message
        main_type = type("M", (Counter,), {"__module__": "__main__", "name": "m"})
        with pytest.raises(InvalidArgumentError, match="defined in the script being run"):
            scheduler.add("y", make(main_type, "y"), interval=1.0, isolation=Isolation())
        scheduler.add("z", make(_Local, "z"), interval=1.0, isolation=Isolation())


async def test_instances_sharing_a_worker_must_agree_on_its_memory_limit() -> None:
    async with Scheduler(SchedulerSettings()) as scheduler:
        scheduler.add("a", make(Counter, "a"), interval=1, isolation=Isolation("g", 100 * MB))
        with pytest.raises(InvalidArgumentError, match="worker 'g' is shared with 'a'"):
            scheduler.add("b", make(Counter, "b"), interval=1, isolation=Isolation("g", 200 * MB))
        await scheduler.remove("a")
        scheduler.add("b", make(Counter, "b"), interval=1, isolation=Isolation("g", 200 * MB))


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"isolation": "thread"}, "isolation", "expected 'none' or 'process'"),
        ({"worker": "Bad Name"}, "worker", "expected a worker name"),
        ({"memory_limit": "lots"}, "memory_limit", 'expected a size such as "256MB"'),
        ({"memory_limit": "16MB"}, "memory_limit", "below the smallest limit, 48 MiB"),
        ({"isolation": "none", "worker": "g"}, "worker", "needs isolation = 'process'"),
    ],
)
def test_bad_isolation_keys_are_named(body: dict[str, Any], field: str, message: str) -> None:
    from homelab_core.config import settings_from_mapping

    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"plugins": {"x": {"type": "system", **body}}}, source="h.toml")
    assert caught.value.field == field and message in str(caught.value)
    assert "[plugins.x]" in str(caught.value)


def test_which_instances_are_isolated() -> None:
    from homelab_core.config import isolation_for, settings_from_mapping

    settings = settings_from_mapping(
        {
            "scheduler": {"isolated_types": ["command"]},
            "plugins": {
                "plain": {"type": "system"},
                "cmd": {"type": "command", "command": ["true"]},
                "cmd-in": {"type": "command", "command": ["true"], "isolation": "none"},
                "named": {"type": "system", "worker": "g"},
                "limited": {"type": "system", "memory_limit": "1GiB"},
            },
        }
    )
    scheduler, plugins = settings.scheduler, settings.plugins
    assert isolation_for(plugins["plain"], scheduler) is None
    assert isolation_for(plugins["cmd"], scheduler) == Isolation()
    assert isolation_for(plugins["cmd-in"], scheduler) is None
    assert isolation_for(plugins["named"], scheduler) == Isolation(worker="g")
    assert isolation_for(plugins["limited"], scheduler) == Isolation(memory_limit=1 << 30)
    everything = settings_from_mapping(
        {"scheduler": {"isolation": "process"}, "plugins": {"p": {"type": "system"}}}
    )
    assert isolation_for(everything.plugins["p"], everything.scheduler) == Isolation()


async def test_a_plugin_print_does_not_disturb_the_protocol(
    manager: PluginManager, settings: Callable[..., Settings]
) -> None:
    hub_settings = settings(
        InstanceSettings(
            id="p", type="where", isolation="process", interval=0.05, options={"say": "x"}
        )
    )
    async with Hub(hub_settings, plugin_manager=manager) as hub:
        await eventually(lambda: hub.stats("p").ok >= 5, 20, "five runs")
        assert hub.stats("p").errors == 0
        (worker,) = hub.workers()
        assert worker.losses == 0


def test_the_worker_module_is_small() -> None:
    """A worker imports neither the store, the web, nor the alerting: only its plugin's
    needs (what keeps an idle worker near 25 MB; bench/isolation.py measures it)."""
    import subprocess

    code = (
        "import sys, homelab_core.isolation.worker, homelab_core.isolation.wire;"
        "print(' '.join(sorted(sys.modules)))"
    )
    modules = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    for heavy in ("tortoise", "aiocache", "quart", "httpx", "croniter", "homelab_core.hub"):
        assert heavy not in modules, heavy


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_isolation_works_on_trio_too() -> None:
    results: list[Any] = []

    async def sink(result: Any) -> None:
        if result.execution is not None:
            results.append(result)

    async with Scheduler(SchedulerSettings(jitter=0), sink=sink) as scheduler:
        scheduler.add("w", make(isolation_plugins.Where, "w"), interval=0.1, isolation=Isolation())
        scheduler.add("x", make(isolation_plugins.Exits, "x"), interval=0.1, isolation=Isolation())
        await eventually(
            lambda: (
                {r.instance_id for r in results if r.execution.status.value != "skipped"}
                == {"w", "x"}
            ),
            20,
            "runs of both",
        )
    ran = {r.instance_id: r for r in results if r.execution.status.value != "skipped"}
    assert ran["w"].execution.status is ExecutionStatus.OK
    assert ran["w"].metrics[0].value != os.getpid()
    assert "exited with status 1" in (ran["x"].execution.error or "")


async def test_an_instance_made_through_the_api_can_be_isolated_and_changed_back(
    manager: PluginManager, settings: Callable[..., Settings]
) -> None:
    async with Hub(settings(), plugin_manager=manager) as hub:
        await hub.create_instance("w", {"type": "where", "interval": 0.05, "worker": "api"})
        await eventually(lambda: hub.stats("w").ok >= 2, 20, "runs in the worker")
        pid = {m.name: m.value for m in await hub.latest("w")}["pid"]
        assert pid != os.getpid() and [w.name for w in hub.workers()] == ["api"]
        await hub.update_instance("w", {"worker": None})
        await eventually(
            lambda: hub.stats("w").ok >= 2 and not any(w.pid for w in hub.workers()),
            20,
            "runs in process, the worker gone",
        )

        async def in_process() -> bool:
            return {m.name: m.value for m in await hub.latest("w")}["pid"] == os.getpid()

        await eventually(in_process, 20, "a run in the hub's process")
        with pytest.raises(
            InvalidArgumentError, match=r"\[plugins.w\] memory_limit: expected a size"
        ):
            await hub.update_instance("w", {"memory_limit": "tiny"})


async def test_an_instance_stopped_while_its_worker_starts_leaves_no_worker(
    manager: PluginManager, settings: Callable[..., Settings]
) -> None:
    hub_settings = settings(process("w", "where"))
    async with Hub(hub_settings, plugin_manager=manager) as hub:
        await anyio.sleep(0.05)  # the worker is starting (it takes about 0.3 s)
        await hub.set_enabled("w", False)
        await anyio.sleep(0.5)
        assert [w.pid for w in hub.workers()] == [None]
        assert workers_of(os.getpid()) == []
