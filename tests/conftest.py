"""Shared fixtures: the anyio backend, plugin registration, hub settings on real SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sample_plugins
from services import RedisServer, create_database, postgres_server, redis_server

from homelab_core import InstanceSettings, PluginManager, Settings
from homelab_core.config import SchedulerSettings, StoreSettings

#: The kit's fixtures (homelab_hub, homelab_clock). pyproject.toml turns off the entry point
#: that loads them elsewhere (`-p no:homelab`): loaded here, after pytest-cov has started,
#: homelab_core's own import is measured.
pytest_plugins = ["homelab_core.testing"]


@pytest.fixture
def anyio_backend() -> str:
    """The store, cache and hub are asyncio libraries; pure-anyio tests override this."""
    return "asyncio"


@pytest.fixture
def manager() -> Iterator[PluginManager]:
    """A plugin manager with the test plugin types registered and no entry points loaded."""
    pm = PluginManager(load_entry_points=False)
    pm.register(sample_plugins, name="sample_plugins")
    yield pm


@pytest.fixture
def make_settings(tmp_path: Path) -> Any:
    """Build hub settings on a real SQLite file under ``tmp_path``."""

    def build(*instances: InstanceSettings, **sections: Any) -> Settings:
        sections.setdefault("scheduler", SchedulerSettings(jitter=0.0, setup_retry=[0.05]))
        sections.setdefault("store", StoreSettings(flush_interval=0.05))
        settings = Settings(plugins={i.id: i for i in instances}, **sections)
        settings.database.url = f"sqlite://{tmp_path / 'homelab.db'}"
        return settings

    return build


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """One PostgreSQL server for the whole session (started only if a test asks for it)."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return create_database(postgres_server_url, f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """One Redis server for the whole session (started only if a test asks for it)."""
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_session: RedisServer) -> Iterator[str]:
    """The URL of an empty Redis database (``FLUSHALL`` before each test that asks)."""
    assert redis_session.command("FLUSHALL") == b"+OK"
    yield redis_session.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis server of this test's own, which it may stop, start again or pause."""
    with redis_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """An open store on a real SQLite file, and on a real PostgreSQL database."""
    from homelab_core.store import Store

    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = Store(url)
    await store.open()
    yield store
    await store.close()
