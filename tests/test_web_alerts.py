"""The alert endpoints, the ``alert`` stream events and the ``homelab_alerts`` gauges,
through the real app on a real SQLite file, with notifiers of this module."""

from __future__ import annotations

import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
import sample_plugins
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart
from test_web_api import assert_error, bearer, eventually, json_of

from homelab_core import Hub, PluginManager, Settings, hookimpl, option
from homelab_core.config import settings_from_mapping
from homelab_core.notifier import Notification, Notifier, NotifierError
from homelab_core.web import HomelabWeb
from homelab_core.web.errors import register_error_handlers
from homelab_core.web.ws_protocol import Filter, parse_message

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-api-token"
RECEIVED: list[Notification] = []


@attrs.define
class RecordingConfig:
    token: str = option("", secret=True, description="A secret, to see it redacted.")


class Recording(Notifier[RecordingConfig]):
    """Keeps what it was sent in :data:`RECEIVED`."""

    name = "recording"

    async def send(self, notification: Notification) -> None:
        RECEIVED.append(notification)


class Refusing(Notifier):
    """Fails every send."""

    name = "refusing"

    async def send(self, notification: Notification) -> None:
        raise NotifierError("the receiver said no")


@hookimpl
def register_notifiers(register: Callable[[type[Notifier]], None]) -> None:
    register(Recording)
    register(Refusing)


CONFIG = """
[scheduler]
jitter = 0
[store]
flush_interval = 0.05
[server]
api_token = "{token}"
[alerting]
evaluation_interval = 0.05
group_wait = 0
resolved_retention = 60

[plugins.counter]
type = "counter"
interval = 3600

[plugins.judge]
type = "judges"
interval = 3600

[alerts.high-count]
metric = "count"
op = ">="
threshold = 1
severity = "critical"
summary = "{{instance}} counted {{value}}"
notifiers = ["rec"]

[alerts.never]
metric = "count"
op = ">"
threshold = 1000
severity = "info"

[notifiers.rec]
type = "recording"
token = "notifier-secret"

[notifiers.broken]
type = "refusing"
"""


@pytest.fixture
def alert_manager() -> PluginManager:
    pm = PluginManager(load_entry_points=False)
    pm.register(sample_plugins, name="sample_plugins")
    pm.register(sys.modules[__name__], name="test_web_alerts")
    return pm


@pytest.fixture
def alert_settings(tmp_path: Path) -> Settings:
    settings = settings_from_mapping(tomllib.loads(CONFIG.format(token=TOKEN)))
    settings.database.url = f"sqlite://{tmp_path / 'homelab.db'}"
    return settings


@attrs.define
class Served:
    hub: Hub
    client: Any
    web: HomelabWeb


@asynccontextmanager
async def serving(settings: Settings, manager: PluginManager) -> AsyncIterator[Served]:
    app = Quart(__name__)
    hub = Hub(settings, plugin_manager=manager)
    web = HomelabWeb(app, hub=hub)
    register_error_handlers(app)
    RECEIVED.clear()
    async with hub, app.test_app() as test_app:
        yield Served(hub, test_app.test_client(), web)


@pytest.fixture
async def served(alert_settings: Settings, alert_manager: PluginManager) -> AsyncIterator[Served]:
    async with serving(alert_settings, alert_manager) as s:
        await eventually(lambda: len(s.hub.alerts_list(state="firing")) == 1)
        yield s


WRITE = {**bearer(TOKEN), "Content-Type": "application/json"}


async def test_alerts_lists_the_firing_alert(served: Served) -> None:
    body = await json_of(await served.client.get("/api/alerts"))
    assert body["count"] == 1
    (alert,) = body["alerts"]
    assert alert["rule"] == "high-count"
    assert alert["state"] == "firing"
    assert alert["severity"] == "critical"
    assert alert["instance_id"] == "counter"
    assert alert["summary"] == "counter counted 1"
    assert alert["silenced"] is False and alert["silenced_by"] == []


async def test_alerts_filters_by_state_and_severity(served: Served) -> None:
    client = served.client
    assert (await json_of(await client.get("/api/alerts?state=pending")))["count"] == 0
    assert (await json_of(await client.get("/api/alerts?state=firing")))["count"] == 1
    assert (await json_of(await client.get("/api/alerts?severity=info")))["count"] == 0
    assert (await json_of(await client.get("/api/alerts?severity=critical")))["count"] == 1


@pytest.mark.parametrize(
    ("query", "field"), [("state=burning", "state"), ("severity=doom", "severity")]
)
async def test_alerts_refuses_a_bad_filter_naming_it(
    served: Served, query: str, field: str
) -> None:
    error = await assert_error(await served.client.get(f"/api/alerts?{query}"), 400)
    assert field in error["message"]
    assert query.split("=")[1] in error["message"]


