"""``homelab alerts``, ``homelab notify-test`` and ``homelab silence``: against the database
of a real SQLite file a hub wrote, and against a real server on 127.0.0.1 (``--url``)."""

from __future__ import annotations

import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import click.testing
import pytest
import sample_plugins
from click.testing import CliRunner
from hypercorn_server import served
from services import free_port
from test_web_alerts import CONFIG as WEB_CONFIG
from test_web_alerts import RECEIVED, TOKEN
from test_web_api import eventually

from homelab_core import Hub, PluginManager
from homelab_core.cli import cli
from homelab_core.config import settings_from_mapping
from homelab_core.store import Store
from homelab_core.store.alerts import AlertStore

Invoke = Callable[..., click.testing.Result]


@pytest.fixture
def alert_manager() -> PluginManager:
    pm = PluginManager(load_entry_points=False)
    pm.register(sample_plugins, name="sample_plugins")
    pm.register(sys.modules["test_web_alerts"], name="test_web_alerts")
    return pm


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "homelab.toml"
    db = tmp_path / "homelab.db"
    text = WEB_CONFIG.format(token=TOKEN) + f'\n[database]\nurl = "sqlite://{db}"\n'
    text = text.replace("[server]\n", f"[server]\nport = {free_port()}\n")
    path.write_text(text)
    return path


@pytest.fixture
def invoke(alert_manager: PluginManager, config_file: Path) -> Invoke:
    runner = CliRunner()

    def run(*args: str, **kwargs: Any) -> click.testing.Result:
        return runner.invoke(cli, [*args], obj=alert_manager, catch_exceptions=False, **kwargs)

    return run


def settings_of(path: Path) -> Any:
    return settings_from_mapping(tomllib.loads(path.read_text()), source=str(path))


def run_hub_until_firing(config_file: Path, manager: PluginManager) -> None:
    """Run a hub on the config until its alert fires, then stop it (the state is stored)."""

    async def run() -> None:
        async with Hub(settings_of(config_file), plugin_manager=manager) as hub:
            await eventually(lambda: bool(hub.alerts_list(state="firing")), timeout=10)

    anyio.run(run)


def stored_silences(config_file: Path) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = Store(settings_of(config_file).database.url)
        await store.open()
        try:
            return await AlertStore(store).silences(ended_after=time.time())
        finally:
            await store.close()

    return anyio.run(read)


def test_alerts_reads_the_database(
    invoke: Invoke, config_file: Path, alert_manager: PluginManager
) -> None:
    assert invoke("alerts", "-c", str(config_file)).output.strip() == "no alerts"
    run_hub_until_firing(config_file, alert_manager)
    result = invoke("alerts", "-c", str(config_file))
    assert result.exit_code == 0, result.output
    header, row = result.output.strip().splitlines()
    assert header.split()[:6] == ["RULE", "STATE", "SEVERITY", "INSTANCE", "SINCE", "SILENCED"]
    assert row.split()[:4] == ["high-count", "firing", "critical", "counter"]
    assert row.endswith("counter counted 1")
    assert invoke("alerts", "-c", str(config_file), "--state", "pending").output.strip() == (
        "no alerts"
    )


def test_silence_add_list_remove_in_the_database(
    invoke: Invoke, config_file: Path, alert_manager: PluginManager
) -> None:
    c = ("-c", str(config_file))
    made = invoke(
        "silence", "add", "--match", "rule=high-count", "--match", "instance=count*",
        "--duration", "2h", "--comment", "disk swap", "--author", "me", *c,
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    silence_id = made.output.split()[0]
    (stored,) = stored_silences(config_file)
    assert stored["id"] == silence_id
    assert stored["matchers"] == {"rule": "high-count", "instance": "count*"}
    assert stored["ends_at"] - stored["starts_at"] == pytest.approx(7200, abs=1)
    assert (stored["comment"], stored["author"]) == ("disk swap", "me")
    listing = invoke("silence", "list", *c).output
    assert silence_id in listing and "active" in listing and "instance=count*" in listing
    # A hub started afterwards reads it: its alert is silenced.
    run_hub_until_firing(config_file, alert_manager)
    row = invoke("alerts", *c).output.strip().splitlines()[1]
    assert row.split()[6] == "yes"
    removed = invoke("silence", "remove", silence_id, *c)
    assert removed.exit_code == 0 and silence_id in removed.output
    assert stored_silences(config_file) == []
    again = invoke("silence", "remove", silence_id, *c)
    assert again.exit_code == 1
    assert f"unknown silence {silence_id!r}" in again.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--match", "rule", "--duration", "1h"), "not label=value"),
        (("--match", "rule=x", "--duration", "soon"), "duration"),
        (("--match", "rule=x", "--duration", "0"), "more than 0"),
    ],
)
def test_silence_add_refuses_bad_input(
    invoke: Invoke, config_file: Path, args: tuple[str, ...], words: str
) -> None:
    result = invoke("silence", "add", *args, "-c", str(config_file))
    assert result.exit_code == 2
    assert words in result.output
    assert not (config_file.parent / "homelab.db").exists() or stored_silences(config_file) == []


