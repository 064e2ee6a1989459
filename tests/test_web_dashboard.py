"""The dashboard's routes: the page and its assets from the package, with caching headers,
under the extension's prefix, readable without a token, and switchable off."""

from __future__ import annotations

import re
from typing import Any

import pytest
from quart import Quart
from test_web_api import json_of

from homelab_core import Hub, PluginManager
from homelab_core.config import ServerSettings
from homelab_core.web import HomelabWeb
from homelab_core.web.dashboard import assets, assets_version

pytestmark = pytest.mark.anyio


async def page_and_assets(client: Any, prefix: str = "") -> tuple[str, list[str]]:
    response = await client.get(f"{prefix}/")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-cache"
    page = await response.get_data(as_text=True)
    # Every link but the page's own (#...) is an asset.
    return page, re.findall(r'(?:src|href)="([^"#][^"]*)"', page)


async def test_the_page_and_its_assets_come_from_the_package_with_caching_headers(
    manager: PluginManager, make_settings: Any
) -> None:
    settings = make_settings(server=ServerSettings(api_token="t0ken", auth="all"))
    app = Quart(__name__)
    hub = Hub(settings, plugin_manager=manager)
    HomelabWeb(app, hub=hub, url_prefix="/lab")
    async with hub, app.test_app() as test_app:
        client = test_app.test_client()
        page, links = await page_and_assets(client, "/lab")
        assert 'data-prefix="/lab"' in page
        assert links and all(link.startswith(f"/lab/ui/{assets_version()}/") for link in links)
        for link in links:
            response = await client.get(link)  # no token: the page asks for it
            assert response.status_code == 200, link
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert await response.get_data() == assets()[link.rsplit("/", 1)[1]]
        stale = await client.get(f"/lab/ui/0123456789ab/{links[0].rsplit('/', 1)[1]}")
        assert stale.status_code == 404
        assert (await client.get(f"/lab/ui/{assets_version()}/../dashboard.py")).status_code == 404
        assert (await client.get("/lab/api/plugins")).status_code == 401  # the API still asks


async def test_the_dashboard_can_be_switched_off(
    manager: PluginManager, make_settings: Any
) -> None:
    app = Quart(__name__)
    hub = Hub(make_settings(), plugin_manager=manager)
    HomelabWeb(app, hub=hub, dashboard=False)

    @app.get("/")
    async def own() -> str:
        return "the application's own page"

    async with hub, app.test_app() as test_app:
        client = test_app.test_client()
        assert await (await client.get("/")).get_data(as_text=True) == "the application's own page"
        await json_of(await client.get("/api/plugins"))
