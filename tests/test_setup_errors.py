"""Errors that steer setup: SetupNotReady is retried, SetupFailed leaves the instance failed.

Seen through the REST API, as a homelab owner would see them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio
import pytest
from quart import Quart

from homelab_core import (
    Hub,
    InstanceSettings,
    Metric,
    Plugin,
    PluginManager,
    Settings,
    SetupFailed,
    SetupNotReady,
    hookimpl,
)
from homelab_core.web import HomelabWeb

pytestmark = pytest.mark.anyio


class NotReadyTwice(Plugin):
    """Not ready for its first two setups (asking to be retried soon), then fine."""

    name = "not_ready_twice"
    attempts: ClassVar[int] = 0

    def setup(self) -> None:
        type(self).attempts += 1
        if type(self).attempts <= 2:
            raise SetupNotReady("the device is still booting", retry_after=0.05)

    def collect(self) -> list[Metric]:
        return [Metric("up", 1)]


class BadCredentials(Plugin):
    """Fails for good: retrying cannot fix a wrong password."""

    name = "bad_credentials"
    attempts: ClassVar[int] = 0

    async def setup(self) -> None:
        type(self).attempts += 1
        raise SetupFailed("the NAS refused the password")

    async def collect(self) -> list[Metric]:
        return [Metric("up", 1)]


class Types:
    @hookimpl
    def register_plugins(self, register: Callable[[type[Plugin]], None]) -> None:
        register(NotReadyTwice)
        register(BadCredentials)


@pytest.fixture
def client_for(manager: PluginManager) -> Callable[[Settings], Any]:
    NotReadyTwice.attempts = BadCredentials.attempts = 0
    manager.register(Types(), name="setup_error_types")

    @asynccontextmanager
    async def run(settings: Settings) -> AsyncIterator[Any]:
        app = Quart(__name__)
        hub = Hub(settings, plugin_manager=manager)
        HomelabWeb(app, hub=hub)
        async with hub, app.test_app() as test_app:
            yield test_app.test_client()

    return run


async def get(client: Any, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status_code == status, await response.get_data(as_text=True)
    return await response.get_json()


async def wait_for(client: Any, path: str, check: Callable[[Any], bool]) -> Any:
    with anyio.fail_after(5):
        while True:
            body = await get(client, path)
            if check(body):
                return body
            await anyio.sleep(0.01)


async def test_a_not_ready_setup_is_retried_after_the_wait_it_asked_for(
    client_for: Any, make_settings: Any
) -> None:
    settings = make_settings(InstanceSettings(id="nas", type="not_ready_twice", interval=0.05))
    settings.scheduler.setup_retry = [3600.0]  # only retry_after can bring it back in time
    async with client_for(settings) as client:
        body = await wait_for(
            client, "/api/plugins/nas", lambda b: b["plugin"]["health"]["state"] == "ok"
        )
        executions = await get(client, "/api/plugins/nas/executions")
    assert body["plugin"]["state"] == "ready"
    assert NotReadyTwice.attempts == 3
    errors = [e["error"] for e in executions["executions"] if e["trigger"] == "setup"]
    assert errors == ["setup failed: SetupNotReady: the device is still booting"] * 2


async def test_a_permanent_setup_failure_leaves_the_instance_failed_with_its_reason(
    client_for: Any, make_settings: Any
) -> None:
    settings = make_settings(InstanceSettings(id="nas", type="bad_credentials", interval=0.05))
    async with client_for(settings) as client:
        body = await wait_for(
            client, "/api/plugins/nas", lambda b: b["plugin"]["state"] == "failed"
        )
        await anyio.sleep(0.3)  # six setup retry waits of the test settings: none retried
        status = await get(client, "/api/plugins/nas/status")
        run = await client.post("/api/plugins/nas/run", json={})
        listed = await get(client, "/api/plugins?status=failed")
    health = body["plugin"]["health"]
    assert health["state"] == "failed"
    assert "the NAS refused the password" in health["message"]
    assert "not retried" in health["message"]
    assert status["state"] == "failed"
    assert BadCredentials.attempts == 1
    assert run.status_code == 409
    error = (await run.get_json())["error"]
    assert "the NAS refused the password" in error["message"]
    assert [p["id"] for p in listed["plugins"]] == ["nas"]


async def test_disabling_and_enabling_a_failed_instance_tries_its_setup_again(
    client_for: Any, make_settings: Any
) -> None:
    settings = make_settings(InstanceSettings(id="nas", type="bad_credentials", interval=0.05))
    async with client_for(settings) as client:
        await wait_for(client, "/api/plugins/nas", lambda b: b["plugin"]["state"] == "failed")
        for enabled in (False, True):
            response = await client.post("/api/plugins/nas/enable", json={"enabled": enabled})
            assert response.status_code == 200
        await wait_for(client, "/api/plugins/nas", lambda b: b["plugin"]["state"] == "failed")
    assert BadCredentials.attempts == 2
