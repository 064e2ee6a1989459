"""The documentation stays true to the code: hooks, settings, the example plugin, TOML."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pluggy
import pytest

from homelab_core import PluginManager, Settings, hookspecs
from homelab_core.config import settings_from_mapping
from homelab_core.instances import build_instance

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"
EXAMPLE = ROOT / "examples" / "homelab-dice"
EXAMPLE_MODULE = EXAMPLE / "homelab_dice" / "__init__.py"

_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: A hook section: a level-2 heading that is a bare identifier (other headings have spaces).
_HOOK_HEADING = re.compile(r"^## ([A-Za-z_][A-Za-z0-9_]*)[ \t]*$", re.MULTILINE)


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def code_blocks(text: str, language: str) -> list[str]:
    """The contents of every fenced block of ``language``, each ending with a newline."""
    return [body for lang, body in _FENCE.findall(text) if lang == language]


def hook_names() -> list[str]:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return sorted(name for name in vars(manager.hook) if not name.startswith("_"))


def settings_sections() -> dict[str, type]:
    """Every fixed section of :class:`Settings`: the fields whose value is an attrs class.

    ``alerts`` holds the alerting tables, documented in alerts.md (checked below)."""
    defaults = Settings()
    return {
        field.name: type(getattr(defaults, field.name))
        for field in attrs.fields(Settings)
        if attrs.has(type(getattr(defaults, field.name))) and field.name != "alerts"
    }


@pytest.mark.parametrize(
    ("heading", "cls"),
    [
        ("### [alerting]", "AlertingSettings"),
        ("### [alerts.<id>]", "RuleSettings"),
        ("### [routes.<id>]", "RouteSettings"),
        ("### [maintenance.<id>]", "MaintenanceSettings"),
    ],
)
def test_every_alerting_key_is_documented_in_alerts_md(heading: str, cls: str) -> None:
    from homelab_core.alerts import config

    text = section_text(read("alerts.md"), heading)
    for field in attrs.fields(getattr(config, cls)):
        name = {"for_": "for"}.get(field.name, field.name)
        if name != "id":
            assert f"| `{name}` |" in text, f"{heading} {name} is not in its table"


def section_text(text: str, heading: str) -> str:
    """The part of ``text`` from ``heading`` to the next heading of the same or higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n")
    following = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE)
    end = following.search(text, start + len(heading))
    return text[start : end.start() if end else len(text)]


# -- hooks ------------------------------------------------------------------------------


def test_the_hook_list_is_found() -> None:
    """Guard the guard: the specs are discovered, and they are the marked functions."""
    marked = {n for n, obj in vars(hookspecs).items() if hasattr(obj, f"{hookspecs.PROJECT}_spec")}
    assert {"register_plugins", "metrics_collected"} <= set(hook_names())
    assert set(hook_names()) == marked


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_has_a_section_in_hooks_md(hook: str) -> None:
    assert hook in _HOOK_HEADING.findall(read("hooks.md")), f"docs/hooks.md lacks '## {hook}'"


def test_hooks_md_has_no_section_for_a_hook_that_does_not_exist() -> None:
    documented = _HOOK_HEADING.findall(read("hooks.md"))
    assert sorted(set(documented) - set(hook_names())) == []
    assert len(documented) == len(set(documented)), "a hook is documented twice"


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_has_a_test_named_after_it(hook: str) -> None:
    pattern = re.compile(rf"^\s*(async\s+)?def test_hook_{hook}\(", re.MULTILINE)
    files = [p for p in sorted(TESTS.rglob("*.py")) if pattern.search(p.read_text("utf-8"))]
    assert files, f"no test named test_hook_{hook} under tests/"


# -- configuration ------------------------------------------------------------------------


def test_the_settings_sections_are_found() -> None:
    """Guard the guard: the sections come from Settings itself."""
    assert {"server", "database", "scheduler", "store"} <= set(settings_sections())


