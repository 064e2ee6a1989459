"""Embedding: HomelabWeb mounted under a prefix in someone else's Quart app."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from quart_schema import QuartSchema

from homelab_core import Hub, InstanceSettings, PluginManager, Settings
from homelab_core.web import HomelabWeb

pytestmark = pytest.mark.anyio

Build = Callable[..., Settings]
PREFIX = "/homelab"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embed_quart.py"


def host_app() -> Quart:
    """A host application with routes of its own."""
    app = Quart(__name__)

    @app.get("/")
    async def index() -> str:
        return "host home"

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def mount_in_constructor(app: Quart, hub: Hub) -> HomelabWeb:
    return HomelabWeb(app, hub=hub, url_prefix=PREFIX)


def mount_with_init_app(app: Quart, hub: Hub) -> HomelabWeb:
    ext = HomelabWeb(hub=hub)
    ext.init_app(app, url_prefix=PREFIX)
    return ext


@pytest.fixture
def hub(manager: PluginManager, make_settings: Build) -> Hub:
    """A hub (not started) with one counter instance."""
    settings = make_settings(InstanceSettings(id="counter", type="counter", interval=3600))
    return Hub(settings, plugin_manager=manager)


@asynccontextmanager
async def serving(app: Quart, hub: Hub | None = None) -> AsyncIterator[Client]:
    """Serve ``app`` (running ``hub`` around it when given) and yield a test client."""
    if hub is None:
        async with app.test_app() as test_app:
            yield test_app.test_client()
    else:
        async with hub, app.test_app() as test_app:
            yield test_app.test_client()


@pytest.fixture(params=[mount_in_constructor, mount_with_init_app], ids=["constructor", "init_app"])
async def mounted(request: pytest.FixtureRequest, hub: Hub) -> AsyncIterator[Client]:
    """A host app with the extension under /homelab, mounted either way, serving."""
    app = host_app()
    request.param(app, hub)
    async with serving(app, hub) as client:
        yield client


async def test_host_routes_still_work(mounted: Client) -> None:
    response = await mounted.get("/")
    assert response.status_code == 200
    assert await response.get_data(as_text=True) == "host home"
    assert await (await mounted.get("/hello")).get_json() == {"hello": "world"}


async def test_api_is_served_under_the_prefix(mounted: Client) -> None:
    response = await mounted.get(f"{PREFIX}/api/plugins")
    assert response.status_code == 200
    body = await response.get_json()
    assert [p["id"] for p in body["plugins"]] == ["counter"]


async def test_api_is_not_served_at_the_root(mounted: Client) -> None:
    assert (await mounted.get("/api/plugins")).status_code == 404


async def test_api_errors_are_json_without_app_level_handlers(mounted: Client) -> None:
    response = await mounted.get(f"{PREFIX}/api/plugins/nope")
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "not_found"


async def test_openapi_is_served_under_the_prefix(mounted: Client) -> None:
    response = await mounted.get(f"{PREFIX}/openapi.json")
    assert response.status_code == 200
    paths = (await response.get_json())["paths"]
    assert f"{PREFIX}/api/plugins" in paths
    assert f"{PREFIX}/api/plugins/{{plugin_id}}/enable" in paths
    assert f"{PREFIX}/metrics" in paths


async def test_docs_are_served_under_the_prefix(mounted: Client) -> None:
    response = await mounted.get(f"{PREFIX}/docs")
    assert response.status_code == 200
    page = await response.get_data(as_text=True)
    assert f"{PREFIX}/openapi.json" in page
    assert f"{PREFIX}/docs/static/docs.js" in page
    assert (await mounted.get(f"{PREFIX}/docs/static/docs.js")).status_code == 200


async def test_prometheus_metrics_under_the_prefix(mounted: Client) -> None:
    response = await mounted.get(f"{PREFIX}/metrics")
    assert response.status_code == 200
    assert "homelab_core_runs_total" in await response.get_data(as_text=True)


async def test_host_error_pages_are_left_alone(mounted: Client) -> None:
    """The extension's JSON handlers belong to its blueprint, not to the whole host app."""
    response = await mounted.get("/no/such/page")
    assert response.status_code == 404
    assert response.mimetype != "application/json"


# -- a host with its own QuartSchema ------------------------------------------------------------


@pytest.fixture
def schema_host() -> tuple[Quart, QuartSchema]:
    app = host_app()
    schema = QuartSchema(app, info={"title": "My Host", "version": "9.9"})
    return app, schema


