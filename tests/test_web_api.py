"""The REST API through Quart's test client, with the test plugins on a real SQLite file."""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import anyio
import attrs
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart
from quart.typing import TestClientProtocol as Client

from homelab_core import (
    Execution,
    ExecutionStatus,
    Health,
    HealthState,
    Hub,
    InstanceSettings,
    Metric,
    PluginManager,
    Settings,
)
from homelab_core.bus import MemoryBus
from homelab_core.config import ServerSettings
from homelab_core.events import MetricsCollected
from homelab_core.options import REDACTED
from homelab_core.web import HomelabWeb
from homelab_core.web.auth import bind_problem, is_loopback
from homelab_core.web.errors import register_error_handlers
from homelab_core.web.latest import LatestBodies

pytestmark = pytest.mark.anyio

Build = Callable[..., Settings]
TOKEN = "s3cret-api-token"
SECRET = "s3cret-plugin-token"


@attrs.define
class Served:
    """A running hub and a test client of an app that mounts the API at the root."""

    hub: Hub
    client: Client
    web: HomelabWeb


@pytest.fixture
def serve(manager: PluginManager) -> Callable[[Settings], Any]:
    """Run a hub with the test plugin types and serve the API at the root of a Quart app."""

    @asynccontextmanager
    async def run(settings: Settings) -> AsyncIterator[Served]:
        app = Quart(__name__)
        hub = Hub(settings, plugin_manager=manager)
        web = HomelabWeb(app, hub=hub)
        register_error_handlers(app)
        async with hub, app.test_app() as test_app:
            yield Served(hub, test_app.test_client(), web)

    return run


def standard_instances() -> list[InstanceSettings]:
    """Instances that each run once at start (long intervals), plus a disabled one."""
    return [
        InstanceSettings(
            id="counter",
            type="counter",
            interval=3600,
            options={"series": 2, "token": SECRET},
        ),
        InstanceSettings(id="raises", type="raises", interval=3600),
        InstanceSettings(id="judge", type="judges", interval=3600),
        InstanceSettings(id="off", type="counter", enabled=False),
    ]


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    """Wait until ``check()`` (a bool, or an awaitable of one) is true."""
    with anyio.fail_after(timeout):
        while True:
            result = check()
            if await result if inspect.isawaitable(result) else result:
                return
            await anyio.sleep(0.01)


async def first_runs_stored(hub: Hub) -> None:
    """Wait until each enabled standard instance ran once and everything was written."""

    async def done() -> bool:
        counts = await hub.store.execution_counts(since=0)
        return sum(counts.values()) == 3 and await hub.store.count_samples() == 3

    await eventually(done)


@pytest.fixture
async def api(serve: Any, make_settings: Build) -> AsyncIterator[Served]:
    """The standard instances, each run once and stored."""
    async with serve(make_settings(*standard_instances())) as served:
        await first_runs_stored(served.hub)
        yield served


async def json_of(response: Any, status: int = 200) -> Any:
    """The JSON body of ``response``, which must have ``status``."""
    body = await response.get_data(as_text=True)
    assert response.status_code == status, body
    assert response.mimetype == "application/json", body
    return await response.get_json()


async def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """``response`` is a JSON error ``{"error": {"code", "message"}}`` with ``status``."""
    body = await json_of(response, status)
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- GET /api/plugins ------------------------------------------------------------------------


async def test_list_plugins_returns_every_instance_in_config_order(api: Served) -> None:
    body = await json_of(await api.client.get("/api/plugins"))
    assert body["count"] == 4
    assert [p["id"] for p in body["plugins"]] == ["counter", "raises", "judge", "off"]
    counter = body["plugins"][0]
    assert counter["type"] == "counter"
    assert counter["title"] == "Counter"
    assert counter["category"] == "test"
    assert counter["enabled"] is True
    assert counter["interval"] == 3600
    assert counter["health"]["state"] == "ok"


async def test_list_plugins_redacts_secret_options(api: Served) -> None:
    response = await api.client.get("/api/plugins")
    body = await json_of(response)
    assert body["plugins"][0]["config"]["token"] == REDACTED
    assert SECRET not in await response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"category": "test"}, ["counter", "off"]),
        ({"category": "other"}, ["raises", "judge"]),
        ({"category": "nothing"}, []),
        ({"enabled": "true"}, ["counter", "raises", "judge"]),
        ({"enabled": "false"}, ["off"]),
        ({"status": "ok"}, ["counter"]),
        ({"status": "degraded"}, ["raises", "judge"]),
        ({"status": "disabled"}, ["off"]),
        ({"status": "failing"}, []),
        ({"category": "test", "enabled": "true"}, ["counter"]),
    ],
)
async def test_list_plugins_filters(
    api: Served, query: dict[str, str], expected: list[str]
) -> None:
    body = await json_of(await api.client.get("/api/plugins", query_string=query))
    assert [p["id"] for p in body["plugins"]] == expected
    assert body["count"] == len(expected)


@pytest.mark.parametrize(
    "query",
    [{"enabled": "maybe"}, {"enabled": ""}, {"status": "bogus"}, {"status": ""}],
)
async def test_list_plugins_rejects_bad_filters(api: Served, query: dict[str, str]) -> None:
    await assert_error(await api.client.get("/api/plugins", query_string=query), 400)


# -- GET /api/plugins/{id} ------------------------------------------------------------------


async def test_plugin_details_describe_the_type(api: Served) -> None:
    body = await json_of(await api.client.get("/api/plugins/counter"))
    assert body["plugin"]["id"] == "counter"
    assert body["type"] == {
        "name": "counter",
        "title": "Counter",
        "category": "test",
        "description": "Reports how many times it has run.",
        "version": body["type"]["version"],
        "default_interval": 0.1,
    }
    assert isinstance(body["type"]["version"], str)


async def test_plugin_details_redact_secret_config(api: Served) -> None:
    response = await api.client.get("/api/plugins/counter")
    body = await json_of(response)
    assert body["plugin"]["config"] == {"series": 2, "delay": 0.0, "token": REDACTED}
    assert SECRET not in await response.get_data(as_text=True)


async def test_plugin_details_include_the_config_schema(api: Served) -> None:
    body = await json_of(await api.client.get("/api/plugins/counter"))
    schema = body["config_schema"]
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"series", "delay", "token"}
    assert schema["properties"]["series"]["type"] == "integer"
    assert schema["properties"]["token"]["x-secret"] is True


async def test_plugin_details_include_run_stats(api: Served) -> None:
    counter = await json_of(await api.client.get("/api/plugins/counter"))
    raises = await json_of(await api.client.get("/api/plugins/raises"))
    counts = ("runs", "ok", "errors", "timeouts", "skipped")
    assert [counter["stats"][k] for k in counts] == [1, 1, 0, 0, 0]
    assert [raises["stats"][k] for k in counts] == [1, 0, 1, 0, 0]
    assert counter["stats"]["last_execution"]["status"] == "ok"
    assert raises["stats"]["last_execution"]["status"] == "error"


