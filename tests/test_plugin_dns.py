"""The bundled ``dns`` plugin, against a real dnsmasq on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import pytest
from click.testing import CliRunner
from services import free_port, unavailable

from homelab_core import ConfigError, HealthState, PluginManager
from homelab_core.cli import cli
from homelab_core.plugin import validate_plugin_type
from homelab_core.testing import run_plugin, run_plugin_async
from homelab_plugins import dns as dns_plugin
from homelab_plugins.dns import Dns

pytestmark = pytest.mark.anyio

#: Every run asks the dnsmasq on 127.0.0.1 (its port given per test), quickly.
LOCAL: dict[str, Any] = {
    "instance_id": "d",
    "timeout": 10,
    "resolver": "127.0.0.1",
    "query_timeout": 2,
}

HOSTS = """\
127.0.0.5 nas.test
127.0.0.6 nas.test
fd00::5 nas.test
127.0.0.7 printer.test
"""


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """dnspython runs on both loops; the plugin picks the backend per query."""
    return str(request.param)


def _answers(port: int) -> bool:
    query = dns.message.make_query("nas.test", "A")
    try:
        response = dns.query.udp(query, "127.0.0.1", timeout=0.5, port=port)
    except (OSError, dns.exception.DNSException):
        return False
    return bool(response.answer)


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A dnsmasq answering for ``*.test`` from a hosts file and a few records; its port."""
    binary = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if binary is None:
        unavailable("dnsmasq is not installed (apt-get install dnsmasq)")
        raise AssertionError  # unreachable: unavailable() raises
    root = tmp_path_factory.mktemp("dnsmasq")
    hosts = root / "hosts"
    hosts.write_text(HOSTS)
    log = root / "dnsmasq.log"
    user = "nobody" if os.geteuid() == 0 else "root"
    for _attempt in range(3):  # the port may be taken between choosing and binding it
        port = free_port()
        command = [
            binary,
            "--keep-in-foreground",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={hosts}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            f"--port={port}",
            f"--pid-file={root / 'dnsmasq.pid'}",
            f"--user={user}",
            "--local=/test/",  # unknown names under test. are NXDOMAIN, others REFUSED
            "--address=/wild.test/127.0.0.9",
            "--mx-host=mail.test,mx1.test,10",
            "--txt-record=txt.test,hello world",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline and not _answers(port):
            time.sleep(0.05)
        if proc.poll() is None and _answers(port):
            break
        proc.kill()
        proc.wait(timeout=10)
    else:
        raise RuntimeError(f"dnsmasq did not start: {log.read_text(errors='replace')}")
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def closed_udp_port() -> int:
    """A UDP port that was just free: queries to it get no answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_name_from_the_hosts_file_resolves(dnsmasq: int) -> None:
    run = await run_plugin_async(Dns, port=dnsmasq, name="printer.test", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.up") == 1
    assert run.metric("dns.up").device_class == "connectivity"
    assert run.health.state == HealthState.OK
    assert run.health.message.startswith(f"printer.test A at 127.0.0.1:{dnsmasq}: 127.0.0.7 in ")
    assert not run.has("dns.match")


async def test_the_answer_count_is_reported(dnsmasq: int) -> None:
    run = await run_plugin_async(Dns, port=dnsmasq, name="nas.test", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.answers") == 2


async def test_the_response_time_is_a_duration_in_seconds(dnsmasq: int) -> None:
    run = await run_plugin_async(Dns, port=dnsmasq, name="nas.test", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    response = run.metric("dns.response_time")
    assert 0 < response.value < 2
    assert (response.unit, response.device_class) == ("s", "duration")


async def test_a_wildcard_address_resolves(dnsmasq: int) -> None:
    run = await run_plugin_async(Dns, port=dnsmasq, name="anything.wild.test", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.up") == 1
    assert "127.0.0.9" in run.health.message


async def test_expected_answers_contained_in_the_answer_match(dnsmasq: int) -> None:
    run = await run_plugin_async(
        Dns, port=dnsmasq, name="nas.test", expected=["127.0.0.6"], **LOCAL
    )
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.match") == 1
    assert run.health.state == HealthState.OK


async def test_a_wrong_expected_answer_does_not_match_and_fails_the_health(dnsmasq: int) -> None:
    run = await run_plugin_async(
        Dns, port=dnsmasq, name="printer.test", expected=["10.0.0.1"], **LOCAL
    )
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.up") == 1
    assert run.value("dns.match") == 0
    assert run.health.state == HealthState.FAILING
    assert run.health.message == (
        f"printer.test A at 127.0.0.1:{dnsmasq} answered 127.0.0.7, expected 10.0.0.1"
        " (missing 10.0.0.1)"
    )


async def test_expected_names_ignore_case_and_trailing_dots(dnsmasq: int) -> None:
    run = await run_plugin_async(
        Dns, port=dnsmasq, name="mail.test", record_type="MX", expected=["10 MX1.Test."], **LOCAL
    )
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.match") == 1
    assert run.health.state == HealthState.OK


async def test_a_name_that_does_not_exist_is_reported_down(dnsmasq: int) -> None:
    run = await run_plugin_async(Dns, port=dnsmasq, name="nope.test", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.up") == 0
    assert run.value("dns.answers") == 0
    assert run.health.state == HealthState.FAILING
    assert run.health.message == f"nope.test does not exist (NXDOMAIN) at 127.0.0.1:{dnsmasq}"


async def test_a_name_without_records_of_the_type_is_reported_down(dnsmasq: int) -> None:
    run = await run_plugin_async(Dns, port=dnsmasq, name="printer.test", record_type="MX", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.up") == 0
    assert run.health.state == HealthState.FAILING
    assert run.health.message == f"printer.test has no MX record at 127.0.0.1:{dnsmasq}"


async def test_a_refused_query_is_reported_down(dnsmasq: int) -> None:
    run = await run_plugin_async(Dns, port=dnsmasq, name="example.org", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.up") == 0
    assert run.health.state == HealthState.FAILING
    assert (
        run.health.message
        == f"127.0.0.1:{dnsmasq} failed the A query for example.org: answered REFUSED"
    )


async def test_an_aaaa_record_resolves(dnsmasq: int) -> None:
    run = await run_plugin_async(
        Dns, port=dnsmasq, name="nas.test", record_type="AAAA", expected=["FD00:0::5"], **LOCAL
    )
    run.assert_ok()
    assert run.health is not None
    assert (run.value("dns.up"), run.value("dns.answers")) == (1, 1)
    assert run.value("dns.match") == 1
    assert "fd00::5" in run.health.message


async def test_a_txt_record_is_compared_unquoted(dnsmasq: int) -> None:
    run = await run_plugin_async(
        Dns, port=dnsmasq, name="txt.test", record_type="TXT", expected=["hello world"], **LOCAL
    )
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.match") == 1
    assert ": hello world in " in run.health.message


async def test_a_ptr_query_for_an_ip_address_asks_for_its_reverse_name(dnsmasq: int) -> None:
    run = await run_plugin_async(Dns, port=dnsmasq, name="127.0.0.7", record_type="PTR", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.up") == 1
    assert run.health.message.startswith("7.0.0.127.in-addr.arpa PTR at ")
    assert ": printer.test in " in run.health.message


async def test_a_query_over_tcp_resolves(dnsmasq: int) -> None:
    run = await run_plugin_async(Dns, port=dnsmasq, name="nas.test", tcp=True, **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("dns.up") == 1


async def test_a_resolver_that_does_not_answer_times_out_as_down(closed_udp_port: int) -> None:
    started = time.monotonic()
    run = await run_plugin_async(
        Dns, port=closed_udp_port, name="nas.test", **{**LOCAL, "query_timeout": 0.5}
    )
    run.assert_ok()
    assert run.health is not None
    assert time.monotonic() - started < 3
    assert [m.name for m in run.metrics] == ["dns.up"]
    assert run.value("dns.up") == 0
    assert run.health.state == HealthState.FAILING
    assert run.health.message == (
        f"127.0.0.1:{closed_udp_port} did not answer the A query for nas.test within 0.5 s"
    )


@pytest.mark.parametrize("resolver", ["nas.lan", "300.1.2.3", "127.0.0.1:53", ""])
def test_a_resolver_that_is_not_an_ip_address_is_refused(resolver: str) -> None:
    with pytest.raises(ConfigError, match="'resolver' must be an IPv4 or IPv6 address") as caught:
        run_plugin(Dns, name="nas.test", resolver=resolver)
    assert caught.value.field == "resolver"


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_a_port_outside_1_to_65535_is_refused(port: int) -> None:
    with pytest.raises(ConfigError, match="'port' must be between 1 and 65535") as caught:
        run_plugin(Dns, name="nas.test", port=port)
    assert caught.value.field == "port"


def test_an_unknown_record_type_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        run_plugin(Dns, name="nas.test", record_type="ANY")
    assert caught.value.field == "record_type"


def test_a_name_with_spaces_is_refused() -> None:
    with pytest.raises(ConfigError, match="'name' must be a domain name") as caught:
        run_plugin(Dns, name="nas test")
    assert caught.value.field == "name"


def test_a_query_timeout_of_zero_is_refused() -> None:
    with pytest.raises(ConfigError, match="'query_timeout' must be more than 0"):
        run_plugin(Dns, name="nas.test", query_timeout=0)


def test_an_empty_expected_list_is_refused() -> None:
    with pytest.raises(ConfigError, match="'expected' must list"):
        run_plugin(Dns, name="nas.test", expected=[])


def test_options_given_as_text_are_parsed(
    dnsmasq: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text options are what ``homelab run --set`` gives: parsed to the fields' types."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOMELAB_CONFIG", raising=False)
    manager = PluginManager(load_entry_points=False)
    manager.register(dns_plugin, name="dns")
    options = {
        "name": "nas.test",
        "record_type": "AAAA",
        "resolver": "127.0.0.1",
        "port": str(dnsmasq),
        "query_timeout": "1.5",
        "expected": "fd00::5,fd00::6",
        "tcp": "true",
    }
    sets = [part for key, value in options.items() for part in ("--set", f"{key}={value}")]
    result = CliRunner().invoke(
        cli, ["run", "dns", "--once", *sets], obj=manager, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)["config"]
    assert (config["record_type"], config["resolver"], config["port"]) == (
        "AAAA",
        "127.0.0.1",
        dnsmasq,
    )
    assert (config["query_timeout"], config["expected"], config["tcp"]) == (
        1.5,
        ["fd00::5", "fd00::6"],
        True,
    )


def test_the_type_is_valid_and_described() -> None:
    assert validate_plugin_type(Dns) == []
    schema = Dns.config_schema()
    assert schema["required"] == ["name"]
    properties = schema["properties"]
    assert properties["record_type"]["default"] == "A"
    assert (properties["port"]["default"], properties["query_timeout"]["default"]) == (53, 5.0)
    assert (properties["resolver"]["default"], properties["tcp"]["default"]) == (None, False)


def test_homelab_run_reports_a_missing_name_as_down_and_exits_0(
    dnsmasq: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOMELAB_CONFIG", raising=False)
    manager = PluginManager(load_entry_points=False)
    manager.register(dns_plugin, name="dns")
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "dns",
            "--once",
            "--set",
            "name=nope.test",
            "--set",
            "resolver=127.0.0.1",
            "--set",
            f"port={dnsmasq}",
        ],
        obj=manager,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert output["status"] == "ok"
    assert output["health"]["state"] == "failing"
    assert output["health"]["message"] == (
        f"nope.test does not exist (NXDOMAIN) at 127.0.0.1:{dnsmasq}"
    )
    assert output["metrics"][0]["name"] == "dns.up"
    assert output["metrics"][0]["value"] == 0
