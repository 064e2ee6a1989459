"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a real
``homelab serve``: the overview, the instance page, the add form, the alerts page and the
token prompt. Screenshots of each page at 1280 and 390 px wide go to ``$HOMELAB_ARTIFACTS``
(else the test's tmp_path); their paths are printed."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer, live_server
from test_web_docs_ui import chromium, chromium_flags

__all__ = ["chromium"]  # a fixture of test_web_docs_ui, used by name here

CONFIG = """
[plugins.closed]
type = "tcp"
interval = 2
host = "127.0.0.1"
port = 1

[plugins.ticker]
type = "command"
interval = 1
command = "echo {\\\\\\"tick\\\\\\": $(date +%s), \\\\\\"used\\\\\\": 1048576}"

[plugins.spare]
type = "command"
interval = 1
command = "echo '{\\"load\\": 0.5}'"

[alerts.closed-down]
metric = "tcp.up"
op = "<"
threshold = 1
severity = "critical"
summary = "{instance} is down"

[notifiers.log]
type = "log"
"""
TOKEN = "dash-token-123"
#: Browser messages that are expected where a test provokes them (a 400 or a 401 answer).
EXPECTED = re.compile(r"Failed to load resource: the server responded with a status of (400|401)")
#: What a browser logs while the server is down (the page retries).
DOWN = re.compile(r"WebSocket connection to|net::ERR_CONNECTION_REFUSED")
TIMEOUT_MS = 10_000


def artifacts(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("HOMELAB_ARTIFACTS") or tmp_path) / "dashboard"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("profile")
    flags = [f for f in chromium_flags(profile) if not f.startswith("--user-data-dir")]
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=flags, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("dash"), config=CONFIG) as running:
        yield running


class Page:
    """A page with its console errors collected."""

    def __init__(self, browser: Any, url: str, expected: re.Pattern[str] | None = None) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self._console(m, expected))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.goto(url)

    def _console(self, message: Any, expected: re.Pattern[str] | None) -> None:
        if message.type == "error" and not (expected and expected.search(message.text)):
            self.errors.append(message.text)

    def shots(self, directory: Path, name: str) -> None:
        for width in (1280, 390):
            self.page.set_viewport_size({"width": width, "height": 900})
            self.page.evaluate("window.scrollTo(0, 0)")
            self.page.wait_for_timeout(300)
            path = directory / f"{name}-{width}.png"
            self.page.screenshot(path=str(path), full_page=True)
            print(f"screenshot: {path}")
        self.page.set_viewport_size({"width": 1280, "height": 900})
        self.page.emulate_media(color_scheme="dark")  # and the dark theme
        self.page.wait_for_timeout(200)
        path = directory / f"{name}-1280-dark.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        self.page.emulate_media(color_scheme="light")

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


def tile_state(page: Any, instance: str) -> str | None:
    value: str | None = page.get_attribute(f'li.tile[data-id="{instance}"]', "data-state")
    return value


