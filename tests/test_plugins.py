"""The plugin manager: registration, validation, event hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator
from typing import Any

import anyio
import click
import pytest
import sample_plugins
from sample_plugins import Counter

from homelab_core import (
    Metric,
    Plugin,
    PluginLoadError,
    PluginManager,
    PluginRegistrationError,
    UnknownPluginTypeError,
    hookimpl,
    hookspec,
)
from homelab_core.plugin import validate_plugin_type
from homelab_core.plugins import TRACE_ENV

pytestmark = pytest.mark.anyio

Register = Callable[[type[Plugin]], None]


class Registers:
    """A plugin module stand-in that registers the given objects."""

    def __init__(self, *objects: Any) -> None:
        self.objects = objects

    @hookimpl
    def register_plugins(self, register: Register) -> None:
        for obj in self.objects:
            register(obj)


class Nameless(Plugin):
    name = "Bad Name"

    def collect(self) -> list[Metric]:
        return []


class NoCollect(Plugin):
    name = "nocollect"


def test_hook_register_plugins() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(sample_plugins, name="sample_plugins")
    types = manager.plugin_types()
    assert types["counter"] is Counter
    assert manager.source_of("counter") == "sample_plugins"
    assert manager.get_type("counter") is Counter


def test_registering_a_non_plugin_names_the_plugin_at_fault() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(Registers(dict), name="weird")
    manager.register(sample_plugins, name="sample_plugins")
    types = manager.plugin_types()
    assert "counter" in types
    [error] = manager.load_errors
    assert error.entry_point == "weird"
    assert "plugin 'weird' registered an invalid type" in str(error)
    assert "is not a subclass of homelab_core.Plugin" in str(error)


def test_registering_a_taken_type_name_names_both_plugins() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(sample_plugins, name="sample_plugins")

    class Impostor(Counter):
        pass

    manager.register(Registers(Impostor), name="impostor")
    manager.plugin_types()
    [error] = manager.load_errors
    assert "plugin 'impostor' registered type 'counter', which plugin 'sample_plugins'" in str(
        error
    )


def test_plugin_type_problems_are_listed() -> None:
    assert validate_plugin_type(Counter) == []
    assert "name must be a lowercase slug" in validate_plugin_type(Nameless)[0]
    assert validate_plugin_type(NoCollect) == ["NoCollect does not implement collect()"]


def test_unknown_plugin_type_raises() -> None:
    manager = PluginManager(load_entry_points=False)
    with pytest.raises(UnknownPluginTypeError, match="unknown plugin type 'nope'"):
        manager.get_type("nope")


def test_unregister_removes_the_types() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(sample_plugins, name="sample_plugins")
    assert "counter" in manager.plugin_types()
    manager.unregister("sample_plugins")
    assert manager.plugin_types() == {}


class Events:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    async def hub_startup(self, hub: Any) -> None:
        self.seen.append(f"async {hub}")


class Exploding:
    @hookimpl
    def hub_startup(self, hub: Any) -> None:
        raise RuntimeError("boom")


async def test_notify_awaits_async_hooks_and_survives_a_raising_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = PluginManager(load_entry_points=False)
    events = Events()
    manager.register(Exploding(), name="exploding")
    manager.register(events, name="events")
    await manager.notify("hub_startup", hub="h")
    assert events.seen == ["async h"]
    assert "hook hub_startup of plugin 'exploding' failed" in caplog.text


def test_describe_gives_metadata_and_config_schema_gives_the_options() -> None:
    info = Counter.describe()
    assert (info.name, info.category) == ("counter", "test")
    schema = Counter.config_schema()
    assert schema["properties"]["series"] == {
        "type": "integer",
        "description": "How many series to report.",
        "default": 1,
    }
    assert schema["properties"]["token"]["x-secret"] is True


class Misspelt:
    @hookimpl
    def hub_started(self, hub: Any) -> None:
        """Meant to be hub_startup."""


def test_a_misspelt_hook_is_reported() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(Misspelt(), name="typo")
    [error] = manager.load_errors
    assert str(error) == (
        "plugin 'typo' implements unknown hook(s): hub_started; they will never be called"
        " (see docs/hooks.md)"
    )


class TakesNothing:
    calls = 0

    @hookimpl
    def register_plugins(self) -> None:
        TakesNothing.calls += 1


def test_a_hook_implementation_may_take_fewer_arguments() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(TakesNothing(), name="lazy")
    assert manager.plugin_types() == {}
    assert manager.load_errors == []
    assert TakesNothing.calls == 1


class Order:
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    @hookimpl
    def hub_startup(self, hub: Any) -> None:
        self.seen.append(self.name)


async def test_event_hooks_run_in_registration_order() -> None:
    manager = PluginManager(load_entry_points=False)
    seen: list[str] = []
    for name in ("first", "second", "third"):
        manager.register(Order(name, seen), name=name)
    await manager.notify("hub_startup", hub=None)
    assert seen == ["first", "second", "third"]


class First:
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    @hookimpl(tryfirst=True)
    def hub_startup(self, hub: Any) -> None:
        self.seen.append("tryfirst")


class Last:
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    @hookimpl(trylast=True)
    def hub_startup(self, hub: Any) -> None:
        self.seen.append("trylast")


async def test_tryfirst_and_trylast_are_honoured() -> None:
    manager = PluginManager(load_entry_points=False)
    seen: list[str] = []
    manager.register(Last(seen), name="last")
    manager.register(Order("plain", seen), name="plain")
    manager.register(First(seen), name="first")
    await manager.notify("hub_startup", hub=None)
    assert seen == ["tryfirst", "plain", "trylast"]


# -- hook wrappers and firstresult hooks are refused -------------------------------------


class Wrapper:
    """A plugin whose hub_startup is a new-style wrapper; its register_plugins is fine."""

    @hookimpl
    def register_plugins(self, register: Register) -> None:
        register(Counter)

    @hookimpl(wrapper=True)
    def hub_startup(self, hub: Any) -> Generator[None, Any, Any]:
        return (yield)


class OldWrapper:
    @hookimpl(hookwrapper=True)
    def hub_startup(self, hub: Any) -> Generator[None, Any, None]:
        yield


def only_error(manager: PluginManager) -> PluginLoadError:
    [error] = manager.load_errors
    assert isinstance(error.error, PluginRegistrationError)
    return error


@pytest.mark.parametrize(
    ("plugin", "kind"),
    [
        pytest.param(Wrapper(), "wrapper=True", id="wrapper"),
        pytest.param(OldWrapper(), "hookwrapper=True", id="hookwrapper"),
    ],
)
async def test_a_plugin_with_a_hook_wrapper_is_refused(plugin: object, kind: str) -> None:
    manager = PluginManager(load_entry_points=False)
    seen: list[str] = []
    manager.register(plugin, name="wrapping")
    manager.register(Order("bystander", seen), name="bystander")

    error = only_error(manager)
    assert error.entry_point == "wrapping"
    message = str(error)
    assert message.startswith("plugin 'wrapping' was not registered: its hub_startup")
    assert f"is a hook wrapper ({kind})" in message
    assert "would see coroutines, not results" in message
    # None of its hooks run, not even the ones that are not wrappers.
    assert manager.plugin_types() == {}
    assert not manager.has_implementations("register_plugins")
    await manager.notify("hub_startup", hub=None)
    assert seen == ["bystander"]


class PickSpecs:
    """A firstresult hook, as a later version of the hook specs might declare one."""

    @hookspec(firstresult=True)
    def pick_one(self, choices: list[str]) -> str | None:
        """Return one of ``choices``."""


class Picker:
    @hookimpl
    def pick_one(self, choices: list[str]) -> str:
        return choices[0]

    @hookimpl
    def register_plugins(self, register: Register) -> None:
        register(Counter)


def test_a_plugin_implementing_a_firstresult_hook_is_refused() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.hook_manager.add_hookspecs(PickSpecs)
    manager.register(Picker(), name="picker")

    error = only_error(manager)
    assert error.entry_point == "picker"
    assert str(error).startswith(
        "plugin 'picker' was not registered: it implements pick_one, a firstresult hook,"
        " which is not supported"
    )
    assert not manager.has_implementations("pick_one")
    assert manager.plugin_types() == {}


def test_a_refused_plugin_name_can_be_registered_again_once_fixed() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(Wrapper(), name="wrapping")
    manager.register(Registers(Counter), name="wrapping")
    assert manager.plugin_types() == {"counter": Counter}
    assert manager.source_of("counter") == "wrapping"


# -- add_commands ------------------------------------------------------------------------


class AddsHello:
    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        cli.add_command(click.Command("hello", callback=lambda: None))


class ReplacesBuiltin:
    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        cli.add_command(click.Command("status", callback=lambda: None))


class AddsThenRaises:
    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        cli.add_command(click.Command("half", callback=lambda: None))
        raise RuntimeError("no config for the command")


def test_add_commands_adds_and_protects_built_in_commands() -> None:
    builtin = click.Command("status", callback=lambda: None)
    group = click.Group("root", commands=[builtin])
    manager = PluginManager(load_entry_points=False)
    manager.register(AddsHello(), name="hello")
    manager.register(ReplacesBuiltin(), name="hijacker")
    manager.register(AddsThenRaises(), name="crashy")

    warnings = manager.add_commands(group)

    assert warnings == [
        "plugin 'hijacker' tried to replace the built-in command 'status'; kept the built-in",
        "plugin 'crashy' failed to add commands: no config for the command",
    ]
    assert group.commands["status"] is builtin
    assert sorted(group.commands) == ["half", "hello", "status"]


# -- HOMELAB_TRACE_PLUGINS ---------------------------------------------------------------

TRACE_LOGGER = "homelab.plugins.trace"


@pytest.fixture
def trace_logger_level() -> Iterator[None]:
    """Restore the trace logger's level, which a tracing manager raises to INFO."""
    logger = logging.getLogger(TRACE_LOGGER)
    level = logger.level
    yield
    logger.setLevel(level)


