"""``Plugin[ConfigT]``: the type argument types ``self.config`` and supplies ``Config``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import attrs
import pytest

from homelab_core import Metric, Plugin, PluginManager, PluginRegistrationError, hookimpl, option
from homelab_core.options import NoConfig
from homelab_core.plugin import declared_config, validate_plugin_type

ROOT = Path(__file__).resolve().parent.parent

C = TypeVar("C")


@attrs.define
class RouterConfig:
    url: str = option("http://router.lan", description="Base URL.")


@attrs.define
class SwitchConfig:
    ports: int = option(8, description="Port count.")


@attrs.define
class WideRouterConfig(RouterConfig):
    retries: int = option(2, description="Attempts per run.")


class Router(Plugin[RouterConfig]):
    name = "router"

    def collect(self) -> list[Metric]:
        return [Metric("router.up", 1)]


class ExplicitOnly(Plugin):
    name = "explicit"
    Config = SwitchConfig

    def collect(self) -> list[Metric]:
        return []


class Agreeing(Plugin[SwitchConfig]):
    name = "agreeing"
    Config = SwitchConfig

    def collect(self) -> list[Metric]:
        return []


class Mismatched(Plugin[RouterConfig]):
    name = "mismatched"
    Config = SwitchConfig

    def collect(self) -> list[Metric]:
        return []


class Base(Plugin[C], Generic[C]):
    """A generic intermediate class: its subclasses pick the config."""

    name = "base"

    def collect(self) -> list[Metric]:
        return []


class Switch(Base[SwitchConfig]):
    name = "switch"


def test_config_is_taken_from_the_type_argument() -> None:
    assert Router.Config is RouterConfig
    assert "Config" in vars(Router)
    assert validate_plugin_type(Router) == []
    assert list(Router.config_schema()["properties"]) == ["url"]


def test_the_derived_config_is_the_one_the_framework_builds() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(_Registers(Router), name="typed")
    plugin_type = manager.get_type("router")
    config = plugin_type.Config(url="http://10.0.0.1")
    plugin = plugin_type(config, instance_id="r1")
    assert isinstance(plugin.config, RouterConfig)
    assert plugin.config.url == "http://10.0.0.1"


def test_an_explicit_config_still_works() -> None:
    assert ExplicitOnly.Config is SwitchConfig
    assert validate_plugin_type(ExplicitOnly) == []
    assert declared_config(ExplicitOnly) is None


def test_an_explicit_config_equal_to_the_type_argument_is_fine() -> None:
    assert Agreeing.Config is SwitchConfig
    assert validate_plugin_type(Agreeing) == []


def test_a_bare_plugin_keeps_no_config() -> None:
    class Bare(Plugin):
        name = "bare"

        def collect(self) -> list[Metric]:
            return []

    class AnyConfig(Plugin[Any]):
        name = "anyconfig"

        def collect(self) -> list[Metric]:
            return []

    assert Bare.Config is NoConfig
    assert AnyConfig.Config is NoConfig  # Any is a class at runtime, but not a config
    assert validate_plugin_type(Bare) == validate_plugin_type(AnyConfig) == []


def test_a_type_variable_is_not_taken_as_the_config() -> None:
    assert Base.Config is NoConfig
    assert declared_config(Base) is None


def test_a_generic_intermediate_class_passes_the_argument_on() -> None:
    assert Switch.Config is SwitchConfig
    assert declared_config(Switch) is SwitchConfig
    assert validate_plugin_type(Switch) == []


def test_a_subclass_inherits_the_declared_config() -> None:
    class Child(Router):
        name = "child"

    assert Child.Config is RouterConfig
    assert declared_config(Child) is RouterConfig
    assert validate_plugin_type(Child) == []


def test_a_subclass_may_narrow_the_config_to_a_subclass_of_the_declared_one() -> None:
    class Wide(Router):
        name = "wide"
        Config = WideRouterConfig

    assert validate_plugin_type(Wide) == []


def test_a_mismatch_is_reported_with_the_class_and_both_configs() -> None:
    [problem] = validate_plugin_type(Mismatched)
    assert problem == (
        "Mismatched.Config is SwitchConfig but the class is declared as Plugin[RouterConfig];"
        " drop the Config attribute or make them agree"
    )


def test_a_subclass_that_sets_an_unrelated_config_is_reported() -> None:
    class Other(Router):
        name = "other"
        Config = SwitchConfig

    [problem] = validate_plugin_type(Other)
    assert "Other.Config is SwitchConfig" in problem
    assert "Plugin[RouterConfig]" in problem


def test_registering_a_mismatch_is_a_load_error_of_that_plugin() -> None:
    manager = PluginManager(load_entry_points=False, log_errors=False)
    manager.register(_Registers(Mismatched), name="clash")
    manager.register(_Registers(Router), name="typed")
    assert set(manager.plugin_types()) == {"router"}
    [error] = manager.load_errors
    assert error.entry_point == "clash"
    assert isinstance(error.error, PluginRegistrationError)
    assert "Mismatched.Config is SwitchConfig" in str(error.error)


class _Registers:
    def __init__(self, *types: type[Plugin]) -> None:
        self.types = types

    @hookimpl
    def register_plugins(self, register: Callable[[type[Plugin]], None]) -> None:
        for plugin_type in self.types:
            register(plugin_type)


_TYPED_MODULE = """
from __future__ import annotations

import attrs

from homelab_core import Metric, Plugin, option


@attrs.define
class RouterConfig:
    url: str = option("http://router.lan", description="Base URL.")


class Router(Plugin[RouterConfig]):
    name = "router"

    def collect(self) -> list[Metric]:
        reveal_type(self.config)
        reveal_type(self.config.url)
        return []


class Bare(Plugin):
    name = "bare"

    def collect(self) -> list[Metric]:
        reveal_type(self.config)
        return []


def wrong(plugin: Router) -> object:
    return plugin.config.ports


def needs_a_plugin_type(plugin_type: type[Plugin]) -> str:
    return plugin_type.name


needs_a_plugin_type(Router)
"""


@pytest.mark.slow
def test_mypy_sees_the_config_class_as_the_type_of_self_config(tmp_path: Path) -> None:
    module = tmp_path / "typed_plugin.py"
    module.write_text(textwrap.dedent(_TYPED_MODULE), encoding="utf-8")
    (tmp_path / "mypy.ini").write_text("[mypy]\n", encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--follow-imports",
            "silent",
            "--no-error-summary",
            str(module),
        ],
        cwd=tmp_path,
        # The checkout's homelab_core, whatever copy is installed.
        env={**os.environ, "MYPYPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Older mypy spells builtins out ("builtins.str"), newer mypy does not.
    lines = [
        re.sub(r"^.*?:\d+: ", "", line).replace('"builtins.', '"')
        for line in result.stdout.splitlines()
    ]
    assert lines == [
        'note: Revealed type is "typed_plugin.RouterConfig"',
        'note: Revealed type is "str"',
        'note: Revealed type is "Any"',
        'error: "RouterConfig" has no attribute "ports"  [attr-defined]',
    ], result.stdout + result.stderr
