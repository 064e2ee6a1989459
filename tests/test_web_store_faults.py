"""A PostgreSQL outage seen through the web API (issue 10, item 10): the server is stopped
and started again under a running hub. Every route that needs the database answers 503
while it is away, ``/api/health`` is not ready, ``/metrics`` counts the failed writes, and
within a few seconds of its return writes resume with nothing lost."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart
from services import postgres_cluster
from waiting import eventually

from homelab_core import Hub, InstanceSettings, PluginManager
from homelab_core.store import Store
from homelab_core.web import HomelabWeb
from homelab_core.web.errors import register_error_handlers

pytestmark = pytest.mark.anyio

#: Routes that read or write the database, as (method, path, JSON body).
STORE_ROUTES = [
    ("GET", "/api/plugins/a/executions", None),
    ("GET", "/api/plugins/a/metrics/history?metric=count&since=-1h", None),
    ("GET", "/api/plugins/stats/summary", None),
    ("POST", "/api/plugins/a/enable", {"enabled": True}),
]


def core_figures(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("homelab_core_")
    }


async def test_a_postgresql_outage_is_503_everywhere_and_writes_resume_within_seconds(
    manager: PluginManager, make_settings: Any
) -> None:
    with postgres_cluster() as cluster:
        settings = make_settings(InstanceSettings(id="a", type="counter", interval=0.05))
        settings.database.url = cluster.url
        app = Quart(__name__)
        hub = Hub(settings, plugin_manager=manager)
        HomelabWeb(app, hub=hub)
        register_error_handlers(app)
        async with hub, app.test_app() as test_app:
            client = test_app.test_client()

            async def health() -> tuple[int, dict[str, Any]]:
                response = await client.get("/api/health")
                return response.status_code, await response.get_json()

            await eventually(
                lambda: hub.counters()["samples_written"] > 4, 5, "the first samples are written"
            )
            assert (await health())[0] == 200
            cluster.stop()
            try:

                async def unready() -> bool:
                    return (await health())[0] == 503

                await eventually(unready, 5, "/api/health says not ready")
                for method, path, body in STORE_ROUTES:
                    response = await client.open(path, method=method, json=body)
                    answer = await response.get_json()
                    assert response.status_code == 503, (path, answer)
                    assert answer["error"]["code"] == "unavailable", (path, answer)
                    assert answer["error"]["message"], path

                async def writes_failed() -> bool:
                    return (await health())[1].get("writer") is False

                await eventually(writes_failed, 5, "/api/health says writes fail")
                status, body = await health()
                assert status == 503
                assert body["ready"] is False and body["store"] is False
                figures = core_figures(await (await client.get("/metrics")).get_data(as_text=True))
                assert figures["homelab_core_store_write_failures_total"] >= 1
                assert figures["homelab_core_store_writable"] == 0
                # A long enough outage for the writer's waits to have grown to their cap.
                await eventually(
                    lambda: hub.counters()["write_failures"] >= 5, 10, "the writer keeps trying"
                )
            finally:
                cluster.start()
            written = hub.counters()["samples_written"]
            await eventually(
                lambda: hub.counters()["samples_written"] > written,
                3,
                "writes resume within a few seconds of the database's return",
            )
            await eventually(lambda: health_is_ok(health), 5, "/api/health is ready again")
            for method, path, body in STORE_ROUTES:
                response = await client.open(path, method=method, json=body)
                assert response.status_code == 200, (path, await response.get_data(as_text=True))
        assert hub.counters()["samples_dropped"] == 0
        stats = hub.stats("a")
        check = Store(cluster.url)
        await check.open()
        try:
            samples = await check.count_samples()
            executions = await check.fetch("SELECT COUNT(*) AS n FROM homelab_execution")
        finally:
            await check.close()
        assert samples == stats.ok, "every sample collected during the outage was written"
        assert int(executions[0]["n"]) == stats.runs + stats.skipped


async def health_is_ok(health: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]) -> bool:
    status, body = await health()
    return status == 200 and body["writer"] is True