class Slow:
    @hookimpl
    async def hub_startup(self, hub: Any) -> None:
        await anyio.sleep(0.05)


@pytest.mark.usefixtures("trace_logger_level")
async def test_trace_logs_each_implementation_with_its_duration(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(TRACE_ENV, "1")
    logging.getLogger(TRACE_LOGGER).setLevel(logging.NOTSET)
    manager = PluginManager(load_entry_points=False)
    manager.register(Slow(), name="slow")
    manager.register(Exploding(), name="exploding")
    manager.register(sample_plugins, name="sample_plugins")
    manager.register(AddsHello(), name="hello")

    # No caplog.set_level: the manager itself makes the INFO lines visible.
    await manager.notify("hub_startup", hub=None)
    manager.plugin_types()
    manager.add_commands(click.Group("root"))

    records = [r for r in caplog.records if r.name == TRACE_LOGGER]
    assert all(r.levelno == logging.INFO for r in records)
    calls = [(r.hook, r.plugin) for r in records]  # type: ignore[attr-defined]
    assert calls == [
        ("hub_startup", "slow"),
        ("hub_startup", "exploding"),
        ("register_plugins", "sample_plugins"),
        ("register_commands", "hello"),
    ]
    slow = records[0]
    assert slow.getMessage().startswith("hook hub_startup of plugin 'slow' took ")
    # The time spent awaiting the coroutine counts.
    assert slow.duration_ms >= 45  # type: ignore[attr-defined]
    assert records[1].getMessage().endswith(" ms (raised)")


@pytest.mark.parametrize("value", [None, "", "0"])
async def test_no_trace_unless_the_variable_is_set(
    value: str | None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if value is None:
        monkeypatch.delenv(TRACE_ENV, raising=False)
    else:
        monkeypatch.setenv(TRACE_ENV, value)
    caplog.set_level(logging.INFO, logger=TRACE_LOGGER)
    manager = PluginManager(load_entry_points=False)
    manager.register(Events(), name="events")
    await manager.notify("hub_startup", hub=None)
    assert [r for r in caplog.records if r.name == TRACE_LOGGER] == []
