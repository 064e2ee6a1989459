"""No single text breaks an encoder for the others (issue 10, item 2).

A lone surrogate (what ``os.fsdecode`` makes of a non-UTF-8 mount point) cannot be encoded
as UTF-8. The ``Metric`` boundary refuses one in a metric's fields, and exception and health
texts are made storable, but a metric's labels are a plain ``dict`` that a plugin (or a
``metrics_collected`` hook) can still fill in after the ``Metric`` was made. Such a series
must not take ``/metrics``, the latest-metrics bodies or a WebSocket subscriber down with it:
it is sent with the surrogate as a backslash escape, and everything else as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import attrs
import pytest
from hypercorn_server import served
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart
from services import free_port

from homelab_core import (
    HealthReport,
    InstanceSettings,
    Metric,
    Plugin,
    PluginManager,
    hookimpl,
    option,
)
from homelab_core.codec import to_json
from homelab_core.web import create_app
from homelab_core.web import ws_protocol as p

pytestmark = pytest.mark.anyio

#: ``os.fsdecode(b"/mnt/caf\xe9")``: the mount point of a Latin-1 file system.
BAD_PATH = "/mnt/caf\udce9"
#: What every encoder sends instead: the surrogate as a backslash escape.
SHOWN = "/mnt/caf\\udce9"


class Mounts(Plugin):
    """Reports two mount points; one path is filled into the labels after the Metric was
    made, past the boundary's checks (as a plugin that builds labels in steps may do)."""

    name = "mounts"
    default_interval = 0.2

    async def collect(self) -> list[Metric]:
        late = Metric("disk.free", 2.0, unit="bytes", labels={"path": "/mnt/x"})
        late.labels["path"] = BAD_PATH
        return [Metric("disk.free", 1.0, unit="bytes", labels={"path": "/mnt/ok"}), late]

    async def health(self) -> HealthReport:
        return HealthReport("degraded", f"cannot read {BAD_PATH}")


@attrs.define
class SteadyConfig:
    note: str = option("", description="Free text, shown in the API.")


class Steady(Plugin[SteadyConfig]):
    """One well-behaved gauge."""

    name = "steady"
    default_interval = 0.2

    async def collect(self) -> list[Metric]:
        return [Metric("steady", 1.0)]


class EncodingPlugins:
    @hookimpl
    def register_plugins(self, register: Callable[[type[Plugin]], None]) -> None:
        register(Mounts)
        register(Steady)


@pytest.fixture
def app(manager: PluginManager, make_settings: Any) -> Quart:
    manager.register(EncodingPlugins(), name="encoding-plugins")
    settings = make_settings(
        InstanceSettings(id="mounts", type="mounts"),
        InstanceSettings(id="good", type="steady"),
    )
    settings.server.port = free_port()
    return create_app(settings, plugin_manager=manager)


async def wait_for_both(client: Any) -> None:
    """Until both instances have reported (read from the status endpoints, which never
    carry the bad label)."""
    with anyio.fail_after(10):
        while True:
            states = [
                (await (await client.get(f"/api/plugins/{i}/status")).get_json())["state"]
                for i in ("mounts", "good")
            ]
            if states == ["degraded", "ok"]:
                return
            await anyio.sleep(0.02)


# -- the encoders ------------------------------------------------------------------------


def test_the_codec_escapes_a_lone_surrogate_and_keeps_the_rest() -> None:
    metrics = [Metric("a", 1.0, labels={"path": "/mnt/ok"}), Metric("a", 2.0)]
    metrics[1].labels[BAD_PATH] = BAD_PATH
    decoded = json.loads(to_json({"metrics": metrics, "text": "café"}))
    assert decoded["text"] == "café"
    assert decoded["metrics"][0]["labels"] == {"path": "/mnt/ok"}
    assert decoded["metrics"][1]["labels"] == {SHOWN: SHOWN}