def test_the_overview_shows_every_instance_live(
    browser: Any, server: LiveServer, tmp_path: Path
) -> None:
    view = Page(browser, f"{server.url}/")
    page = view.page
    page.wait_for_selector('li.tile[data-id="closed"][data-state="failing"]')
    page.wait_for_selector('li.tile[data-id="ticker"][data-state="ok"]')
    page.wait_for_selector('li.tile[data-id="spare"][data-state="ok"]')
    assert page.locator("li.tile").count() == 3
    assert page.locator('li.tile[data-id="closed"] .state-word').text_content() == "failing"
    page.wait_for_selector("#connection.conn-live")
    page.wait_for_selector(".firing >> text=closed-down")
    # Sparklines from history (then the stream).
    page.wait_for_function(
        "() => document.querySelector('li.tile[data-id=\"ticker\"] canvas.spark').chartData"
        "?.series[0].points.length > 0"
    )
    # A value arrives live: the tick shown changes without a reload.
    tick = page.locator('li.tile[data-id="ticker"] dd').first
    page.wait_for_function("() => document.querySelector('li.tile[data-id=\"ticker\"] dd')")
    first = tick.text_content()
    page.wait_for_function(
        "(v) => document.querySelector('li.tile[data-id=\"ticker\"] dd').textContent !== v",
        arg=first,
        timeout=5000,
    )
    # Disabled through the API: grey within 2 s.
    httpx.post(
        f"{server.url}/api/plugins/spare/enable", json={"enabled": False}, timeout=5
    ).raise_for_status()
    try:
        page.wait_for_selector('li.tile[data-id="spare"][data-state="disabled"]', timeout=2000)
        assert page.locator('li.tile[data-id="spare"] .state-word').text_content() == "disabled"
        counts = page.locator(".count.state-disabled .count-n").text_content()
        assert counts == "1"
        # Filters: by state and by search.
        page.select_option("#filter-state", "failing")
        assert page.locator("li.tile:visible").count() == 1
        page.select_option("#filter-state", "")
        page.fill("#filter-search", "tick")
        assert [t.get_attribute("data-id") for t in page.locator("li.tile:visible").all()] == [
            "ticker"
        ]
        page.fill("#filter-search", "")
        view.shots(artifacts(tmp_path), "overview")
    finally:
        httpx.post(f"{server.url}/api/plugins/spare/enable", json={"enabled": True}, timeout=5)
    view.close()


def test_the_instance_page_charts_history_and_asks_a_step_per_range(
    browser: Any, server: LiveServer, tmp_path: Path
) -> None:
    view = Page(browser, f"{server.url}/#/instance/ticker")
    page = view.page
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.wait_for_function(
        "() => window.homelabCharts && window.homelabCharts.tick"
        " && window.homelabCharts.tick.series[0].points.length > 0"
    )
    data = page.evaluate("() => window.homelabCharts.tick")
    assert data["series"][0]["label"] == "tick"
    stored = httpx.get(
        f"{server.url}/api/plugins/ticker/metrics/history?metric=tick", timeout=5
    ).json()["series"][0]["points"]
    assert stored and all(isinstance(p[1], int | float) for p in data["series"][0]["points"])
    assert page.evaluate("() => window.homelabCharts.used.unit") == ""
    # Extended live from the stream.
    page.wait_for_function(
        "(n) => window.homelabCharts.tick.series[0].points.length > n",
        arg=len(data["series"][0]["points"]),
        timeout=5000,
    )
    page.click('button[data-range="6h"]')
    page.wait_for_selector('button[data-range="6h"][aria-pressed="true"]')
    page.wait_for_timeout(500)
    asked = [u for u in requests if "/metrics/history" in u]
    assert any("since=-6h" in u and "step=1m" in u for u in asked), asked
    page.click('button[data-range="30d"]')
    page.wait_for_timeout(500)
    assert any("since=-30d" in u and "step=2h" in u for u in requests), requests
    # Executions are listed, with the config.
    page.wait_for_selector("table.executions tbody tr.exec-ok")
    page.wait_for_selector("dl.config >> text=command")
    page.click('button[data-range="1h"]')
    page.wait_for_timeout(500)
    view.shots(artifacts(tmp_path), "instance")
    view.close()


def test_the_instance_page_lists_the_stored_health_transitions(
    browser: Any, server: LiveServer
) -> None:
    view = Page(browser, f"{server.url}/#/instance/closed")
    page = view.page
    page.wait_for_selector("ol.health-history li .badge.state-failing")
    stored = httpx.get(f"{server.url}/api/plugins/closed/health/history", timeout=5).json()
    shown = page.eval_on_selector_all(
        "ol.health-history li .badge", "(badges) => badges.map((b) => b.textContent)"
    )
    assert shown == [t["new_state"] for t in stored["transitions"]][: len(shown)]
    assert "failing" in shown
    view.close()


