"""Web pages on other sites: DNS rebinding, cross-site changes and cross-site WebSockets.

The bundled app (``create_app``, what ``homelab serve`` runs) through Quart's test client
on a real hub and SQLite file. A page on ``http://evil.example`` can make the victim's
browser send requests to the loopback server: with its own name in ``Host`` (after DNS
rebinding), or with ``Origin: http://evil.example`` and a body a form can send. Each must
be refused before it changes anything or reads the stream.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from quart import Quart
from quart.testing import WebsocketResponseError
from quart.typing import TestClientProtocol as Client

from homelab_core import InstanceSettings, PluginManager, Settings
from homelab_core.config import ServerSettings
from homelab_core.web import HomelabWeb, create_app

pytestmark = pytest.mark.anyio

TOKEN = "origins-token-5b1e"
RUN = "/api/plugins/c/run"
ENABLE = "/api/plugins/c/enable"
EVIL = "http://evil.example"


@pytest.fixture
def build(manager: PluginManager, make_settings: Callable[..., Settings]) -> Callable[..., Quart]:
    """The bundled app on one ``counter`` instance, with ``[server]`` settings of the test."""

    def build_app(**server: Any) -> Quart:
        settings = make_settings(
            InstanceSettings(id="c", type="counter", interval=3600), server=ServerSettings(**server)
        )
        return create_app(settings, plugin_manager=manager)

    return build_app


@asynccontextmanager
async def serving(app: Quart) -> AsyncIterator[Client]:
    async with app.test_app() as test_app:
        yield test_app.test_client()


@pytest.fixture
async def client(build: Callable[..., Quart]) -> AsyncIterator[Client]:
    """The default ``[server]``: loopback, port 8765, no token."""
    async with serving(build()) as test_client:
        yield test_client


def homelab(app: Quart) -> HomelabWeb:
    web: HomelabWeb = app.extensions["homelab"]
    return web


async def runs_of(app: Quart) -> int:
    """How many times ``c`` ran, once its first (scheduled) run is over."""
    hub = homelab(app).hub
    with anyio.fail_after(5):
        while True:
            if runs := hub.stats("c").runs:
                return runs
            await anyio.sleep(0.01)


async def error_of(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, (await response.get_data(as_text=True))[:300]
    assert response.mimetype == "application/json"
    error = (await response.get_json())["error"]
    assert error["code"] == code, error
    message: str = error["message"]
    return message


# -- Host: DNS rebinding --------------------------------------------------------------------------

PATHS = ["/api/plugins", "/api/health", "/metrics", "/docs", "/openapi.json", "/no/such/path"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8765", "127.0.0.1.evil.example:8765", "localhost:9999"],
)
async def test_a_foreign_host_is_refused(client: Client, path: str, host: str) -> None:
    response = await client.get(path, headers={"Host": host})
    message = await error_of(response, 421, "unknown_host")
    assert host.split(":")[0] in message
    assert "allowed_hosts" in message


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8765",
        "localhost:8765",
        "[::1]:8765",
        "localhost",
        "127.0.0.1",
        "LOCALHOST:8765",
        "localhost.:8765",
    ],
)
async def test_loopback_names_are_answered(client: Client, host: str) -> None:
    response = await client.get("/api/plugins", headers={"Host": host})
    assert response.status_code == 200, await response.get_data(as_text=True)


async def test_configured_hosts_are_answered(build: Callable[..., Quart]) -> None:
    app = build(allowed_hosts=["homelab.lan", "nas.lan:8080"])
    async with serving(app) as client:
        for host in ("homelab.lan", "homelab.lan:8765", "homelab.lan:1234", "nas.lan:8080"):
            response = await client.get("/api/plugins", headers={"Host": host})
            assert response.status_code == 200, host
        for host in ("nas.lan:8765", "nas.lan", "sub.homelab.lan", "evil.example"):
            await error_of(
                await client.get("/api/plugins", headers={"Host": host}), 421, "unknown_host"
            )


async def test_a_star_answers_every_host(build: Callable[..., Quart]) -> None:
    async with serving(build(allowed_hosts=["*"])) as client:
        response = await client.get("/api/plugins", headers={"Host": "evil.example"})
        assert response.status_code == 200


async def test_a_wildcard_bind_answers_addresses_and_its_own_name(
    build: Callable[..., Quart],
) -> None:
    """Bound to every interface: any address literal (no rebinding without a name) and
    the machine's own name are answered; other names are not."""
    async with serving(build(host="0.0.0.0", api_token=TOKEN)) as client:
        hostname = socket.gethostname()
        for host in ("192.168.1.20:8765", "[fe80::1]:8765", "127.0.0.1:8765", hostname):
            response = await client.get("/api/plugins", headers={"Host": host})
            assert response.status_code == 200, host
        await error_of(
            await client.get("/api/plugins", headers={"Host": "evil.example:8765"}),
            421,
            "unknown_host",
        )


async def test_a_foreign_host_cannot_open_the_stream(client: Client) -> None:
    with pytest.raises(WebsocketResponseError) as raised:
        async with client.websocket("/ws/metrics", headers={"Host": "evil.example"}) as ws:
            await ws.receive()
    assert raised.value.response.status_code == 421


# -- Origin: cross-site changes -------------------------------------------------------------------


async def test_a_cross_site_run_is_refused(build: Callable[..., Quart]) -> None:
    """The issue's attack: a form on evil.example posting to run, with no body."""
    app = build()
    async with serving(app) as client:
        before = await runs_of(app)
        response = await client.post(RUN, headers={"Origin": EVIL})
        message = await error_of(response, 403, "forbidden_origin")
        assert EVIL in message
        assert "allowed_origins" in message
        assert await runs_of(app) == before


