"""Instances created, changed and deleted through the API, the file reloaded through it,
and the installed types with their schemas: through the real app on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_web_api import (
    SECRET,
    Served,
    assert_error,
    eventually,
    json_of,
    serve,
    standard_instances,
)

from homelab_core.config import load_settings

pytestmark = pytest.mark.anyio
__all__ = ["serve"]  # a fixture, used by name

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def api(serve: Any, make_settings: Any) -> AsyncIterator[Served]:
    async with serve(make_settings(*standard_instances())) as served:
        yield served


async def test_an_instance_is_created_changed_and_deleted_through_the_api(api: Served) -> None:
    client, hub = api.client, api.hub
    body = {
        "id": "extra",
        "type": "counter",
        "interval": 3600,
        "options": {"series": 2, "token": "made-secret"},
    }
    made = await json_of(await client.post("/api/plugins", json=body), 201)
    assert (made["source"], made["config"]["series"]) == ("api", 2)
    assert "made-secret" not in str(made)
    await hub.run_now("extra")
    listed = await json_of(await client.get("/api/plugins"))
    sources = {p["id"]: p["source"] for p in listed["plugins"]}
    assert sources["extra"] == "api" and sources["counter"] == "file"
    changed = await json_of(
        await client.patch("/api/plugins/extra", json={"options": {"series": 3}}, headers=JSON)
    )
    assert changed["config"]["series"] == 3
    assert hub.scheduler.plugin("extra").config.token == "made-secret"  # type: ignore[attr-defined]
    for path in ("/api/plugins/extra", "/api/plugins", "/metrics"):
        assert "made-secret" not in await (await client.get(path)).get_data(as_text=True)
    gone = await json_of(await client.delete("/api/plugins/extra"))
    assert gone["id"] == "extra"
    await assert_error(await client.get("/api/plugins/extra"), 404)
    await assert_error(await client.delete("/api/plugins/extra"), 404)


async def test_bad_input_and_the_files_instances_are_refused(api: Served) -> None:
    client = api.client
    bad = await assert_error(
        await client.post(
            "/api/plugins", json={"id": "x", "type": "counter", "options": {"series": "many"}}
        ),
        400,
    )
    assert bad["message"].startswith("[plugins.x] series: expected int")
    bad = await assert_error(
        await client.post(
            "/api/plugins", json={"id": "x", "type": "counter", "options": {"colour": "red"}}
        ),
        400,
    )
    assert (
        "[plugins.x] colour: unknown field; accepted fields: delay, series, token"
        in (bad["message"])
    )
    await assert_error(await client.post("/api/plugins", json={"id": "x", "type": "nope"}), 400)
    await assert_error(
        await client.post("/api/plugins", json={"id": "X Y", "type": "counter"}), 400
    )
    taken = await assert_error(
        await client.post("/api/plugins", json={"id": "counter", "type": "counter"}), 409
    )
    assert "taken" in taken["message"]
    conflict = await assert_error(
        await client.patch("/api/plugins/counter", json={"options": {"series": 1}}, headers=JSON),
        409,
    )
    assert "edit [plugins.counter]" in conflict["message"]
    await assert_error(await client.delete("/api/plugins/counter"), 409)
    assert api.hub.scheduler.plugin("counter").config.token == SECRET  # type: ignore[attr-defined]


async def test_types_are_listed_with_the_schema_of_their_options(api: Served) -> None:
    body = await json_of(await api.client.get("/api/types"))
    types = {t["type"]["name"]: t for t in body["types"]}
    assert body["count"] == len(types) and "counter" in types
    counter = await json_of(await api.client.get("/api/types/counter"))
    assert counter == types["counter"]
    properties = counter["config_schema"]["properties"]
    assert properties["series"]["default"] == 1 and properties["series"]["type"] == "integer"
    assert properties["token"]["format"] == "password"
    assert counter["source"] == "sample_plugins"
    await assert_error(await api.client.get("/api/types/nope"), 404)


async def test_reload_through_the_api(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "homelab.toml"
    db = tmp_path / "homelab.db"
    head = f'[database]\nurl = "sqlite://{db}"\n[scheduler]\njitter = 0\n'
    path.write_text(head + '[plugins.one]\ntype = "counter"\ninterval = 3600\n')
    async with serve(load_settings(path)) as served:
        path.write_text(head + '[plugins.two]\ntype = "counter"\ninterval = 3600\n')
        done = await json_of(await served.client.post("/api/reload", headers=JSON))
        assert (done["added"], done["removed"], done["changed"]) == (["two"], ["one"], [])
        await eventually(lambda: served.hub.stats("two").runs >= 1)
        path.write_text(head + '[plugins.two]\ntype = "counter"\nseries = "x"\n')
        bad = await assert_error(await served.client.post("/api/reload", headers=JSON), 400)
        assert f"{path} [plugins.two] series: expected int" in bad["message"]
        assert [i.id for i in served.hub.instances()] == ["two"]
