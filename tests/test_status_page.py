"""The public status page: uptime from the stored health transitions, ``GET /api/status``
and ``/status`` readable without a token when ``[status_page] enabled`` (404 when not),
and the page in a real browser against a real ``homelab serve``."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import live_server
from quart import Quart
from services import unavailable
from test_web_api import json_of
from test_web_docs_ui import chromium_flags

from homelab_core import Hub, PluginManager
from homelab_core.config import InstanceSettings, ServerSettings, StatusPageSettings, load_settings
from homelab_core.model import Health, HealthState
from homelab_core.status import up_and_down
from homelab_core.web import HomelabWeb

H = 3600.0
D = 86400.0
#: The end of every window of the hub-level test: long before the hub starts, so that the
#: scheduler's own (newer) health of the instances does not count.
END = 1_700_000_000.0 + 40 * D


def transition(instance_id: str, ts: float, old: str, new: str) -> tuple[str, Health, Health]:
    return (instance_id, Health(HealthState(old), since=ts), Health(HealthState(new), since=ts))


def test_up_and_down_counts_only_judged_time_within_the_window() -> None:
    spans = [(0.0, "ok"), (150.0, "failing"), (160.0, "disabled"), (170.0, "ok"), (250.0, "failed")]
    assert up_and_down(spans, 100.0, 200.0) == (80.0, 10.0)
    assert up_and_down(spans, 0.0, 150.0) == (150.0, 0.0)
    assert up_and_down([], 0.0, 100.0) == (0.0, 0.0)  # never judged
    assert up_and_down([(50.0, "ok")], 0.0, 100.0) == (50.0, 0.0)  # unknown before


@pytest.mark.anyio
async def test_uptime_over_each_window_from_the_stored_transitions(
    manager: PluginManager, make_settings: Any
) -> None:
    instances = [InstanceSettings(id=i, type="counter", enabled=False) for i in ("web", "other")]
    instances += [InstanceSettings(id=i, type="counter", enabled=False) for i in ("fresh", "never")]
    settings = make_settings(*instances)
    settings.status_page = StatusPageSettings(
        enabled=True, title="Home", instances=["web", "fr*", "never"]
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        await hub.store.write(
            [],
            transitions=[
                transition("web", END - 40 * D, "unknown", "ok"),  # before every window
                transition("web", END - 2 * D, "ok", "failing"),
                transition("web", END - 2 * D + H, "failing", "ok"),
                transition("web", END - 12 * H, "ok", "degraded"),  # up
                transition("web", END - 6 * H, "degraded", "failed"),  # down
                transition("web", END - 5 * H, "failed", "disabled"),  # left out
                transition("web", END - 4 * H, "disabled", "ok"),
                transition("web", END + 100, "ok", "failing"),  # after the end: ignored
                transition("fresh", END - 1 * D, "unknown", "ok"),
                transition("other", END - 1 * H, "unknown", "failing"),
            ],
        )
        page = await hub.status_page(now=END)

    assert (page.title, page.generated_at) == ("Home", END)
    assert [i.id for i in page.instances] == ["web", "fresh", "never"]
    web, fresh, never = page.instances
    uptime = {u.window: (u.up_seconds, u.down_seconds, u.percent) for u in web.uptime}
    assert uptime == {
        "24h": (22 * H, 1 * H, round(100 * 22 / 23, 3)),
        "7d": (165 * H, 2 * H, round(100 * 165 / 167, 3)),
        "30d": (717 * H, 2 * H, round(100 * 717 / 719, 3)),
    }
    assert [(u.window, u.up_seconds, u.down_seconds, u.percent) for u in fresh.uptime] == [
        ("24h", D, 0.0, 100.0),
        ("7d", D, 0.0, 100.0),  # the unknown time before the first transition is left out
        ("30d", D, 0.0, 100.0),
    ]
    assert [u.percent for u in never.uptime] == [None, None, None]
    assert never.status == "unknown" and never.state is HealthState.DISABLED
    assert page.incidents == []


def test_the_section_can_be_set_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no homelab.toml here
    settings = load_settings(
        environ={
            "HOMELAB_STATUS_PAGE_ENABLED": "true",
            "HOMELAB_STATUS_PAGE_TITLE": "Lab",
            "HOMELAB_STATUS_PAGE_INSTANCES": '["nas", "web-*"]',
        },
    )
    assert settings.status_page == StatusPageSettings(
        enabled=True, title="Lab", instances=["nas", "web-*"]
    )


async def served(manager: PluginManager, make_settings: Any, *, enabled: bool) -> Any:
    settings = make_settings(
        InstanceSettings(id="web", type="counter", interval=60),
        server=ServerSettings(api_token="t0ken", auth="all"),
    )
    settings.status_page = StatusPageSettings(enabled=enabled, title="Lab")
    app = Quart(__name__)
    hub = Hub(settings, plugin_manager=manager)
    HomelabWeb(app, hub=hub, url_prefix="/lab")
    return hub, app


@pytest.mark.anyio
async def test_the_status_is_readable_without_a_token_while_the_api_needs_one(
    manager: PluginManager, make_settings: Any
) -> None:
    hub, app = await served(manager, make_settings, enabled=True)
    async with hub, app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/lab/api/plugins")).status_code == 401
        assert (await client.get("/lab/api/plugins/web/status")).status_code == 401
        body = await json_of(await client.get("/lab/api/status"))
        assert body["title"] == "Lab"
        assert [i["id"] for i in body["instances"]] == ["web"]
        assert [u["window"] for u in body["instances"][0]["uptime"]] == ["24h", "7d", "30d"]
        assert "config" not in body["instances"][0]
        page = await client.get("/lab/status")
        assert page.status_code == 200
        text = await page.get_data(as_text=True)
        assert 'data-prefix="/lab"' in text and "/status.js" in text and "{{" not in text
        script = text.split('src="', 1)[1].split('"', 1)[0]
        assert (await client.get(script)).status_code == 200  # its asset, without a token
        openapi = await client.get("/lab/openapi.json")
        assert "/lab/api/status" in (await openapi.get_json())["paths"]


@pytest.mark.anyio
async def test_the_status_page_is_a_404_when_off(
    manager: PluginManager, make_settings: Any
) -> None:
    hub, app = await served(manager, make_settings, enabled=False)
    async with hub, app.test_app() as test_app:
        client = test_app.test_client()
        for path in ("/lab/api/status", "/lab/status"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert (await response.get_json())["error"]["code"] == "not_found"
        headers = {"Authorization": "Bearer t0ken"}
        assert (await client.get("/lab/api/status", headers=headers)).status_code == 404


LIVE_CONFIG = """
[server]
auth = "all"

