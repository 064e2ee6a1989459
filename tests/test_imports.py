"""A light import: the package and its errors load none of the heavy dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tortoise", "aiocache", "quart", "httpx")


def modules_after(statement: str) -> list[str]:
    """The heavy modules in ``sys.modules`` after ``statement``, in a fresh interpreter."""
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


@pytest.mark.parametrize("module", ["homelab_core", "homelab_core.errors"])
def test_importing_loads_no_heavy_dependency(module: str) -> None:
    assert modules_after(f"import {module}") == []


def test_the_hub_loads_on_first_use() -> None:
    assert {"tortoise", "aiocache"} <= set(modules_after("import homelab_core\nhomelab_core.Hub"))
