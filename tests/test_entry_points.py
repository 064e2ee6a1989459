"""Plugin discovery through the ``homelab.plugins`` entry point group, with real installs.

The example package ``examples/homelab-dice`` is really installed with pip into a
temporary directory; hand-made distributions (a ``*.dist-info`` directory next to a
module) stand in for a broken and a working third-party plugin. The ``homelab`` command
runs in a subprocess with only ``PYTHONPATH`` pointing at them (and at this source tree,
so that the subprocess runs the code under test), so discovery goes through
``importlib.metadata`` exactly as it does for users.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from homelab_core import Metric, Plugin, PluginManager, PluginRegistrationError, hookimpl
from homelab_core.cli import EXIT_CONFIG
from homelab_core.plugins import LOAD_ENV, TRACE_ENV

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "homelab-dice"
#: Upper bound of every subprocess; they normally take well under a second.
TIMEOUT = 60
#: pip builds a wheel; allow it a little longer on a slow machine.
PIP_TIMEOUT = 120
#: Modules the hand-made distributions provide; removed from sys.modules after each test.
FAKE_MODULES = ("broken_plugin_mod", "good_plugin_mod", "wrapping_plugin_mod")

Register = Callable[[type[Plugin]], None]


# -- helpers -----------------------------------------------------------------------------


def clean_env(pythonpath: Path | None) -> dict[str, str]:
    """The current environment without any HOMELAB_* variable, with PYTHONPATH replaced.

    The source tree comes after ``pythonpath``: the subprocess imports the homelab_core
    under test even when the interpreter has another copy installed.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    env["PYTHONPATH"] = os.pathsep.join(
        str(path) for path in (pythonpath, ROOT) if path is not None
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def homelab(
    args: Sequence[str],
    *,
    pythonpath: Path | None,
    cwd: Path,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the ``homelab`` command in a fresh interpreter."""
    env = clean_env(pythonpath)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "homelab_core.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def listed_types(stdout: str) -> dict[str, list[str]]:
    """The rows of the "Plugin types" table of ``homelab plugins``, by type name."""
    lines = stdout.splitlines()
    start = lines.index("Plugin types") + 2  # skip the title and the column headers
    rows: dict[str, list[str]] = {}
    for line in lines[start:]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


def pip_install(source: Path, target: Path, *, cwd: Path) -> None:
    """Really install the distribution in ``source`` into ``target`` with pip (offline, no
    dependencies, no build isolation), as a user's ``pip install`` would lay it out."""
    env = clean_env(None)
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    command += ["--no-build-isolation", "--target", str(target), str(source)]
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def write_dist(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    """A minimal installed distribution: METADATA and entry_points.txt in a dist-info."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8"
    )
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[homelab.plugins]\n{lines}", encoding="utf-8")


BROKEN_MODULE = """\
raise ImportError("libfoo is missing")
"""

GOOD_MODULE = """\
from homelab_core import Metric, Plugin, hookimpl


class GoodOne(Plugin):
    name = "goodone"
    category = "test"
    description = "Always reports 1."

    def collect(self):
        return [Metric("good", 1)]


@hookimpl
def register_plugins(register):
    register(GoodOne)
"""

WRAPPING_MODULE = """\
from homelab_core import Metric, Plugin, hookimpl


class Wrapped(Plugin):
    name = "wrapped"

    def collect(self):
        return [Metric("wrapped", 1)]


@hookimpl
def register_plugins(register):
    register(Wrapped)


@hookimpl(wrapper=True)
def hub_startup(hub):
    return (yield)
"""


def registering(*objects: Any) -> SimpleNamespace:
    """A plugin module stand-in whose ``register_plugins`` registers ``objects``."""

    @hookimpl
    def register_plugins(register: Register) -> None:
        for obj in objects:
            register(obj)

    return SimpleNamespace(register_plugins=register_plugins)


class Good(Plugin):
    name = "good"

    def collect(self) -> list[Metric]:
        return [Metric("good", 1)]


class Twin(Plugin):
    """A different class that claims the name of :class:`Good`."""

    name = "good"

    def collect(self) -> list[Metric]:
        return [Metric("twin", 1)]


class Other(Plugin):
    name = "other"

    def collect(self) -> list[Metric]:
        return [Metric("other", 1)]


class Nameless(Plugin):
    name = "Not A Slug"

    def collect(self) -> list[Metric]:
        return []


class CollectsNothing(Plugin):
    name = "lazy"


class NotAPlugin:
    name = "imposter"

    def collect(self) -> list[Metric]:
        return []


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dice_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory into which pip really installed examples/homelab-dice.

    pip builds in the source tree (``build/``, ``*.egg-info``), so it builds from a copy
    and leaves the repository untouched. No index is consulted: --no-deps and
    --no-build-isolation use the setuptools already installed.
    """
    base = tmp_path_factory.mktemp("dice")
    source = base / "homelab-dice"
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    target = base / "site"
    pip_install(source, target, cwd=base)
    assert list(target.glob("homelab_dice-*.dist-info")), sorted(p.name for p in target.iterdir())
    return target


@pytest.fixture
def fake_site(tmp_path: Path) -> Path:
    """Two hand-made distributions: ``broken`` fails to import, ``good`` adds ``goodone``."""
    site = tmp_path / "site"
    site.mkdir()
    write_dist(site, "broken-plugin", {"broken": "broken_plugin_mod"})
    (site / "broken_plugin_mod.py").write_text(BROKEN_MODULE, encoding="utf-8")
    write_dist(site, "good-plugin", {"good": "good_plugin_mod"})
    (site / "good_plugin_mod.py").write_text(GOOD_MODULE, encoding="utf-8")
    return site


@pytest.fixture
def wrapping_site(fake_site: Path) -> Path:
    """:func:`fake_site` plus ``wrapping``, whose module has a hook wrapper."""
    write_dist(fake_site, "wrapping-plugin", {"wrapping": "wrapping_plugin_mod"})
    (fake_site / "wrapping_plugin_mod.py").write_text(WRAPPING_MODULE, encoding="utf-8")
    return fake_site


@pytest.fixture
def fake_site_on_path(fake_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """:func:`fake_site` on this process's sys.path; its modules are forgotten afterwards."""
    monkeypatch.delenv(LOAD_ENV, raising=False)
    for name in FAKE_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(fake_site))  # also invalidates the import caches
    yield fake_site
    for name in FAKE_MODULES:
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


# -- the installed example package -------------------------------------------------------


def test_plugins_command_lists_bundled_and_installed_example(
    dice_site: Path, tmp_path: Path
) -> None:
    result = homelab(["plugins"], pythonpath=dice_site, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    rows = listed_types(result.stdout)
    assert {"system", "dice"} <= set(rows)
    # type, category, version, from: the example's entry point is named "dice".
    assert rows["dice"][:4] == ["dice", "example", "1.0.0", "dice"]
    assert rows["system"][3] == "system"
    assert "error" not in result.stderr


def test_plugins_command_without_example_lists_only_bundled(tmp_path: Path) -> None:
    result = homelab(["plugins"], pythonpath=None, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    rows = listed_types(result.stdout)
    assert "system" in rows
    assert "dice" not in rows


def test_run_once_rolls_installed_dice(dice_site: Path, tmp_path: Path) -> None:
    result = homelab(
        ["run", "dice", "--once", "--set", "count=3", "--set", "sides=4"],
        pythonpath=dice_site,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["type"] == "dice"
    assert output["status"] == "ok"
    assert output["config"] == {"sides": 4, "count": 3}
    faces = {m["labels"]["die"]: m["value"] for m in output["metrics"] if m["name"] == "dice.face"}
    assert sorted(faces) == ["0", "1", "2"]
    assert all(1 <= face <= 4 and face == int(face) for face in faces.values())
    totals = [m["value"] for m in output["metrics"] if m["name"] == "dice.total"]
    assert totals == [sum(faces.values())]


def test_run_once_rejects_invalid_option_naming_the_field(dice_site: Path, tmp_path: Path) -> None:
    result = homelab(
        ["run", "dice", "--once", "--set", "sides=1"], pythonpath=dice_site, cwd=tmp_path
    )

    assert result.returncode == EXIT_CONFIG
    assert "sides" in result.stderr
    assert "must be 2 or more, got 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


HUB_SCRIPT = """\
import json
import sys

import anyio

from homelab_core import Hub, load_settings


async def main():
    async with Hub(load_settings(sys.argv[1])) as hub:
        execution = await hub.run_now("d")
        latest = await hub.latest("d")
        info = hub.instance("d")
    print(json.dumps({
        "status": execution.status.value,
        "trigger": execution.trigger,
        "metric_count": execution.metric_count,
        "type": info.type,
        "category": info.category,
        "config": info.config,
        "metrics": [m.to_dict() for m in latest],
    }))


anyio.run(main)
"""


def test_hub_discovers_and_runs_installed_plugin(dice_site: Path, tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    config = tmp_path / "homelab.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [database]
            url = {json.dumps(f"sqlite://{db}")}

            [scheduler]
            jitter = 0

            [plugins.d]
            type = "dice"
            count = 2
            sides = 20
            """
        ),
        encoding="utf-8",
    )
    script = tmp_path / "hub_run.py"
    script.write_text(HUB_SCRIPT, encoding="utf-8")

    result = subprocess.run(
        [sys.executable, str(script), str(config)],
        cwd=tmp_path,
        env=clean_env(dice_site),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert (output["status"], output["trigger"]) == ("ok", "manual")
    assert output["metric_count"] == 3
    assert (output["type"], output["category"]) == ("dice", "example")
    assert output["config"] == {"sides": 20, "count": 2}
    faces = {m["labels"]["die"]: m["value"] for m in output["metrics"] if m["name"] == "dice.face"}
    assert sorted(faces) == ["0", "1"]
    assert all(1 <= face <= 20 for face in faces.values())
    totals = [m["value"] for m in output["metrics"] if m["name"] == "dice.total"]
    assert totals == [sum(faces.values())]
    assert db.is_file()


# -- a broken entry point next to a working one ------------------------------------------


def test_plugins_command_reports_broken_entry_point_and_lists_the_rest(
    fake_site: Path, tmp_path: Path
) -> None:
    result = homelab(["plugins"], pythonpath=fake_site, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert "'broken'" in error_lines[0]
    assert "libfoo is missing" in error_lines[0]
    rows = listed_types(result.stdout)
    assert {"system", "goodone"} <= set(rows)
    assert rows["goodone"][3] == "good"
    assert "broken" not in rows


def test_run_once_works_beside_a_broken_entry_point(fake_site: Path, tmp_path: Path) -> None:
    result = homelab(["run", "goodone", "--once"], pythonpath=fake_site, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["status"] == "ok"
    assert [(m["name"], m["value"]) for m in output["metrics"]] == [("good", 1)]


def test_broken_entry_point_is_recorded_and_others_load(fake_site_on_path: Path) -> None:
    manager = PluginManager()

    types = manager.plugin_types()

    assert {"system", "goodone"} <= set(types)
    assert manager.source_of("goodone") == "good"
    assert len(manager.load_errors) == 1
    error = manager.load_errors[0]
    assert error.entry_point == "broken"
    assert isinstance(error.error, ImportError)
    assert str(error.error) == "libfoo is missing"
    assert "'broken'" in str(error)
    assert "libfoo is missing" in str(error)


def test_broken_entry_point_is_imported_only_once(fake_site_on_path: Path) -> None:
    manager = PluginManager()

    manager.plugin_types()
    manager.load_entry_points()
    manager.plugin_types()

    assert [e.entry_point for e in manager.load_errors] == ["broken"]


def test_entry_point_with_a_hook_wrapper_is_refused_and_others_load(
    wrapping_site: Path, fake_site_on_path: Path
) -> None:
    manager = PluginManager()

    types = manager.plugin_types()

    assert {"system", "goodone"} <= set(types)
    assert "wrapped" not in types
    refused = [e for e in manager.load_errors if e.entry_point == "wrapping"]
    assert len(refused) == 1
    assert isinstance(refused[0].error, PluginRegistrationError)
    assert str(refused[0]).startswith(
        "plugin 'wrapping' was not registered: its hub_startup implementation is a hook"
        " wrapper (wrapper=True)"
    )


def test_plugins_command_reports_a_refused_entry_point(wrapping_site: Path, tmp_path: Path) -> None:
    result = homelab(
        ["plugins"], pythonpath=wrapping_site, cwd=tmp_path, extra_env={LOAD_ENV: "wrapping"}
    )

    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "plugin 'wrapping' was not registered: its hub_startup" in errors[0]
    assert listed_types(result.stdout) == {}


# -- HOMELAB_TRACE_PLUGINS ---------------------------------------------------------------


def test_trace_env_shows_each_hook_call_on_stderr(tmp_path: Path) -> None:
    result = homelab(
        ["plugins"], pythonpath=None, cwd=tmp_path, extra_env={LOAD_ENV: "system", TRACE_ENV: "1"}
    )

    assert result.returncode == 0, result.stderr
    traced = [line for line in result.stderr.splitlines() if "homelab.plugins.trace" in line]
    assert len(traced) == 1, result.stderr
    assert (
        " INFO homelab.plugins.trace: hook register_plugins of plugin 'system' took " in (traced[0])
    )
    assert traced[0].endswith(" ms")


# -- HOMELAB_LOAD_PLUGINS ----------------------------------------------------------------


def test_load_env_limits_loading_to_named_entry_point(
    fake_site_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOAD_ENV, "system")
    manager = PluginManager()

    types = manager.plugin_types()

    assert set(types) == {"system"}
    # The broken one was not even imported, so it cannot fail.
    assert manager.load_errors == []
    assert "good_plugin_mod" not in sys.modules


def test_load_env_accepts_a_comma_separated_list(
    fake_site_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOAD_ENV, " system , good ")
    manager = PluginManager()

    types = manager.plugin_types()

    assert set(types) == {"system", "goodone"}
    assert manager.load_errors == []


def test_plugins_command_honours_load_env(fake_site: Path, tmp_path: Path) -> None:
    result = homelab(["plugins"], pythonpath=fake_site, cwd=tmp_path, extra_env={LOAD_ENV: "good"})

    assert result.returncode == 0, result.stderr
    assert set(listed_types(result.stdout)) == {"goodone"}
    assert "libfoo" not in result.stderr


# -- plugins that register something invalid ---------------------------------------------


@pytest.mark.parametrize(
    ("invalid", "reason"),
    [
        pytest.param(NotAPlugin, "not a subclass of homelab_core.Plugin", id="not-a-subclass"),
        pytest.param(Good(None, instance_id="x"), "not a subclass", id="an-instance"),
        pytest.param("good", "not a subclass", id="a-string"),
        pytest.param(Nameless, "lowercase slug", id="bad-name"),
        pytest.param(CollectsNothing, "does not implement collect()", id="no-collect"),
    ],
)
def test_invalid_registration_is_reported_with_plugin_name_and_others_load(
    invalid: Any, reason: str
) -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(registering(Good), name="fine")
    manager.register(registering(invalid), name="sloppy")
    manager.register(registering(Other), name="also_fine")

    types = manager.plugin_types()

    assert types == {"good": Good, "other": Other}
    assert len(manager.load_errors) == 1
    error = manager.load_errors[0]
    assert error.entry_point == "sloppy"
    assert isinstance(error.error, PluginRegistrationError)
    assert "'sloppy'" in str(error.error)
    assert reason in str(error.error)


def test_duplicate_type_name_is_reported_and_first_registration_keeps_it() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(registering(Good), name="first")
    manager.register(registering(Twin), name="second")
    manager.register(registering(Other), name="bystander")

    types = manager.plugin_types()

    assert types == {"good": Good, "other": Other}
    assert manager.source_of("good") == "first"
    assert [e.entry_point for e in manager.load_errors] == ["second"]
    error = manager.load_errors[0].error
    assert isinstance(error, PluginRegistrationError)
    assert "plugin 'second' registered type 'good'" in str(error)
    assert "'first' already registered" in str(error)


def test_registering_the_same_class_twice_is_not_a_conflict() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(registering(Good), name="one")
    manager.register(registering(Good), name="two")

    assert manager.plugin_types() == {"good": Good}
    assert manager.load_errors == []


def test_exception_in_register_plugins_is_reported_and_others_load() -> None:
    @hookimpl
    def register_plugins(register: Register) -> None:
        raise RuntimeError("config file of the plugin is unreadable")

    manager = PluginManager(load_entry_points=False)
    manager.register(SimpleNamespace(register_plugins=register_plugins), name="crashy")
    manager.register(registering(Good), name="fine")

    types = manager.plugin_types()

    assert types == {"good": Good}
    assert [e.entry_point for e in manager.load_errors] == ["crashy"]
    assert isinstance(manager.load_errors[0].error, RuntimeError)
    assert "unreadable" in str(manager.load_errors[0])


def test_registration_error_is_recorded_once_when_types_are_collected_again() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(registering(NotAPlugin), name="sloppy")
    manager.plugin_types()

    # Registering another module invalidates the cached types; they are collected again.
    manager.register(registering(Good), name="fine")
    types = manager.plugin_types()

    assert types == {"good": Good}
    assert [e.entry_point for e in manager.load_errors] == ["sloppy"]