# -- POST /api/plugins/{id}/enable ------------------------------------------------------------


async def test_disabling_stops_the_instance_and_persists(serve: Any, make_settings: Build) -> None:
    settings = make_settings(InstanceSettings(id="fast", type="counter", interval=0.05))
    async with serve(settings) as s:
        plugin = s.hub.scheduler.plugin("fast")
        await eventually(lambda: plugin.runs >= 2)
        body = await json_of(
            await s.client.post("/api/plugins/fast/enable", json={"enabled": False})
        )
        assert body["enabled"] is False
        assert body["health"]["state"] == "disabled"
        assert s.hub.instance("fast").enabled is False
        assert (await s.hub.store.instance_states())["fast"].enabled is False
        runs = plugin.runs
        await anyio.sleep(0.3)
        assert plugin.runs == runs
        assert plugin.torn_down


async def test_enabling_again_resumes_runs_and_persists(serve: Any, make_settings: Build) -> None:
    settings = make_settings(InstanceSettings(id="fast", type="counter", interval=0.05))
    async with serve(settings) as s:
        await json_of(await s.client.post("/api/plugins/fast/enable", json={"enabled": False}))
        body = await json_of(
            await s.client.post("/api/plugins/fast/enable", json={"enabled": True})
        )
        assert body["enabled"] is True
        assert body["health"]["state"] != "disabled"
        assert (await s.hub.store.instance_states())["fast"].enabled is True
        plugin = s.hub.scheduler.plugin("fast")
        runs = plugin.runs
        await eventually(lambda: plugin.runs >= runs + 2)


async def test_disabled_state_survives_a_restart(serve: Any, make_settings: Build) -> None:
    settings = make_settings(InstanceSettings(id="fast", type="counter", interval=0.05))
    async with serve(settings) as s:
        await json_of(await s.client.post("/api/plugins/fast/enable", json={"enabled": False}))
    async with serve(settings) as s:
        body = await json_of(await s.client.get("/api/plugins/fast"))
    assert body["plugin"]["enabled"] is False


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"json": {}}, id="missing-field"),
        pytest.param({"json": {"enabled": "yes"}}, id="string"),
        pytest.param({"json": {"enabled": "true"}}, id="string-true"),
        pytest.param({"json": {"enabled": 1}}, id="integer"),
        pytest.param({"json": {"enabled": None}}, id="null"),
        pytest.param({"json": [True]}, id="array"),
        pytest.param({"json": True}, id="bare-bool"),
        pytest.param(
            {"data": "not json", "headers": {"Content-Type": "application/json"}},
            id="not-json",
        ),
        pytest.param(
            {"data": "", "headers": {"Content-Type": "application/json"}}, id="empty-json"
        ),
    ],
)
async def test_enable_rejects_bad_bodies(api: Served, body: dict[str, Any]) -> None:
    await assert_error(await api.client.post("/api/plugins/counter/enable", **body), 400)
    assert api.hub.instance("counter").enabled is True


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"data": "enabled=false"}, id="form-text"),
        pytest.param({}, id="empty"),
    ],
)
async def test_enable_refuses_what_a_form_could_send(api: Served, body: dict[str, Any]) -> None:
    """No JSON content type (nor a bearer token): a form of another site could send it."""
    response = await api.client.post("/api/plugins/counter/enable", **body)
    await assert_error(response, 415, "unsupported_media_type")
    assert api.hub.instance("counter").enabled is True


# -- status, latest metrics ---------------------------------------------------------------------


async def test_status_reports_health(api: Served) -> None:
    body = await json_of(await api.client.get("/api/plugins/raises/status"))
    assert body["state"] == "degraded"
    assert body["consecutive_failures"] == 1
    assert "the sensor is on fire" in body["last_error"]
    assert body["last_success"] is None


async def test_status_of_a_disabled_instance(api: Served) -> None:
    body = await json_of(await api.client.get("/api/plugins/off/status"))
    assert body["state"] == "disabled"


async def test_latest_metrics_lists_every_series(api: Served) -> None:
    body = await json_of(await api.client.get("/api/plugins/counter/metrics"))
    assert body["plugin_id"] == "counter"
    metrics = sorted(body["metrics"], key=lambda m: m["labels"]["series"])
    assert [(m["name"], m["labels"], m["value"], m["unit"]) for m in metrics] == [
        ("count", {"series": "0"}, 1.0, "runs"),
        ("count", {"series": "1"}, 1.0, "runs"),
    ]
    assert all(m["kind"] == "gauge" and m["timestamp"] is not None for m in metrics)


async def test_latest_metrics_of_an_instance_that_never_ran(api: Served) -> None:
    body = await json_of(await api.client.get("/api/plugins/off/metrics"))
    assert body == {"plugin_id": "off", "metrics": []}


async def test_latest_metrics_are_encoded_once_until_the_next_run(api: Served) -> None:
    latest = api.web.latest
    first = await api.client.get("/api/plugins/counter/metrics")
    misses, hits = latest.misses, latest.hits
    again = await api.client.get("/api/plugins/counter/metrics")
    assert await again.get_data() == await first.get_data()
    assert (latest.misses, latest.hits) == (misses, hits + 1)
    assert again.content_type == "application/json"
    # A run changes the values: the very next read has them (the bus tells the cache as it
    # publishes, before the run is reported done).
    await json_of(await api.client.post("/api/plugins/counter/run", json={}))
    body = await json_of(await api.client.get("/api/plugins/counter/metrics"))
    assert [m["value"] for m in body["metrics"]] == [2.0, 2.0]
    assert latest.misses == misses + 1


class SlowLatestHub:
    """Enough of a hub for :class:`LatestBodies`, whose reads wait for ``release``."""

    def __init__(self) -> None:
        self.bus = MemoryBus()
        self.value = 1.0
        self.release = anyio.Event()

    def plugin_type(self, instance_id: str) -> type:
        return object

    def subscribe(self, **kwargs: Any) -> Any:
        return self.bus.subscribe(**kwargs)

    async def latest(self, instance_id: str) -> list[Metric]:
        metrics = [Metric("x", self.value, timestamp=1.0)]
        await self.release.wait()
        return metrics

    def change(self, value: float) -> None:
        self.value = value
        self.bus.publish(MetricsCollected("one", [Metric("x", value)]))


def values_of(body: bytes) -> list[float]:
    return [m["value"] for m in json.loads(body)["metrics"]]