def test_the_add_form_creates_an_instance_and_shows_the_servers_message(
    browser: Any, server: LiveServer, tmp_path: Path
) -> None:
    view = Page(browser, f"{server.url}/#/add", expected=EXPECTED)
    page = view.page
    page.wait_for_selector("#add-type option[value=tcp]", state="attached")
    page.select_option("#add-type", "tcp")
    page.wait_for_selector("#field-host")
    page.fill("#field-id", "made-here")
    page.fill("#field-host", "127.0.0.1")
    page.fill("#field-port", "99999")
    page.fill("#field-interval", "5")
    page.click("form.add-form button[type=submit]")
    page.wait_for_selector("#field-port-error:has-text('between 1 and 65535')")
    assert "[plugins.made-here] port" in (page.text_content("#field-port-error") or "")
    assert page.get_attribute("#field-port", "aria-invalid") == "true"
    view.shots(artifacts(tmp_path), "add")
    page.fill("#field-port", "9")
    page.click("form.add-form button[type=submit]")
    page.wait_for_url(re.compile(r"#/instance/made-here$"))
    made = httpx.get(f"{server.url}/api/plugins/made-here", timeout=5)
    assert made.status_code == 200
    plugin = made.json()["plugin"]
    assert plugin["source"] == "api" and plugin["config"]["port"] == 9 and plugin["interval"] == 5
    page.wait_for_selector("#delete-instance")  # an API instance can be deleted here
    # The overview has it at once; deleted through the API, its tile goes away live.
    page.goto(f"{server.url}/#/")
    page.wait_for_selector('li.tile[data-id="made-here"]')
    httpx.delete(f"{server.url}/api/plugins/made-here", timeout=5).raise_for_status()
    page.wait_for_selector('li.tile[data-id="made-here"]', state="detached", timeout=3000)
    view.close()


def test_the_edit_form_is_made_from_the_schema_and_patches_the_instance(
    browser: Any, server: LiveServer, tmp_path: Path
) -> None:
    body = {
        "id": "edited",
        "type": "tcp",
        "interval": 30,
        "options": {"host": "127.0.0.1", "port": 7},
    }
    httpx.post(f"{server.url}/api/plugins", json=body, timeout=5).raise_for_status()
    try:
        view = Page(browser, f"{server.url}/#/instance/edited", expected=EXPECTED)
        page = view.page
        page.wait_for_selector("#edit-port")
        # Filled in with the instance's values, one input per option of the schema.
        assert page.input_value("#edit-port") == "7"
        assert page.input_value("#edit-host") == "127.0.0.1"
        assert page.input_value("#edit-interval") == "30"
        assert page.get_attribute("#edit-port", "type") == "number"
        page.fill("#edit-port", "70000")
        page.click("form.edit button[type=submit]")
        page.wait_for_selector("#edit-port-error:has-text('between 1 and 65535')")
        page.fill("#edit-port", "8")
        page.fill("#edit-interval", "45")
        page.click("form.edit button[type=submit]")
        page.wait_for_selector("p.feedback:has-text('Saved')")
        view.shots(artifacts(tmp_path), "edit")
        plugin = httpx.get(f"{server.url}/api/plugins/edited", timeout=5).json()["plugin"]
        assert (plugin["config"]["port"], plugin["config"]["host"], plugin["interval"]) == (
            8,
            "127.0.0.1",
            45,
        )
        view.close()
    finally:
        httpx.delete(f"{server.url}/api/plugins/edited", timeout=5)


def test_silencing_an_alert_from_the_alerts_page(
    browser: Any, server: LiveServer, tmp_path: Path
) -> None:
    view = Page(browser, f"{server.url}/#/alerts")
    page = view.page
    form = page.locator("form.silence-form[aria-label='Silence closed-down on closed']")
    form.wait_for()
    page.wait_for_selector("text=log (log)")
    view.shots(artifacts(tmp_path), "alerts")
    form.locator("select").select_option(label="2h")
    form.locator("input").fill("maintenance from the dashboard")
    form.locator("button").click()
    page.wait_for_selector("[data-silence]")
    silences = httpx.get(f"{server.url}/api/silences", timeout=5).json()["silences"]
    assert [(s["matchers"], s["comment"]) for s in silences] == [
        ({"rule": "closed-down", "instance": "closed"}, "maintenance from the dashboard")
    ]
    page.wait_for_selector("text=silenced by")
    page.click("[data-silence] button")
    page.wait_for_selector("text=No silence.")
    assert httpx.get(f"{server.url}/api/silences", timeout=5).json()["silences"] == []
    view.close()