async def test_a_cross_site_change_with_a_json_body_is_refused(build: Callable[..., Quart]) -> None:
    app = build()
    async with serving(app) as client:
        response = await client.post(ENABLE, json={"enabled": False}, headers={"Origin": EVIL})
        await error_of(response, 403, "forbidden_origin")
        assert homelab(app).hub.instance("c").enabled is True


@pytest.mark.parametrize("origin", ["null", "http://localhost.evil.example", "http://localhost:1"])
async def test_other_origins_are_refused(client: Client, origin: str) -> None:
    response = await client.post(RUN, json={}, headers={"Origin": origin})
    await error_of(response, 403, "forbidden_origin")


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("localhost", "http://localhost"),
        ("127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("[::1]:8765", "http://[::1]:8765"),
        ("localhost:8765", "http://LOCALHOST:8765"),
    ],
)
async def test_the_servers_own_origin_may_change(client: Client, host: str, origin: str) -> None:
    response = await client.post(RUN, json={}, headers={"Host": host, "Origin": origin})
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await response.get_json())["status"] == "ok"


async def test_configured_origins_may_change(build: Callable[..., Quart]) -> None:
    async with serving(build(allowed_origins=["http://dashboard.lan:3000"])) as client:
        allowed = await client.post(RUN, json={}, headers={"Origin": "http://dashboard.lan:3000"})
        assert allowed.status_code == 200, await allowed.get_data(as_text=True)
        other = await client.post(RUN, json={}, headers={"Origin": "http://dashboard.lan:3001"})
        await error_of(other, 403, "forbidden_origin")


async def test_reads_from_other_origins_are_answered(client: Client) -> None:
    """A read changes nothing, and without CORS headers the page cannot see the answer."""
    response = await client.get("/api/plugins", headers={"Origin": EVIL})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


# -- the body: no simple request may change anything -----------------------------------------------


@pytest.mark.parametrize(
    "request_body",
    [
        pytest.param({}, id="no-body"),
        pytest.param({"data": "x=1", "headers": {"Content-Type": "text/plain"}}, id="text-plain"),
        pytest.param(
            {"data": "x=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            id="form",
        ),
        pytest.param(
            {"data": "--b--", "headers": {"Content-Type": "multipart/form-data; boundary=b"}},
            id="multipart",
        ),
    ],
)
async def test_a_change_needs_a_json_body(build: Callable[..., Quart], request_body: Any) -> None:
    app = build()
    async with serving(app) as client:
        before = await runs_of(app)
        response = await client.post(RUN, **request_body)
        message = await error_of(response, 415, "unsupported_media_type")
        assert "application/json" in message
        assert await runs_of(app) == before


@pytest.mark.parametrize(
    "request_body",
    [
        pytest.param({"json": {}}, id="empty-object"),
        pytest.param({"headers": {"Content-Type": "application/json"}}, id="json-without-body"),
        pytest.param(
            {"data": "{}", "headers": {"Content-Type": "application/json; charset=utf-8"}},
            id="charset",
        ),
    ],
)
async def test_run_takes_a_json_request(client: Client, request_body: Any) -> None:
    response = await client.post(RUN, **request_body)
    assert response.status_code == 200, await response.get_data(as_text=True)


async def test_a_bearer_token_is_a_non_simple_header(build: Callable[..., Quart]) -> None:
    """A page cannot send ``Authorization`` without the browser asking first, so a run
    with the token needs no body (as ``curl -X POST -H 'Authorization: ...'`` sends it)."""
    async with serving(build(api_token=TOKEN)) as client:
        response = await client.post(RUN, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, await response.get_data(as_text=True)


# -- the WebSocket ---------------------------------------------------------------------------------


async def hello_of(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    async with client.websocket("/ws/metrics", headers=headers) as ws:
        message: dict[str, Any] = json.loads(await ws.receive())
    return message


@pytest.mark.parametrize("origin", [EVIL, "null", "http://localhost:1"])
async def test_a_cross_site_websocket_is_refused(client: Client, origin: str) -> None:
    with pytest.raises(WebsocketResponseError) as raised:
        await hello_of(client, {"Origin": origin})
    response = raised.value.response
    assert response.status_code == 403
    assert (await response.get_json())["error"]["code"] == "forbidden_origin"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-origin"),
        pytest.param({"Origin": "http://localhost"}, id="same-origin"),
        pytest.param(
            {"Host": "127.0.0.1:8765", "Origin": "http://127.0.0.1:8765"}, id="same-origin-port"
        ),
    ],
)
async def test_the_servers_own_pages_and_other_programs_open_the_stream(
    client: Client, headers: dict[str, str]
) -> None:
    assert (await hello_of(client, headers))["type"] == "hello"


async def test_a_configured_origin_opens_the_stream(build: Callable[..., Quart]) -> None:
    async with serving(build(allowed_origins=["https://grafana.lan"])) as client:
        assert (await hello_of(client, {"Origin": "https://grafana.lan"}))["type"] == "hello"


# -- refusals are counted and logged ---------------------------------------------------------------


async def test_refusals_are_counted_on_metrics_and_logged_once_a_minute(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="homelab.web"):
        await client.get("/api/plugins", headers={"Host": "evil.example"})
        await client.post(RUN, json={}, headers={"Origin": EVIL})
        await client.post(RUN)
    metrics = await (await client.get("/metrics")).get_data(as_text=True)
    assert "homelab_core_web_refused_total 3.0" in metrics.splitlines()
    logged = [r.getMessage() for r in caplog.records if r.name == "homelab.web"]
    assert len(logged) == 1, logged
    assert "421 unknown_host" in logged[0]
    assert "allowed_hosts" in logged[0]