async def test_a_latest_body_read_while_the_values_change_is_not_kept() -> None:
    hub = SlowLatestHub()
    async with LatestBodies(hub).watching() as latest:  # type: ignore[arg-type]
        async with anyio.create_task_group() as tg:
            read: list[bytes] = []

            async def get() -> None:
                read.append(await latest.body("one"))

            tg.start_soon(get)
            await anyio.wait_all_tasks_blocked()
            hub.change(2.0)  # while the first read holds the old values
            hub.release.set()
        assert values_of(read[0]) == [1.0]
        assert values_of(await latest.body("one")) == [2.0], "the old body was not kept"
        assert values_of(await latest.body("one")) == [2.0]
        assert (latest.misses, latest.hits) == (2, 1)
        hub.change(3.0)
        assert values_of(await latest.body("one")) == [3.0]
    assert values_of(await LatestBodies(hub).body("one")) == [3.0], "answers when not watching"


# -- GET /api/plugins/{id}/metrics/history ------------------------------------------------------


async def seed_history(hub: Hub) -> float:
    """Ten samples a minute apart on two series of ``off``; returns the first timestamp.

    Series ``disk=a`` has values 0..9, ``disk=b`` 0..90; the first sample starts a
    10-minute bucket.
    """
    base = math.floor((time.time() - 7200) / 600) * 600.0
    metrics = [
        Metric("temp", v * i, unit="°C", labels={"disk": d}, timestamp=base + i * 60)
        for i in range(10)
        for d, v in (("a", 1), ("b", 10))
    ]
    await hub.store.write([("off", metrics)])
    return base


def history_url(**params: Any) -> str:
    query = urlencode({"metric": "temp", **{k: v for k, v in params.items() if v is not None}})
    return f"/api/plugins/off/metrics/history?{query}"


async def test_history_returns_every_series_of_the_metric(api: Served) -> None:
    base = await seed_history(api.hub)
    body = await json_of(await api.client.get(history_url(since=base, until=base + 600, step=600)))
    assert body["plugin_id"] == "off"
    assert body["metric"] == "temp"
    assert body["agg"] == "avg"
    assert [(s["name"], s["labels"], s["unit"]) for s in body["series"]] == [
        ("temp", {"disk": "a"}, "°C"),
        ("temp", {"disk": "b"}, "°C"),
    ]
    assert [s["points"] for s in body["series"]] == [[[base, 4.5]], [[base, 45.0]]]
    assert all(s["resolution"] == 600 for s in body["series"])


async def test_history_of_an_unknown_metric_is_empty(api: Served) -> None:
    response = await api.client.get("/api/plugins/off/metrics/history?metric=nothing")
    assert (await json_of(response))["series"] == []


@pytest.mark.parametrize(("labels", "expected"), [("disk=a", [4.5]), ("disk = b", [45.0])])
async def test_history_filters_by_labels(api: Served, labels: str, expected: list[float]) -> None:
    base = await seed_history(api.hub)
    url = history_url(since=base, until=base + 600, step=600, labels=labels)
    body = await json_of(await api.client.get(url))
    assert [p[1] for s in body["series"] for p in s["points"]] == expected


async def test_history_labels_matching_no_series(api: Served) -> None:
    base = await seed_history(api.hub)
    url = history_url(since=base, until=base + 600, labels="disk=a,host=nas")
    assert (await json_of(await api.client.get(url)))["series"] == []


@pytest.mark.parametrize(("agg", "expected"), [("avg", 4.5), ("min", 0.0), ("max", 9.0)])
async def test_history_aggregates(api: Served, agg: str, expected: float) -> None:
    base = await seed_history(api.hub)
    url = history_url(since=base, until=base + 600, step=600, agg=agg, labels="disk=a")
    body = await json_of(await api.client.get(url))
    assert body["agg"] == agg
    assert body["series"][0]["points"] == [[base, expected]]


async def test_history_step_sets_the_bucket_width(api: Served) -> None:
    base = await seed_history(api.hub)
    url = history_url(since=base, until=base + 600, step=300, labels="disk=a")
    series = (await json_of(await api.client.get(url)))["series"][0]
    assert series["resolution"] == 300
    assert series["points"] == [[base, 2.0], [base + 300, 7.0]]


async def test_history_points_caps_the_number_of_buckets(api: Served) -> None:
    base = await seed_history(api.hub)
    url = history_url(since=base, until=base + 600, points=5, labels="disk=a")
    series = (await json_of(await api.client.get(url)))["series"][0]
    assert series["resolution"] == 120
    assert series["points"] == [[base + 120 * k, 2 * k + 0.5] for k in range(5)]


def iso_z(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def iso_offset(t: float) -> str:
    return datetime.fromtimestamp(t, timezone(timedelta(hours=2))).isoformat()


def iso_naive(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None).isoformat()


@pytest.mark.parametrize("fmt", [str, iso_z, iso_offset, iso_naive], ids=lambda f: f.__name__)
async def test_history_accepts_absolute_times(api: Served, fmt: Callable[[float], str]) -> None:
    base = await seed_history(api.hub)
    url = history_url(since=fmt(base), until=fmt(base + 600), step=600, labels="disk=a")
    body = await json_of(await api.client.get(url))
    assert (body["since"], body["until"]) == (base, base + 600)
    assert body["series"][0]["points"] == [[base, 4.5]]


@pytest.mark.parametrize(("since", "seconds"), [("-1h", 3600), ("-30m", 1800), ("-2d", 172800)])
async def test_history_accepts_relative_times(api: Served, since: str, seconds: float) -> None:
    body = await json_of(await api.client.get(history_url(since=since)))
    now = time.time()
    assert now - 5 < body["until"] <= now
    assert body["until"] - body["since"] == pytest.approx(seconds)


async def test_history_relative_until(api: Served) -> None:
    body = await json_of(await api.client.get(history_url(since="-2h", until="-1h")))
    assert body["until"] - body["since"] == pytest.approx(3600)
    assert time.time() - 3605 < body["until"] <= time.time() - 3600


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"since": "yesterday"}, id="since-word"),
        pytest.param({"since": ""}, id="since-empty"),
        pytest.param({"since": "-1y"}, id="since-bad-unit"),
        pytest.param({"since": "nan"}, id="since-nan"),
        pytest.param({"until": "soon"}, id="until-word"),
        pytest.param({"until": "2024-13-45T00:00:00"}, id="until-bad-date"),
        pytest.param({"step": "0"}, id="step-zero"),
        pytest.param({"step": "-60"}, id="step-negative"),
        pytest.param({"step": "abc"}, id="step-text"),
        pytest.param({"step": "nan"}, id="step-nan"),
        pytest.param({"step": "inf"}, id="step-inf"),
        pytest.param({"agg": "median"}, id="agg-unknown"),
        pytest.param({"agg": ""}, id="agg-empty"),
        pytest.param({"labels": "disk"}, id="labels-no-equals"),
        pytest.param({"labels": "=a"}, id="labels-no-key"),
        pytest.param({"labels": "disk=a,"}, id="labels-trailing-comma"),
        pytest.param({"points": "0"}, id="points-zero"),
        pytest.param({"points": "2001"}, id="points-too-many"),
        pytest.param({"points": "-1"}, id="points-negative"),
        pytest.param({"points": "x"}, id="points-text"),
        pytest.param({"since": "2000", "until": "1000"}, id="until-before-since"),
        pytest.param({"since": "1000", "until": "1000"}, id="until-equals-since"),
        pytest.param({"since": "-1h", "until": "-2h"}, id="relative-until-before-since"),
    ],
)
async def test_history_rejects_bad_parameters(api: Served, params: dict[str, str]) -> None:
    await assert_error(await api.client.get(history_url(**params)), 400, "invalid_request")


