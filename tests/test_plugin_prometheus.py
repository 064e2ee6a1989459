"""The bundled ``prometheus`` plugin, scraping real HTTP servers on 127.0.0.1.

The exporter is built with ``prometheus_client`` (its own registry, served by
``start_http_server``); a plain ``http.server`` stands in for targets that answer with
something else (garbage, an error status, OpenMetrics) and records the request headers.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric as Family
from services import free_port

from homelab_core import ConfigError, HealthState, Metric, PluginManager
from homelab_core.options import REDACTED, build_config, config_to_dict
from homelab_core.plugin import validate_plugin_type
from homelab_core.testing import run_plugin_async
from homelab_plugins import prometheus
from homelab_plugins.prometheus import Prometheus, PrometheusConfig, sanitize_name

pytestmark = pytest.mark.anyio


class RpcSummary:
    """A collector exposing a summary with quantiles (prometheus_client's Summary has none)."""

    def collect(self) -> Iterator[Family]:
        family = Family("rpc_duration_seconds", "RPC latency.", "summary")
        family.add_sample("rpc_duration_seconds", {"quantile": "0.5"}, 0.25)
        family.add_sample("rpc_duration_seconds", {"quantile": "0.99"}, 0.75)
        family.add_sample("rpc_duration_seconds_sum", {}, 12.5)
        family.add_sample("rpc_duration_seconds_count", {}, 40)
        yield family


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    """A prometheus_client exporter with a counter, gauges, a histogram and a summary."""
    registry = CollectorRegistry()
    requests = Counter("http_requests", "Requests.", ["method", "job"], registry=registry)
    requests.labels(method="get", job="node").inc(7)
    requests.labels(method="post", job="web").inc(2)
    Gauge("room_temperature_celsius", "Temperature.", registry=registry).set(21.5)
    Gauge("broken_ratio", "Always NaN.", registry=registry).set(float("nan"))
    latency = Histogram(
        "request_latency_seconds", "Latency.", buckets=(0.1, 0.5, 1.0), registry=registry
    )
    for value in (0.05, 0.3, 0.3, 2.0):
        latency.observe(value)
    registry.register(RpcSummary())
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Answer:
    """What the plain server answers, and the headers of the last request it got."""

    def __init__(self) -> None:
        self.status = 200
        self.content_type = "text/plain; version=0.0.4"
        self.body = ""
        self.headers: dict[str, str] = {}


@pytest.fixture
def plain() -> Iterator[tuple[str, Answer]]:
    """A plain HTTP server answering whatever the test sets on the returned ``Answer``."""
    answer = Answer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer.headers = dict(self.headers.items())
            body = answer.body.encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics", answer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def exported(metrics: list[Metric]) -> set[str]:
    return {m.name for m in metrics if not m.name.startswith("prometheus.")}


async def test_counter_samples_become_counter_metrics_with_their_labels(exporter: str) -> None:
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=exporter)).assert_ok()
    [get] = [m for m in run.find("http_requests_total") if m.labels["method"] == "get"]
    assert get.value == 7
    assert get.labels == {"method": "get", "job": "node"}
    assert get.kind == "counter"


async def test_gauge_is_a_gauge_with_the_unit_of_its_name_suffix(exporter: str) -> None:
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=exporter)).assert_ok()
    (temperature,) = run.find("room_temperature_celsius")
    assert (temperature.value, temperature.kind, temperature.unit) == (21.5, "gauge", "°C")


async def test_histogram_reports_cumulative_buckets_with_le_labels(exporter: str) -> None:
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=exporter)).assert_ok()
    buckets = {m.labels["le"]: m.value for m in run.find("request_latency_seconds_bucket")}
    assert buckets == {"0.1": 1, "0.5": 3, "1.0": 3, "+Inf": 4}
    assert all(m.kind == "counter" for m in run.find("request_latency_seconds_bucket"))


async def test_histogram_reports_sum_in_its_unit_and_count(exporter: str) -> None:
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=exporter)).assert_ok()
    (total,) = run.find("request_latency_seconds_sum")
    (count,) = run.find("request_latency_seconds_count")
    assert total.value == pytest.approx(2.65)
    assert (total.unit, total.kind) == ("s", "counter")
    assert (count.value, count.unit, count.kind) == (4, "", "counter")


async def test_summary_reports_quantiles_as_gauges_and_sum_and_count(exporter: str) -> None:
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=exporter)).assert_ok()
    quantiles = {m.labels["quantile"]: m for m in run.find("rpc_duration_seconds")}
    assert {q: m.value for q, m in quantiles.items()} == {"0.5": 0.25, "0.99": 0.75}
    assert all(m.kind == "gauge" for m in quantiles.values())
    assert run.value("rpc_duration_seconds_sum") == 12.5
    assert run.value("rpc_duration_seconds_count") == 40