async def test_existing_quart_schema_is_reused(
    schema_host: tuple[Quart, QuartSchema], hub: Hub
) -> None:
    app, schema = schema_host
    HomelabWeb(app, hub=hub, url_prefix=PREFIX)
    assert app.extensions["QUART_SCHEMA"] is schema


async def test_no_second_openapi_document(schema_host: tuple[Quart, QuartSchema], hub: Hub) -> None:
    app, _ = schema_host
    HomelabWeb(app, hub=hub, url_prefix=PREFIX)
    async with serving(app, hub) as client:
        assert (await client.get(f"{PREFIX}/openapi.json")).status_code == 404


async def test_host_openapi_lists_host_and_homelab_routes(
    schema_host: tuple[Quart, QuartSchema], hub: Hub
) -> None:
    app, _ = schema_host
    HomelabWeb(app, hub=hub, url_prefix=PREFIX)
    async with serving(app, hub) as client:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        document = await response.get_json()
    assert document["info"]["title"] == "My Host"
    paths = document["paths"]
    assert "/hello" in paths
    assert f"{PREFIX}/api/plugins" in paths
    assert f"{PREFIX}/api/plugins/{{plugin_id}}/metrics/history" in paths
    assert "InstanceInfo" in document["components"]["schemas"]


async def test_docs_use_the_host_openapi_document(
    schema_host: tuple[Quart, QuartSchema], hub: Hub
) -> None:
    app, _ = schema_host
    HomelabWeb(app, hub=hub, url_prefix=PREFIX)
    async with serving(app, hub) as client:
        page = await (await client.get(f"{PREFIX}/docs")).get_data(as_text=True)
    assert 'data-openapi="/openapi.json"' in page


async def test_api_works_alongside_the_host_schema(
    schema_host: tuple[Quart, QuartSchema], hub: Hub
) -> None:
    app, _ = schema_host
    HomelabWeb(app, hub=hub, url_prefix=PREFIX)
    async with serving(app, hub) as client:
        response = await client.post(f"{PREFIX}/api/plugins/counter/enable", json={})
        assert response.status_code == 400
        assert (await response.get_json())["error"]["code"] == "invalid_request"


# -- the hub's lifetime -------------------------------------------------------------------------


async def test_own_hub_runs_while_the_app_serves(make_settings: Build) -> None:
    app = host_app()
    web = HomelabWeb(app, settings=make_settings(), url_prefix=PREFIX)
    assert web.running_hub is None
    async with serving(app) as client:
        running = web.running_hub
        assert running is not None
        assert running.scheduler.running
        assert await running.store.ping()
        health = await client.get(f"{PREFIX}/api/health")
        assert health.status_code == 200
        assert (await health.get_json())["ready"] is True
        plugins = await (await client.get(f"{PREFIX}/api/plugins")).get_json()
        assert plugins == {"plugins": [], "count": 0}
    assert web.running_hub is None
    assert not running.scheduler.running
    assert not await running.store.ping()


async def test_api_is_unavailable_outside_the_serving_lifetime(make_settings: Build) -> None:
    app = host_app()
    HomelabWeb(app, settings=make_settings(), url_prefix=PREFIX)
    client = app.test_client()
    before = await client.get(f"{PREFIX}/api/plugins")
    assert before.status_code == 503
    assert (await before.get_json())["error"]["code"] == "unavailable"
    async with serving(app):
        pass
    after = await client.get(f"{PREFIX}/api/health")
    assert after.status_code == 503
    assert (await after.get_json())["ready"] is False


async def test_shared_hub_outlives_the_app(hub: Hub) -> None:
    """A hub passed in is the caller's: the extension neither starts nor stops it."""
    app = host_app()
    web = HomelabWeb(app, hub=hub, url_prefix=PREFIX)
    async with hub:
        async with app.test_app() as test_app:
            response = await test_app.test_client().get(f"{PREFIX}/api/health")
            assert response.status_code == 200
        assert web.running_hub is hub
        assert hub.scheduler.running
        assert await hub.store.ping()


