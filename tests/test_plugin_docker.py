"""The bundled ``docker`` plugin, against a fake Docker Engine API.

No Docker engine runs where these tests run, so a small HTTP/1.1 server
(``socketserver.ThreadingUnixStreamServer`` with ``http.server.BaseHTTPRequestHandler``,
in a thread) listens on a unix socket in ``tmp_path`` and answers the three endpoints the
plugin uses with payloads shaped like the Engine API documentation's examples
(``GET /containers/json``, ``GET /containers/{id}/json``,
``GET /containers/{id}/stats?stream=false``), for two containers: ``web``, running, with a
healthy healthcheck and 3 restarts, and ``backup``, exited, without a healthcheck. One test
serves the same answers over TCP on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from homelab_core import ConfigError, HealthState, Metric, PluginManager
from homelab_core.options import build_config
from homelab_core.plugin import validate_plugin_type
from homelab_core.testing import run_plugin_async
from homelab_plugins import docker
from homelab_plugins.docker import Docker, DockerConfig, cpu_percent, engine_address, memory_usage

pytestmark = pytest.mark.anyio

WEB_ID = "8dfafdbc3a40a7f1c0c61f2d0b9a1a3e3b1b4f1a2c3d4e5f60718293a4b5c6d7"
BACKUP_ID = "4a7c13bd2f5e6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e"
GIB, MIB = 1024**3, 1024**2

CONTAINERS = [
    {
        "Id": WEB_ID,
        "Names": ["/web"],
        "Image": "nginx:1.27",
        "ImageID": "sha256:5ef79149e0ec84a7a9f9284c3f91aa3c20608f8391f5445eabe92ef07dbda03c",
        "Command": "/docker-entrypoint.sh nginx -g 'daemon off;'",
        "Created": 1717000000,
        "State": "running",
        "Status": "Up 2 hours (healthy)",
        "Ports": [{"PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}],
        "Labels": {"com.example.vendor": "Acme"},
        "HostConfig": {"NetworkMode": "bridge"},
        "Mounts": [],
    },
    {
        "Id": BACKUP_ID,
        "Names": ["/backup"],
        "Image": "restic/restic:0.16.4",
        "ImageID": "sha256:0cb2c9bdc2f5a8e5d8b3d1f5ad6b1e0d6b8c8f5e1c2d3e4f5a6b7c8d9e0f1a2b",
        "Command": "restic backup /data",
        "Created": 1716990000,
        "State": "exited",
        "Status": "Exited (0) 3 hours ago",
        "Ports": [],
        "Labels": {},
        "HostConfig": {"NetworkMode": "bridge"},
        "Mounts": [],
    },
]

INSPECT = {
    WEB_ID: {
        "Id": WEB_ID,
        "Created": "2024-05-29T16:26:40.000000000Z",
        "Path": "/docker-entrypoint.sh",
        "Args": ["nginx", "-g", "daemon off;"],
        "State": {
            "Status": "running",
            "Running": True,
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": False,
            "Pid": 4242,
            "ExitCode": 0,
            "Error": "",
            "StartedAt": "2024-05-29T18:00:00.000000000Z",
            "FinishedAt": "2024-05-29T17:59:58.000000000Z",
            "Health": {
                "Status": "healthy",
                "FailingStreak": 0,
                "Log": [
                    {
                        "Start": "2024-05-29T20:00:00.000000000Z",
                        "End": "2024-05-29T20:00:00.050000000Z",
                        "ExitCode": 0,
                        "Output": "ok",
                    }
                ],
            },
        },
        "Image": CONTAINERS[0]["ImageID"],
        "Name": "/web",
        "RestartCount": 3,
        "Driver": "overlay2",
        "HostConfig": {"RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}},
    },
    BACKUP_ID: {
        "Id": BACKUP_ID,
        "Created": "2024-05-29T13:40:00.000000000Z",
        "Path": "restic",
        "Args": ["backup", "/data"],
        "State": {
            "Status": "exited",
            "Running": False,
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": False,
            "Pid": 0,
            "ExitCode": 0,
            "Error": "",
            "StartedAt": "2024-05-29T17:00:00.000000000Z",
            "FinishedAt": "2024-05-29T17:05:00.000000000Z",
        },
        "Image": CONTAINERS[1]["ImageID"],
        "Name": "/backup",
        "RestartCount": 0,
        "Driver": "overlay2",
        "HostConfig": {"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}},
    },
}

#: One reading of ``web`` (cgroup v2): 0.4 s of CPU in 1 s on a 4-CPU host -> 40 %;
#: 100 MiB used of which 4 MiB inactive page cache -> 96 MiB of a 1 GiB limit -> 9.375 %.
WEB_STATS = {
    "read": "2024-05-29T20:00:01.000000000Z",
    "preread": "2024-05-29T20:00:00.000000000Z",
    "pids_stats": {"current": 3, "limit": 18446744073709551615},
    "blkio_stats": {"io_service_bytes_recursive": None},
    "num_procs": 0,
    "storage_stats": {},
    "cpu_stats": {
        "cpu_usage": {
            "total_usage": 2_400_000_000,
            "usage_in_kernelmode": 600_000_000,
            "usage_in_usermode": 1_800_000_000,
        },
        "system_cpu_usage": 9_004_000_000_000,
        "online_cpus": 4,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    },
    "precpu_stats": {
        "cpu_usage": {
            "total_usage": 2_000_000_000,
            "usage_in_kernelmode": 500_000_000,
            "usage_in_usermode": 1_500_000_000,
        },
        "system_cpu_usage": 9_000_000_000_000,
        "online_cpus": 4,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    },
    "memory_stats": {
        "usage": 100 * MIB,
        "stats": {"active_anon": 90 * MIB, "inactive_file": 4 * MIB, "file": 6 * MIB},
        "limit": GIB,
    },
    "name": "/web",
    "id": WEB_ID,
    "networks": {
        "eth0": {
            "rx_bytes": 5338,
            "rx_dropped": 0,
            "rx_errors": 0,
            "rx_packets": 36,
            "tx_bytes": 648,
            "tx_dropped": 0,
            "tx_errors": 0,
            "tx_packets": 8,
        }
    },
}


class Engine:
    """The fake engine's answers and the requests it got."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []
        self.list_status = 200
        self.stats_status = 200

    def answer(self, target: str) -> tuple[int, Any]:
        self.requests.append(target)
        url = urlsplit(target)
        query = parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        if parts == ["containers", "json"]:
            if self.list_status != 200:
                return self.list_status, {"message": "server error"}
            everything = query.get("all", ["0"])[0] in ("1", "true")
            return 200, [c for c in CONTAINERS if everything or c["State"] == "running"]
        if len(parts) == 3 and parts[0] == "containers" and parts[1] in INSPECT:
            if parts[2] == "json":
                return 200, INSPECT[parts[1]]
            if parts[2] == "stats" and self.stats_status != 200:
                return self.stats_status, {"message": "stats unavailable"}
            if parts[2] == "stats" and query.get("stream") == ["false"]:
                return 200, WEB_STATS if parts[1] == WEB_ID else {}
        return 404, {"message": f"page not found: {url.path}"}


