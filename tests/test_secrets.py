"""Secrets in URLs, headers and secret options never leave the config (issue 10, item 9).

A real HTTP server on 127.0.0.1 refuses the bundled ``http`` plugin (401) while it sends
a credentialed URL and secret headers; a test plugin puts its secrets into exception
texts, health reports, a failed setup, a failed teardown and its own log. None of them
may show in the REST API, the WebSocket stream, the SQLite file, the log or the output
of ``homelab run`` and ``homelab check-config``, while the server proves that the
secrets were really sent.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import anyio
import attrs
import pytest
from click.testing import CliRunner

from homelab_core import (
    HealthReport,
    InstanceSettings,
    Metric,
    Plugin,
    PluginManager,
    hookimpl,
    option,
)
from homelab_core.cli import cli
from homelab_core.web import HomelabWeb, create_app
from homelab_plugins import http

pytestmark = pytest.mark.anyio

URL_PASSWORD = "url-pass-4711"
HEADER_SECRET = "header-key-0815"
TOKEN = "leaky-token-2342"
SECRETS = (URL_PASSWORD, HEADER_SECRET, TOKEN)


class Refuses(BaseHTTPRequestHandler):
    """Answers 401 to everything and remembers the credentials it was sent."""

    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers.items()))
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="homelab"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def refusing_server() -> Iterator[tuple[int, list[dict[str, str]]]]:
    """A 401 server on a free loopback port: its port and the headers of every request."""
    seen: list[dict[str, str]] = []
    handler = type("Handler", (Refuses,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@attrs.define
class LeakyConfig:
    url: str = option(description="A URL with credentials in it.")
    headers: dict[str, str] = option(factory=dict, secret=True, description="Secret headers.")
    token: str = option("", secret=True, description="A secret token.")
    mode: Literal["raise", "report", "setup"] = option("raise", description="How to leak.")


class Leaky(Plugin[LeakyConfig]):
    """Puts every secret it has into the texts the framework shows and stores."""

    name = "leaky"
    default_interval = 3600

    def _confession(self) -> str:
        config = self.config
        return f"GET {config.url} with {config.headers} and token {config.token} failed"

    async def setup(self) -> None:
        if self.config.mode == "setup":
            raise RuntimeError(self._confession())

    async def collect(self) -> list[Metric]:
        self.log.warning("about to leak: %s", self._confession())
        if self.config.mode == "raise":
            raise RuntimeError(self._confession())
        return [Metric("leaky.up", 0)]

    async def health(self) -> HealthReport | None:
        return HealthReport("degraded", self._confession())

    async def teardown(self) -> None:
        raise RuntimeError(f"closing: {self._confession()}")


class LeakyPlugins:
    @hookimpl
    def register_plugins(self, register: Callable[[type[Plugin]], None]) -> None:
        register(Leaky)


@pytest.fixture
def plugins(manager: PluginManager) -> PluginManager:
    manager.register(http, name="http")
    manager.register(LeakyPlugins(), name="leaky-plugins")
    return manager


def credentialed_url(port: int) -> str:
    return f"http://bob:{URL_PASSWORD}@127.0.0.1:{port}/private"


def instances(port: int) -> list[InstanceSettings]:
    """The http instance and a leaky one of each mode, all disabled until the test starts."""
    url = credentialed_url(port)
    leaky = {"url": url, "headers": {"X-Api-Key": HEADER_SECRET}, "token": TOKEN}
    return [
        InstanceSettings(
            id="web",
            type="http",
            interval=3600,
            enabled=False,
            options={"url": url, "headers": {"X-Api-Key": HEADER_SECRET}},
        ),
        *(
            InstanceSettings(
                id=f"leaky-{mode}",
                type="leaky",
                interval=3600,
                enabled=False,
                options={**leaky, "mode": mode},
            )
            for mode in ("raise", "report", "setup")
        ),
    ]


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} shows in {where}: {text[:2000]}"


async def test_secrets_never_leave_the_config(
    plugins: PluginManager,
    make_settings: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    expected = {"web": "failing", "leaky-raise": "degraded", "leaky-report": "degraded"}
    expected["leaky-setup"] = "failing"
    with refusing_server() as (port, seen):
        settings = make_settings(*instances(port))
        app = create_app(settings, plugin_manager=plugins)
        received: list[str] = []
        with anyio.fail_after(15):
            async with app.test_app() as test_app:
                client = test_app.test_client()
                hub = app.extensions["homelab"].hub
                assert isinstance(app.extensions["homelab"], HomelabWeb)
                async with client.websocket("/ws/metrics") as ws:
                    received.append(await ws.receive())
                    for instance_id in expected:
                        await hub.set_enabled(instance_id, True)
                    states: dict[str, str] = {}
                    while states != expected:
                        raw = await ws.receive()
                        received.append(raw)
                        message = json.loads(raw)
                        if message["type"] == "status":
                            states[message["plugin_id"]] = message["data"]["state"]
                    await ws.send(json.dumps({"type": "subscribe"}))
                    while json.loads(raw := await ws.receive())["type"] != "snapshot":
                        received.append(raw)
                    received.append(raw)
                bodies = []
                paths = ["/api/plugins", "/api/plugins/stats/summary", "/api/health"]
                for instance_id in expected:
                    base = f"/api/plugins/{instance_id}"
                    paths += [base, f"{base}/status", f"{base}/executions", f"{base}/metrics"]
                paths.append("/metrics")
                for path in paths:
                    response = await client.get(path)
                    bodies.append(f"{path}: {await response.get_data(as_text=True)}")
                run = await client.post("/api/plugins/leaky-setup/run", json={})
                bodies.append(f"run: {await run.get_data(as_text=True)}")
    # The secrets were really used: the server got the URL's credentials and the header.
    assert seen, "the http plugin never reached the server"
    assert seen[0]["X-Api-Key"] == HEADER_SECRET
    basic = base64.b64encode(f"bob:{URL_PASSWORD}".encode()).decode()
    assert seen[0]["Authorization"] == f"Basic {basic}"
    web = await_text(bodies, "/api/plugins/web: ")
    assert "bob" in web and "127.0.0.1" in web, "the redacted URL still names user and host"
    assert_no_secret("\n".join(received), "the WebSocket stream")
    assert_no_secret("\n".join(bodies), "the REST API")
    assert_no_secret(caplog.text, "the log")
    assert "closing:" in caplog.text, "the failed teardown was logged"
    database = settings.database.url.removeprefix("sqlite://")
    dump = "\n".join(sqlite3.connect(database).iterdump())
    assert "answered 401" in dump and "RuntimeError" in dump, "the texts were stored"
    assert_no_secret(dump, "the SQLite file")


def await_text(bodies: list[str], prefix: str) -> str:
    return next(body for body in bodies if body.startswith(prefix))


def test_homelab_run_output_has_no_secrets(
    plugins: PluginManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOMELAB_CONFIG", raising=False)
    runner = CliRunner()
    with refusing_server() as (port, seen):
        url = credentialed_url(port)
        headers = json.dumps({"X-Api-Key": HEADER_SECRET})
        result = runner.invoke(
            cli,
            ["run", "http", "--once", "--set", f"url={url}", "--set", f"headers={headers}"],
            obj=plugins,
            catch_exceptions=False,
        )
        assert seen and seen[0]["X-Api-Key"] == HEADER_SECRET
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert "answered 401" in output["health"]["message"]
    assert_no_secret(result.stdout + result.stderr, "homelab run http")
    for mode in ("raise", "report", "setup"):
        sets = [f"url={url}", f"headers={headers}", f"token={TOKEN}", f"mode={mode}"]
        result = runner.invoke(
            cli,
            ["run", "leaky", "--once", *(arg for value in sets for arg in ("--set", value))],
            obj=plugins,
            catch_exceptions=False,
        )
        assert "failed" in result.stdout, result.output
        assert_no_secret(result.stdout + result.stderr, f"homelab run leaky ({mode})")


def test_check_config_does_not_echo_a_credentialed_url(
    plugins: PluginManager, tmp_path: Path
) -> None:
    config = tmp_path / "homelab.toml"
    config.write_text(
        f'[plugins.web]\ntype = "http"\nurl = "ftp://bob:{URL_PASSWORD}@nas/"\n', encoding="utf-8"
    )
    result = CliRunner().invoke(
        cli, ["check-config", "--config", str(config)], obj=plugins, catch_exceptions=False
    )
    assert result.exit_code == 2, result.output
    assert "ftp://bob:" in result.stderr and "url" in result.stderr
    assert_no_secret(result.stderr, "check-config")