def test_with_a_token_the_page_asks_once_then_works(browser: Any, tmp_path: Path) -> None:
    config = f'[server]\napi_token = "{TOKEN}"\nauth = "all"\n' + CONFIG
    with live_server(tmp_path / "auth", config=config, token=TOKEN) as server:
        view = Page(browser, f"{server.url}/", expected=EXPECTED)
        page = view.page
        page.wait_for_selector("dialog.token-dialog #token-input")
        page.fill("#token-input", TOKEN)
        page.keyboard.press("Enter")
        page.wait_for_selector('li.tile[data-id="ticker"][data-state="ok"]')
        page.wait_for_selector("#connection.conn-live")  # the stream took the token
        assert page.locator("dialog.token-dialog").count() == 0
        page.reload()
        page.wait_for_selector('li.tile[data-id="ticker"]')
        page.wait_for_selector("#connection.conn-live")
        assert page.locator("dialog.token-dialog").count() == 0  # kept in localStorage
        view.close()


def test_a_dropped_stream_shows_reconnecting_and_comes_back(browser: Any, tmp_path: Path) -> None:
    directory = tmp_path / "restart"
    with live_server(directory, config=CONFIG) as server:
        port = server.port
        view = Page(browser, f"{server.url}/", expected=DOWN)
        page = view.page
        page.wait_for_selector("#connection.conn-live")
        server.stop()
        page.wait_for_selector("#connection.conn-reconnecting")
        assert page.text_content("#connection") == "reconnecting"
    with live_server(directory, port=port):
        page.wait_for_selector("#connection.conn-live", timeout=15_000)
        tick = page.locator('li.tile[data-id="ticker"] dd').first.text_content()
        page.wait_for_function(
            "(v) => document.querySelector('li.tile[data-id=\"ticker\"] dd').textContent !== v",
            arg=tick,
            timeout=5000,
        )
        view.close()


def test_the_overview_shows_and_groups_the_nodes_of_a_cluster(
    browser: Any, tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    from test_scaleout import serve_config, two_servers

    config = serve_config(postgres_url, redis_url) + "".join(
        f'\n[plugins.free-{i}]\ntype = "tcp"\ninterval = 1\nhost = "127.0.0.1"\nport = 1\n'
        for i in range(6)
    )
    with two_servers(tmp_path, config) as a:
        deadline = time.monotonic() + 20
        while True:  # both nodes run instances, as the list says
            plugins = httpx.get(f"{a.url}/api/plugins", timeout=5).json()["plugins"]
            if {p["running_on"] for p in plugins} == {"a", "b"} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        view = Page(browser, f"{a.url}/#/")
        page = view.page
        page.wait_for_selector('li.tile[data-id="on-b"]')
        page.wait_for_selector("#filter-node", state="visible")
        assert "on b" in (page.text_content('li.tile[data-id="on-b"] .tile-sub') or "")
        page.select_option("#filter-node", "b")
        shown = page.eval_on_selector_all(
            "li.tile:not([hidden])", "(tiles) => tiles.map((t) => t.dataset.id)"
        )
        on_b = {p["id"] for p in plugins if p["running_on"] == "b"}
        assert set(shown) == on_b and "on-b" in shown
        page.select_option("#filter-node", "")
        page.select_option("#group-by", "node")
        headings = page.eval_on_selector_all(
            "section.group:not([hidden]) h2", "(hs) => hs.map((h) => h.textContent)"
        )
        assert headings == ["node a", "node b"]
        view.shots(artifacts(tmp_path), "nodes")
        view.close()