def handler_for(engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            engine.authorizations.append(self.headers.get("Authorization"))
            status, payload = engine.answer(self.path)
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Api-Version", "1.45")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def serve(server: socketserver.BaseServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return thread


class UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False


@pytest.fixture
def engine() -> Engine:
    return Engine()


@pytest.fixture
def socket_url(tmp_path: Path, engine: Engine) -> Iterator[str]:
    """The fake engine on a unix socket; yields its ``unix://`` URL."""
    path = tmp_path / "docker.sock"
    server = UnixServer(str(path), handler_for(engine))
    thread = serve(server)
    try:
        yield f"unix://{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def containers(metrics: list[Metric]) -> set[str]:
    return {m.labels["container"] for m in metrics if "container" in m.labels}


async def test_engine_reachable_reports_docker_up_1(socket_url: str) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    assert run.value("docker.up") == 1
    assert run.health.state is HealthState.OK
    assert run.health.message == "1 of 2 container(s) running"


async def test_running_container_reports_running_1_and_state_label(socket_url: str) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    running = run.metric("docker.container.running", container="web")
    assert (running.value, running.labels["state"]) == (1, "running")


async def test_exited_container_reports_running_0_and_state_label(socket_url: str) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    running = run.metric("docker.container.running", container="backup")
    assert (running.value, running.labels["state"]) == (0, "exited")


async def test_labels_name_the_container_image_and_short_id(socket_url: str) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    restarts = run.metric("docker.container.restarts", container="web")
    assert restarts.labels == {"container": "web", "image": "nginx:1.27", "id": WEB_ID[:12]}


async def test_cpu_percent_is_computed_as_the_docker_cli_does(socket_url: str) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    cpu = run.metric("docker.container.cpu_percent", container="web")
    assert (cpu.value, cpu.unit) == (40.0, "%")


async def test_memory_usage_excludes_inactive_page_cache(socket_url: str) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    assert run.metric("docker.container.memory_usage", container="web").value == 96 * MIB
    assert run.metric("docker.container.memory_limit", container="web").value == GIB
    assert run.metric("docker.container.memory_percent", container="web").value == 9.38


async def test_network_traffic_is_reported_as_counters(socket_url: str) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    rx = run.metric("docker.container.network_rx_bytes", container="web")
    assert (rx.value, rx.kind) == (5338, "counter")
    assert run.metric("docker.container.network_tx_bytes", container="web").value == 648


async def test_restarts_come_from_inspect_as_a_counter(socket_url: str) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    restarts = run.metric("docker.container.restarts", container="web")
    assert (restarts.value, restarts.kind) == (3, "counter")
    assert run.metric("docker.container.restarts", container="backup").value == 0


async def test_healthy_healthcheck_reports_healthy_1(socket_url: str) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    assert run.metric("docker.container.healthy", container="web").value == 1


async def test_healthy_is_omitted_without_a_healthcheck(socket_url: str) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    assert not run.has("docker.container.healthy", container="backup")


async def test_stopped_container_gets_no_stats_request_and_no_usage(
    socket_url: str, engine: Engine
) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    assert not any(r.startswith(f"/containers/{BACKUP_ID}/stats") for r in engine.requests)
    assert not run.has("docker.container.cpu_percent", container="backup")
    assert not run.has("docker.container.memory_usage", container="backup")


async def test_container_counts_are_reported_per_state(socket_url: str) -> None:
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    counts = {m.labels["state"]: m.value for m in run.find("docker.containers")}
    assert counts["running"] == 1
    assert counts["exited"] == 1
    assert counts["paused"] == 0


async def test_all_false_asks_the_engine_for_running_containers_only(
    socket_url: str, engine: Engine
) -> None:
    run = (
        await run_plugin_async(Docker, instance_id="docker", url=socket_url, all=False)
    ).assert_ok()
    assert engine.requests[0] == "/containers/json?all=0"
    assert containers(run.metrics) == {"web"}


async def test_include_patterns_keep_only_matching_containers(socket_url: str) -> None:
    run = (
        await run_plugin_async(Docker, instance_id="docker", url=socket_url, include=["back*"])
    ).assert_ok()
    assert containers(run.metrics) == {"backup"}


async def test_exclude_patterns_drop_matching_containers(socket_url: str) -> None:
    run = (
        await run_plugin_async(Docker, instance_id="docker", url=socket_url, exclude=["web"])
    ).assert_ok()
    assert containers(run.metrics) == {"backup"}


async def test_absent_socket_reports_docker_up_0_and_failing_health(tmp_path: Path) -> None:
    run = (
        await run_plugin_async(
            Docker, instance_id="docker", url=f"unix://{tmp_path / 'missing.sock'}"
        )
    ).assert_ok()
    assert [(m.name, m.value) for m in run.metrics] == [("docker.up", 0)]
    assert run.health.state is HealthState.FAILING
    assert "ConnectError" in run.health.message


async def test_engine_error_answer_reports_docker_up_0(socket_url: str, engine: Engine) -> None:
    engine.list_status = 500
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    assert [(m.name, m.value) for m in run.metrics] == [("docker.up", 0)]
    assert "HTTP 500 server error" in run.health.message


async def test_failed_stats_still_report_state_health_and_restarts(
    socket_url: str, engine: Engine
) -> None:
    engine.stats_status = 500
    run = (await run_plugin_async(Docker, instance_id="docker", url=socket_url)).assert_ok()
    assert run.metric("docker.container.running", container="web").value == 1
    assert run.metric("docker.container.restarts", container="web").value == 3
    assert not run.has("docker.container.cpu_percent", container="web")


async def test_tcp_url_reaches_an_engine_over_http(engine: Engine) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(engine))
    server.daemon_threads = True
    thread = serve(server)
    try:
        run = (
            await run_plugin_async(
                Docker, instance_id="docker", url=f"tcp://127.0.0.1:{server.server_port}"
            )
        ).assert_ok()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert run.metric("docker.container.running", container="web").value == 1