async def test_history_without_parameters_has_every_series_of_the_last_hour(api: Served) -> None:
    """As the seed's clients call it: no metric, no times; every metric, the last hour."""
    now = time.time()
    metrics = [
        Metric("temp", 20.0, labels={"disk": "a"}, timestamp=now - 600),
        Metric("hum", 40.0, timestamp=now - 300),
        Metric("old", 1.0, timestamp=now - 7200),
    ]
    await api.hub.store.write([("off", metrics)])
    body = await json_of(await api.client.get("/api/plugins/off/metrics/history"))
    assert body["metric"] is None
    assert body["until"] - body["since"] == pytest.approx(3600)
    assert [(s["name"], s["labels"]) for s in body["series"] if s["points"]] == [
        ("hum", {}),
        ("temp", {"disk": "a"}),
    ]


@pytest.mark.parametrize(("step", "width"), [("300", 300), ("5m", 300), ("600s", 600)])
async def test_history_step_accepts_durations(api: Served, step: str, width: float) -> None:
    base = await seed_history(api.hub)
    url = history_url(since=base, until=base + 600, step=step, labels="disk=a")
    series = (await json_of(await api.client.get(url)))["series"][0]
    assert series["resolution"] == width


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"since": "yesterday"}, "ISO 8601"),
        ({"until": "soon"}, "epoch seconds"),
        ({"since": "1 hour ago"}, "-30m"),
        ({"step": "5 minutes"}, "10s, 5m, 1h"),
        ({"step": "-5m"}, "10s, 5m, 1h"),
    ],
)
async def test_history_says_in_words_which_forms_it_accepts(
    api: Served, params: dict[str, str], words: str
) -> None:
    error = await assert_error(await api.client.get(history_url(**params)), 400, "invalid_request")
    assert words in error["message"]
    assert "^(" not in error["message"] and "pattern" not in error["message"]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"since": "-1e308"}, id="since-near-float-max"),
        pytest.param({"since": "-1.7e308", "until": "1.7e308"}, id="range-overflows"),
        pytest.param({"since": "-1e300", "step": "1e-300"}, id="tiny-step-huge-range"),
        pytest.param({"since": "-99999999999999999999999999999999w"}, id="huge-relative"),
        pytest.param({"since": "-1", "step": "1e19"}, id="huge-step"),
    ],
)
async def test_history_extreme_times_are_not_a_server_error(
    api: Served, params: dict[str, str]
) -> None:
    """Far-out but finite times either answer or are refused with 400, never a 500."""
    await seed_history(api.hub)
    response = await api.client.get(history_url(**params))
    if response.status_code != 200:
        await assert_error(response, 400)


# -- GET /api/history ---------------------------------------------------------------------------


async def test_many_histories_answer_each_pair_as_the_single_history_would(api: Served) -> None:
    base = await seed_history(api.hub)
    await api.hub.store.write([("raises", [Metric("fan", 7.0, timestamp=base + 30)])])
    window = {"since": base, "until": base + 600, "step": 600}
    query = urlencode({"series": "off:temp,raises:fan,off:nothing", **window})
    body = await json_of(await api.client.get(f"/api/history?{query}"))
    single = await json_of(await api.client.get(history_url(**window)))
    assert (body["since"], body["until"], body["agg"]) == (base, base + 600, "avg")
    assert [(r["plugin_id"], r["metric"]) for r in body["results"]] == [
        ("off", "temp"),
        ("raises", "fan"),
        ("off", "nothing"),
    ]
    assert body["results"][0] == single
    assert [s["points"] for s in body["results"][1]["series"]] == [[[base, 7.0]]]
    assert body["results"][2]["series"] == []


@pytest.mark.parametrize(
    ("series", "words"),
    [
        pytest.param("off", "'off' is not instance:metric", id="no-colon"),
        pytest.param("off:temp,:temp", "':temp' is not instance:metric", id="no-instance"),
        pytest.param("off:", "'off:' is not instance:metric", id="no-metric"),
        pytest.param(",".join(["off:temp"] * 101), "at most 100", id="too-many"),
    ],
)
async def test_many_histories_name_a_bad_pair(api: Served, series: str, words: str) -> None:
    response = await api.client.get(f"/api/history?{urlencode({'series': series})}")
    error = await assert_error(response, 400, "invalid_request")
    assert words in error["message"]


async def test_many_histories_need_series(api: Served) -> None:
    error = await assert_error(await api.client.get("/api/history"), 400)
    assert "series" in error["message"]


async def test_many_histories_list_the_instances_that_do_not_exist(api: Served) -> None:
    """One deleted while a page asked does not fail the others."""
    body = await json_of(await api.client.get("/api/history?series=off:temp,ghost:temp"))
    assert [r["plugin_id"] for r in body["results"]] == ["off"]
    assert body["unknown"] == ["ghost"]


async def test_many_histories_check_the_range(api: Served) -> None:
    response = await api.client.get("/api/history?series=off:temp&since=2000&until=1000")
    await assert_error(response, 400, "invalid_request")


# -- GET /api/plugins/{id}/executions -----------------------------------------------------------


async def seed_executions(hub: Hub, count: int = 7) -> list[int]:
    """``count`` executions of ``off`` (even ones ok, odd ones errors); their ids, newest first."""
    start = time.time() - 100
    await hub.store.write(
        [],
        executions=[
            Execution(
                "off",
                start + i,
                0.01,
                ExecutionStatus.OK if i % 2 == 0 else ExecutionStatus.ERROR,
                error=None if i % 2 == 0 else f"failure {i}",
            )
            for i in range(count)
        ],
    )
    return [e.id for e in await hub.store.executions("off", limit=1000)]  # type: ignore[misc]


