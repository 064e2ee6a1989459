"""Stores with the schema of an earlier release: their migrations applied up to one."""

from __future__ import annotations

from tortoise.migrations.executor import MigrationExecutor, MigrationTarget

from homelab_core.store import Store
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
