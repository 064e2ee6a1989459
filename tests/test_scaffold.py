"""``homelab new-plugin NAME``: the package it writes installs, lists, runs and tests.

The generated package is really installed with pip (``--target``, no index, no build
isolation) and the ``homelab`` command runs in a subprocess with only ``PYTHONPATH``
pointing at it, as in tests/test_entry_points.py: discovery goes through the entry point of
the generated ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner
from test_entry_points import TIMEOUT, clean_env, homelab, listed_types, pip_install

from homelab_core import Plugin
from homelab_core.cli import EXIT_CONFIG, cli
from homelab_core.errors import ConfigError
from homelab_core.options import secret_fields
from homelab_core.scaffold import scaffold, write_plugin_package

NAME = "demo_check"
MODULE = "homelab_demo_check"


def new_plugin(*args: str, cwd: Path) -> tuple[int, str]:
    """``homelab new-plugin ARGS`` in ``cwd``, in this process: exit status and output."""
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        result = runner.invoke(cli, ["new-plugin", *args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder ``homelab new-plugin demo_check`` wrote into an empty folder."""
    base = tmp_path_factory.mktemp("scaffold")
    code, output = new_plugin(NAME, cwd=base)
    assert code == 0, output
    return base / NAME


@pytest.fixture(scope="module")
def site(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory into which pip really installed the generated package."""
    target = tmp_path_factory.mktemp("site")
    pip_install(generated, target, cwd=generated.parent)
    assert list(target.glob("homelab_demo_check-*.dist-info")), sorted(
        p.name for p in target.iterdir()
    )
    return target


@pytest.fixture
def module(generated: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The generated plugin module, imported in this process from its ``src`` folder."""
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    monkeypatch.syspath_prepend(str(generated / "src"))
    yield importlib.import_module(MODULE)
    sys.modules.pop(MODULE, None)
    importlib.invalidate_caches()


# -- what it writes ----------------------------------------------------------------------


def test_writes_the_package_and_prints_the_next_steps(tmp_path: Path) -> None:
    code, output = new_plugin(NAME, cwd=tmp_path)

    assert code == 0, output
    root = tmp_path / NAME
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "README.md",
        "pyproject.toml",
        f"src/{MODULE}/__init__.py",
        f"src/{MODULE}/py.typed",
        f"tests/test_{NAME}.py",
    ]
    lines = output.splitlines()
    assert f"  cd {NAME}" in lines
    assert "  pip install -e '.[test]'" in lines
    assert "  pytest" in lines
    assert f"  homelab run {NAME} --once" in lines


def test_pyproject_declares_the_distribution_and_entry_point(generated: Path) -> None:
    import tomllib

    project = tomllib.loads((generated / "pyproject.toml").read_text(encoding="utf-8"))
    meta = project["project"]
    assert meta["name"] == "homelab-demo-check"
    assert meta["dependencies"] == ["homelab-core"]
    assert meta["entry-points"]["homelab.plugins"] == {NAME: MODULE}
    assert "pytest>=8" in meta["optional-dependencies"]["test"]


def test_readme_says_how_to_install_run_and_test(generated: Path) -> None:
    readme = (generated / "README.md").read_text(encoding="utf-8")

    assert readme.startswith("# homelab-demo-check\n")
    for command in ("pip install -e '.[test]'", f"homelab run {NAME} --once", "pytest"):
        assert command in readme
    assert "$" + "{" not in readme  # no template placeholder left


def test_the_module_has_a_typed_config_with_a_secret(module: ModuleType) -> None:
    plugin = module.DemoCheck
    assert issubclass(plugin, Plugin)
    assert plugin.name == NAME
    assert plugin.Config is module.DemoCheckConfig
    assert secret_fields(plugin.Config) == {"api_token"}
    assert plugin.description and plugin.category and plugin.default_interval == 60.0
    registered: list[type[Plugin]] = []
    module.register_plugins(registered.append)
    assert registered == [plugin]


def test_a_name_with_dashes_gives_a_module_with_underscores(tmp_path: Path) -> None:
    names = scaffold("my-nas2")
    assert (names.distribution, names.module, names.class_name) == (
        "homelab-my-nas2",
        "homelab_my_nas2",
        "MyNas2",
    )

    root = write_plugin_package("my-nas2", tmp_path / "pkg")

    source = (root / "src" / "homelab_my_nas2" / "__init__.py").read_text(encoding="utf-8")
    compile(source, "__init__.py", "exec")
    assert 'name = "my-nas2"' in source
    assert 'Metric("my-nas2.items"' in source
    compile((root / "tests" / "test_my_nas2.py").read_text(encoding="utf-8"), "t.py", "exec")
    assert 'my-nas2 = "homelab_my_nas2"' in (root / "pyproject.toml").read_text(encoding="utf-8")