async def test_health_history_answers_the_stored_transitions_newest_first(api: Served) -> None:
    changes = [
        ("off", Health(HealthState.OK), Health(HealthState.FAILING, message="down", since=10.0)),
        ("off", Health(HealthState.FAILING), Health(HealthState.OK, since=20.0)),
    ]
    await api.hub.store.write([], [], changes)
    body = await json_of(await api.client.get("/api/plugins/off/health/history?limit=1"))
    assert body["plugin_id"] == "off"
    [latest] = body["transitions"]
    assert (latest["ts"], latest["old_state"], latest["new_state"]) == (20.0, "failing", "ok")
    assert body["next_before"] == latest["id"]
    url = f"/api/plugins/off/health/history?limit=1&before={body['next_before']}"
    older = await json_of(await api.client.get(url))
    assert [(t["new_state"], t["message"]) for t in older["transitions"]] == [("failing", "down")]
    last = await json_of(await api.client.get(url.replace("limit=1", "limit=5")))
    assert last["next_before"] is None


async def test_health_history_of_an_unknown_instance_is_a_404(api: Served) -> None:
    await assert_error(await api.client.get("/api/plugins/ghost/health/history"), 404)


async def test_executions_are_newest_first(api: Served) -> None:
    ids = await seed_executions(api.hub)
    body = await json_of(await api.client.get("/api/plugins/off/executions"))
    assert body["plugin_id"] == "off"
    executions = body["executions"]
    assert [e["id"] for e in executions] == ids
    started = [e["started_at"] for e in executions]
    assert started == sorted(started, reverse=True)
    assert body["next_before"] is None


async def test_executions_carry_the_record(api: Served) -> None:
    body = await json_of(await api.client.get("/api/plugins/raises/executions"))
    [execution] = body["executions"]
    assert execution["instance_id"] == "raises"
    assert execution["status"] == "error"
    assert "the sensor is on fire" in execution["error"]
    assert execution["trigger"] == "schedule"


async def test_executions_limit(api: Served) -> None:
    ids = await seed_executions(api.hub)
    body = await json_of(await api.client.get("/api/plugins/off/executions?limit=3"))
    assert [e["id"] for e in body["executions"]] == ids[:3]
    assert body["next_before"] == ids[2]


async def test_executions_page_with_next_before(api: Served) -> None:
    ids = await seed_executions(api.hub)
    seen: list[int] = []
    url = "/api/plugins/off/executions?limit=3"
    pages = 0
    while True:
        body = await json_of(await api.client.get(url))
        seen += [e["id"] for e in body["executions"]]
        pages += 1
        if body["next_before"] is None:
            break
        url = f"/api/plugins/off/executions?limit=3&before={body['next_before']}"
    assert seen == ids
    assert pages == 3


@pytest.mark.parametrize("status", ["ok", "error"])
async def test_executions_filter_by_status(api: Served, status: str) -> None:
    await seed_executions(api.hub)
    body = await json_of(await api.client.get(f"/api/plugins/off/executions?status={status}"))
    assert {e["status"] for e in body["executions"]} == {status}
    assert len(body["executions"]) == (4 if status == "ok" else 3)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=5000",
        "limit=-1",
        "limit=x",
        "limit=",
        "status=bogus",
        "before=x",
    ],
)
async def test_executions_reject_bad_parameters(api: Served, query: str) -> None:
    response = await api.client.get(f"/api/plugins/off/executions?{query}")
    await assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("before", ["9223372036854775808", "-99999999999999999999"])
async def test_executions_out_of_range_cursor_is_not_a_server_error(
    api: Served, before: str
) -> None:
    response = await api.client.get(f"/api/plugins/off/executions?before={before}")
    if response.status_code != 200:
        await assert_error(response, 400)


# -- categories, summary ------------------------------------------------------------------------


async def test_categories_with_counts(api: Served) -> None:
    body = await json_of(await api.client.get("/api/plugins/categories/list"))
    assert body == {
        "categories": [{"name": "other", "count": 2}, {"name": "test", "count": 2}],
    }


async def test_nodes_of_a_hub_alone_are_itself_with_every_instance(api: Served) -> None:
    body = await json_of(await api.client.get("/api/nodes"))
    [node] = body["nodes"]
    assert node["name"] == api.hub.node_name and node["alive"] is True
    assert sorted(node["instances"]) == sorted(i.id for i in api.hub.instances())
    assert node["heartbeat_at"] >= node["started_at"]
    plugin = (await json_of(await api.client.get("/api/plugins/off")))["plugin"]
    assert (plugin["node"], plugin["running_on"]) == (None, api.hub.node_name)


async def test_executions_record_the_node_that_ran_them(api: Served) -> None:
    await api.hub.run_now("judge")
    await api.hub.flush()
    body = await json_of(await api.client.get("/api/plugins/judge/executions"))
    assert {(e["node"], e["fence"]) for e in body["executions"]} == {(api.hub.node_name, None)}


async def test_summary_figures(api: Served) -> None:
    body = await json_of(await api.client.get("/api/plugins/stats/summary"))
    assert body["instances"] == 4
    assert body["enabled"] == 3
    assert body["by_status"] == {
        "ok": 1,
        "degraded": 2,
        "failing": 0,
        "failed": 0,
        "disabled": 1,
        "unknown": 0,
    }
    assert body["runs_last_hour"] == 3
    assert body["failures_last_hour"] == 1
    assert body["samples_stored"] == 3
    assert body["samples_dropped"] == 0
    assert 0 <= body["uptime"] < 60


# -- POST /api/plugins/{id}/run -----------------------------------------------------------------


async def test_run_now_runs_the_instance(api: Served) -> None:
    body = await json_of(await api.client.post("/api/plugins/counter/run", json={}))
    assert body["instance_id"] == "counter"
    assert body["status"] == "ok"
    assert body["trigger"] == "manual"
    assert body["metric_count"] == 2
    assert api.hub.scheduler.plugin("counter").runs == 2  # type: ignore[attr-defined]


async def test_run_now_reports_a_failing_run(api: Served) -> None:
    body = await json_of(await api.client.post("/api/plugins/raises/run", json={}))
    assert body["status"] == "error"
    assert "the sensor is on fire" in body["error"]


async def test_run_now_on_a_disabled_instance_is_a_conflict(api: Served) -> None:
    await assert_error(await api.client.post("/api/plugins/off/run", json={}), 409, "conflict")


# -- GET /api/health ----------------------------------------------------------------------------


async def test_health_is_ready_while_the_hub_runs(api: Served) -> None:
    body = await json_of(await api.client.get("/api/health"))
    assert body == {
        "status": "ok",
        "live": True,
        "ready": True,
        "store": True,
        "scheduler": True,
        "writer": True,
        "redis": True,
        "reason": "",
    }