async def test_meta_metrics_report_up_duration_and_sample_counts(exporter: str) -> None:
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=exporter)).assert_ok()
    assert run.value("prometheus.up") == 1
    assert 0 < run.value("prometheus.scrape_duration") < 10
    reported = len(run.metrics) - len([m for m in run.metrics if m.name.startswith("prometheus.")])
    assert run.value("prometheus.samples_reported") == reported
    assert run.value("prometheus.samples") == reported + 1  # the NaN gauge
    assert run.health is None


async def test_nan_samples_are_skipped_and_counted(exporter: str) -> None:
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=exporter)).assert_ok()
    assert not run.find("broken_ratio")
    assert run.value("prometheus.samples_dropped", reason="non_finite") == 1


async def test_include_patterns_keep_only_matching_names(exporter: str) -> None:
    run = (
        await run_plugin_async(
            Prometheus, instance_id="prom", url=exporter, include=["http_requests*", "room_*"]
        )
    ).assert_ok()
    assert exported(run.metrics) == {
        "http_requests_total",
        "http_requests_created",
        "room_temperature_celsius",
    }


async def test_include_pattern_matches_a_family_name_for_all_its_samples(exporter: str) -> None:
    run = (
        await run_plugin_async(
            Prometheus,
            instance_id="prom",
            url=exporter,
            include=["request_latency_seconds"],
            exclude=["*_created"],
        )
    ).assert_ok()
    assert exported(run.metrics) == {
        "request_latency_seconds_bucket",
        "request_latency_seconds_sum",
        "request_latency_seconds_count",
    }


async def test_exclude_patterns_drop_matching_names(exporter: str) -> None:
    run = (
        await run_plugin_async(
            Prometheus,
            instance_id="prom",
            url=exporter,
            exclude=["*_created", "request_latency_*", "rpc_*"],
        )
    ).assert_ok()
    assert exported(run.metrics) == {"http_requests_total", "room_temperature_celsius"}
    assert run.value("prometheus.samples_dropped", reason="filtered") > 0


async def test_label_filter_keeps_only_samples_whose_labels_match(exporter: str) -> None:
    run = (
        await run_plugin_async(Prometheus, instance_id="prom", url=exporter, labels={"job": "node"})
    ).assert_ok()
    assert exported(run.metrics) == {"http_requests_total", "http_requests_created"}
    assert {m.labels["method"] for m in run.find("http_requests_total")} == {"get"}


async def test_label_filter_values_are_shell_patterns(exporter: str) -> None:
    run = (
        await run_plugin_async(
            Prometheus,
            instance_id="prom",
            url=exporter,
            include=["http_requests_total"],
            labels={"job": "w*"},
        )
    ).assert_ok()
    assert [m.labels["method"] for m in run.find("http_requests_total")] == ["post"]


async def test_max_samples_caps_the_samples_and_degrades_health(exporter: str) -> None:
    run = (
        await run_plugin_async(Prometheus, instance_id="prom", url=exporter, max_samples=3)
    ).assert_ok()
    assert len(exported(run.metrics)) <= 3
    assert run.value("prometheus.samples_reported") == 3
    assert run.value("prometheus.samples_dropped", reason="over_limit") > 0
    assert run.health.state is HealthState.DEGRADED
    assert "max_samples (3)" in run.health.message


async def test_prefix_is_prepended_to_sample_names(exporter: str) -> None:
    run = (
        await run_plugin_async(
            Prometheus, instance_id="prom", url=exporter, include=["room_*"], prefix="lab."
        )
    ).assert_ok()
    assert exported(run.metrics) == {"lab.room_temperature_celsius"}
    assert run.value("prometheus.up") == 1


async def test_closed_port_is_a_successful_collection_with_up_0() -> None:
    run = (
        await run_plugin_async(
            Prometheus,
            instance_id="prom",
            url=f"http://127.0.0.1:{free_port()}/metrics",
            request_timeout=2,
        )
    ).assert_ok()
    assert run.value("prometheus.up") == 0
    assert run.value("prometheus.samples") == 0
    assert exported(run.metrics) == set()
    assert run.health.state is HealthState.FAILING
    assert "ConnectError" in run.health.message


async def test_garbage_answer_is_a_successful_collection_with_up_0(
    plain: tuple[str, Answer],
) -> None:
    url, answer = plain
    answer.content_type, answer.body = "text/html", "<html><body>Hello!</body></html>\n"
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=url)).assert_ok()
    assert run.value("prometheus.up") == 0
    assert run.health.state is HealthState.FAILING
    assert "not a Prometheus exposition" in run.health.message