def test_directory_option_chooses_the_folder(tmp_path: Path) -> None:
    code, output = new_plugin(NAME, "--directory", "deep/er/pkg", cwd=tmp_path)

    assert code == 0, output
    assert (tmp_path / "deep/er/pkg/pyproject.toml").is_file()
    assert not (tmp_path / NAME).exists()
    assert "  cd deep/er/pkg" in output.splitlines()


def test_the_generated_code_is_ruff_clean_by_its_own_settings(generated: Path) -> None:
    """An author who runs ruff on the new package starts from no complaints."""
    pytest.importorskip("ruff", reason="ruff is not installed (it is in the dev extra)")
    for args in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args],
            cwd=generated,
            env=clean_env(None),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


# -- what it refuses ---------------------------------------------------------------------


@pytest.mark.parametrize("make", ["folder", "empty folder", "file"])
def test_refuses_an_existing_path(tmp_path: Path, make: str) -> None:
    existing = tmp_path / NAME
    if make == "file":
        existing.write_text("mine", encoding="utf-8")
    else:
        existing.mkdir()
        if make == "folder":
            (existing / "keep.txt").write_text("mine", encoding="utf-8")

    code, output = new_plugin(NAME, cwd=tmp_path)

    assert code == EXIT_CONFIG
    kind = "file" if make == "file" else "folder"
    assert output == f"Error: {NAME}: a {kind} of that name already exists; choose another\n"
    if make == "file":
        assert existing.read_text(encoding="utf-8") == "mine"
    else:
        assert [p.name for p in existing.iterdir()] == (["keep.txt"] if make == "folder" else [])


@pytest.mark.parametrize("name", ["DemoCheck", "9lives", "demo.check", "demo check", "_x", ""])
def test_refuses_a_name_that_is_not_a_slug(tmp_path: Path, name: str) -> None:
    code, output = new_plugin(name, cwd=tmp_path)

    assert code == EXIT_CONFIG
    assert output.count("\n") == 1
    assert output.startswith(f"Error: plugin name {name!r} is not a valid slug:")
    assert "lowercase letter" in output
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_name_too_long_for_a_slug(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at most 63 characters"):
        write_plugin_package("x" * 64, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


# -- installed -----------------------------------------------------------------------------


def test_homelab_plugins_lists_it_once_installed(site: Path, tmp_path: Path) -> None:
    result = homelab(["plugins"], pythonpath=site, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    rows = listed_types(result.stdout)
    # type, category, version, from (the entry point's name)
    assert rows[NAME][:4] == [NAME, "other", "0.1.0", NAME]
    assert "error" not in result.stderr


def test_homelab_run_once_prints_its_metrics(site: Path, tmp_path: Path) -> None:
    result = homelab(
        ["run", NAME, "--once", "--set", "target=nas.lan", "--set", "api_token=s3cret-xyz"],
        pythonpath=site,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "s3cret-xyz" not in result.stdout + result.stderr
    output = json.loads(result.stdout)
    assert output["status"] == "ok"
    assert output["config"]["api_token"] != "s3cret-xyz"
    metrics = {m["name"]: m for m in output["metrics"]}
    assert sorted(metrics) == [f"{NAME}.authenticated", f"{NAME}.duration", f"{NAME}.items"]
    assert metrics[f"{NAME}.items"]["value"] == 3
    assert metrics[f"{NAME}.items"]["unit"] == "items"
    assert metrics[f"{NAME}.items"]["labels"] == {"target": "nas.lan"}
    assert metrics[f"{NAME}.authenticated"]["value"] == 1
    assert metrics[f"{NAME}.duration"]["unit"] == "s"


def test_its_generated_tests_pass(site: Path, generated: Path) -> None:
    pytest.importorskip(
        "homelab_core.testing",
        reason="the generated tests use the plugin-author kit, homelab_core.testing,"
        " which is not in this tree yet",
    )
    env = clean_env(site)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=generated,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_the_tutorial_shows_what_the_command_prints(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "writing-plugins.md").read_text(
        encoding="utf-8"
    )
    section = doc.split("## Start from the scaffold\n", 1)[1].split("\n## ", 1)[0]
    shown = section.split("```console\n", 1)[1].split("```", 1)[0]
    command, _, printed = shown.partition("\n")

    code, output = new_plugin(*command.removeprefix("$ homelab new-plugin ").split(), cwd=tmp_path)

    assert code == 0, output
    assert output == printed
