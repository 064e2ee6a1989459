"""Input that once broke the API: each answers with the right JSON error, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from homelab_core import InstanceSettings, PluginManager
from homelab_core.web import create_app

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(manager: PluginManager, make_settings: Any) -> AsyncIterator[Any]:
    settings = make_settings(InstanceSettings(id="c", type="counter", interval=3600))
    app = create_app(settings, plugin_manager=manager)
    async with app.test_app() as test_app:
        yield test_app.test_client()


@pytest.mark.parametrize(
    "body",
    ["[" * 100_000 + "]" * 100_000, '{"enabled": ' + "[" * 100_000 + "]" * 100_000 + "}"],
    ids=["array", "inside-an-object"],
)
async def test_deeply_nested_json_is_a_bad_request(client: Any, body: str) -> None:
    response = await client.post(
        "/api/plugins/c/enable", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error = (await response.get_json())["error"]
    assert error["code"] == "invalid_request"
    assert "nested too deeply" in error["message"]