async def test_alert_history_has_the_transition(served: Served) -> None:
    body = await json_of(await served.client.get("/api/alerts/history?rule=high-count"))
    (event,) = body["events"]
    assert (event["old_state"], event["new_state"]) == ("inactive", "firing")
    assert event["summary"] == "counter counted 1"
    assert body["next_before"] is None
    paged = await json_of(await served.client.get("/api/alerts/history?limit=1"))
    assert paged["next_before"] == paged["events"][0]["id"]
    older = await json_of(
        await served.client.get(f"/api/alerts/history?before={paged['next_before']}")
    )
    assert all(e["id"] < paged["next_before"] for e in older["events"])
    await assert_error(await served.client.get("/api/alerts/history?limit=0"), 400)


async def test_alert_rules_are_listed_with_their_toml_names(served: Served) -> None:
    body = await json_of(await served.client.get("/api/alerts/rules"))
    assert body["count"] == 2
    rules = {r["id"]: r for r in body["rules"]}
    assert rules["high-count"]["threshold"] == 1
    assert rules["high-count"]["op"] == ">="
    assert rules["high-count"]["for"] == 0
    assert "for_" not in rules["high-count"]
    assert rules["never"]["severity"] == "info"


async def test_a_rule_made_through_the_api_is_checked_applied_and_removable(
    served: Served,
) -> None:
    client, hub = served.client, served.hub
    body = {
        "id": "any-count",
        "metric": "count",
        "op": ">=",
        "threshold": 0,
        "for": "0s",
        "summary": "{instance} has {value}",
        "notifiers": ["rec"],
    }
    made = await json_of(await client.post("/api/alerts/rules", json=body, headers=WRITE), 201)
    assert made["source"] == "api" and made["for"] == 0 and made["threshold"] == 0
    await hub.run_now("counter")
    await eventually(lambda: any(a.rule == "any-count" for a in hub.alerts_list()))
    listed = await json_of(await client.get("/api/alerts/rules"))
    assert {r["id"]: r["source"] for r in listed["rules"]} == {
        "high-count": "file",
        "never": "file",
        "any-count": "api",
    }
    # Checked with the file's rules, the field named.
    bad = await assert_error(
        await client.post(
            "/api/alerts/rules",
            json={"id": "x", "summary": "{valu}", "threshold": 1},
            headers=WRITE,
        ),
        400,
    )
    assert "[alerts.x] summary" in bad["message"]
    bad = await assert_error(
        await client.post(
            "/api/alerts/rules",
            json={"id": "y", "threshold": 1, "notifiers": ["pager"]},
            headers=WRITE,
        ),
        400,
    )
    assert "unknown notifier 'pager'" in bad["message"]
    await assert_error(
        await client.post(
            "/api/alerts/rules", json={"id": "Bad Id", "threshold": 1}, headers=WRITE
        ),
        400,
    )
    # Ids are unique across the file and the API; the file's rules are the file's.
    await assert_error(
        await client.post(
            "/api/alerts/rules", json={"id": "any-count", "threshold": 1}, headers=WRITE
        ),
        409,
    )
    conflict = await assert_error(
        await client.post("/api/alerts/rules", json={"id": "never", "threshold": 1}, headers=WRITE),
        409,
    )
    assert "edit [alerts.never]" in conflict["message"]
    await assert_error(await client.delete("/api/alerts/rules/never", headers=WRITE), 409)
    await assert_error(
        await client.post("/api/alerts/rules", json={"id": "z", "threshold": 1}), 401
    )
    # Replaced, then deleted: its alert ends with it.
    replaced = await json_of(
        await client.put(
            "/api/alerts/rules/any-count",
            json={**{k: v for k, v in body.items() if k != "id"}, "severity": "info"},
            headers=WRITE,
        )
    )
    assert replaced["severity"] == "info"
    await assert_error(
        await client.put("/api/alerts/rules/nope", json={"threshold": 1}, headers=WRITE), 404
    )
    gone = await json_of(await client.delete("/api/alerts/rules/any-count", headers=WRITE))
    assert gone["id"] == "any-count"
    assert not any(a.rule == "any-count" for a in hub.alerts_list())
    await assert_error(await client.delete("/api/alerts/rules/any-count", headers=WRITE), 404)
    paths = (await json_of(await client.get("/openapi.json")))["paths"]
    assert {"post", "get"} <= set(paths["/api/alerts/rules"])
    assert {"put", "delete"} <= set(paths["/api/alerts/rules/{rule_id}"])


