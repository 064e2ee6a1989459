"""Listing plugin types stays cheap: bundled plugins load their big libraries on first use.

``homelab plugins`` and ``homelab --version`` import every module of the
``homelab.plugins`` entry point group; the bundled ones must not pull in httpx, dnspython
or prometheus_client until an instance actually starts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: Top-level modules the bundled plugins use, and that nothing else in the listing needs.
HEAVY = ("httpx", "dns", "prometheus_client", "paho")
#: Bundled types whose modules use those libraries.
USERS = {"http", "docker", "prometheus", "dns"}


def _run(code: str) -> Any:
    """Run ``code`` in a fresh interpreter on this checkout; it prints one JSON value."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,  # sys.path[0] is the checkout, whatever copy is installed
        env={k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_the_libraries_checked_for_are_installed() -> None:
    """Guard the guard: a library that is not installed could never show as imported."""
    assert [name for name in HEAVY if importlib.util.find_spec(name) is None] == []


def test_listing_plugin_types_imports_no_plugin_library() -> None:
    found = _run(
        f"""
        import json, sys
        from homelab_core.plugins import PluginManager

        manager = PluginManager(log_errors=False)
        types = manager.plugin_types()
        for plugin_type in types.values():
            plugin_type.describe()  # what listings and the web API show
        print(json.dumps({{
            "types": {{name: manager.source_of(name) for name in types}},
            "files": {{
                name: sys.modules[t.__module__].__file__ for name, t in types.items()
            }},
            "errors": [str(error) for error in manager.load_errors],
            "loaded": [name for name in {HEAVY!r} if name in sys.modules],
        }}))
        """
    )
    assert set(found["types"]) >= USERS, found["errors"]
    for name in USERS:
        assert Path(found["files"][name]).is_relative_to(ROOT / "homelab_plugins")
    assert found["loaded"] == []


def test_the_libraries_load_once_an_instance_starts() -> None:
    """The other side: an instance that starts gets its library (in a fresh interpreter)."""
    found = _run(
        """
        import json, sys
        import anyio
        from homelab_plugins.http import Http, HttpConfig

        async def main():
            plugin = Http(HttpConfig(url="http://127.0.0.1:9/"), instance_id="h")
            before = "httpx" in sys.modules
            await plugin.setup()
            await plugin.teardown()
            return before, "httpx" in sys.modules

        print(json.dumps(anyio.run(main)))
        """
    )
    assert found == [False, True]
