"""``homelab new-plugin NAME``: write a new plugin package, ready to install and test.

The package has a ``pyproject.toml`` with the ``homelab.plugins`` entry point, a plugin
module whose ``Config`` class has a secret option, a README, and tests written with the
plugin-author kit (:mod:`homelab_core.testing`). Its tests pass as generated, and
``homelab plugins`` lists it once it is installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from string import Template

import attrs

from .errors import ConfigError
from .plugin import SLUG

__all__ = ["Scaffold", "next_steps", "scaffold", "write_plugin_package"]


@attrs.frozen
class Scaffold:
    """The names a new plugin package is built from, all derived from the type's name."""

    #: The plugin type's name (``homelab run <name> --once``) and the entry point's name.
    name: str
    #: The distribution's name, with dashes: ``homelab-demo-check``.
    distribution: str
    #: The importable package: ``homelab_demo_check``.
    module: str
    #: The plugin class: ``DemoCheck``.
    class_name: str
    #: The human title: ``Demo check``.
    title: str


def scaffold(name: str) -> Scaffold:
    """The names of the package for plugin type ``name``; a name that is not a slug raises
    :class:`~homelab_core.errors.ConfigError` saying why."""
    if not SLUG.fullmatch(name):
        raise ConfigError(
            f"plugin name {name!r} is not a valid slug: it must start with a lowercase letter"
            " and have only lowercase letters, digits, '_' and '-' (at most 63 characters)"
        )
    words = [word for word in name.replace("-", "_").split("_") if word]
    return Scaffold(
        name=name,
        distribution="homelab-" + "-".join(words),
        module="homelab_" + "_".join(words),
        class_name="".join(word.capitalize() for word in words),
        title=" ".join(words).capitalize(),
    )


def _files(names: Scaffold) -> dict[str, str]:
    """Each file of the package, by path relative to its folder."""
    values = {
        "name": names.name,
        "distribution": names.distribution,
        "module": names.module,
        "cls": names.class_name,
        "title": names.title,
        "test_file": f"test_{names.name.replace('-', '_')}.py",
    }
    return {
        "pyproject.toml": Template(PYPROJECT).substitute(values),
        "README.md": Template(README).substitute(values),
        f"src/{names.module}/__init__.py": Template(MODULE).substitute(values),
        f"src/{names.module}/py.typed": "",
        f"tests/{values['test_file']}": Template(TESTS).substitute(values),
    }


def write_plugin_package(name: str, directory: Path | None = None) -> Path:
    """Write the package of plugin type ``name`` into ``directory`` (default ``./name``).

    Returns the folder written. Raises :class:`~homelab_core.errors.ConfigError` for a name
    that is not a slug or a folder (or file) that already exists; nothing is written then.
    """
    names = scaffold(name)
    target = Path(directory) if directory is not None else Path(name)
    if target.exists() or target.is_symlink():
        kind = "folder" if target.is_dir() else "file"
        raise ConfigError(f"{target}: a {kind} of that name already exists; choose another")
    files: Mapping[str, str] = _files(names)
    try:
        target.mkdir(parents=True)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot create the folder: {exc.strerror or exc}") from None
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def next_steps(name: str, target: Path) -> str:
    """What to do after :func:`write_plugin_package`, as printed by ``homelab new-plugin``."""
    return (
        f"wrote the plugin package {scaffold(name).distribution} in {target}\n"
        "next steps:\n"
        f"  cd {target}\n"
        "  pip install -e '.[test]'\n"
        "  pytest\n"
        f"  homelab run {name} --once"
    )


PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "A Homelab Core plugin: $title."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["homelab-core"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This table is what makes Homelab Core find the plugin: name = module with the hooks.
[project.entry-points."homelab.plugins"]
$name = "$module"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
$module = ["py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.ruff]
line-length = 100
src = ["src", "tests"]

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP"]

[tool.ruff.lint.flake8-bugbear]
# option() builds an attrs field, like attrs.field().
extend-immutable-calls = ["homelab_core.option"]
"""

README = """\
# $distribution

A [Homelab Core](https://pypi.org/project/homelab-core/) plugin that adds the plugin type
`$name`. It was generated by `homelab new-plugin $name`; replace the example options and
metrics in `src/$module/__init__.py` with your own.

## Install

```console
$$ pip install -e '.[test]'      # from this folder, with the test dependencies
$$ homelab plugins                # lists the type $name
```

## Run

One collection, printed as JSON (options as `--set key=value`):

```console
$$ homelab run $name --once
$$ homelab run $name --once --set target=nas.lan --set items=5
```

Or configure instances in `homelab.toml` and run them with `homelab serve`:

```toml
[plugins.nas]
type = "$name"
interval = 60
target = "nas.lan"
```

`api_token` is a secret option: every output shows it redacted. Rather than writing it in
the file, set it from the environment: `HOMELAB_PLUGINS__NAS__API_TOKEN=...`.

## Test

```console
$$ pytest
```

The tests in `tests/$test_file` use the plugin-author kit, `homelab_core.testing`:
`run_plugin()` runs the plugin once, as `homelab run --once` does, and returns its
metrics, health and status.
"""

MODULE = '''\
"""$distribution: the plugin type ``$name``."""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
from homelab_core import Metric, Plugin, hookimpl, option


@attrs.define
class ${cls}Config:
    """Options of a ``$name`` instance (``[plugins.<id>]`` in homelab.toml)."""

    target: str = option("localhost", description="What to check.")
    api_token: str = option(
        "", description="Token for the target; redacted in every output.", secret=True
    )
    items: int = option(3, description="How many items to report.", minimum=0)


class $cls(Plugin[${cls}Config]):
    """Reports how many items ``target`` has, and whether a token was configured."""

    name = "$name"
    title = "$title"
    category = "other"
    description = "Reports the items of a target (an example to replace with your own)."
    version = "0.1.0"
    default_interval = 60.0

    def collect(self) -> list[Metric]:
        started = time.perf_counter()
        # Measure something real here; a plain def runs in a worker thread, so it may block.
        items = self.config.items
        authenticated = 1 if self.config.api_token else 0
        labels = {"target": self.config.target}
        return [
            Metric("$name.items", items, unit="items", labels=labels),
            Metric("$name.authenticated", authenticated, labels=labels),
            Metric("$name.duration", time.perf_counter() - started, unit="s", labels=labels),
        ]


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``$name`` plugin type."""
    register($cls)
'''

TESTS = '''\
"""Tests of the ``$name`` plugin type, with the plugin-author kit."""

from __future__ import annotations

from homelab_core.testing import run_plugin

from $module import $cls


def test_reports_the_items_of_its_target() -> None:
    run = run_plugin($cls, target="nas.lan", items=5)
    run.assert_ok()
    assert run.value("$name.items", target="nas.lan") == 5
    assert run.value("$name.duration", target="nas.lan") >= 0


def test_a_token_makes_it_authenticated() -> None:
    assert run_plugin($cls).value("$name.authenticated", target="localhost") == 0
    run = run_plugin($cls, api_token="s3cret-token")
    run.assert_ok()
    assert run.value("$name.authenticated", target="localhost") == 1


def test_is_installed_under_its_name() -> None:
    # By its name: found through the entry point in pyproject.toml, as `homelab run` finds it.
    run = run_plugin("$name")
    run.assert_ok()
    assert run.has("$name.items")
'''