@pytest.mark.parametrize("section", sorted(settings_sections()))
def test_every_settings_key_is_documented_in_its_section(section: str) -> None:
    text = section_text(read("configuration.md"), f"### [{section}]")
    for field in attrs.fields(settings_sections()[section]):
        assert f"| `{field.name}` |" in text, f"[{section}] {field.name} is not in its table"


def test_the_example_with_every_default_matches_the_defaults() -> None:
    sections = settings_sections()
    full = [
        data
        for data in map(tomllib.loads, code_blocks(read("configuration.md"), "toml"))
        if set(sections) <= set(data)
    ]
    assert full, "configuration.md has no TOML block that sets every section"
    data = full[0]
    for name, cls in sections.items():
        assert set(data[name]) == {f.name for f in attrs.fields(cls)}, f"keys of [{name}]"
    parsed, defaults = settings_from_mapping(data), Settings()
    for name in sections:
        assert getattr(parsed, name) == getattr(defaults, name), f"defaults of [{name}]"


@pytest.fixture(scope="module")
def example_module() -> Iterator[ModuleType]:
    """The example plugin module, loaded from its file without installing the package."""
    name = "_docs_homelab_dice"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE_MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


@pytest.fixture(scope="module")
def plugin_types(example_module: ModuleType) -> dict[str, Any]:
    """Installed plugin types, plus the example's ``dice`` type if it is not installed."""
    manager = PluginManager()
    types = manager.plugin_types()
    if "dice" not in types:
        manager.register(example_module, name="docs-example")
        types = manager.plugin_types()
    return types


def toml_examples() -> list[tuple[str, int, str]]:
    """Every settings-file TOML block of the docs (the pyproject.toml excerpt is not one)."""
    examples = []
    for name in ("configuration.md", "writing-plugins.md"):
        for index, block in enumerate(code_blocks(read(name), "toml")):
            # Not settings files: a pyproject.toml excerpt, a .taplo.toml.
            if (
                "[project]" not in block
                and "[build-system]" not in block
                and "[[rule]]" not in block
            ):
                examples.append((name, index, block))
    return examples


@pytest.mark.parametrize(
    ("doc", "index", "block"), toml_examples(), ids=[f"{d}-{i}" for d, i, _ in toml_examples()]
)
def test_toml_examples_are_valid_settings(
    doc: str, index: int, block: str, plugin_types: dict[str, Any]
) -> None:
    settings = settings_from_mapping(tomllib.loads(block), source=f"docs/{doc}")
    for instance in settings.plugins.values():
        plugin_type = plugin_types.get(instance.type)
        if plugin_type is None:
            continue  # a type that is neither installed nor the example: options unchecked
        build_instance(
            instance,
            plugin_type,
            default_timeout=settings.scheduler.default_timeout,
            source=settings.source,
        )


def test_configuration_md_has_toml_examples() -> None:
    assert len(code_blocks(read("configuration.md"), "toml")) >= 3


# -- the tutorial ---------------------------------------------------------------------------


def test_tutorial_module_is_the_example_package_code() -> None:
    blocks = code_blocks(read("writing-plugins.md"), "python")
    assert blocks, "writing-plugins.md has no python block"
    assert blocks[0] == EXAMPLE_MODULE.read_text(encoding="utf-8")


def test_tutorial_pyproject_is_the_example_package_pyproject() -> None:
    blocks = code_blocks(read("writing-plugins.md"), "toml")
    assert blocks, "writing-plugins.md has no toml block"
    assert blocks[0] == (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")


def test_tutorial_test_code_passes(tmp_path: Path) -> None:
    """The tests the tutorial shows pass when run against the example package."""
    [test_code] = [
        block for block in code_blocks(read("writing-plugins.md"), "python") if "def test_" in block
    ]
    (tmp_path / "test_tutorial.py").write_text(test_code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tutorial.py"],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")},
            "PYTHONPATH": str(EXAMPLE),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
