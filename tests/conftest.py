"""Shared fixtures: the anyio backend, plugin registration, hub settings on real SQLite;
the second run of the bundled plugins' tests in a worker process."""

from __future__ import annotations

import inspect
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sample_plugins
from services import (
    MosquittoBroker,
    RedisServer,
    create_database,
    mosquitto_broker,
    postgres_server,
    redis_server,
)

from homelab_core import InstanceSettings, PluginManager, Settings
from homelab_core.config import SchedulerSettings, StoreSettings
from homelab_core.testing import use_isolation

#: The kit's fixtures (homelab_hub, homelab_clock). pyproject.toml turns off the entry point
#: that loads them elsewhere (`-p no:homelab`): loaded here, after pytest-cov has started,
#: homelab_core's own import is measured.
pytest_plugins = ["homelab_core.testing"]


#: The bundled plugins' test modules. Each of their tests that runs a plugin through the kit
#: runs twice: in process (``[none]``) and in a worker process (``[process]``, as an
#: instance with ``isolation = "process"``), unless it is marked ``in_process("why")``.
BOTH_ISOLATIONS = frozenset(
    {
        "test_plugin_command",
        "test_plugin_dns",
        "test_plugin_docker",
        "test_plugin_http",
        "test_plugin_mqtt",
        "test_plugin_ping",
        "test_plugin_prometheus",
        "test_plugin_tcp",
        "test_plugin_tls_cert",
        "test_system_plugin",
    }
)
#: The kit's ways of running a plugin: a test that names one (or calls a function of its
#: module that does) runs a plugin, and so gets its ``[process]`` run.
KIT_RUNNERS = frozenset({"run_plugin", "run_plugin_async", "PluginHarness", "plugin_harness"})


def _names(code: types.CodeType) -> set[str]:
    """The global and attribute names ``code`` and the functions nested in it use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def runs_a_plugin(function: Callable[..., Any], module: types.ModuleType) -> bool:
    """Whether ``function`` uses one of :data:`KIT_RUNNERS`, itself or through the
    functions of ``module`` that it calls."""
    todo, seen = [function], set()
    while todo:
        code = getattr(todo.pop(), "__code__", None)
        if code is None or code in seen:
            continue
        seen.add(code)
        for name in _names(code):
            if name in KIT_RUNNERS:
                return True
            value = getattr(module, name, None)
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                todo.append(value)
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give the bundled plugins' tests that run a plugin their ``[process]`` run."""
    if metafunc.module.__name__ not in BOTH_ISOLATIONS:
        return
    marker = metafunc.definition.get_closest_marker("in_process")
    if marker is not None:
        if not marker.args or not str(marker.args[0]).strip():
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: in_process needs the reason it cannot run"
                ' in a worker process: @pytest.mark.in_process("monkeypatches psutil")'
            )
        return
    if runs_a_plugin(metafunc.function, metafunc.module):
        metafunc.parametrize("kit_isolation", ["none", "process"], indirect=True)


@pytest.fixture(autouse=True)
def kit_isolation(request: pytest.FixtureRequest) -> Iterator[str]:
    """Where the kit runs plugins in this test: ``"none"`` (in process) unless
    :func:`pytest_generate_tests` gave it ``"process"`` (a worker process)."""
    mode = str(getattr(request, "param", "none"))
    with use_isolation(mode):
        yield mode


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop the ``[trio-process]`` runs: a worker process runs the plugin on asyncio
    whatever the test's backend, so ``[asyncio-process]`` already covers them."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        redundant = (
            params.get("kit_isolation") == "process" and params.get("anyio_backend") == "trio"
        )
        (dropped if redundant else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


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


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    """An MQTT broker of this test's own on 127.0.0.1, which it may stop and start again."""
    with mosquitto_broker() as broker:
        yield broker


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
