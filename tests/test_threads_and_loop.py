"""Worker threads that hang, async plugins that block the event loop, a scheduler that stops.

Real time, the real scheduler and hub; every hung thread is released when its test ends.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sample_plugins import make
from test_scheduler import until

from homelab_core import (
    ExecutionStatus,
    HealthState,
    Hub,
    InstanceSettings,
    Metric,
    Plugin,
    PluginManager,
    RunResult,
    Scheduler,
    hookimpl,
)
from homelab_core.config import SchedulerSettings

pytestmark = pytest.mark.anyio

#: Set at the end of every test: releases every thread a test left hanging.
RELEASE = threading.Event()


@pytest.fixture(autouse=True)
def release_threads() -> Iterator[None]:
    RELEASE.clear()
    yield
    RELEASE.set()


class HangsInSetup(Plugin):
    """A sync ``setup()`` that hangs until the test ends."""

    name = "hangs_in_setup"

    def setup(self) -> None:
        RELEASE.wait(30)

    def collect(self) -> list[Metric]:
        return [Metric("never", 1)]


class HangsInCollect(Plugin):
    """A sync ``collect()`` that hangs until the test ends."""

    name = "hangs_in_collect"

    def collect(self) -> list[Metric]:
        RELEASE.wait(30)
        return [Metric("late", 1)]


class SyncCounter(Plugin):
    """A healthy sync plugin: needs a worker thread for every run."""

    name = "sync_counter"
    runs = 0

    def collect(self) -> list[Metric]:
        type(self).runs += 1
        return [Metric("n", type(self).runs)]


class BlocksTheLoop(Plugin):
    """An async ``collect()`` that blocks the event loop with a sync sleep."""

    name = "blocks_the_loop"
    seconds = 0.0

    async def collect(self) -> list[Metric]:
        time.sleep(self.seconds)  # noqa: ASYNC251 - the bug under test
        return [Metric("blocked", 1)]


class AsyncCounter(Plugin):
    name = "async_counter"

    async def collect(self) -> list[Metric]:
        return [Metric("n", 1)]


class Results:
    def __init__(self) -> None:
        self.items: list[RunResult] = []

    async def __call__(self, result: RunResult) -> None:
        self.items.append(result)

    def of(self, instance_id: str) -> list[RunResult]:
        return [r for r in self.items if r.instance_id == instance_id and r.execution]


def settings(**kwargs: Any) -> SchedulerSettings:
    kwargs.setdefault("jitter", 0.0)
    kwargs.setdefault("setup_retry", [0.05])
    kwargs.setdefault("teardown_timeout", 0.2)
    return SchedulerSettings(**kwargs)


def plugin_threads() -> int:
    return threading.active_count()


@hookimpl
def register_plugins(register: Any) -> None:
    for plugin_type in (HangsInCollect, BlocksTheLoop, AsyncCounter):
        register(plugin_type)


@pytest.fixture
def hub_plugins(manager: PluginManager) -> PluginManager:
    manager.register(sys.modules[__name__], name="test_threads_and_loop")
    return manager


# -- 4. worker threads starve and leak -------------------------------------------------------


async def test_hung_setups_never_starve_other_instances_of_threads() -> None:
    """45 hung sync setups (more than anyio's 40 default worker tokens) beside a healthy
    sync instance: the healthy one keeps running."""
    SyncCounter.runs = 0
    scheduler = Scheduler(settings())
    for n in range(45):
        scheduler.add(f"hung{n}", make(HangsInSetup), interval=0.1, timeout=0.1)
    async with scheduler:
        await anyio.sleep(0.6)  # every hung setup timed out and waits to be retried
        before = SyncCounter.runs
        scheduler.add("healthy", make(SyncCounter), interval=0.05, timeout=1)
        await anyio.sleep(0.8)
    assert before == 0
    assert SyncCounter.runs >= 5, f"the healthy instance ran {SyncCounter.runs} times"


async def test_disable_enable_of_a_hung_instance_leaks_no_threads() -> None:
    scheduler = Scheduler(settings())
    scheduler.add("hung", make(HangsInCollect), interval=0.05, timeout=0.1)
    async with scheduler:
        await anyio.sleep(0.3)  # the first collect hangs, its thread is abandoned
        assert scheduler.busy("hung")
        threads = plugin_threads()
        for _ in range(30):
            await scheduler.set_enabled("hung", False)
            await scheduler.set_enabled("hung", True)
            await anyio.sleep(0.01)
        await anyio.sleep(0.2)
        grown = plugin_threads() - threads
        health = scheduler.health("hung")
    assert grown <= 2, f"{grown} more threads after 30 disable/enable cycles"
    # Not set up again while its thread still hangs, and its health says so.
    assert "worker thread" in health.message, health
    assert health.state is not HealthState.OK


async def test_an_instance_is_set_up_again_once_its_hung_thread_returns() -> None:
    results = Results()
    scheduler = Scheduler(settings(), sink=results)
    scheduler.add("hung", make(HangsInCollect), interval=0.05, timeout=0.1)
    async with scheduler:
        await anyio.sleep(0.3)
        await scheduler.set_enabled("hung", False)
        await scheduler.set_enabled("hung", True)
        await anyio.sleep(0.2)
        assert scheduler.state("hung").state.value == "setting_up"
        RELEASE.set()
        await until(lambda: scheduler.state("hung").state.value == "ready", limit=3)


async def test_abandoned_threads_are_counted_on_metrics(
    make_settings: Any, hub_plugins: PluginManager
) -> None:
    hub = Hub(
        make_settings(
            InstanceSettings(id="hung", type="hangs_in_collect", interval=0.05, timeout=0.1)
        ),
        plugin_manager=hub_plugins,
    )
    async with hub:
        await until(lambda: hub.counters().get("threads_abandoned"), limit=3)
        assert hub.counters()["threads_abandoned"] == 1
        RELEASE.set()
        await until(lambda: not hub.counters()["threads_abandoned"], limit=3)


# -- 6. a blocking async plugin ---------------------------------------------------------------


async def test_a_plugin_blocking_the_loop_past_its_timeout_is_a_timeout_of_its_own() -> None:
    results = Results()
    scheduler = Scheduler(settings(loop_stall_threshold=0.1), sink=results)
    scheduler.add("blocker", make(BlocksTheLoop), interval=0.4, timeout=0.2)
    scheduler.plugin("blocker").seconds = 0.5  # type: ignore[attr-defined]
    scheduler.add("healthy", make(AsyncCounter), interval=0.05, timeout=1)
    async with scheduler:
        await until(lambda: results.of("blocker"), limit=5)
        await anyio.sleep(0.3)
    execution = results.of("blocker")[0].execution
    assert execution is not None
    assert execution.status is ExecutionStatus.TIMEOUT, execution
    assert "blocked the event loop" in (execution.error or ""), execution
    assert scheduler.health("blocker").state is not HealthState.OK
    # The healthy instance's missed ticks name the instance that held the loop.
    late = [
        r.execution
        for r in results.of("healthy")
        if r.execution and r.execution.status is ExecutionStatus.SKIPPED
    ]
    assert late, "the healthy instance missed no tick while the loop was blocked"
    assert all("blocker" in (e.error or "") for e in late), late
    assert scheduler.health("healthy").state is HealthState.OK


async def test_a_short_block_keeps_the_metrics_and_degrades_health() -> None:
    results = Results()
    scheduler = Scheduler(settings(loop_stall_threshold=0.1), sink=results)
    scheduler.add("blocker", make(BlocksTheLoop), interval=5, timeout=2)
    scheduler.plugin("blocker").seconds = 0.4  # type: ignore[attr-defined]
    async with scheduler:
        await until(lambda: results.of("blocker"), limit=5)
    result = results.of("blocker")[0]
    assert result.execution is not None
    assert result.execution.status is ExecutionStatus.OK
    assert [m.name for m in result.metrics] == ["blocked"]
    assert "blocked the event loop" in (result.execution.error or "")
    assert result.health.state is HealthState.DEGRADED
    assert "blocked the event loop" in result.health.message
    assert "sync" in result.health.message  # says where blocking code belongs
    assert scheduler.loop_stalls() == 1


class ShortBlocks(Plugin):
    """An async collect that holds the loop for 20 ms: many at once make it late."""

    name = "short_blocks"

    async def collect(self) -> list[Metric]:
        time.sleep(0.02)  # noqa: ASYNC251 - each one short; together they fill the loop
        return [Metric("n", 1)]


async def test_a_busy_loop_that_no_instance_holds_blames_nobody() -> None:
    """Thirty runs started at once each hold the loop for 20 ms: it is 0.6 s late, but no
    one call held it, so no instance is charged (only the lateness is counted)."""
    results = Results()
    scheduler = Scheduler(settings(loop_stall_threshold=0.1), sink=results)
    ids = [f"short{n}" for n in range(30)]
    for instance_id in ids:
        scheduler.add(instance_id, make(ShortBlocks), interval=60, timeout=5)
    async with scheduler:
        await until(lambda: all(results.of(i) for i in ids), limit=10)  # one at a time
        async with anyio.create_task_group() as tg:
            for instance_id in ids:  # all ready in the same turn of the loop
                tg.start_soon(scheduler.run_now, instance_id)
    assert all(len(results.of(i)) == 2 for i in ids)
    executions = [r.execution for r in results.items if r.execution is not None]
    blamed = [e for e in executions if "blocked the event loop" in (e.error or "")]
    assert not blamed, blamed[:3]
    assert all(scheduler.health(f"short{n}").state is HealthState.OK for n in range(30))
    assert scheduler.loop_stalls() >= 1


async def test_loop_stalls_are_counted_on_metrics(
    make_settings: Any, hub_plugins: PluginManager
) -> None:
    hub = Hub(
        make_settings(
            InstanceSettings(id="blocker", type="blocks_the_loop", interval=5),
            scheduler=settings(loop_stall_threshold=0.1),
        ),
        plugin_manager=hub_plugins,
    )
    BlocksTheLoop.seconds = 0.3
    try:
        async with hub:
            await until(lambda: hub.counters().get("loop_stalls"), limit=5)
            assert hub.health("blocker").state is HealthState.DEGRADED
    finally:
        BlocksTheLoop.seconds = 0.0
    assert hub.counters()["loop_stalls"] == 1
    assert hub.counters()["loop_stalled_seconds"] >= 0.2


# -- 3. the scheduler itself stopping ------------------------------------------------------------


async def test_readiness_and_the_log_say_when_the_scheduler_stops(
    make_settings: Any,
    hub_plugins: PluginManager,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from homelab_core import scheduler as scheduler_module

    hub = Hub(
        make_settings(InstanceSettings(id="n", type="async_counter", interval=0.05)),
        plugin_manager=hub_plugins,
    )
    async with hub:
        assert (await hub.readiness()).ready

        def broken(*args: Any) -> None:
            raise RuntimeError("a bug in the timer")

        monkeypatch.setattr(scheduler_module.heapq, "heapreplace", broken)
        await until(lambda: not hub.scheduler.running)
        readiness = await hub.readiness()
    assert not readiness.ready
    assert "a bug in the timer" in readiness.scheduler_error
    assert readiness.reason == "the scheduler is not running: RuntimeError: a bug in the timer"
    assert any("scheduler stopped" in r.getMessage() for r in caplog.records), caplog.text


# -- 5. SIGTERM with a hung sync plugin -------------------------------------------------------

HUNG_PLUGINS = """\
import threading

from homelab_core import Metric, Plugin, hookimpl


class HangsForever(Plugin):
    name = "hangs_forever"

    def collect(self):
        threading.Event().wait()
        return []


class HangsInTeardown(Plugin):
    name = "hangs_in_teardown"

    def collect(self):
        return [Metric("fine", 1)]

    def teardown(self):
        threading.Event().wait()


@hookimpl
def register_plugins(register):
    register(HangsForever)
    register(HangsInTeardown)
"""


def test_sigterm_exits_in_bounded_time_naming_the_abandoned_threads(tmp_path: Path) -> None:
    from live_server import live_server
    from test_entry_points import ROOT, write_dist

    site = tmp_path / "site"
    site.mkdir()
    (site / "hung_plugins.py").write_text(HUNG_PLUGINS, encoding="utf-8")
    write_dist(site, "hung-plugins", {"hung": "hung_plugins"})
    config = (
        "[scheduler]\njitter = 0\nteardown_timeout = 1\n\n"
        "[store]\nflush_interval = 60\n\n"  # samples wait in the queue until shutdown
        '[plugins.stuck]\ntype = "hangs_forever"\ninterval = 1\ntimeout = 0.3\n\n'
        '[plugins.stuck_teardown]\ntype = "hangs_in_teardown"\ninterval = 0.2\n'
    )
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    with live_server(tmp_path / "run", config=config, env=env) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                body = http.get("/api/plugins/stuck/status").json()
                if "timed out" in (body["last_error"] or ""):
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"no timed-out run of 'stuck': {body}")
            latest = http.get("/api/plugins/stuck_teardown/metrics").json()
        started = time.monotonic()
        code = server.stop(signal.SIGTERM, timeout=25)
        took = time.monotonic() - started
        stderr = server.stderr()
    assert latest, "stuck_teardown collected nothing"
    assert code == 0, stderr
    assert took < 20, f"took {took:.1f} s to exit"
    assert "abandoned" in stderr and "stuck" in stderr, stderr
    assert "stuck_teardown" in stderr, stderr  # its teardown timed out and was left
    with closing(sqlite3.connect(server.database)) as db, db:
        (fine,) = db.execute("SELECT COUNT(*) FROM homelab_head").fetchone()
    db.close()
    assert fine >= 1, "the queued samples were not written before exit"