def test_notify_test_sends_through_the_notifier(invoke: Invoke, config_file: Path) -> None:
    RECEIVED.clear()
    result = invoke("notify-test", "rec", "-c", str(config_file))
    assert result.exit_code == 0, result.output
    assert "ok: notifier 'rec'" in result.output
    (message,) = RECEIVED
    assert message.test and message.notifier == "rec"
    assert message.alerts[0].summary == "Test message from Homelab Core"


def test_notify_test_reports_a_failure_with_exit_1(invoke: Invoke, config_file: Path) -> None:
    result = invoke("notify-test", "broken", "-c", str(config_file))
    assert result.exit_code == 1
    assert "error: notifier 'broken': the receiver said no" in result.output


def test_notify_test_names_the_configured_notifiers(invoke: Invoke, config_file: Path) -> None:
    result = invoke("notify-test", "nope", "-c", str(config_file))
    assert result.exit_code == 2
    assert "no [notifiers.nope] table; configured: broken, rec" in result.output


@pytest.mark.anyio
async def test_alerts_and_silences_through_a_running_server(
    invoke: Invoke, config_file: Path, alert_manager: PluginManager
) -> None:
    from homelab_core.web import create_app

    app = create_app(settings_of(config_file), plugin_manager=alert_manager)

    async def cli_call(*args: str, **kwargs: Any) -> click.testing.Result:
        return await anyio.to_thread.run_sync(lambda: invoke(*args, **kwargs))

    async with served(app) as url:
        hub = app.extensions["homelab"].hub
        await eventually(lambda: bool(hub.alerts_list(state="firing")), timeout=10)
        listed = await cli_call("alerts", "--url", url)
        assert listed.exit_code == 0, listed.output
        assert listed.output.splitlines()[1].split()[:4] == [
            "high-count",
            "firing",
            "critical",
            "counter",
        ]
        refused = await cli_call(
            "silence", "add", "--match", "rule=high-count", "--duration", "1h", "--url", url
        )
        assert refused.exit_code == 1
        assert "401" in refused.output
        made = await cli_call(
            "silence", "add", "--match", "rule=high-count", "--duration", "1h", "--url", url,
            env={"HOMELAB_API_TOKEN": TOKEN},
        )  # fmt: skip
        assert made.exit_code == 0, made.output
        silence_id = made.output.split()[0]
        assert hub.alerts_list()[0].silenced
        assert silence_id in (await cli_call("silence", "list", "--url", url)).output
        row = (await cli_call("alerts", "--url", url)).output.splitlines()[1]
        assert row.split()[6] == "yes"
        removed = await cli_call("silence", "remove", silence_id, "--url", url, "--token", TOKEN)
        assert removed.exit_code == 0, removed.output
        assert not hub.alerts_list()[0].silenced
        missing = await cli_call("silence", "remove", silence_id, "--url", url, "--token", TOKEN)
        assert missing.exit_code == 1
        assert "404" in missing.output and silence_id in missing.output


@pytest.mark.parametrize(
    ("table", "says"),
    [
        (
            '[notifiers.pigeon]\ntype = "carrier"\n',
            "[notifiers.pigeon] type: unknown notifier type 'carrier'",
        ),
        (
            '[notifiers.rec2]\ntype = "recording"\ncolour = "red"\n',
            "[notifiers.rec2] colour: unknown field",
        ),
    ],
)
def test_check_config_finds_a_notifier_that_cannot_be_built(
    invoke: Invoke, config_file: Path, table: str, says: str
) -> None:
    config_file.write_text(config_file.read_text() + "\n" + table)
    result = invoke("check-config", "--config", str(config_file))
    assert result.exit_code == 2, result.output
    assert f"error: {config_file} {says}" in result.output