async def test_error_status_is_a_successful_collection_with_up_0(
    plain: tuple[str, Answer],
) -> None:
    url, answer = plain
    answer.status, answer.body = 503, "down for maintenance"
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=url)).assert_ok()
    assert run.value("prometheus.up") == 0
    assert "HTTP 503" in run.health.message


async def test_invalid_characters_in_names_are_sanitized(plain: tuple[str, Answer]) -> None:
    url, answer = plain
    answer.body = '{"9lives/ratio", cat="tom"} 0.5\n{"disk usage"} 3\n'
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=url)).assert_ok()
    assert run.value("_9lives_ratio", cat="tom") == 0.5
    assert run.value("disk_usage") == 3


def test_sanitize_name_keeps_valid_names_and_fixes_the_rest() -> None:
    assert sanitize_name("node_cpu_seconds_total") == "node_cpu_seconds_total"
    assert sanitize_name("a.b:c-d") == "a.b:c-d"
    assert sanitize_name(":rule:avg") == "_:rule:avg"
    assert sanitize_name("héllo wörld") == "h_llo_w_rld"
    assert sanitize_name("1st", prefix="x.") == "x.1st"


async def test_openmetrics_answers_are_parsed(plain: tuple[str, Answer]) -> None:
    url, answer = plain
    answer.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    answer.body = "# TYPE jobs counter\njobs_total 5\n# EOF\n"
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=url)).assert_ok()
    (jobs,) = run.find("jobs_total")
    assert (jobs.value, jobs.kind) == (5, "counter")


async def test_bearer_token_and_headers_are_sent(plain: tuple[str, Answer]) -> None:
    url, answer = plain
    answer.body = "up 1\n"
    (
        await run_plugin_async(
            Prometheus,
            instance_id="prom",
            url=url,
            bearer_token="s3cret",
            headers={"X-Scope-OrgID": "lab"},
        )
    ).assert_ok()
    assert answer.headers["Authorization"] == "Bearer s3cret"
    assert answer.headers["X-Scope-OrgID"] == "lab"
    assert answer.headers["Accept"].startswith("text/plain")


def test_bearer_token_is_redacted_in_config_output() -> None:
    config = PrometheusConfig(url="http://127.0.0.1:9100/metrics", bearer_token="s3cret")
    assert config_to_dict(config)["bearer_token"] == REDACTED


def test_headers_are_secret_as_a_whole() -> None:
    config = PrometheusConfig(url="http://127.0.0.1:9100/metrics", headers={"X-Key": "k3y-1"})
    assert config_to_dict(config)["headers"] == {"X-Key": REDACTED}
    assert Prometheus.config_schema()["properties"]["headers"]["writeOnly"] is True


async def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown(
    plain: tuple[str, Answer],
) -> None:
    url, answer = plain
    answer.status = 401
    credentialed = url.replace("http://", "http://scraper:pr0m-pass@")
    run = (await run_plugin_async(Prometheus, instance_id="prom", url=credentialed)).assert_ok()
    assert (
        answer.headers["Authorization"]
        == "Basic " + base64.b64encode(b"scraper:pr0m-pass").decode()
    )
    assert run.value("prometheus.up") == 0
    assert "HTTP 401" in run.health.message
    assert "pr0m-pass" not in run.health.message
    assert f"http://scraper:{REDACTED}@127.0.0.1:" in run.health.message


@pytest.mark.parametrize("url", ["ftp://example.org/metrics", "127.0.0.1:9100", "http:///x"])
def test_url_must_be_http_or_https_with_a_host(url: str) -> None:
    with pytest.raises(ConfigError, match="url"):
        build_config(PrometheusConfig, {"url": url}, table="plugins.prom")


def test_options_parse_from_set_strings() -> None:
    config = build_config(
        PrometheusConfig,
        {"url": "http://h:1/m", "include": "a_*,b_*", "labels": '{"job": "node"}'},
        from_text=True,
    )
    assert (config.include, config.labels) == (["a_*", "b_*"], {"job": "node"})


async def test_teardown_closes_the_client(exporter: str) -> None:
    plugin = Prometheus(PrometheusConfig(url=exporter), instance_id="prom")
    await plugin.setup()
    client = plugin._client
    await plugin.teardown()
    assert client is not None and client.is_closed


def test_module_registers_a_valid_plugin_type() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(prometheus, name="prometheus")
    assert manager.plugin_types()["prometheus"] is Prometheus
    assert validate_plugin_type(Prometheus) == []