def test_websocket_messages_escape_a_lone_surrogate() -> None:
    text = p.event_text(1, "metrics", "mounts", 1.0, [{"labels": {"path": BAD_PATH}}])
    text.encode("utf-8")  # a WebSocket text frame must be UTF-8
    assert json.loads(text)["data"] == [{"labels": {"path": SHOWN}}]
    assert "é" in p.error("x", "café") and "\\u00e9" not in p.error("x", "café")


# -- /metrics and the latest values ------------------------------------------------------


async def test_prometheus_exposition_survives_a_lone_surrogate(app: Quart) -> None:
    async with app.test_app() as test_app:
        client = test_app.test_client()
        await wait_for_both(client)
        response = await client.get("/metrics")
        text = await response.get_data(as_text=True)
        assert response.status_code == 200, text
    paths = {
        sample.labels.get("path"): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("instance") == "mounts" and "path" in sample.labels
    }
    assert paths == {"/mnt/ok": 1.0, SHOWN: 2.0}
    assert 'instance="good"' in text
    escaped = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "homelab_core_texts_escaped_total"
    ]
    assert escaped and escaped[0] >= 1


async def test_latest_metrics_survive_a_lone_surrogate(app: Quart) -> None:
    async with app.test_app() as test_app:
        client = test_app.test_client()
        await wait_for_both(client)
        response = await client.get("/api/plugins/mounts/metrics")
        assert response.status_code == 200, await response.get_data(as_text=True)
        labels = [m["labels"]["path"] for m in (await response.get_json())["metrics"]]
        assert sorted(labels) == sorted(["/mnt/ok", SHOWN])
        good = await client.get("/api/plugins/good/metrics")
        assert good.status_code == 200


async def test_a_surrogate_in_an_option_value_is_served_by_the_rest_api(
    manager: PluginManager, make_settings: Any
) -> None:
    """An option value from the environment (``os.environ`` decodes non-UTF-8 bytes to lone
    surrogates) is shown by the REST API, whose JSON writes it as a ``\\udce9`` escape."""
    manager.register(EncodingPlugins(), name="encoding-plugins")
    settings = make_settings(
        InstanceSettings(id="noted", type="steady", options={"note": BAD_PATH}),
        InstanceSettings(id="good", type="steady"),
    )
    app = create_app(settings, plugin_manager=manager)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for path in ("/api/plugins", "/api/plugins/noted"):
            response = await client.get(path)
            assert response.status_code == 200, await response.get_data(as_text=True)
            body = await response.get_json()
            plugin = body["plugins"][0] if "plugins" in body else body["plugin"]
            assert plugin["config"]["note"] == BAD_PATH


# -- a real WebSocket subscriber -----------------------------------------------------------


async def test_a_websocket_subscriber_survives_a_lone_surrogate(app: Quart) -> None:
    from websockets.asyncio.client import connect

    async with served(app) as url:
        ws_url = url.replace("http://", "ws://") + "/ws/metrics"
        with anyio.fail_after(15):
            async with connect(ws_url, open_timeout=5, close_timeout=2) as ws:
                assert json.loads(await ws.recv())["type"] == "hello"
                # Wait until the bad series is in the snapshot: the hardest case.
                while True:
                    await ws.send(json.dumps({"type": "subscribe"}))
                    while (snapshot := json.loads(await ws.recv()))["type"] != "snapshot":
                        pass
                    mounts = snapshot["plugins"]["mounts"]
                    if len(mounts["metrics"]) == 2 and mounts["status"]["state"] == "degraded":
                        break
                    await anyio.sleep(0.1)
                assert {m["labels"]["path"] for m in mounts["metrics"]} == {"/mnt/ok", SHOWN}
                assert mounts["status"]["message"] == f"cannot read {SHOWN}"
                seen: set[str] = set()
                while seen != {"mounts", "good"}:
                    event = json.loads(await ws.recv())
                    if event["type"] == "metrics":
                        seen.add(event["plugin_id"])
                        if event["plugin_id"] == "mounts":
                            paths = {m["labels"]["path"] for m in event["data"]}
                            assert paths == {"/mnt/ok", SHOWN}
