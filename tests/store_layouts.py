"""Stores with the schema of an earlier release, and what a store holds, decoded."""

from __future__ import annotations

from typing import Any

from tortoise.migrations.executor import MigrationExecutor, MigrationTarget

from homelab_core.store import Store, chunks
from homelab_core.store import store as store_module


async def store_at(url: str, last: str) -> Store:
    """An open :class:`Store` on ``url`` whose schema is what the built-in migrations up to
    ``last`` (e.g. ``"0005_execution_usage"``) make: the tables of the release that ended
    there. Write to it with SQL (:meth:`Store.execute`); its own writes expect the newest
    schema. Close it before opening the URL again."""
    store = Store(url)
    config = store_module._tortoise_config(store.connection_name, store.url)
    with store.active():
        await store._context.init(config=config)
        executor = MigrationExecutor(store.connection, config["apps"])
        await executor.migrate([MigrationTarget(app_label=store_module.APP, name=last)])
    store._open = True
    return store


async def stored_samples(store: Store) -> list[tuple[int, float, float]]:
    """Every raw sample held, from the head and the raw chunks: (series id, ts, value),
    sorted."""
    found = [
        (int(r["series_id"]), float(r["ts"]), float(r["value"]))
        for r in await store.fetch("SELECT series_id, ts, value FROM homelab_head")
    ]
    for row in await store.fetch("SELECT series_id, data FROM homelab_chunk WHERE resolution = 0"):
        ts, vs = chunks.decode(bytes(row["data"]))
        found.extend((int(row["series_id"]), t, v) for t, v in zip(ts, vs, strict=True))
    return sorted(found)


async def stored_rollups(store: Store, resolution: int) -> list[tuple[Any, ...]]:
    """Every rollup bucket held at ``resolution``, buckets of several chunks gathered:
    (series id, bucket, min, max, sum, count), sorted."""
    gathered: dict[tuple[int, float], list[float]] = {}
    rows = await store.fetch(
        "SELECT series_id, data FROM homelab_chunk WHERE resolution = ?", [resolution]
    )
    for row in rows:
        ts, columns = chunks.decode_columns(bytes(row["data"]))
        for bucket, mn, mx, sm, ct in zip(ts, *columns, strict=True):
            key = (int(row["series_id"]), float(bucket))
            acc = gathered.setdefault(key, [mn, mx, 0.0, 0.0])
            acc[0], acc[1] = min(acc[0], mn), max(acc[1], mx)
            acc[2] += sm
            acc[3] += ct
    return sorted((*key, *acc) for key, acc in gathered.items())