async def test_a_silence_made_through_the_api_mutes_the_alert_until_it_ends(
    served: Served,
) -> None:
    client, hub = served.client, served.hub
    response = await client.post(
        "/api/silences",
        json={
            "matchers": {"rule": "high-count"},
            "duration": 0.5,
            "comment": "disk swap",
            "author": "me",
        },
        headers=bearer(TOKEN),
    )
    silence = await json_of(response, 201)
    assert silence["matchers"] == {"rule": "high-count"}
    assert silence["comment"] == "disk swap" and silence["author"] == "me"
    assert silence["ends_at"] == pytest.approx(silence["starts_at"] + 0.5)
    assert hub.alerts_list()[0].silenced
    assert hub.alerts_list()[0].silenced_by == [silence["id"]]
    listed = await json_of(await client.get("/api/silences"))
    assert [s["id"] for s in listed["silences"]] == [silence["id"]]
    alerts = await json_of(await client.get("/api/alerts"))
    assert alerts["alerts"][0]["silenced"] is True
    await eventually(lambda: not hub.alerts_list()[0].silenced, timeout=5)
    assert (await json_of(await client.get("/api/silences")))["count"] == 0
    expired = await json_of(await client.get("/api/silences?include_expired=true"))
    assert expired["count"] == 1


async def test_a_silence_is_removed_through_the_api(served: Served) -> None:
    client, hub = served.client, served.hub
    made = await json_of(
        await client.post(
            "/api/silences",
            json={"matchers": {"instance": "count*"}, "ends_at": time.time() + 3600},
            headers=WRITE,
        ),
        201,
    )
    assert hub.alerts_list()[0].silenced
    removed = await json_of(await client.delete(f"/api/silences/{made['id']}", headers=WRITE))
    assert removed["id"] == made["id"]
    assert not hub.alerts_list()[0].silenced
    assert hub.silences() == []
    error = await assert_error(
        await client.delete(f"/api/silences/{made['id']}", headers=WRITE), 404, "not_found"
    )
    assert made["id"] in error["message"]


async def test_a_silence_can_start_later_with_an_iso_time(served: Served) -> None:
    start = time.time() + 3600
    made = await json_of(
        await served.client.post(
            "/api/silences",
            json={
                "matchers": {"rule": "high-count"},
                "starts_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                "duration": 60,
            },
            headers=WRITE,
        ),
        201,
    )
    assert made["starts_at"] == pytest.approx(start, abs=1)
    assert made["ends_at"] == pytest.approx(made["starts_at"] + 60)
    assert not served.hub.alerts_list()[0].silenced


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"matchers": {}, "duration": 60}, "matcher"),
        ({"matchers": {"rule": "x"}}, "ends_at or duration"),
        ({"matchers": {"rule": "x"}, "duration": 60, "ends_at": 1e10}, "not both"),
        ({"matchers": {"rule": "x"}, "ends_at": 100.0}, "end after it starts"),
        ({"matchers": {"rule": "x"}, "duration": -5}, "duration"),
        ({"matchers": {"rule": 5}, "duration": 60}, "matchers"),
        ({"matchers": {"rule": "x"}, "ends_at": "tomorrow"}, "ends_at"),
        ({"duration": 60}, "matchers"),
    ],
)
async def test_a_bad_silence_is_refused_with_the_reason(
    served: Served, body: dict[str, Any], words: str
) -> None:
    error = await assert_error(
        await served.client.post("/api/silences", json=body, headers=WRITE), 400
    )
    assert words in error["message"]
    assert served.hub.silences() == []


async def test_writes_need_the_token_and_json(served: Served) -> None:
    client = served.client
    body = {"matchers": {"rule": "high-count"}, "duration": 60}
    await assert_error(await client.post("/api/silences", json=body), 401)
    await assert_error(await client.post("/api/silences", json=body, headers=bearer("wrong")), 403)
    await assert_error(await client.delete("/api/silences/abc"), 401)
    await assert_error(await client.post("/api/notifiers/rec/test"), 401)
    foreign = {"Origin": "https://evil.example", "Content-Type": "application/json"}
    await assert_error(
        await client.post("/api/silences", json=body, headers={**foreign, **bearer(TOKEN)}), 403
    )
    assert served.hub.silences() == []
    # Reads stay open with auth = "writes".
    await json_of(await client.get("/api/silences"))


async def test_notifiers_are_listed_with_secrets_redacted(served: Served) -> None:
    body = await json_of(await served.client.get("/api/notifiers"))
    assert body["count"] == 2
    found = {n["id"]: n for n in body["notifiers"]}
    assert found["rec"]["type"] == "recording"
    assert found["broken"]["type"] == "refusing"
    text = str(body)
    assert "notifier-secret" not in text
    assert found["rec"]["config"]["token"] != "notifier-secret"


