"""Instances at run time, in a real hub on a real SQLite file: created, changed and deleted
through the hub (as the API does), restored at start, and the file reloaded."""

from __future__ import annotations

import itertools
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from homelab_core import ConfigError, ConflictError, Hub, InvalidArgumentError, PluginManager
from homelab_core.config import load_settings
from homelab_core.options import REDACTED

pytestmark = pytest.mark.anyio

BASE = """
[scheduler]
jitter = 0
setup_retry = [0.05]
[store]
flush_interval = 0.05
[plugins.steady]
type = "counter"
interval = 0.1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "homelab.toml"
    db = tmp_path / "homelab.db"
    path.write_text(text + f'\n[database]\nurl = "sqlite://{db}"\n', "utf-8")
    return path


def hub_of(path: Path, manager: PluginManager) -> Hub:
    return Hub(load_settings(path), plugin_manager=manager)


async def runs_of(hub: Hub, instance_id: str, at_least: int) -> None:
    with anyio.fail_after(5):
        while hub.stats(instance_id).runs < at_least:  # noqa: ASYNC110 - polls the hub
            await anyio.sleep(0.02)


def rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    db = path.parent / "homelab.db"
    with closing(sqlite3.connect(db)) as conn, conn:
        return conn.execute(query).fetchall()


async def test_an_instance_made_at_run_time_runs_is_stored_and_comes_back(
    tmp_path: Path, manager: PluginManager
) -> None:
    path = write(tmp_path, BASE)
    async with hub_of(path, manager) as hub:
        info = await hub.create_instance(
            "extra", {"type": "counter", "interval": 0.1, "series": 2, "token": "t0p-secret"}
        )
        assert (info.source, info.config["token"], info.config["series"]) == ("api", REDACTED, 2)
        await runs_of(hub, "extra", 2)
        assert hub.instance("steady").source == "file"
    async with hub_of(path, manager) as hub:
        assert [i.id for i in hub.instances()] == ["steady", "extra"]
        assert hub.plugin_type("extra").name == "counter"
        assert hub.scheduler.plugin("extra").config.token == "t0p-secret"  # type: ignore[attr-defined]
        await runs_of(hub, "extra", 1)


async def test_bad_input_is_refused_with_the_files_messages(
    tmp_path: Path, manager: PluginManager
) -> None:
    async with hub_of(write(tmp_path, BASE), manager) as hub:
        with pytest.raises(InvalidArgumentError, match=r"^\[plugins.x\] series: expected int"):
            await hub.create_instance("x", {"type": "counter", "series": "many"})
        with pytest.raises(InvalidArgumentError, match=r"\[plugins.x\] type: unknown plugin type"):
            await hub.create_instance("x", {"type": "nope"})
        with pytest.raises(InvalidArgumentError, match=r"\[plugins.x\] interval: expected a pos"):
            await hub.create_instance("x", {"type": "counter", "interval": -1})
        with pytest.raises(InvalidArgumentError, match="lowercase slug"):
            await hub.create_instance("Not A Slug", {"type": "counter"})
        with pytest.raises(ConflictError, match="taken"):
            await hub.create_instance("steady", {"type": "counter"})
        assert [i.id for i in hub.instances()] == ["steady"]
        with pytest.raises(ConflictError, match=r"edit \[plugins.steady\]"):
            await hub.update_instance("steady", {"series": 3})
        with pytest.raises(ConflictError, match=r"edit \[plugins.steady\]"):
            await hub.delete_instance("steady")


async def test_a_change_restarts_only_that_instance_and_keeps_secrets_not_given(
    tmp_path: Path, manager: PluginManager
) -> None:
    async with hub_of(write(tmp_path, BASE), manager) as hub:
        await hub.create_instance("extra", {"type": "counter", "interval": 0.1, "token": "k"})
        await runs_of(hub, "extra", 1)
        steady = hub.scheduler.plugin("steady")
        old = hub.scheduler.plugin("extra")
        info = await hub.update_instance("extra", {"series": 3, "token": REDACTED})
        assert old.torn_down  # type: ignore[attr-defined]
        assert hub.scheduler.plugin("steady") is steady  # untouched
        new = hub.scheduler.plugin("extra")
        assert new.config.series == 3 and new.config.token == "k"  # type: ignore[attr-defined]
        assert info.config["series"] == 3
        await runs_of(hub, "extra", 1)
        latest = await hub.latest("extra")
        assert len(latest) >= 1
        await hub.update_instance("extra", {"series": None})  # back to the default
        assert hub.scheduler.plugin("extra").config.series == 1  # type: ignore[attr-defined]
        await hub.update_instance("extra", {"enabled": False})
        assert not hub.instance("extra").enabled
        with pytest.raises(InvalidArgumentError, match="type of an instance cannot change"):
            await hub.update_instance("extra", {"type": "raises"})
        with pytest.raises(InvalidArgumentError, match=r"\[plugins.extra\] series"):
            await hub.update_instance("extra", {"series": "x"})
        assert hub.scheduler.plugin("extra").config.series == 1  # type: ignore[attr-defined]


async def test_delete_keeps_the_history_unless_purged(
    tmp_path: Path, manager: PluginManager
) -> None:
    path = write(tmp_path, BASE)
    async with hub_of(path, manager) as hub:
        for name in ("kept", "purged"):
            await hub.create_instance(name, {"type": "counter", "interval": 0.1})
            await runs_of(hub, name, 2)
        await hub.flush()
        await hub.delete_instance("kept")
        await hub.delete_instance("purged", purge=True)
        assert [i.id for i in hub.instances()] == ["steady"]
        await hub.flush()
    executions = dict(
        rows(path, "SELECT instance_id, COUNT(*) FROM homelab_execution GROUP BY instance_id")
    )
    assert executions.get("kept", 0) >= 2 and "purged" not in executions
    series = {r[0] for r in rows(path, "SELECT instance_id FROM homelab_series")}
    assert "kept" in series and "purged" not in series
    assert rows(path, "SELECT id FROM homelab_api_instance") == []
    async with hub_of(path, manager) as hub:
        assert [i.id for i in hub.instances()] == ["steady"]


async def test_reload_applies_the_difference_and_a_broken_file_changes_nothing(
    tmp_path: Path, manager: PluginManager
) -> None:
    path = write(
        tmp_path,
        BASE
        + """
