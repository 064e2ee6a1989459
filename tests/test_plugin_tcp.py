"""The bundled ``tcp`` plugin, against real ports on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from services import free_port

from homelab_core import ConfigError, HealthState, PluginManager
from homelab_core.cli import cli
from homelab_core.plugin import validate_plugin_type
from homelab_core.testing import run_plugin, run_plugin_async
from homelab_plugins import tcp
from homelab_plugins.tcp import Tcp

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The plugin is pure anyio (and httpx supports both), so it is checked on both."""
    return str(request.param)


@pytest.fixture
def open_port() -> Iterator[int]:
    """A port with a listening socket: the kernel completes connections from the backlog."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A port that was just free and has nothing listening on it."""
    return free_port()


async def test_an_open_port_is_up_with_a_connect_time(open_port: int) -> None:
    run = await run_plugin_async(Tcp, instance_id="t", timeout=5, host="127.0.0.1", port=open_port)
    run.assert_ok()
    assert run.value("tcp.up") == 1
    connect = run.metric("tcp.connect_time")
    assert 0 < connect.value < 5
    assert (connect.unit, connect.device_class) == ("s", "duration")
    assert run.health is not None
    assert run.health.state == HealthState.OK
    assert f"127.0.0.1:{open_port} accepted a connection" in run.health.message


async def test_a_closed_port_is_a_successful_collection_that_reports_down(closed_port: int) -> None:
    run = await run_plugin_async(
        Tcp, instance_id="t", timeout=5, host="127.0.0.1", port=closed_port
    )
    run.assert_ok()
    assert run.value("tcp.up") == 0
    assert not run.has("tcp.connect_time")
    assert run.health is not None
    assert run.health.state == HealthState.FAILING
    assert run.health.message == f"127.0.0.1:{closed_port} refused the connection"


async def test_metrics_carry_no_labels(open_port: int) -> None:
    run = await run_plugin_async(Tcp, instance_id="t", timeout=5, host="127.0.0.1", port=open_port)
    run.assert_ok()
    assert run.metrics
    assert all(m.labels == {} for m in run.metrics)


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_a_port_outside_1_to_65535_is_refused(port: int) -> None:
    with pytest.raises(ConfigError, match="'port' must be between 1 and 65535") as caught:
        run_plugin(Tcp, instance_id="t", host="h", port=port)
    assert caught.value.field == "port"


def test_host_and_port_are_required() -> None:
    with pytest.raises(ConfigError, match="is required"):
        run_plugin(Tcp, port=22)
    with pytest.raises(ConfigError, match="is required"):
        run_plugin(Tcp, host="nas")


def test_options_given_as_text_are_parsed(
    open_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text options are what ``homelab run --set`` gives: parsed to the fields' types."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOMELAB_CONFIG", raising=False)
    manager = PluginManager(load_entry_points=False)
    manager.register(tcp, name="tcp")
    result = CliRunner().invoke(
        cli,
        ["run", "tcp", "--once", "--set", "host=127.0.0.1", "--set", f"port={open_port}",
         "--set", "connect_timeout=1.5"],
        obj=manager,
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)["config"]
    assert (config["port"], config["connect_timeout"]) == (open_port, 1.5)


def test_a_connect_timeout_of_zero_is_refused() -> None:
    with pytest.raises(ConfigError, match="'connect_timeout' must be more than 0"):
        run_plugin(Tcp, host="nas", port=22, connect_timeout=0)


def test_the_type_is_valid_and_described() -> None:
    assert validate_plugin_type(Tcp) == []
    schema = Tcp.config_schema()
    assert schema["required"] == ["host", "port"]
    assert schema["properties"]["connect_timeout"]["default"] == 5.0


def test_homelab_run_reports_a_closed_port_as_down_and_exits_0(
    closed_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOMELAB_CONFIG", raising=False)
    manager = PluginManager(load_entry_points=False)
    manager.register(tcp, name="tcp")
    result = CliRunner().invoke(
        cli,
        ["run", "tcp", "--once", "--set", "host=127.0.0.1", "--set", f"port={closed_port}"],
        obj=manager,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert output["status"] == "ok"
    assert output["health"]["state"] == "failing"
    assert [(m["name"], m["value"]) for m in output["metrics"]] == [("tcp.up", 0.0)]
