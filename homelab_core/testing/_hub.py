"""A real hub on a SQLite file for tests, and bounded waits on it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from ..config import InstanceSettings, Settings, settings_from_mapping
from ..hookspecs import hookimpl
from ..model import Health, HealthState, Metric, RunStats
from ..plugin import Plugin
from ..plugins import PluginManager
from ._run import describe_metrics, describe_series

if TYPE_CHECKING:
    from ..hub import Hub

#: Settings a test hub starts from: no jitter, quick setup retries and flushes.
TEST_DEFAULTS: dict[str, dict[str, Any]] = {
    "scheduler": {"jitter": 0.0, "setup_retry": [0.05]},
    "store": {"flush_interval": 0.05},
}

Instances = Mapping[str, Mapping[str, Any] | InstanceSettings] | Iterable[InstanceSettings]


class _Types:
    """Registers the given plugin classes, as a plugin module's hook would."""

    def __init__(self, classes: tuple[type[Plugin], ...]) -> None:
        self.classes = classes

    @hookimpl
    def register_plugins(self, register: Callable[[type[Plugin]], None]) -> None:
        for cls in self.classes:
            register(cls)


class HubFactory:
    """What the ``homelab_hub`` fixture gives: call it to start a hub.

    ::

        async with homelab_hub(MyPlugin, instances={"a": {"type": "mine", "interval": 0.1}}) as hub:
            await wait_for_runs(hub, "a", 2)

    :param plugin_classes: registered without entry points (no installed plugin loads).
    :param instances: ``[plugins.<id>]`` tables as in ``homelab.toml`` (a mapping of id to
        its table, options included), or :class:`~homelab_core.InstanceSettings`; if not
        given, one instance per class, named after its type, with its default options.
    :param settings: other sections, as tables (``scheduler={"concurrency": 2}``, merged
        over the test defaults: no jitter, setup retried after 0.05 s, flushes every
        0.05 s) or as section objects (``scheduler=SchedulerSettings(...)``, used as is).
    The database is a SQLite file in the test's ``tmp_path`` (``database.url`` is set).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self._count = 0

    def settings(
        self, *plugin_classes: type[Plugin], instances: Instances | None = None, **sections: Any
    ) -> Settings:
        """The settings :meth:`__call__` starts a hub with."""
        tables: dict[str, Any] = {name: dict(values) for name, values in TEST_DEFAULTS.items()}
        objects: dict[str, Any] = {}
        for name, value in sections.items():
            if attrs.has(type(value)):
                objects[name] = value
            else:
                tables[name] = {**tables.get(name, {}), **dict(value)}
        self._count += 1
        suffix = "" if self._count == 1 else f"-{self._count}"
        database = os.path.join(self.directory, f"homelab{suffix}.db")  # noqa: PTH118
        tables.setdefault("database", {})["url"] = f"sqlite://{database}"
        given: list[InstanceSettings] = []
        if instances is None:
            tables["plugins"] = {cls.name: {"type": cls.name} for cls in plugin_classes}
        elif isinstance(instances, Mapping):
            plugins: dict[str, Any] = {}
            for instance_id, table in instances.items():
                if isinstance(table, InstanceSettings):
                    given.append(table)
                else:
                    plugins[instance_id] = dict(table)
            tables["plugins"] = plugins
        else:
            given = list(instances)
        settings = settings_from_mapping(tables, source="homelab_hub()")
        settings.plugins.update({inst.id: inst for inst in given})
        return attrs.evolve(settings, **objects) if objects else settings

    @asynccontextmanager
    async def __call__(
        self, *plugin_classes: type[Plugin], instances: Instances | None = None, **sections: Any
    ) -> AsyncIterator[Hub]:
        from ..hub import Hub

        settings = self.settings(*plugin_classes, instances=instances, **sections)
        manager = PluginManager(load_entry_points=False)
        manager.register(_Types(plugin_classes), name="homelab_hub test plugins")
        if manager.load_errors:
            raise AssertionError("; ".join(str(error) for error in manager.load_errors))
        async with Hub(settings, plugin_manager=manager) as hub:
            yield hub


async def _poll(check: Callable[[], Any], timeout: float) -> bool:
    """Call ``check`` (sync or async) until it is truthy or ``timeout`` passes."""
    with anyio.move_on_after(timeout):
        delay = 0.005
        while True:
            result = check()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return True
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)
    return False


async def wait_for_runs(hub: Hub, instance_id: str, n: int, *, timeout: float = 5.0) -> RunStats:
    """Wait until ``instance_id`` has run ``n`` times (skipped ticks not counted).

    :raises AssertionError: not within ``timeout`` seconds; says how many runs there were
        and how the last one ended.
    """
    if await _poll(lambda: hub.stats(instance_id).runs >= n, timeout):
        return hub.stats(instance_id)
    stats = hub.stats(instance_id)
    last = stats.last_execution
    ended = (
        ""
        if last is None
        else f"; the last ended {last.status.value}" + (f": {last.error}" if last.error else "")
    )
    health = hub.health(instance_id)
    raise AssertionError(
        f"instance {instance_id!r} ran {stats.runs} time(s) in {timeout:g} s, expected {n}"
        f" ({stats.ok} ok, {stats.errors} error, {stats.timeouts} timeout, {stats.skipped}"
        f" skipped){ended}; its state is {hub.instance(instance_id).state.value}, health"
        f" {health.state.value}" + (f" ({health.message})" if health.message else "")
    )


async def wait_for_health(
    hub: Hub, instance_id: str, state: HealthState | str, *, timeout: float = 5.0
) -> Health:
    """Wait until the health of ``instance_id`` is ``state``.

    :raises AssertionError: not within ``timeout`` seconds; names the states seen.
    """
    wanted = HealthState(state)
    seen: list[str] = []

    def check() -> bool:
        current = hub.health(instance_id).state
        if not seen or seen[-1] != current.value:
            seen.append(current.value)
        return current is wanted

    if await _poll(check, timeout):
        return hub.health(instance_id)
    health = hub.health(instance_id)
    raise AssertionError(
        f"health of {instance_id!r} did not become {wanted.value} in {timeout:g} s; it is"
        f" {health.state.value}"
        + (f" ({health.message})" if health.message else "")
        + f"; states seen: {' -> '.join(seen)}"
        + (f"; last error: {health.last_error}" if health.last_error else "")
    )


async def wait_for_metric(
    hub: Hub, instance_id: str, name: str, *, timeout: float = 5.0, **labels: str
) -> Metric:
    """Wait until the latest values of ``instance_id`` hold a metric ``name`` with (at
    least) these labels, and return it.

    :raises AssertionError: not within ``timeout`` seconds; lists the latest values there
        were instead, and the instance's last error.
    """
    found: list[Metric] = []

    async def check() -> bool:
        latest = await hub.latest(instance_id)
        found[:] = [
            m
            for m in latest
            if m.name == name and all(m.labels.get(k) == v for k, v in labels.items())
        ]
        return bool(found)

    if await _poll(check, timeout):
        return found[0]
    latest = await hub.latest(instance_id)
    last = hub.stats(instance_id).last_execution
    error = "" if last is None or last.error is None else f"; its last run: {last.error}"
    raise AssertionError(
        f"no metric {describe_series(name, labels)} from {instance_id!r} in {timeout:g} s;"
        f" its latest values were {describe_metrics(latest, empty='none')}{error}"
    )