[scheduler]
failure_threshold = 1
jitter = 0

[status_page]
enabled = true
title = "Homelab status"
description = "Services of the house."
instances = ["good", "bad"]

[plugins.good]
type = "command"
command = ["true"]
interval = 1

[plugins.bad]
type = "command"
command = ["false"]
interval = 1

[plugins.hidden]
type = "command"
command = ["true"]
interval = 60

[alerts.bad-down]
kind = "health"
instances = ["bad"]
for = "0s"
summary = "{instance} is down"
"""


def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("HOMELAB_ARTIFACTS") or tmp_path) / "status-page"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_page_renders_the_instances_in_a_real_browser_without_a_token(
    tmp_path: Path,
) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        unavailable("chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed")
    with live_server(
        tmp_path / "server", config=LIVE_CONFIG, env={"HOMELAB_API_TOKEN": "s3cret-token"}
    ) as server:
        deadline = time.monotonic() + 10
        token = {"Authorization": "Bearer s3cret-token"}
        while True:  # both judged and the alert firing, so the page has all to show
            status = httpx.get(f"{server.url}/api/status", timeout=5).json()
            states = {i["id"]: i["status"] for i in status["instances"]}
            if states == {"good": "up", "bad": "down"} and status["incidents"]:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert httpx.get(f"{server.url}/api/plugins", timeout=5).status_code == 401
        assert httpx.get(f"{server.url}/api/plugins", headers=token, timeout=5).status_code == 200

        errors: list[str] = []
        shots: list[Path] = []
        with sync_playwright() as p:
            # Playwright makes its own profile and refuses --user-data-dir.
            flags = [f for f in chromium_flags(tmp_path) if not f.startswith("--user-data-dir")]
            browser = p.chromium.launch(executable_path=chromium, args=flags)
            try:
                for width, height, scheme in ((1280, 800, "light"), (390, 844, "dark")):
                    page = browser.new_page(
                        viewport={"width": width, "height": height}, color_scheme=scheme
                    )
                    page.on(
                        "console",
                        lambda m: errors.append(m.text) if m.type == "error" else None,
                    )
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    page.goto(f"{server.url}/status", timeout=10_000)
                    page.wait_for_selector("body[data-loaded=true]", timeout=10_000)
                    assert page.title() == "Homelab status"
                    assert page.text_content("#description") == "Services of the house."
                    items = page.locator("#instances li")
                    assert items.count() == 2
                    good = page.locator("li[data-instance=good]")
                    bad = page.locator("li[data-instance=bad]")
                    assert good.locator(".badge").text_content() == "Up"
                    assert bad.locator(".badge").text_content() == "Down"
                    colours = [
                        x.locator(".badge").evaluate("e => getComputedStyle(e).color")
                        for x in (good, bad)
                    ]
                    assert colours[0] != colours[1]
                    assert good.locator("dd[data-window='24h']").text_content() == "100%"
                    assert bad.locator("dd[data-window='24h']").text_content() == "0%"
                    assert page.locator("#incidents li").count() == 1
                    assert "bad is down" in (page.text_content("#incidents") or "")
                    assert "hidden" not in (page.text_content("#instances") or "")
                    overflow = page.evaluate(
                        "document.documentElement.scrollWidth > window.innerWidth"
                    )
                    assert not overflow, f"the page is wider than {width} px"
                    shot = artifacts(tmp_path) / f"status-{width}-{scheme}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    shots.append(shot)
                    page.close()
            finally:
                browser.close()
        assert errors == []
        for shot in shots:
            print(f"screenshot: {shot}")