# -- examples/embed_quart.py --------------------------------------------------------------------


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example module, imported by path, with its SQLite file under ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("embed_quart_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_serves_host_route_and_homelab_api(example: Any, tmp_path: Path) -> None:
    app: Quart = example.app
    async with serving(app) as client:
        home = await client.get("/")
        assert home.status_code == 200
        assert (await home.get_json())["homelab_api"] == "/homelab/api/plugins"
        response = await client.get("/homelab/api/plugins")
        assert response.status_code == 200
        body = await response.get_json()
    assert [p["id"] for p in body["plugins"]] == ["system"]
    assert (tmp_path / "homelab.db").is_file()


# -- errors under the prefix ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [f"{PREFIX}/no/such/page", f"{PREFIX}/api/plugins/counter/nothing", f"{PREFIX}/api"]
)
async def test_unknown_paths_under_the_prefix_are_json_404s(mounted: Client, path: str) -> None:
    response = await mounted.get(path)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert (await response.get_json())["error"]["code"] == "not_found"


async def test_a_wrong_method_under_the_prefix_is_a_json_405(mounted: Client) -> None:
    response = await mounted.put(f"{PREFIX}/api/plugins/counter")
    assert response.status_code == 405
    assert response.mimetype == "application/json"
    assert (await response.get_json())["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers.get("Allow", "")


async def test_paths_that_only_start_like_the_prefix_are_the_hosts(mounted: Client) -> None:
    response = await mounted.get(f"{PREFIX}-other/page")
    assert response.status_code == 404
    assert response.mimetype != "application/json"


async def test_at_the_root_only_homelabs_paths_get_json_errors(hub: Hub) -> None:
    app = host_app()
    HomelabWeb(app, hub=hub)
    async with serving(app, hub) as client:
        ours = await client.get("/api/no/such")
        assert ours.status_code == 404
        assert (await ours.get_json())["error"]["code"] == "not_found"
        theirs = await client.get("/no/such/page")
        assert theirs.status_code == 404
        assert theirs.mimetype != "application/json"


# -- whose routes the OpenAPI document lists ------------------------------------------------------


async def openapi_paths(client: Client, path: str = f"{PREFIX}/openapi.json") -> set[str]:
    response = await client.get(path)
    assert response.status_code == 200
    return set((await response.get_json())["paths"])


async def test_homelabs_document_lists_only_homelabs_routes(mounted: Client) -> None:
    paths = await openapi_paths(mounted)
    assert f"{PREFIX}/api/plugins" in paths
    assert "/" not in paths
    assert "/hello" not in paths
    assert all(p.startswith(f"{PREFIX}/") for p in paths), sorted(paths)


async def test_the_embedder_may_document_its_own_routes_too(hub: Hub) -> None:
    app = host_app()
    HomelabWeb(app, hub=hub, url_prefix=PREFIX, document_host_routes=True)
    async with serving(app, hub) as client:
        paths = await openapi_paths(client)
    assert {"/", "/hello", f"{PREFIX}/api/plugins"} <= paths


# -- cross-site requests -------------------------------------------------------------------------


async def test_the_host_app_decides_which_hosts_it_answers(mounted: Client) -> None:
    """Embedded, the extension does not know the names the app is served under."""
    response = await mounted.get(f"{PREFIX}/api/plugins", headers={"Host": "dashboard.example"})
    assert response.status_code == 200


async def test_the_embedder_may_have_homelabs_routes_check_the_host(hub: Hub) -> None:
    app = host_app()
    HomelabWeb(app, hub=hub, url_prefix=PREFIX, allowed_hosts=["dash.lan"])
    async with serving(app, hub) as client:
        ok = await client.get(f"{PREFIX}/api/plugins", headers={"Host": "dash.lan:5000"})
        assert ok.status_code == 200
        refused = await client.get(f"{PREFIX}/api/plugins", headers={"Host": "evil.example"})
        assert refused.status_code == 421
        assert (await refused.get_json())["error"]["code"] == "unknown_host"
        # The host app's own routes are the host app's business.
        theirs = await client.get("/hello", headers={"Host": "evil.example"})
        assert theirs.status_code == 200


async def test_cross_site_changes_are_refused_when_embedded(mounted: Client) -> None:
    response = await mounted.post(
        f"{PREFIX}/api/plugins/counter/run", headers={"Origin": "http://evil.example"}
    )
    assert response.status_code == 403
    assert (await response.get_json())["error"]["code"] == "forbidden_origin"
    same = await mounted.post(
        f"{PREFIX}/api/plugins/counter/run", json={}, headers={"Origin": "http://localhost"}
    )
    assert same.status_code == 200
