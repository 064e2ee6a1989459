"""The bundled ``ping`` plugin: real echo requests to 127.0.0.1, ::1 and a network namespace.

The host that does not answer is made inside this machine: a veth pair into a throw-away
network namespace whose side has ``net.ipv4.icmp_echo_ignore_all=1``, so the address exists
and is reachable but never answers. That needs root and ``ip`` (iproute2).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner
from services import unavailable

from homelab_core import ConfigError, ExecutionStatus, HealthReport, HealthState, PluginManager
from homelab_core.cli import cli
from homelab_core.config import settings_from_mapping
from homelab_core.options import build_config
from homelab_core.plugin import validate_plugin_type
from homelab_core.testing import PluginHarness, PluginRun, run_plugin_async
from homelab_plugins import ping
from homelab_plugins.ping import Ping, PingConfig, PingResult, checksum, judge

pytestmark = pytest.mark.anyio

#: Short probes, and the run timeout the tests give each collection.
FAST: dict[str, Any] = {"probe_interval": 0.05, "probe_timeout": 0.3, "timeout": 10}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def _need_root_and_ip() -> None:
    if os.geteuid() != 0:
        unavailable("the network namespace and sysctl tests need root")
    if shutil.which("ip") is None or shutil.which("sysctl") is None:
        unavailable("'ip' (iproute2) and 'sysctl' (procps) are needed")


@attrs.define
class Silent:
    """A namespace at ``address``: reachable over a veth pair, answering pings or not."""

    netns: str
    address: str

    def answer(self, yes: bool) -> None:
        value = "0" if yes else "1"
        _run(
            "ip",
            "netns",
            "exec",
            self.netns,
            "sysctl",
            "-qw",
            f"net.ipv4.icmp_echo_ignore_all={value}",
        )


@pytest.fixture(scope="module")
def namespace() -> Iterator[Silent]:
    _need_root_and_ip()
    tag = secrets.token_hex(3)
    netns, host_side, ns_side = f"hl-ping-{tag}", f"hlp{tag}a", f"hlp{tag}b"
    subnet = 4 * secrets.randbelow(64)  # a random /30 of 10.213.<n>.0/24
    n = secrets.randbelow(256)
    prefix = f"10.213.{n}"
    try:
        _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", host_side, "type", "veth", "peer", "name", ns_side)
        _run("ip", "link", "set", ns_side, "netns", netns)
        _run("ip", "addr", "add", f"{prefix}.{subnet + 1}/30", "dev", host_side)
        _run("ip", "link", "set", host_side, "up")
        _run("ip", "-n", netns, "addr", "add", f"{prefix}.{subnet + 2}/30", "dev", ns_side)
        _run("ip", "-n", netns, "link", "set", ns_side, "up")
        _run("ip", "-n", netns, "link", "set", "lo", "up")
        silent = Silent(netns, f"{prefix}.{subnet + 2}")
        silent.answer(False)
        yield silent
    finally:
        subprocess.run(["ip", "link", "del", host_side], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)


@pytest.fixture
def unprivileged_pings() -> Iterator[None]:
    """Let every group open ICMP datagram sockets, and restore the setting afterwards."""
    _need_root_and_ip()
    path = Path("/proc/sys/net/ipv4/ping_group_range")
    before = " ".join(path.read_text().split())
    _run("sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
    try:
        yield
    finally:
        _run("sysctl", "-qw", f"net.ipv4.ping_group_range={before}")


def assert_all_answered(run: PluginRun, sent: int) -> None:
    run.assert_ok()
    assert run.value("ping.up") == 1
    assert run.value("ping.packet_loss") == 0
    assert (run.value("ping.sent"), run.value("ping.received")) == (sent, sent)
    rtt_min, rtt_avg, rtt_max = (run.metric(f"ping.rtt_{k}") for k in ("min", "avg", "max"))
    assert 0 < rtt_min.value <= rtt_avg.value <= rtt_max.value < 0.3
    assert (rtt_avg.unit, rtt_avg.device_class) == ("s", "duration")


class DatagramPing(Ping):
    """The plugin kept to ICMP datagram sockets (it tries raw ones first, which root has).

    A class of this module, not an attribute set on a plugin object: a worker process
    builds its own object from the class."""

    _socket_kinds = (socket.SOCK_DGRAM,)


def health(run: PluginRun) -> HealthReport:
    assert run.health is not None, "the run gave no health report"
    return run.health


async def test_loopback_answers_every_ping() -> None:
    run = await run_plugin_async(Ping, host="127.0.0.1", count=3, **FAST)
    assert_all_answered(run, 3)
    assert run.metric("ping.packet_loss").unit == "%"
    assert all(m.labels == {} for m in run.metrics)
    assert health(run).state == HealthState.OK
    assert health(run).message.startswith("127.0.0.1 answered 3 of 3 pings, rtt min/avg/max ")


async def test_a_host_name_is_resolved_and_shown_with_its_address() -> None:
    run = (await run_plugin_async(Ping, host="localhost", count=1, **FAST)).assert_ok()
    assert run.value("ping.up") == 1
    message = health(run).message
    assert message.startswith("localhost (") and "answered 1 of 1 ping," in message


async def test_ipv6_loopback_answers() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback address")
    run = await run_plugin_async(Ping, host="::1", count=2, **FAST)
    assert_all_answered(run, 2)
    assert health(run).state == HealthState.OK


async def test_a_silent_host_is_a_successful_collection_that_reports_down(
    namespace: Silent,
) -> None:
    run = (await run_plugin_async(Ping, host=namespace.address, count=3, **FAST)).assert_ok()
    assert run.value("ping.up") == 0
    assert run.value("ping.packet_loss") == 100
    assert (run.value("ping.sent"), run.value("ping.received")) == (3, 0)
    assert not any(m.name.startswith("ping.rtt_") for m in run.metrics)
    assert health(run).state == HealthState.FAILING
    assert health(run).message == f"{namespace.address} did not answer any of 3 pings"


async def test_the_same_host_answers_once_it_stops_ignoring_pings(namespace: Silent) -> None:
    namespace.answer(True)
    try:
        run = await run_plugin_async(Ping, host=namespace.address, count=2, **FAST)
    finally:
        namespace.answer(False)
    assert_all_answered(run, 2)
    assert health(run).state == HealthState.OK


async def test_the_unprivileged_datagram_socket_works_too(
    unprivileged_pings: None, namespace: Silent
) -> None:
    async with PluginHarness(DatagramPing, host="127.0.0.1", count=2, **FAST) as loopback:
        run = await loopback.run()
    assert_all_answered(run, 2)
    assert health(run).state == HealthState.OK
    async with PluginHarness(DatagramPing, host=namespace.address, count=2, **FAST) as silent:
        run = (await silent.run()).assert_ok()
    assert (run.value("ping.up"), run.value("ping.packet_loss")) == (0, 100)
    assert health(run).state == HealthState.FAILING


@pytest.mark.in_process("monkeypatches ping._open_socket")
async def test_being_allowed_no_icmp_socket_fails_the_run_and_says_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def denied(family: int, kind: int) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(ping, "_open_socket", denied)
    run = await run_plugin_async(Ping, host="127.0.0.1", count=2, **{**FAST, "timeout": 5})
    assert run.status is ExecutionStatus.ERROR
    assert run.metrics == []
    assert run.error is not None
    for hint in ("root", "cap_net_raw", "ping_group_range"):
        assert hint in run.error


async def test_a_name_that_does_not_resolve_reports_down() -> None:
    run = (await run_plugin_async(Ping, host="does-not-exist.invalid", count=2, **FAST)).assert_ok()
    assert [(m.name, m.value) for m in run.metrics] == [("ping.up", 0)]
    assert health(run).state == HealthState.FAILING
    assert health(run).message.startswith("cannot resolve does-not-exist.invalid")


def test_some_loss_is_degraded() -> None:
    report = judge(PingResult("nas", 4, [0.001, 0.003]))
    assert report.state == HealthState.DEGRADED
    assert report.message == "nas answered 2 of 4 pings (50% loss), rtt min/avg/max 1/2/3 ms"
    assert judge(PingResult("nas", 1, [])).message == "nas did not answer any of 1 ping"


def test_the_checksum_is_the_internet_checksum() -> None:
    # RFC 1071's example words sum to 0xddf2, whose complement is 0x220d.
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    packet = ping.echo_request(socket.AF_INET, 0x1234, 7, b"abc")
    assert checksum(packet) == 0


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("count", 0, "'count' must be between 1 and 100"),
        ("count", 101, "'count' must be between 1 and 100"),
        ("probe_timeout", 0, "'probe_timeout' must be more than 0, got 0"),
        ("probe_interval", -1, "'probe_interval' must be 0 or more, got -1"),
        ("payload_size", 4, "'payload_size' must be between 16 and 65507"),
        ("host", "a b", "'host' must be a host name or an IP address"),
    ],
)
def test_bad_options_are_refused(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        build_config(PingConfig, {"host": "nas", field: value}, table="plugins.p")
    assert caught.value.field == field


def test_options_given_as_text_are_parsed() -> None:
    config = build_config(
        PingConfig,
        {"host": "nas", "count": "5", "probe_interval": "0", "probe_timeout": "0.5"},
        from_text=True,
    )
    assert (config.count, config.probe_interval, config.probe_timeout) == (5, 0.0, 0.5)


def test_the_type_is_valid_and_described() -> None:
    assert validate_plugin_type(Ping) == []
    schema = Ping.config_schema()
    assert schema["required"] == ["host"]
    defaults = {k: v.get("default") for k, v in schema["properties"].items()}
    assert defaults == {
        "host": None,
        "count": 3,
        "probe_interval": 0.2,
        "probe_timeout": 1.0,
        "payload_size": 56,
    }


def test_homelab_run_pings_loopback_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOMELAB_CONFIG", raising=False)
    manager = PluginManager(load_entry_points=False)
    manager.register(ping, name="ping")
    result = CliRunner().invoke(
        cli,
        ["run", "ping", "--once", "--set", "host=127.0.0.1", "--set", "count=1"],
        obj=manager,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert output["status"] == "ok"
    assert output["health"]["state"] == "ok"
    values = {m["name"]: m["value"] for m in output["metrics"]}
    assert (values["ping.up"], values["ping.packet_loss"]) == (1.0, 0.0)


def test_the_documented_table_splits_framework_keys_from_the_options() -> None:
    text = """
[plugins.nas-ping]
type = "ping"
host = "nas.lan"
count = 5
probe_interval = 0.5
probe_timeout = 2
interval = 15
"""
    settings = settings_from_mapping(tomllib.loads(text))
    instance = settings.plugins["nas-ping"]
    assert instance.interval == 15
    config = build_config(PingConfig, instance.options)
    assert (config.count, config.probe_interval, config.probe_timeout) == (5, 0.5, 2)
