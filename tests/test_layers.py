"""The layering rules of docs/architecture.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "homelab_core"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_never_imports_bundled_plugins(path: Path) -> None:
    assert not {m for m in imported_modules(path) if m.split(".")[0] == "homelab_plugins"}


@pytest.mark.parametrize(
    "path",
    [p for p in core_files() if "web" not in p.relative_to(CORE).parts],
    ids=lambda p: str(p.relative_to(CORE)),
)
def test_nothing_below_web_imports_quart(path: Path) -> None:
    quart = {m for m in imported_modules(path) if m.split(".")[0] in ("quart", "quart_schema")}
    assert not quart


def test_the_checks_see_imports() -> None:
    """Guard the guard: the scanner finds a plain and a from-import."""
    sample = CORE.parent / "tests" / "test_layers.py"
    assert {"ast", "pathlib", "pytest"} <= imported_modules(sample)


#: The hub's parts that the web may not reach past :class:`~homelab_core.Hub` for.
HUB_PARTS = frozenset({"store", "queue", "scheduler", "writer", "maintenance", "cache"})


def hub_parts_used(source: str) -> set[str]:
    """Attributes named like the hub's parts, read anywhere in ``source``."""
    return {
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and node.attr in HUB_PARTS
    }


@pytest.mark.parametrize(
    "path",
    [p for p in core_files() if "web" in p.relative_to(CORE).parts],
    ids=lambda p: str(p.relative_to(CORE)),
)
def test_the_web_reaches_the_core_only_through_the_hub(path: Path) -> None:
    used = hub_parts_used(path.read_text(encoding="utf-8"))
    assert not used, f"{path.name} reads hub part(s) {sorted(used)}: add a Hub method instead"


def test_the_hub_door_check_sees_a_reach_past_the_hub() -> None:
    """Guard the guard: each way of reaching past the hub is found."""
    assert hub_parts_used("hub.store.ping()\nweb.hub.queue.dropped\nh.scheduler.running") == {
        "store",
        "queue",
        "scheduler",
    }