[plugins.changes]
type = "counter"
interval = 0.1
[plugins.goes]
type = "counter"
interval = 0.1
""",
    )
    async with hub_of(path, manager) as hub:
        await runs_of(hub, "changes", 1)
        steady, changes = hub.scheduler.plugin("steady"), hub.scheduler.plugin("changes")
        before = hub.stats("steady").runs
        write(
            tmp_path,
            BASE
            + """
[server]
port = 9999
[plugins.changes]
type = "counter"
interval = 0.1
series = 2
[plugins.comes]
type = "counter"
interval = 0.1
""",
        )
        result = await hub.reload()
        assert (result.added, result.removed, result.changed) == (["comes"], ["goes"], ["changes"])
        assert result.restart_needed == ["server"]
        assert [i.id for i in hub.instances()] == ["steady", "changes", "comes"]
        assert hub.scheduler.plugin("steady") is steady  # ran on, untouched
        assert changes.torn_down  # type: ignore[attr-defined]
        await runs_of(hub, "comes", 1)
        # A broken file: refused whole, with check-config's message; nothing changes.
        write(tmp_path, BASE + '[plugins.comes]\ntype = "counter"\nseries = "x"\n')
        with pytest.raises(ConfigError, match=r"\[plugins.comes\] series: expected int"):
            await hub.reload()
        assert [i.id for i in hub.instances()] == ["steady", "changes", "comes"]
        await anyio.sleep(0.3)
        assert hub.stats("steady").runs > before
    # The steady instance's schedule had no gap across the reloads.
    starts = steady.started  # type: ignore[attr-defined]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) < 0.25, gaps