async def test_notifier_test_sends_a_message_or_reports_the_error(served: Served) -> None:
    client = served.client
    RECEIVED.clear()
    ok = await json_of(await client.post("/api/notifiers/rec/test", headers=WRITE))
    assert ok == {"ok": True, "error": None}
    assert [n.test for n in RECEIVED] == [True]
    failed = await json_of(await client.post("/api/notifiers/broken/test", headers=WRITE))
    assert failed["ok"] is False
    assert "the receiver said no" in failed["error"]
    attempts = await served.hub.notification_attempts(notifier="broken")
    assert attempts and attempts[0].outcome == "error"
    error = await assert_error(
        await client.post("/api/notifiers/nope/test", headers=WRITE), 404, "not_found"
    )
    assert "nope" in error["message"]


async def test_openapi_documents_the_alert_routes(served: Served) -> None:
    document = await json_of(await served.client.get("/openapi.json"))
    paths = document["paths"]
    expected = {
        "/api/alerts": {"get"},
        "/api/alerts/history": {"get"},
        "/api/alerts/rules": {"get"},
        "/api/silences": {"get", "post"},
        "/api/silences/{silence_id}": {"delete"},
        "/api/notifiers": {"get"},
        "/api/notifiers/{notifier_id}/test": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            responses = paths[path][method]["responses"]
            code = "201" if (path, method) == ("/api/silences", "post") else "200"
            assert "schema" in responses[code]["content"]["application/json"], (path, method)
    assert paths["/api/silences"]["post"]["security"] == [{"bearer": []}]
    assert paths["/api/silences/{silence_id}"]["delete"]["security"] == [{"bearer": []}]
    assert {p["name"] for p in paths["/api/alerts"]["get"]["parameters"]} == {
        "state",
        "severity",
    }
    body = paths["/api/silences"]["post"]["requestBody"]["content"]["application/json"]
    assert "matchers" in str(body["schema"]) or "$ref" in body["schema"]
    components = document["components"]["schemas"]
    for name in ("AlertInfo", "AlertEvent", "Silence", "NotifierInfo", "RuleOut"):
        assert name in components, name
    assert "for" in components["RuleOut"]["properties"]


async def test_metrics_has_alert_gauges_and_counters(served: Served) -> None:
    response = await served.client.get("/metrics")
    text = await response.get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    gauges = {
        (s.labels["rule"], s.labels["state"]): s.value for s in families["homelab_alerts"].samples
    }
    assert gauges[("high-count", "firing")] == 1
    assert gauges[("high-count", "pending")] == 0
    assert gauges[("never", "firing")] == 0
    assert len(gauges) == 6
    assert families["homelab_core_alert_transitions"].samples[0].value >= 1
    assert "homelab_core_notifications_sent" in families
    assert "homelab_core_notification_attempts" in families


async def test_metrics_with_alerts_passes_promtool(served: Served) -> None:
    from test_web_prometheus import promtool

    text = await (await served.client.get("/metrics")).get_data(as_text=True)
    assert promtool(text) == ""


async def test_alert_events_are_encoded_and_filtered_by_type() -> None:
    message = parse_message('{"type": "subscribe", "types": ["alert"]}')
    assert message.types == frozenset({"alert"})  # type: ignore[union-attr]
    only_alerts = Filter(types=frozenset({"alert"}))
    assert only_alerts.wants("alert", "nas")
    assert not only_alerts.wants("metrics", "nas")
    from homelab_core.web.ws_protocol import ProtocolError

    with pytest.raises(ProtocolError, match="'alarm'"):
        parse_message('{"type": "subscribe", "types": ["alarm"]}')


async def test_alert_events_reach_websocket_clients(
    alert_settings: Settings, alert_manager: PluginManager
) -> None:
    # The counter is enabled once the client listens.
    text = CONFIG.format(token=TOKEN).replace(
        'type = "counter"\ninterval = 3600', 'type = "counter"\ninterval = 3600\nenabled = false'
    )
    settings = settings_from_mapping(tomllib.loads(text))
    settings.database.url = alert_settings.database.url
    async with serving(settings, alert_manager) as s, s.client.websocket("/ws/metrics") as ws:
        hello = await ws.receive_json()
        assert hello["type"] == "hello"
        await ws.send_json({"type": "subscribe", "types": ["alert"]})
        # Until the subscription, every event is sent (the judge's metrics may come first).
        while (snapshot := await ws.receive_json())["type"] != "snapshot":
            pass
        assert snapshot["plugins"]["judge"]["metrics"] == []  # metrics not subscribed
        await s.hub.set_enabled("counter", True)
        with anyio.fail_after(5):
            message = await ws.receive_json()
        # Only alert events: no metrics, status, execution or plugin event came first.
        assert message["type"] == "alert", message
        assert message["plugin_id"] == "counter"
        assert message["seq"] > hello["seq"]
        data = message["data"]
        assert data["rule"] == "high-count"
        assert (data["old"], data["new"]) == ("inactive", "firing")
        assert data["severity"] == "critical"
        assert data["summary"] == "counter counted 1"
        assert data["labels"]["instance"] == "counter"
        assert data["silenced"] is False