async def test_health_is_unavailable_when_the_store_is_closed(
    serve: Any, make_settings: Build
) -> None:
    async with serve(make_settings(InstanceSettings(id="off", type="counter", enabled=False))) as s:
        await s.hub.store.close()
        body = await json_of(await s.client.get("/api/health"), 503)
    assert body == {
        "status": "unavailable",
        "live": True,
        "ready": False,
        "store": False,
        "scheduler": True,
        "writer": True,
        "redis": True,
        "reason": "the store does not answer",
    }


@pytest.fixture
def unstarted(make_settings: Build) -> Iterator[Client]:
    """A client of an app whose own hub has not started (the app is not serving)."""
    app = Quart(__name__)
    HomelabWeb(app, settings=make_settings())
    register_error_handlers(app)
    yield app.test_client()


async def test_health_is_unavailable_before_the_hub_runs(unstarted: Client) -> None:
    body = await json_of(await unstarted.get("/api/health"), 503)
    assert body["ready"] is False
    assert body["live"] is True
    assert body["store"] is False
    assert body["scheduler"] is False
    assert body["writer"] is False


async def test_api_is_unavailable_before_the_hub_runs(unstarted: Client) -> None:
    await assert_error(await unstarted.get("/api/plugins"), 503, "unavailable")


# -- GET /metrics -------------------------------------------------------------------------------


def exposition_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_prometheus_exposition_has_plugin_series(api: Served) -> None:
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "version=0.0.4" in response.headers["Content-Type"]
    samples = exposition_samples(await response.get_data(as_text=True))
    for series in ("0", "1"):
        labels = frozenset({"instance": "counter", "type": "counter", "series": series}.items())
        assert samples[("homelab_count_runs", labels)] == 1.0
    judge = frozenset({"instance": "judge", "type": "judges"}.items())
    assert samples[("homelab_up", judge)] == 0.0
    off = [
        name
        for name, labels in samples
        if labels and dict(labels)["instance"] == "off" and not name.startswith("homelab_instance_")
    ]
    assert not off, "an instance that never ran has no plugin series"


async def test_prometheus_exposition_has_core_counters(api: Served) -> None:
    text = await (await api.client.get("/metrics")).get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = exposition_samples(text)
    none: frozenset[tuple[str, str]] = frozenset()
    expected = {
        "homelab_core_runs_total": 3,
        "homelab_core_failures_total": 1,
        "homelab_core_skipped_runs_total": 0,
        "homelab_core_samples_written_total": 3,
        "homelab_core_samples_dropped_total": 0,
        "homelab_core_executions_dropped_total": 0,
        "homelab_core_write_queue_depth": 0,
        "homelab_core_websocket_clients": 0,
        "homelab_core_store_write_failures_total": 0,
        "homelab_core_samples_refused_total": 0,
        "homelab_core_records_refused_total": 0,
        "homelab_core_store_writable": 1,
    }
    for name, value in expected.items():
        assert samples[(name, none)] == value, name
    assert families["homelab_core_runs"].type == "counter"
    assert families["homelab_core_write_queue_depth"].type == "gauge"
    assert families["homelab_core_store_write_failures"].type == "counter"
    assert families["homelab_core_store_writable"].type == "gauge"
    assert ("homelab_core_bus_subscribers", none) in samples


# -- GET /openapi.json, /docs -------------------------------------------------------------------

REST_ROUTES = {
    "/api/plugins": {"get"},
    "/api/plugins/{plugin_id}": {"get"},
    "/api/plugins/{plugin_id}/enable": {"post"},
    "/api/plugins/{plugin_id}/status": {"get"},
    "/api/plugins/{plugin_id}/metrics": {"get"},
    "/api/plugins/{plugin_id}/metrics/history": {"get"},
    "/api/plugins/{plugin_id}/executions": {"get"},
    "/api/plugins/categories/list": {"get"},
    "/api/plugins/stats/summary": {"get"},
    "/api/plugins/{plugin_id}/run": {"post"},
    "/api/health": {"get"},
    "/api/status": {"get"},
    "/metrics": {"get"},
}
JSON_ROUTES = {path: methods for path, methods in REST_ROUTES.items() if path != "/metrics"}


@pytest.fixture
async def openapi(api: Served) -> dict[str, Any]:
    return await json_of(await api.client.get("/openapi.json"))  # type: ignore[no-any-return]


async def test_openapi_lists_every_rest_route(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    for path, methods in REST_ROUTES.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path


async def test_openapi_documents_the_enable_body(openapi: dict[str, Any]) -> None:
    body = openapi["paths"]["/api/plugins/{plugin_id}/enable"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert schema["properties"]["enabled"]["type"] == "boolean"
    assert schema["required"] == ["enabled"]


async def test_openapi_documents_json_responses(openapi: dict[str, Any]) -> None:
    for path, methods in JSON_ROUTES.items():
        for method in methods:
            response = openapi["paths"][path][method]["responses"]["200"]
            assert "schema" in response["content"]["application/json"], (path, method)


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/api/plugins", {"category", "enabled", "status"}),
        (
            "/api/plugins/{plugin_id}/metrics/history",
            {"plugin_id", "metric", "labels", "since", "until", "step", "agg", "points"},
        ),
        ("/api/plugins/{plugin_id}/executions", {"plugin_id", "status", "limit", "before"}),
    ],
)
async def test_openapi_documents_query_parameters(
    openapi: dict[str, Any], path: str, names: set[str]
) -> None:
    parameters = openapi["paths"][path]["get"]["parameters"]
    assert {p["name"] for p in parameters} == names


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


async def test_openapi_references_resolve(openapi: dict[str, Any]) -> None:
    """Nested response schemas (InstanceInfo, Execution, ...) are referenced, so defined."""
    found = set(refs(openapi))
    assert "#/components/schemas/InstanceInfo" in found
    defined = {f"#/components/schemas/{name}" for name in openapi["components"]["schemas"]}
    assert found - defined == set()


ERROR_RESPONSES = {
    ("/api/plugins", "get"): {"400"},
    ("/api/plugins/{plugin_id}", "get"): {"404"},
    ("/api/plugins/{plugin_id}/enable", "post"): {"400", "401", "403", "404"},
    ("/api/plugins/{plugin_id}/status", "get"): {"404"},
    ("/api/plugins/{plugin_id}/metrics", "get"): {"404"},
    ("/api/plugins/{plugin_id}/metrics/history", "get"): {"400", "404"},
    ("/api/plugins/{plugin_id}/executions", "get"): {"400", "404"},
    ("/api/plugins/{plugin_id}/run", "post"): {"401", "403", "404", "409"},
}