async def test_credentials_in_an_http_url_are_sent_as_basic_auth(engine: Engine) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(engine))
    server.daemon_threads = True
    thread = serve(server)
    try:
        run = (
            await run_plugin_async(
                Docker,
                instance_id="docker",
                url=f"http://ops:d0cker-pw@127.0.0.1:{server.server_port}",
            )
        ).assert_ok()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert run.metric("docker.container.running", container="web").value == 1
    basic = "Basic " + base64.b64encode(b"ops:d0cker-pw").decode()
    assert engine.authorizations and set(engine.authorizations) == {basic}


def test_cpu_percent_counts_per_cpu_entries_when_online_cpus_is_missing() -> None:
    stats = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 300, "percpu_usage": [150, 150]},
            "system_cpu_usage": 2000,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000},
    }
    assert cpu_percent(stats) == 40.0  # 200 / 1000 * 2 CPUs * 100


def test_cpu_percent_is_none_without_a_previous_reading() -> None:
    stats = {
        "cpu_stats": {"cpu_usage": {"total_usage": 300}, "system_cpu_usage": 2000},
        "precpu_stats": {"cpu_usage": {"total_usage": 0}},
    }
    assert cpu_percent(stats) is None


def test_memory_usage_subtracts_cgroup_v1_total_inactive_file() -> None:
    stats = {"memory_stats": {"usage": 1000, "limit": 4000, "stats": {"total_inactive_file": 200}}}
    assert memory_usage(stats) == (800, 4000)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("unix:///var/run/docker.sock", ("http://docker", "/var/run/docker.sock")),
        ("tcp://10.0.0.5:2375", ("http://10.0.0.5:2375", None)),
        ("https://docker.lan:2376/", ("https://docker.lan:2376", None)),
    ],
)
def test_engine_address_understands_docker_host_urls(
    url: str, address: tuple[str, str | None]
) -> None:
    assert engine_address(url) == address


def test_url_with_another_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="url"):
        build_config(DockerConfig, {"url": "ssh://me@host"}, table="plugins.docker")


def test_module_registers_a_valid_plugin_type() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(docker, name="docker")
    assert manager.plugin_types()["docker"] is Docker
    assert validate_plugin_type(Docker) == []
