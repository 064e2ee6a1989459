"""``homelab status``: against the SQLite file a real hub wrote, and against a real server
on 127.0.0.1 (``--url``)."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Any

import anyio
import pytest
import sample_plugins
from click.testing import CliRunner, Result
from hypercorn_server import served
from services import free_port
from test_web_api import eventually

from homelab_core import Hub, PluginManager
from homelab_core.cli import cli
from homelab_core.config import settings_from_mapping
from homelab_core.store import Store

TOKEN = "status-test-token-1234"

CONFIG = """
[server]
port = {port}
api_token = "{token}"

[database]
url = "sqlite://{db}"

[scheduler]
failure_threshold = 1
jitter = 0

[plugins.count]
type = "counter"
interval = 0.05

[plugins.broken]
type = "raises"
interval = 0.05

[plugins.off]
type = "counter"
enabled = false
"""


@pytest.fixture
def manager() -> PluginManager:
    pm = PluginManager(load_entry_points=False)
    pm.register(sample_plugins, name="sample_plugins")
    return pm


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "homelab.toml"
    path.write_text(CONFIG.format(port=free_port(), token=TOKEN, db=tmp_path / "homelab.db"))
    return path


def settings_of(path: Path) -> Any:
    return settings_from_mapping(tomllib.loads(path.read_text()), source=str(path))


def invoke(manager: PluginManager, *args: str, **kwargs: Any) -> Result:
    return CliRunner().invoke(cli, list(args), obj=manager, catch_exceptions=False, **kwargs)


def table(result: Result) -> dict[str, list[str]]:
    """The rows of a listing by their first column; the header row under "ID"."""
    assert result.exit_code == 0, result.output
    return {line.split()[0]: line.split() for line in result.output.splitlines()}


async def run_until_each_ran(hub: Hub) -> None:
    async def ran() -> bool:
        return all([await hub.executions(i, limit=1) for i in ("count", "broken")])

    await eventually(ran, timeout=10)
    await eventually(lambda: hub.instance("broken").health.state.value == "failing", timeout=10)
    await hub.flush()


def make_api_instance(config_file: Path) -> None:
    """A row of homelab_api_instance, as a POST /api/plugins leaves it."""

    async def write() -> None:
        store = Store(settings_of(config_file).database.url)
        await store.open()
        try:
            now = time.time()
            await store.execute(
                "INSERT INTO homelab_api_instance (id, type, body, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                ["made", "counter", json.dumps({"type": "counter", "enabled": False}), now, now],
            )
        finally:
            await store.close()

    anyio.run(write)


def test_status_reads_the_database(config_file: Path, manager: PluginManager) -> None:
    async def run() -> None:
        async with Hub(settings_of(config_file), plugin_manager=manager) as hub:
            await run_until_each_ran(hub)

    anyio.run(run)
    make_api_instance(config_file)
    rows = table(invoke(manager, "status", "--config", str(config_file)))
    assert rows["ID"] == ["ID", "TYPE", "SOURCE", "ENABLED", "HEALTH", "LAST", "RUN", "STATUS"]
    today = time.strftime("%Y-%m-%d")
    count, broken = rows["count"], rows["broken"]
    assert count[:5] == ["count", "counter", "file", "yes", "ok"] and count[5] == today
    assert count[-1] == "ok"
    assert broken[:5] == ["broken", "raises", "file", "yes", "failing"]
    assert broken[-1] == "error"
    assert rows["off"] == ["off", "counter", "file", "no", "unknown", "-", "-"]
    assert rows["made"] == ["made", "counter", "api", "no", "unknown", "-", "-"]
    assert list(rows) == ["ID", "broken", "count", "made", "off"]


def test_status_keeps_an_instance_disabled_through_the_api(
    config_file: Path, manager: PluginManager
) -> None:
    async def run() -> None:
        async with Hub(settings_of(config_file), plugin_manager=manager) as hub:
            await run_until_each_ran(hub)
            await hub.set_enabled("count", False)
            await hub.flush()

    anyio.run(run)
    rows = table(invoke(manager, "status", "--config", str(config_file)))
    assert rows["count"][3] == "no"


def test_status_without_a_database_yet_shows_the_file(
    config_file: Path, manager: PluginManager
) -> None:
    db = Path(settings_of(config_file).database.url.removeprefix("sqlite://"))
    rows = table(invoke(manager, "status", "--config", str(config_file)))
    assert rows["count"] == ["count", "counter", "file", "yes", "unknown", "-", "-"]
    assert rows["off"][3] == "no"
    assert not db.exists(), "status does not create the database"


@pytest.mark.anyio
async def test_status_of_a_running_server(config_file: Path, manager: PluginManager) -> None:
    # The token (shared with homelab alerts: --token or $HOMELAB_API_TOKEN) is sent along.
    from homelab_core.web import create_app

    app = create_app(settings_of(config_file), plugin_manager=manager)
    async with served(app) as url:
        hub = app.extensions["homelab"].hub
        await run_until_each_ran(hub)

        def call(*args: str, **kwargs: Any) -> Result:
            return invoke(manager, "status", "--url", url, "--token", TOKEN, *args, **kwargs)

        rows = table(await anyio.to_thread.run_sync(call))
        assert rows["count"][:5] == ["count", "counter", "file", "yes", "ok"]
        assert rows["count"][-1] == "ok"
        assert rows["broken"][:5] == ["broken", "raises", "file", "yes", "failing"]
        assert rows["broken"][-1] == "error"
        # The server knows what the database does not: a disabled instance's health.
        assert rows["off"] == ["off", "counter", "file", "no", "disabled", "-", "-"]
