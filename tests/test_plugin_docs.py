"""docs/plugins.md: a section per bundled type, and every example config validates."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from homelab_core import PluginManager
from homelab_core.config import settings_from_mapping
from homelab_core.instances import build_instance, plugin_type_for

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
TEXT = DOC.read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```toml\n(.*?)```", TEXT, flags=re.DOTALL)


@pytest.fixture(scope="module")
def types() -> dict[str, type]:
    manager = PluginManager(log_errors=False)
    return {
        name: t
        for name, t in manager.plugin_types().items()
        if t.__module__.startswith("homelab_plugins.")
    }


def test_every_bundled_type_has_a_section(types: dict[str, type]) -> None:
    sections = set(re.findall(r"^## `([a-z_]+)`", TEXT, flags=re.MULTILINE))
    assert set(types) <= sections


def test_every_type_has_an_example(types: dict[str, type]) -> None:
    used = {
        body.get("type", instance_id)
        for example in EXAMPLES
        for instance_id, body in tomllib.loads(example).get("plugins", {}).items()
    }
    assert set(types) <= used


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.split("\n", 1)[0])
def test_documented_example_config_validates(example: str, types: dict[str, type]) -> None:
    settings = settings_from_mapping(tomllib.loads(example), source="docs/plugins.md")
    assert settings.plugins
    for instance in settings.plugins.values():
        plugin_type = plugin_type_for(types, instance, settings.source)  # type: ignore[arg-type]
        build_instance(instance, plugin_type, default_timeout=30, source=settings.source)
