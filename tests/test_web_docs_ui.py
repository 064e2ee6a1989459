"""The ``/docs`` page in a real browser: Debian's Chromium against a real ``homelab serve``.

One test renders the page with ``--dump-dom`` and compares it with the live OpenAPI
description; another drives the page over the DevTools protocol to use its "Try it" forms.
The page must work offline: it may load nothing from another host, and Chromium runs with
every host but 127.0.0.1 unresolvable.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import services
from live_server import server_env
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
TOKEN = "docs-ui-token-8d41"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
#: Seconds the server may take to answer /api/health; Chromium may take to render a page.
READY_TIMEOUT = 60.0
BROWSER_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
#: Any URL with a scheme (http://, https://, ws://, ...) and protocol-relative references.
ABSOLUTE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
PROTOCOL_RELATIVE = re.compile(r"""(?:\b(?:src|href|action)\s*=\s*["']?|url\(\s*["']?)\s*//""")
UNSAFE_HTML = re.compile(r"\b(?:innerHTML|outerHTML|insertAdjacentHTML|document\.write)\b")


def chromium_flags(profile: Path) -> list[str]:
    """Headless, no background traffic, and no host but loopback resolvable."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        # Headless Chromium 156 keeps a renderer for the (never shown) omnibox popups busy
        # at half a core or more for as long as it runs: on two cores, that is the page's.
        "--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup",
        f"--user-data-dir={profile}",
    ]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not found:
        services.unavailable("Chromium is not installed (apt-get install chromium)")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``homelab serve`` in an empty directory, with a token that POSTs need."""
    directory = tmp_path_factory.mktemp("docs-server")
    (directory / "homelab.toml").write_text(f'[server]\napi_token = "{TOKEN}"\n')
    port = services.free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env()  # without HOMELAB_* variables, running this checkout's code
    log = directory / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "homelab_core.cli", "serve", "--port", str(port)],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"homelab serve exited with {proc.returncode}:\n{log.read_text()}")
                try:
                    if client.get(f"{url}/api/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"homelab serve was not ready in time:\n{log.read_text()}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def get(url: str) -> httpx.Response:
    response = httpx.get(url, timeout=10.0, trust_env=False)
    response.raise_for_status()
    return response


class Element:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.classes = attrs.get("class", "").split()
        self.text = ""


class Elements(HTMLParser):
    """Every element of a document, each with its attributes and all the text inside it."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.all: list[Element] = []
        self._open: list[Element] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.all.append(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data

    def find(self, tag: str | None = None, cls: str | None = None) -> list[Element]:
        return [
            e
            for e in self.all
            if (tag is None or e.tag == tag) and (cls is None or cls in e.classes)
        ]

    def by_id(self, ident: str) -> Element:
        (found,) = [e for e in self.all if e.attrs.get("id") == ident]
        return found


def operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }


def test_page_renders_every_operation_offline(chromium: str, server: str, tmp_path: Path) -> None:
    spec = get(f"{server}/openapi.json").json()
    try:
        done = subprocess.run(
            [
                chromium,
                *chromium_flags(tmp_path / "profile"),
                "--virtual-time-budget=5000",
                "--dump-dom",
                f"{server}/docs",
            ],
            capture_output=True,
            text=True,
            timeout=BROWSER_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"Chromium did not render the page within {BROWSER_TIMEOUT} s")
    assert done.returncode == 0, done.stderr[-3000:]
    dom = Elements(done.stdout)

    assert "Could not load" not in done.stdout
    assert dom.by_id("api-title").text == spec["info"]["title"]
    assert spec["info"]["version"] in dom.by_id("api-meta").text
    methods, paths = dom.find(cls="method"), dom.find(cls="path")
    assert len(methods) == len(paths)
    rendered = [(m.text, p.text) for m, p in zip(methods, paths, strict=True)]
    assert len(rendered) == len(set(rendered))
    assert set(rendered) == operations(spec)
    assert {path for _, path in rendered} == set(spec["paths"])
    # Grouped by the path's first segment after /api.
    groups = {e.text for e in dom.find("h2") if e.attrs.get("id", "").startswith("op-group-")}
    assert {"plugins", "health", "metrics"} <= groups
    # A Try-it form with a send button for every operation.
    forms = dom.find("form", "try-it")
    assert len(forms) == len(rendered)
    sends = [b for b in dom.find("button", "send") if b.attrs.get("type") == "submit"]
    assert len(sends) == len(rendered)
    assert all(b.text.startswith("Send ") for b in sends)
    # Every control is labelled.
    labelled = {e.attrs["for"] for e in dom.find("label")}
    controls = dom.find("input") + dom.find("select") + dom.find("textarea")
    assert controls and all(c.attrs.get("id") in labelled for c in controls)
    # The request body schema of POST .../enable and a response schema are shown.
    assert "EnableIn" in done.stdout and "HealthCheckOut" in done.stdout
    # The WebSocket note at the bottom.
    note = dom.by_id("ws-note").text
    assert "/ws/metrics" in note and "docs/websocket.md" in note
    # Links in the rendered page stay on this server.
    for element in dom.all:
        for name in ("href", "src", "action"):
            if name in element.attrs:
                parts = urlsplit(element.attrs[name])
                assert not parts.scheme and not parts.netloc, element.attrs


def test_served_files_reference_no_other_host(server: str) -> None:
    html = get(f"{server}/docs").text
    page = Elements(html)
    assets = [e.attrs["href"] for e in page.find("link")] + [
        e.attrs["src"] for e in page.find("script") if "src" in e.attrs
    ]
    assert sorted(a.rsplit("/", 1)[-1] for a in assets) == ["docs.css", "docs.js"]
    texts = {"/docs": html}
    for asset in assets:
        parts = urlsplit(asset)
        assert not parts.scheme and not parts.netloc and asset.startswith("/"), asset
        texts[asset] = get(f"{server}{asset}").text
    for name, text in texts.items():
        assert ABSOLUTE_URL.findall(text) == [], name
        assert PROTOCOL_RELATIVE.findall(text) == [], name
        assert "@import" not in text, name
    # Strings from the document reach the page as text nodes, never as markup.
    assert not UNSAFE_HTML.search(texts[assets[-1]])


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.last = 0

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        self.last += 1
        self.ws.send(json.dumps({"id": self.last, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if message.get("id") == self.last:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {expression}")
            time.sleep(0.05)


@pytest.fixture
def page(chromium: str, server: str, tmp_path: Path) -> Iterator[DevTools]:
    """A headless Chromium page showing ``/docs``, driven over the DevTools protocol."""
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [chromium, *chromium_flags(profile), "--remote-debugging-port=0", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + BROWSER_TIMEOUT
        while not (active.exists() and active.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(active.read_text().split()[0])
        targets = get(f"http://127.0.0.1:{port}/json/list").json()
        (target,) = [t for t in targets if t["type"] == "page"]
        with connect(target["webSocketDebuggerUrl"], open_timeout=30, max_size=None) as ws:
            devtools = DevTools(ws)
            devtools.call("Page.navigate", {"url": f"{server}/docs"})
            devtools.wait_for("document.querySelectorAll('section.op').length > 0")
            yield devtools
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def on_operation(method: str, path: str, body: str) -> str:
    """JavaScript running ``body`` with ``op`` bound to the section of one operation."""
    return (
        "(() => { const op = [...document.querySelectorAll('section.op')].find(s =>"
        f" s.querySelector('.method').textContent === {json.dumps(method)} &&"
        f" s.querySelector('.path').textContent === {json.dumps(path)}); {body} }})()"
    )


def try_it(page: DevTools, method: str, path: str, fill: str = "") -> dict[str, str]:
    """Open an operation, fill its form, send it and return what the page shows."""
    page.evaluate(
        on_operation(
            method,
            path,
            "op.querySelector('.result').textContent = '';"
            " if (op.querySelector('.op-body').hidden) op.querySelector('.op-toggle').click();"
            f" {fill} op.querySelector('form.try-it').requestSubmit();",
        )
    )
    shown: dict[str, str] = page.wait_for(
        on_operation(
            method,
            path,
            "const r = op.querySelector('.result'); if (!r.querySelector('pre.body')) return null;"
            " return {request: r.querySelector('code').textContent,"
            " status: r.querySelector('.status').textContent,"
            " headers: r.querySelector('pre.headers').textContent,"
            " body: r.querySelector('pre.body').textContent};",
        )
    )
    return shown


def test_try_it_sends_requests_with_the_token(page: DevTools, server: str) -> None:
    health = try_it(page, "GET", "/api/health")
    assert health["request"] == "GET /api/health"
    assert health["status"].startswith("200")
    assert "content-type: application/json" in health["headers"]
    assert json.loads(health["body"]) == get(f"{server}/api/health").json()
    assert '\n  "live": true' in health["body"]  # pretty-printed

    query = try_it(
        page,
        "GET",
        "/api/plugins",
        "op.querySelector('select[name=enabled]').value = 'true';",
    )
    assert query["request"] == "GET /api/plugins?enabled=true"
    assert query["status"].startswith("200")
    assert json.loads(query["body"]) == {"plugins": [], "count": 0}

    enable = "/api/plugins/{plugin_id}/enable"
    fill = "op.querySelector('input[name=plugin_id]').value = 'no such';"
    assert json.loads(
        page.evaluate(on_operation("POST", enable, "return op.querySelector('textarea').value;"))
    ) == {"enabled": False}
    refused = try_it(page, "POST", enable, fill)
    assert refused["request"] == "POST /api/plugins/no%20such/enable"
    assert refused["status"].startswith("401")
    assert json.loads(refused["body"])["error"]["code"] == "unauthorized"

    stored = page.evaluate(
        "(() => { const t = document.getElementById('token'); t.value = "
        f"{json.dumps(TOKEN)}; t.dispatchEvent(new Event('input'));"
        " return sessionStorage.getItem('homelab-docs-token'); })()"
    )
    assert stored == TOKEN
    allowed = try_it(page, "POST", enable, fill)
    assert allowed["status"].startswith("404")
    assert json.loads(allowed["body"])["error"]["code"] == "not_found"

    # The token survives a reload of the tab, and "Forget" drops it.
    page.evaluate("window.beforeReload = true")
    page.call("Page.reload")
    page.wait_for("!window.beforeReload && document.querySelectorAll('section.op').length > 0")
    assert page.evaluate("document.getElementById('token').value") == TOKEN
    page.evaluate("document.getElementById('token-clear').click()")
    assert page.evaluate("sessionStorage.getItem('homelab-docs-token')") is None


def test_try_it_sends_every_change_as_json(page: DevTools) -> None:
    """Run has no body, yet the page says ``Content-Type: application/json``: the server
    refuses changes that a form on another site could send (no body, or form data)."""
    page.evaluate(
        "(() => { window.sent = []; const send = window.fetch; window.fetch = (url, init) =>"
        " { window.sent.push(init.headers['Content-Type'] || null); return send(url, init); };"
        " })()"
    )
    run = "/api/plugins/{plugin_id}/run"
    fill = "op.querySelector('input[name=plugin_id]').value = 'nosuch';"
    refused = try_it(page, "POST", run, fill)
    assert refused["status"].startswith("401"), refused  # the page has no token yet
    page.evaluate(
        "(() => { const t = document.getElementById('token'); t.value = "
        f"{json.dumps(TOKEN)}; t.dispatchEvent(new Event('input')); }})()"
    )
    unknown = try_it(page, "POST", run, fill)
    assert unknown["status"].startswith("404"), unknown
    assert json.loads(unknown["body"])["error"]["code"] == "not_found"
    reads = try_it(page, "GET", "/api/health")
    assert reads["status"].startswith("200")
    assert page.evaluate("window.sent") == ["application/json", "application/json", None]
