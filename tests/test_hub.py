"""The hub with real time and a real SQLite file."""

from __future__ import annotations

import gc
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sample_plugins
from sample_plugins import Blocks
from tortoise import Tortoise

from homelab_core import (
    ConfigError,
    Execution,
    ExecutionStatus,
    Health,
    HealthState,
    Hub,
    InstanceChanged,
    InstanceSettings,
    InstanceState,
    Metric,
    PluginManager,
    UnknownInstanceError,
    hookimpl,
)
from homelab_core.config import StoreSettings, load_settings
from homelab_core.instances import build_instance
from homelab_core.options import REDACTED

pytestmark = pytest.mark.anyio

Build = Callable[..., Any]


def db_rows(settings: Any, query: str) -> list[tuple[Any, ...]]:
    path = settings.database.url.removeprefix("sqlite://")
    with closing(sqlite3.connect(path)) as conn, conn:
        return conn.execute(query).fetchall()


async def test_misbehaving_plugins_leave_others_on_schedule(
    manager: PluginManager, make_settings: Build
) -> None:
    Blocks.release.clear()
    settings = make_settings(
        InstanceSettings(id="healthy", type="counter", interval=0.1),
        InstanceSettings(id="raises", type="raises", interval=0.1),
        InstanceSettings(id="hangs", type="hangs", interval=0.3, timeout=0.1),
        InstanceSettings(id="blocks", type="blocks", interval=0.1, timeout=0.15),
        InstanceSettings(id="no-setup", type="fails_setup", interval=0.1),
    )
    try:
        async with Hub(settings, plugin_manager=manager) as hub:
            await anyio.sleep(1.05)
            stats = hub.stats("healthy")
            states = {i.id: i.health.state for i in hub.instances()}
    finally:
        Blocks.release.set()
    assert 9 <= stats.ok <= 12
    assert stats.errors == stats.timeouts == stats.skipped == 0
    assert states["healthy"] is HealthState.OK
    assert states["raises"] is HealthState.FAILING

    by_instance: dict[str, list[tuple[str, str, float]]] = {}
    for instance_id, status, trigger, lag in db_rows(
        settings, "SELECT instance_id, status, trigger, lag FROM homelab_execution ORDER BY id"
    ):
        by_instance.setdefault(instance_id, []).append((status, trigger, lag))
    healthy = by_instance["healthy"]
    assert {s for s, _, _ in healthy} == {"ok"}
    # On schedule: most starts within a few ms; none pushed back by a whole interval, even
    # on a busy two-core machine.
    lags = sorted(lag for _, _, lag in healthy)
    assert lags[len(lags) // 2] < 0.02
    assert lags[-1] < 0.1
    assert {s for s, _, _ in by_instance["raises"]} == {"error"}
    assert {s for s, _, _ in by_instance["hangs"]} == {"timeout"}
    assert {"timeout", "skipped"} <= {s for s, _, _ in by_instance["blocks"]}
    no_setup = by_instance["no-setup"]
    assert [(s, t) for s, t, _ in no_setup[:2]] == [("error", "setup"), ("error", "setup")]
    assert ("ok", "schedule") in [(s, t) for s, t, _ in no_setup]


async def test_stopping_the_hub_writes_every_queued_sample(
    manager: PluginManager, make_settings: Build
) -> None:
    settings = make_settings(
        InstanceSettings(id="a", type="counter", interval=0.02, options={"series": 50}),
        InstanceSettings(id="b", type="counter", interval=0.03, options={"series": 20}),
        store=StoreSettings(flush_interval=3600, batch_size=1_000_000),
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        await anyio.sleep(0.5)
        produced = hub.stats("a").ok * 50 + hub.stats("b").ok * 20
        assert hub.queue.pending_samples > 0
    assert produced > 500
    [(stored,)] = db_rows(settings, "SELECT COUNT(*) FROM homelab_head")
    # Runs that finished while the hub stopped are in too; nothing queued was lost.
    assert stored >= produced
    assert stored == hub.store.samples_written
    assert hub.queue.dropped_samples == 0
    [(executions,)] = db_rows(settings, "SELECT COUNT(*) FROM homelab_execution")
    assert executions >= hub.stats("a").runs + hub.stats("b").runs


async def test_full_write_queue_drops_and_counts(
    manager: PluginManager, make_settings: Build
) -> None:
    settings = make_settings(
        InstanceSettings(id="a", type="counter", interval=0.02, options={"series": 40}),
        store=StoreSettings(flush_interval=3600, batch_size=1_000_000, queue_size=100),
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        await anyio.sleep(0.3)
        produced = hub.stats("a").ok * 40
        counters = hub.counters()
    assert counters["samples_dropped"] > 0
    [(stored,)] = db_rows(settings, "SELECT COUNT(*) FROM homelab_head")
    assert stored + hub.queue.dropped_samples >= produced
    assert stored == 80


async def test_hub_embeds_beside_an_application_using_tortoise(
    manager: PluginManager, make_settings: Build, tmp_path: Path
) -> None:
    await Tortoise.init(
        db_url=f"sqlite://{tmp_path / 'host.db'}", modules={"models": ["host_models"]}
    )
    try:
        await Tortoise.generate_schemas()
        from host_models import Note

        await Note.create(text="before the hub")
        settings = make_settings(InstanceSettings(id="c", type="counter", interval=0.05))
        async with Hub(settings, plugin_manager=manager) as hub:
            await Note.create(text="while the hub runs")
            await anyio.sleep(0.2)
            await hub.flush()
            history = await hub.history("c", "count", since=time.time() - 60)
            assert history and history[0].points
            assert await Note.all().count() == 2
            executions = await hub.executions("c")
            assert executions
        await Note.create(text="after the hub")
        assert [n.text for n in await Note.all().order_by("id")] == [
            "before the hub",
            "while the hub runs",
            "after the hub",
        ]
        tables = {r[0] for r in db_rows(settings, "SELECT name FROM sqlite_master")}
        assert "host_note" not in tables
        host = sqlite3.connect(tmp_path / "host.db")
        host_tables = {r[0] for r in host.execute("SELECT name FROM sqlite_master")}
        host.close()
        assert "homelab_head" not in host_tables
    finally:
        await Tortoise.close_connections()


async def test_enabled_state_survives_a_restart(
    manager: PluginManager, make_settings: Build
) -> None:
    settings = make_settings(InstanceSettings(id="c", type="counter", interval=10))
    async with Hub(settings, plugin_manager=manager) as hub:
        info = await hub.set_enabled("c", False)
        assert not info.enabled
        assert info.health.state is HealthState.DISABLED
    async with Hub(settings, plugin_manager=manager) as hub:
        assert not hub.instance("c").enabled
        assert hub.health("c").state is HealthState.DISABLED


async def test_a_changed_enabled_in_the_config_file_wins_over_the_store(
    manager: PluginManager, make_settings: Build
) -> None:
    settings = make_settings(InstanceSettings(id="c", type="counter", interval=10))
    async with Hub(settings, plugin_manager=manager) as hub:
        await hub.set_enabled("c", False)
    settings.plugins["c"] = InstanceSettings(id="c", type="counter", interval=10, enabled=False)
    async with Hub(settings, plugin_manager=manager) as hub:
        await hub.set_enabled("c", True)
    async with Hub(settings, plugin_manager=manager) as hub:
        # The file still says false, as last time: the stored choice (true) stands.
        assert hub.instance("c").enabled
    settings.plugins["c"] = InstanceSettings(id="c", type="counter", interval=10, enabled=True)
    async with Hub(settings, plugin_manager=manager) as hub:
        assert hub.instance("c").enabled


async def test_secrets_are_redacted_in_every_output(
    manager: PluginManager, make_settings: Build
) -> None:
    settings = make_settings(
        InstanceSettings(id="c", type="counter", interval=10, options={"token": "hunter2"})
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        assert hub.instance("c").config["token"] == REDACTED
        assert "hunter2" not in repr(hub.instance("c").to_dict())
        assert hub.plugin_type("c").name == "counter"
    dump = "\n".join(
        line for line in sqlite3.connect(settings.database.url.removeprefix("sqlite://")).iterdump()
    )
    assert "hunter2" not in dump


async def test_run_now_and_latest_values(manager: PluginManager, make_settings: Build) -> None:
    settings = make_settings(
        InstanceSettings(id="c", type="counter", interval=60, options={"series": 2})
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        await anyio.sleep(0.05)
        execution = await hub.run_now("c")
        assert execution.status is ExecutionStatus.OK
        latest = await hub.latest("c")
        assert [(m.name, m.labels, m.value) for m in latest] == [
            ("count", {"series": "0"}, 2.0),
            ("count", {"series": "1"}, 2.0),
        ]


async def test_unknown_instance_ids_raise(manager: PluginManager, make_settings: Build) -> None:
    async with Hub(make_settings(), plugin_manager=manager) as hub:
        with pytest.raises(UnknownInstanceError, match="unknown plugin instance 'nope'"):
            hub.instance("nope")
        with pytest.raises(UnknownInstanceError):
            await hub.latest("nope")


async def test_unknown_plugin_type_names_the_table_and_field(
    manager: PluginManager, make_settings: Build
) -> None:
    settings = make_settings(InstanceSettings(id="x", type="nosuch"))
    with pytest.raises(ConfigError) as info:
        async with Hub(settings, plugin_manager=manager):
            pass
    assert "[plugins.x] type: unknown plugin type 'nosuch'" in str(info.value)
    assert "counter" in str(info.value)


async def test_bad_instance_option_names_the_field(
    manager: PluginManager, make_settings: Build
) -> None:
    settings = make_settings(InstanceSettings(id="c", type="counter", options={"series": "many"}))
    with pytest.raises(ConfigError, match=r"\[plugins.c\] series: expected int, got 'many'"):
        async with Hub(settings, plugin_manager=manager):
            pass


async def test_subscribers_receive_metrics_execution_and_status_events(
    manager: PluginManager, make_settings: Build
) -> None:
    settings = make_settings(InstanceSettings(id="c", type="counter", interval=0.05))
    async with Hub(settings, plugin_manager=manager) as hub, hub.subscribe() as sub:
        types = set()
        with anyio.fail_after(2):
            while len(types) < 3:
                types.add((await sub.receive()).type)
        assert types == {"metrics", "execution", "status"}
        await hub.set_enabled("c", False)
        kinds = []
        while True:
            try:
                kinds.append(sub.receive_nowait())
            except anyio.WouldBlock:
                break
        changes = [e for e in kinds if isinstance(e, InstanceChanged)]
        assert [(e.instance_id, e.enabled, e.state) for e in changes] == [
            ("c", False, InstanceState.DISABLED)
        ]


class HookRecorder:
    """A plugin that implements every event hook and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def hub_startup(self, hub: Hub) -> None:
        self.calls.append(("hub_startup", hub))

    @hookimpl
    async def hub_shutdown(self, hub: Hub) -> None:
        await anyio.lowlevel.checkpoint()
        self.calls.append(("hub_shutdown", hub))

    @hookimpl
    async def metrics_collected(self, instance_id: str, metrics: Sequence[Metric]) -> None:
        self.calls.append(("metrics_collected", (instance_id, len(metrics))))

    @hookimpl
    def health_changed(self, instance_id: str, old: Health, new: Health) -> None:
        self.calls.append(("health_changed", (instance_id, old.state, new.state)))

    @hookimpl
    def execution_finished(self, execution: Execution) -> None:
        self.calls.append(("execution_finished", execution.status))


class BrokenHooks:
    @hookimpl
    def metrics_collected(self, instance_id: str, metrics: Sequence[Metric]) -> None:
        raise RuntimeError("exporter down")


async def run_with_hooks(manager: PluginManager, make_settings: Build) -> tuple[Hub, HookRecorder]:
    recorder = HookRecorder()
    manager.register(recorder, name="recorder")
    manager.register(BrokenHooks(), name="broken")
    settings = make_settings(
        InstanceSettings(id="c", type="counter", interval=0.05, options={"series": 3})
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        await anyio.sleep(0.12)
    return hub, recorder


async def test_hook_hub_startup(manager: PluginManager, make_settings: Build) -> None:
    hub, recorder = await run_with_hooks(manager, make_settings)
    assert recorder.calls[0] == ("hub_startup", hub)


async def test_hook_hub_shutdown(manager: PluginManager, make_settings: Build) -> None:
    hub, recorder = await run_with_hooks(manager, make_settings)
    assert recorder.calls[-1] == ("hub_shutdown", hub)


async def test_hook_metrics_collected(manager: PluginManager, make_settings: Build) -> None:
    _, recorder = await run_with_hooks(manager, make_settings)
    collected = [args for name, args in recorder.calls if name == "metrics_collected"]
    # The broken exporter raised every time; the recorder was still called.
    assert len(collected) >= 2
    assert set(collected) == {("c", 3)}


async def test_hook_health_changed(manager: PluginManager, make_settings: Build) -> None:
    _, recorder = await run_with_hooks(manager, make_settings)
    changes = [args for name, args in recorder.calls if name == "health_changed"]
    assert changes == [("c", HealthState.UNKNOWN, HealthState.OK)]


async def test_hook_execution_finished(manager: PluginManager, make_settings: Build) -> None:
    _, recorder = await run_with_hooks(manager, make_settings)
    statuses = [args for name, args in recorder.calls if name == "execution_finished"]
    assert len(statuses) >= 2
    assert set(statuses) == {ExecutionStatus.OK}


async def test_plugin_module_registration(make_settings: Build) -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(sample_plugins, name="sample_plugins")
    assert set(manager.plugin_types()) >= {"counter", "raises", "hangs"}
    assert manager.source_of("counter") == "sample_plugins"


async def test_hub_runs_on_postgresql_and_keeps_every_sample(
    manager: PluginManager, make_settings: Build, postgres_url: str
) -> None:
    settings = make_settings(
        InstanceSettings(id="c", type="counter", interval=0.02, options={"series": 10}),
        store=StoreSettings(flush_interval=3600, batch_size=1_000_000),
    )
    settings.database.url = postgres_url
    async with Hub(settings, plugin_manager=manager) as hub:
        await anyio.sleep(0.3)
        await hub.set_enabled("c", False)
        produced = hub.stats("c").ok * 10
    async with Hub(settings, plugin_manager=manager) as hub:
        assert not hub.instance("c").enabled
        assert await hub.store.count_samples() == produced
        [series] = await hub.history("c", "count", since=time.time() - 60, labels={"series": "3"})
        assert series.points
        # Skipped runs (a late tick on a busy machine) are recorded too: count the ok ones.
        assert len(await hub.executions("c", status="ok", limit=1000)) == produced // 10


def test_instance_options_from_the_file_must_have_their_type() -> None:
    settings = InstanceSettings(id="c", type="counter", options={"series": "3"})
    with pytest.raises(ConfigError, match=r"\[plugins.c\] series: expected int, got '3'"):
        build_instance(settings, sample_plugins.Counter, default_timeout=5, source="h.toml")


def test_instance_options_from_the_environment_are_parsed_and_errors_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no homelab.toml: the embedded defaults apply
    env = {"HOMELAB_PLUGINS__C__SERIES": "3", "HOMELAB_PLUGINS__C__TYPE": "counter"}
    settings = load_settings(environ=env)
    plugin, _, _ = build_instance(settings.plugins["c"], sample_plugins.Counter, default_timeout=5)
    assert plugin.config.series == 3
    bad = load_settings(environ={**env, "HOMELAB_PLUGINS__C__SERIES": "three"})
    with pytest.raises(ConfigError) as info:
        build_instance(bad.plugins["c"], sample_plugins.Counter, default_timeout=5)
    assert str(info.value).endswith(
        "series: expected int, got 'three' (set by $HOMELAB_PLUGINS__C__SERIES)"
    )


def test_instance_timeout_defaults_to_the_interval_when_shorter() -> None:
    settings = InstanceSettings(id="c", type="counter", interval=2)
    _, interval, timeout = build_instance(settings, sample_plugins.Counter, default_timeout=30)
    assert (interval, timeout) == (2, 2)
    _, _, timeout = build_instance(
        InstanceSettings(id="c", type="counter", interval=60, timeout=7),
        sample_plugins.Counter,
        default_timeout=30,
    )
    assert timeout == 7


@pytest.mark.parametrize("threshold", [50_000, 0])
async def test_hub_tunes_the_garbage_collector_only_while_it_runs(
    manager: PluginManager, make_settings: Build, threshold: int
) -> None:
    settings = make_settings(InstanceSettings(id="c", type="counter", interval=0.05))
    settings.scheduler.gc_threshold = threshold
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    async with Hub(settings, plugin_manager=manager):
        if threshold:
            assert gc.get_threshold() == (threshold, *before[1:])
            assert gc.get_freeze_count() > 0
        else:
            assert gc.get_threshold() == before
            assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