@pytest.mark.parametrize(("route", "codes"), ERROR_RESPONSES.items(), ids=str)
async def test_openapi_documents_error_responses(
    openapi: dict[str, Any], route: tuple[str, str], codes: set[str]
) -> None:
    path, method = route
    responses = openapi["paths"][path][method]["responses"]
    for code in codes:
        schema = responses[code]["content"]["application/json"]["schema"]
        assert schema["properties"]["error"]["$ref"] == "#/components/schemas/Error", code
    error = openapi["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "message"}


async def test_openapi_writes_declare_bearer_security(openapi: dict[str, Any]) -> None:
    assert openapi["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in ("/api/plugins/{plugin_id}/enable", "/api/plugins/{plugin_id}/run"):
        assert {"bearer": []} in openapi["paths"][path]["post"]["security"], path


async def test_docs_page_points_at_the_openapi_document(api: Served) -> None:
    response = await api.client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = await response.get_data(as_text=True)
    assert "/openapi.json" in page
    assert "/docs/static/docs.js" in page


async def test_docs_assets_are_served(api: Served) -> None:
    for name in ("docs.js", "docs.css"):
        assert (await api.client.get(f"/docs/static/{name}")).status_code == 200


async def test_unknown_docs_asset_is_a_json_404(api: Served) -> None:
    await assert_error(await api.client.get("/docs/static/evil.js"), 404, "not_found")


# -- 404, 405 -----------------------------------------------------------------------------------

PLUGIN_ROUTES = [
    ("GET", "/api/plugins/nope", None),
    ("POST", "/api/plugins/nope/enable", {"enabled": True}),
    ("GET", "/api/plugins/nope/status", None),
    ("GET", "/api/plugins/nope/metrics", None),
    ("GET", "/api/plugins/nope/metrics/history?metric=count", None),
    ("GET", "/api/plugins/nope/executions", None),
    ("POST", "/api/plugins/nope/run", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), PLUGIN_ROUTES)
async def test_unknown_plugin_is_a_json_404(api: Served, method: str, path: str, body: Any) -> None:
    response = await api.client.open(path, method=method, json=body)
    error = await assert_error(response, 404, "not_found")
    assert "nope" in error["message"]


@pytest.mark.parametrize("path", ["/no/such/path", "/api/plugins/counter/nothing", "/api"])
async def test_unknown_path_is_a_json_404(api: Served, path: str) -> None:
    await assert_error(await api.client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/plugins/counter"),
        ("GET", "/api/plugins/counter/enable"),
        ("GET", "/api/plugins/counter/run"),
        ("DELETE", "/api/plugins"),
        ("PUT", "/api/health"),
    ],
)
async def test_wrong_method_is_a_json_405(api: Served, method: str, path: str) -> None:
    await assert_error(await api.client.open(path, method=method), 405)


async def test_405_names_the_allowed_methods(api: Served) -> None:
    """RFC 9110: a 405 response must carry an Allow header."""
    response = await api.client.put("/api/plugins/counter")
    assert response.status_code == 405
    assert {"GET", "PATCH", "DELETE"} <= set(response.headers.get("Allow", "").split(", "))


# -- auth ---------------------------------------------------------------------------------------


@pytest.fixture
async def guarded(serve: Any, make_settings: Build) -> AsyncIterator[Served]:
    """A token configured, auth = "writes" (the default)."""
    settings = make_settings(*standard_instances(), server=ServerSettings(api_token=TOKEN))
    async with serve(settings) as served:
        await first_runs_stored(served.hub)
        yield served


@pytest.fixture
async def guarded_all(serve: Any, make_settings: Build) -> AsyncIterator[Served]:
    """A token configured, auth = "all"."""
    settings = make_settings(
        *standard_instances(), server=ServerSettings(api_token=TOKEN, auth="all")
    )
    async with serve(settings) as served:
        await first_runs_stored(served.hub)
        yield served


ENABLE = "/api/plugins/counter/enable"


async def test_write_without_a_token_is_401(guarded: Served) -> None:
    response = await guarded.client.post(ENABLE, json={"enabled": False})
    await assert_error(response, 401, "unauthorized")
    assert guarded.hub.instance("counter").enabled is True


async def test_401_asks_for_a_bearer_token(guarded: Served) -> None:
    """RFC 9110/6750: a 401 response must carry a WWW-Authenticate challenge."""
    response = await guarded.client.post(ENABLE, json={"enabled": False})
    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate", "").lower().startswith("bearer")


@pytest.mark.parametrize("header", [f"Basic {TOKEN}", "Bearer", "Bearer ", TOKEN])
async def test_write_with_a_malformed_header_is_401(guarded: Served, header: str) -> None:
    response = await guarded.client.post(
        ENABLE, json={"enabled": False}, headers={"Authorization": header}
    )
    await assert_error(response, 401, "unauthorized")


async def test_write_with_a_wrong_token_is_403(guarded: Served) -> None:
    response = await guarded.client.post(ENABLE, json={"enabled": False}, headers=bearer("wrong"))
    await assert_error(response, 403, "forbidden")
    assert guarded.hub.instance("counter").enabled is True


async def test_run_without_a_token_is_401(guarded: Served) -> None:
    await assert_error(await guarded.client.post("/api/plugins/counter/run"), 401)


async def test_write_with_the_right_token_succeeds(guarded: Served) -> None:
    response = await guarded.client.post(ENABLE, json={"enabled": False}, headers=bearer(TOKEN))
    assert (await json_of(response))["enabled"] is False
    assert guarded.hub.instance("counter").enabled is False


async def test_bearer_scheme_is_case_insensitive(guarded: Served) -> None:
    response = await guarded.client.post(
        ENABLE, json={"enabled": False}, headers={"Authorization": f"bearer {TOKEN}"}
    )
    await json_of(response)


@pytest.mark.parametrize("path", ["/api/plugins", "/api/plugins/counter", "/metrics"])
async def test_reads_stay_open_with_auth_writes(guarded: Served, path: str) -> None:
    assert (await guarded.client.get(path)).status_code == 200


@pytest.mark.parametrize("path", ["/api/plugins", "/api/plugins/counter/metrics", "/metrics"])
async def test_reads_need_the_token_with_auth_all(guarded_all: Served, path: str) -> None:
    await assert_error(await guarded_all.client.get(path), 401, "unauthorized")
    await assert_error(await guarded_all.client.get(path, headers=bearer("wrong")), 403)
    assert (await guarded_all.client.get(path, headers=bearer(TOKEN))).status_code == 200


@pytest.mark.parametrize("path", ["/docs", "/docs/static/docs.js"])
async def test_docs_stay_open_with_auth_all(guarded_all: Served, path: str) -> None:
    assert (await guarded_all.client.get(path)).status_code == 200


async def test_writes_need_the_token_with_auth_all(guarded_all: Served) -> None:
    await assert_error(await guarded_all.client.post("/api/plugins/counter/run"), 401)
    response = await guarded_all.client.post("/api/plugins/counter/run", headers=bearer(TOKEN))
    assert (await json_of(response))["status"] == "ok"


async def test_no_token_configured_means_no_check(api: Served) -> None:
    response = await api.client.post(ENABLE, json={"enabled": True}, headers=bearer("anything"))
    await json_of(response)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("nas.local", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_without_a_token_may_bind(host: str) -> None:
    assert bind_problem(ServerSettings(host=host), insecure=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_beyond_loopback_without_a_token_is_refused(host: str) -> None:
    problem = bind_problem(ServerSettings(host=host), insecure=False)
    assert problem is not None
    assert host in problem
    assert "api_token" in problem


def test_beyond_loopback_without_a_token_may_bind_when_insecure() -> None:
    assert bind_problem(ServerSettings(host="0.0.0.0"), insecure=True) is None


def test_beyond_loopback_with_a_token_may_bind() -> None:
    assert bind_problem(ServerSettings(host="0.0.0.0", api_token=TOKEN), insecure=False) is None


@pytest.mark.parametrize("insecure", [False, True])
@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_auth_all_without_a_token_is_refused(host: str, insecure: bool) -> None:
    problem = bind_problem(ServerSettings(host=host, auth="all"), insecure=insecure)
    assert problem is not None
    assert "api_token" in problem


def test_auth_all_with_a_token_may_bind() -> None:
    server = ServerSettings(host="127.0.0.1", api_token=TOKEN, auth="all")
    assert bind_problem(server, insecure=False) is None


# -- properties: no query string produces a 500 -------------------------------------------------

texts = st.text(max_size=30)
integers = st.one_of(st.integers(), st.integers(min_value=-(2**80), max_value=2**80))
numbers = st.one_of(
    integers.map(str),
    st.floats().map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(str),
)
relative = st.builds(
    lambda n, unit: f"-{n}{unit}",
    st.one_of(st.integers(min_value=0), st.floats(min_value=0, allow_infinity=False)),
    st.sampled_from("smhdwy"),
)
iso = st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(lambda d: d.isoformat())
times = st.one_of(numbers, relative, iso, texts, st.just("now"))
label_text = st.lists(
    st.tuples(texts, st.sampled_from(["=", "", "=="]), texts).map("".join), max_size=3
).map(",".join)

history_params = st.fixed_dictionaries(
    {"metric": st.one_of(st.just("temp"), texts)},
    optional={
        "since": times,
        "until": times,
        "step": st.one_of(numbers, texts),
        "agg": st.one_of(st.sampled_from(["avg", "min", "max"]), texts),
        "labels": st.one_of(st.sampled_from(["disk=a", "disk=b"]), label_text, texts),
        "points": st.one_of(numbers, texts),
    },
)
executions_params = st.fixed_dictionaries(
    {},
    optional={
        "status": st.one_of(st.sampled_from(["ok", "error", "timeout", "skipped"]), texts),
        "limit": st.one_of(numbers, texts),
        "before": st.one_of(numbers, texts),
    },
)
plugins = st.sampled_from(["off", "off", "off", "nope"])
no_500 = hypothesis_settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture
async def seeded(api: Served) -> Served:
    """The standard instances, with history and executions stored for ``off``."""
    await seed_history(api.hub)
    await seed_executions(api.hub)
    return api


@no_500
@given(params=history_params, plugin=plugins)
async def test_history_query_strings_never_produce_a_500(
    seeded: Served, params: dict[str, str], plugin: str
) -> None:
    url = f"/api/plugins/{plugin}/metrics/history?{urlencode(params)}"
    response = await seeded.client.get(url)
    assert response.status_code < 500, await response.get_data(as_text=True)
    assert response.mimetype == "application/json"


@no_500
@given(params=executions_params, plugin=plugins)
@example(params={"before": str(2**63)}, plugin="off")
async def test_executions_query_strings_never_produce_a_500(
    seeded: Served, params: dict[str, str], plugin: str
) -> None:
    url = f"/api/plugins/{plugin}/executions?{urlencode(params)}"
    response = await seeded.client.get(url)
    assert response.status_code < 500, await response.get_data(as_text=True)
    assert response.mimetype == "application/json"


@no_500
@given(since=times, until=st.one_of(st.none(), times), step=st.one_of(st.none(), numbers))
@example(since="-9.2e18", until=None, step=None)
async def test_history_time_ranges_never_produce_a_500(
    seeded: Served, since: str, until: str | None, step: str | None
) -> None:
    url = history_url(since=since, until=until, step=step)
    response = await seeded.client.get(url)
    assert response.status_code < 500, await response.get_data(as_text=True)
    assert response.mimetype == "application/json"


def _refers(schema: Any) -> bool:
    """Whether ``schema`` is made of components (a ``$ref``, or a list, map or union of
    them): its example is theirs, built from the examples of their fields."""
    if not isinstance(schema, dict):
        return False
    if "$ref" in schema:
        return True
    parts = [*schema.get("anyOf", []), *schema.get("oneOf", []), *schema.get("allOf", [])]
    parts += [schema.get("items"), schema.get("additionalProperties")]
    return any(_refers(part) for part in parts)


def _has_example(node: dict[str, Any]) -> bool:
    return "example" in node or bool(node.get("examples"))


def undocumented(document: dict[str, Any]) -> list[str]:
    """Every parameter and schema property of ``document`` (operations and components)
    without a description or an example, named by where it is."""
    found: list[str] = []

    def properties(where: str, schema: Any) -> None:
        if not isinstance(schema, dict):
            return
        for name, prop in schema.get("properties", {}).items():
            lacks = [] if prop.get("description") else ["description"]
            if not _has_example(prop) and not _refers(prop):
                lacks.append("example")
            if lacks:
                found.append(f"{where} property {name}: no {' and no '.join(lacks)}")
        for part in (*schema.get("anyOf", []), *schema.get("oneOf", []), schema.get("items")):
            properties(where, part)

    for name, schema in document["components"]["schemas"].items():
        properties(f"component {name}", schema)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for param in operation.get("parameters", []):
                lacks = [] if param.get("description") else ["description"]
                if not _has_example(param) and not _has_example(param.get("schema", {})):
                    lacks.append("example")
                if lacks:
                    found.append(
                        f"{where} {param['in']} parameter {param['name']}:"
                        f" no {' and no '.join(lacks)}"
                    )
            for content in operation.get("requestBody", {}).get("content", {}).values():
                properties(f"{where} body", content.get("schema"))
            for code, response in operation.get("responses", {}).items():
                for content in response.get("content", {}).values():
                    properties(f"{where} {code}", content.get("schema"))
    return found


async def test_openapi_describes_every_parameter_and_field(openapi: dict[str, Any]) -> None:
    """Every parameter and every property (of bodies, responses and components) has a
    description and an example (a property made of components has theirs)."""
    missing = undocumented(openapi)
    assert not missing, f"{len(missing)} without a description or an example:\n" + "\n".join(
        missing
    )
