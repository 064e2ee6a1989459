"""The ``homelab`` command."""

from __future__ import annotations

import ast
import functools
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio.to_thread
import click
import pytest
from click.testing import CliRunner

from homelab_core import Hub, Metric, Plugin, PluginManager, __version__, hookimpl, load_settings
from homelab_core.cli import cli
from homelab_core.options import REDACTED
from homelab_core.plugins import LOAD_ENV

ROOT = Path(__file__).resolve().parent.parent


def source_tree_env() -> dict[str, str]:
    """This environment, with the source tree first on ``PYTHONPATH``.

    A subprocess then runs the code under test, not whatever copy of homelab_core the
    interpreter has installed.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def run(manager: PluginManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Invoke ``homelab`` in-process with the test plugins, in an empty directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOMELAB_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> click.testing.Result:
        return runner.invoke(cli, list(args), obj=manager, catch_exceptions=False)

    return invoke


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "homelab.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_version_prints_the_package_version(run) -> None:  # type: ignore[no-untyped-def]
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"homelab, version {__version__}"


def test_plugins_lists_types_and_configured_instances(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = write_config(
        tmp_path, '[plugins.web]\ntype = "counter"\ninterval = 5\n[plugins.old]\ntype = "gone"\n'
    )
    result = run("plugins", "--config", config)
    assert result.exit_code == 0
    rows = [line.split() for line in result.output.splitlines()]
    assert [
        "counter",
        "test",
        "0.0.0",
        "sample_plugins",
        "Reports",
        "how",
        "many",
        "times",
        "it",
        "has",
        "run.",
    ] in rows
    assert ["web", "counter", "yes", "5s"] in rows
    assert ["old", "gone", "(not", "installed)", "yes", "-"] in rows


def test_plugins_without_a_file_shows_the_embedded_defaults(run) -> None:  # type: ignore[no-untyped-def]
    result = run("plugins")
    assert "Configured instances (embedded defaults)" in result.output
    assert ["system", "system", "(not", "installed)", "yes", "-"] in [
        line.split() for line in result.output.splitlines()
    ]


def test_run_once_prints_metrics_as_json(run) -> None:  # type: ignore[no-untyped-def]
    result = run("run", "counter", "--once", "--set", "series=2", "--set", "token=s3cret")
    assert result.exit_code == 0, result.output
    output = json.loads(result.output)
    assert output["status"] == "ok"
    assert [(m["name"], m["labels"], m["value"]) for m in output["metrics"]] == [
        ("count", {"series": "0"}, 1.0),
        ("count", {"series": "1"}, 1.0),
    ]
    assert output["config"]["token"] == REDACTED
    assert "s3cret" not in result.output


def test_run_once_with_timing_reports_the_collection_cost(run) -> None:  # type: ignore[no-untyped-def]
    output = json.loads(run("run", "counter", "--once", "--timing").output)
    assert 0 <= output["timing"]["collect_seconds"] < 1


def test_run_a_configured_instance_uses_its_options(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, '[plugins.many]\ntype = "counter"\nseries = 3\n')
    output = json.loads(run("run", "many", "--once", "--config", config).output)
    assert output["instance"] == "many"
    assert len(output["metrics"]) == 3


def test_run_with_a_bad_value_names_the_field_and_type(run) -> None:  # type: ignore[no-untyped-def]
    result = run("run", "counter", "--once", "--set", "series=lots")
    assert result.exit_code == 2
    assert "--set [plugins.counter] series: expected int, got 'lots'" in result.output


def test_run_with_an_unknown_option_lists_the_accepted_ones(run) -> None:  # type: ignore[no-untyped-def]
    result = run("run", "counter", "--once", "--set", "colour=red")
    assert result.exit_code == 2
    assert "colour: unknown field; accepted fields: delay, series, token" in result.output


def test_run_of_an_unknown_target_lists_the_choices(run) -> None:  # type: ignore[no-untyped-def]
    result = run("run", "nosuch", "--once")
    assert result.exit_code == 2
    assert "'nosuch' is neither a configured instance nor an installed plugin type" in (
        result.output
    )
    assert "counter" in result.output


def test_run_without_once_is_a_usage_error(run) -> None:  # type: ignore[no-untyped-def]
    result = run("run", "counter")
    assert result.exit_code == 2
    assert "add --once" in result.output


def test_run_set_needs_key_equals_value(run) -> None:  # type: ignore[no-untyped-def]
    result = run("run", "counter", "--once", "--set", "series")
    assert result.exit_code == 2
    assert "'series' is not key=value" in result.output


def test_a_failing_run_exits_1_with_the_error(run) -> None:  # type: ignore[no-untyped-def]
    result = run("run", "raises", "--once")
    assert result.exit_code == 1
    assert "error: raises: RuntimeError: the sensor is on fire" in result.output


def test_check_config_accepts_a_valid_file(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, '[plugins.a]\ntype = "counter"\nseries = 2\n')
    result = run("check-config", "--config", config)
    assert result.exit_code == 0
    assert f"ok: {config}: 1 plugin instance(s) valid" in result.output


def test_check_config_reports_every_problem(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = write_config(
        tmp_path,
        '[plugins.a]\ntype = "counter"\nseries = "x"\n[plugins.b]\ntype = "nosuch"\n',
    )
    result = run("check-config", "--config", config)
    assert result.exit_code == 2
    assert f"{config} [plugins.a] series: expected int, got 'x'" in result.output
    assert f"{config} [plugins.b] type: unknown plugin type 'nosuch'" in result.output


def test_bad_toml_is_reported_with_the_file(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, "[server\n")
    result = run("check-config", "--config", config)
    assert result.exit_code == 2
    assert f"{config}: not valid TOML" in result.output


def test_missing_config_file_is_reported(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("plugins", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert "nope.toml' does not exist" in result.output


def test_check_config_refuses_a_missing_database_directory(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "no" / "such"
    config = write_config(
        tmp_path,
        f'[database]\nurl = "sqlite://{missing}/homelab.db"\n[plugins.a]\ntype = "counter"\n',
    )
    result = run("check-config", "--config", config)
    assert result.exit_code == 2
    assert (
        f"error: cannot open the store at {missing}/homelab.db: directory '{missing}' does not"
        " exist" in result.output
    )
    assert not missing.exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_check_config_refuses_a_host_beyond_loopback_without_a_token(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, host: str
) -> None:
    config = write_config(tmp_path, f'[server]\nhost = "{host}"\n')
    result = run("check-config", "--config", config)
    assert result.exit_code == 2
    assert f"error: refusing to serve on {host}, beyond loopback, without an API token" in (
        result.output
    )
    assert "--insecure" in result.output
    # What serve accepts, check-config accepts: --insecure, or a token.
    assert run("check-config", "--config", config, "--insecure").exit_code == 0
    with_token = write_config(tmp_path, f'[server]\nhost = "{host}"\napi_token = "t"\n')
    assert run("check-config", "--config", with_token).exit_code == 0


def test_check_config_refuses_auth_all_without_a_token(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, '[server]\nauth = "all"\n')
    result = run("check-config", "--config", config)
    assert result.exit_code == 2
    assert 'error: [server] auth = "all" needs an api_token' in result.output


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("allowed_hosts", '["http://homelab.lan"]', "a host name"),
        ("allowed_hosts", '["homelab.lan/path"]', "a host name"),
        ("allowed_origins", '["homelab.lan"]', "scheme://host"),
        ("allowed_origins", '["http://homelab.lan/"]', "scheme://host"),
    ],
)
def test_check_config_refuses_malformed_allowed_names(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, key: str, value: str, message: str
) -> None:
    config = write_config(tmp_path, f"[server]\n{key} = {value}\n")
    result = run("check-config", "--config", config)
    assert result.exit_code == 2
    assert f"[server] {key}:" in result.output
    assert message in result.output


class Commands:
    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command("hello")
        def hello() -> None:
            """Say hello from a plugin."""
            click.echo("hello from a plugin")


def test_hook_register_commands(manager: PluginManager) -> None:
    manager.register(Commands(), name="commands")
    # A fresh group object: the real one remembers that plugin commands were loaded.
    group = type(cli)(name="homelab", commands=dict(cli.commands))
    result = CliRunner().invoke(group, ["hello"], obj=manager)
    assert result.output == "hello from a plugin\n"
    listing = CliRunner().invoke(group, ["--help"], obj=manager)
    assert "Say hello from a plugin." in listing.output


def test_homelab_run_system_once_prints_cpu_and_memory(tmp_path: Path) -> None:
    """The acceptance check, as a user runs it: a real process and the bundled plugin."""
    result = subprocess.run(
        [sys.executable, "-m", "homelab_core.cli", "run", "system", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=source_tree_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = {m["name"] for m in json.loads(result.stdout)["metrics"]}
    assert {"cpu.percent", "mem.used", "mem.percent"} <= names


class Hijacker:
    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command("run")
        def run() -> None:
            click.echo("hijacked")


def test_a_plugin_cannot_replace_a_built_in_command(manager: PluginManager) -> None:
    manager.register(Hijacker(), name="hijacker")
    group = type(cli)(name="homelab", commands=dict(cli.commands))
    listing = CliRunner().invoke(group, ["--help"], obj=manager)
    assert "plugin 'hijacker' tried to replace the built-in command 'run'" in listing.output
    result = CliRunner().invoke(group, ["run", "counter", "--once"], obj=manager)
    assert "hijacked" not in result.output
    assert json.loads(result.output)["status"] == "ok"


class RegistersJunk:
    @hookimpl
    def register_plugins(self, register: Any) -> None:
        register(dict)


def test_check_config_shows_why_a_plugin_is_missing(
    run, manager: PluginManager, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    manager.register(RegistersJunk(), name="junk")
    config = write_config(tmp_path, '[plugins.a]\ntype = "counter"\n')
    result = run("check-config", "--config", config)
    assert "error: plugin 'junk' registered an invalid type" in result.output
    assert result.exit_code == 0


# -- the enabled state the store remembers -----------------------------------------------


def instance_row(output: str, instance_id: str) -> list[str]:
    """The row of ``instance_id`` in the "Configured instances" table."""
    lines = output.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("Configured instances"))
    [row] = [line.split() for line in lines[start + 2 :] if line.split()[:1] == [instance_id]]
    return row


def config_with_store(tmp_path: Path, *, enabled: bool, db: Path | None = None) -> str:
    db = db if db is not None else tmp_path / "homelab.db"
    return write_config(
        tmp_path,
        f'[database]\nurl = "sqlite://{db}"\n'
        "[scheduler]\njitter = 0\n"
        f'[plugins.web]\ntype = "counter"\ninterval = 3600\nenabled = {str(enabled).lower()}\n',
    )


@pytest.mark.anyio
async def test_plugins_shows_the_enabled_state_the_hub_stored(
    run, manager: PluginManager, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    async def listing(config: str) -> str:
        # The command runs its own event loop (anyio.run), so not in this one.
        result = await anyio.to_thread.run_sync(functools.partial(run, "plugins", "-c", config))
        assert result.exit_code == 0, result.output
        assert "warning" not in result.output
        return str(result.output)

    config = config_with_store(tmp_path, enabled=True)
    async with Hub(load_settings(config), plugin_manager=manager) as hub:
        await hub.set_enabled("web", False)
    # Disabled through the API: it stays disabled, though the file says enabled.
    assert instance_row(await listing(config), "web")[2] == "no"

    async with Hub(load_settings(config), plugin_manager=manager) as hub:
        assert not hub.instance("web").enabled
        await hub.set_enabled("web", True)
    assert instance_row(await listing(config), "web")[2] == "yes"

    # Editing the file's enabled is newer than the API's choice: the file wins.
    config = config_with_store(tmp_path, enabled=False)
    assert instance_row(await listing(config), "web")[2] == "no"
    async with Hub(load_settings(config), plugin_manager=manager) as hub:
        assert not hub.instance("web").enabled


def test_plugins_does_not_create_a_missing_store(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "data" / "homelab.db"
    db.parent.mkdir()
    result = run("plugins", "-c", config_with_store(tmp_path, enabled=True, db=db))
    assert result.exit_code == 0, result.output
    assert instance_row(result.output, "web")[2] == "yes"
    assert list(db.parent.iterdir()) == []


def test_plugins_warns_once_if_the_store_cannot_be_opened(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "homelab.db"
    # An SQLite file with a table of the store's name that the store did not make: the
    # store's migration cannot create its own.
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE homelab_instance (x INTEGER)")
    conn.close()
    result = run("plugins", "-c", config_with_store(tmp_path, enabled=True, db=db))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"warning: cannot open the store at sqlite://{db}?")
    assert 'table "homelab_instance" already exists' in warnings[0]
    assert warnings[0].endswith("; showing the enabled state of the config file instead")
    assert instance_row(result.output, "web")[2] == "yes"


# -- a light command line ----------------------------------------------------------------

#: Libraries that ``homelab --version`` and ``homelab plugins`` (without a store) never need.
HEAVY = ("tortoise", "aiocache", "httpx", "quart")
#: Modules of homelab_core that pull them in.
HEAVY_OWN = ("homelab_core.hub", "homelab_core.store", "homelab_core.scheduler", "homelab_core.web")


def test_cli_imports_nothing_heavy_at_module_level() -> None:
    tree = ast.parse((ROOT / "homelab_core" / "cli.py").read_text(encoding="utf-8"))
    imported = set()
    for node in tree.body:  # module level only; imports inside functions are lazy
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = f"homelab_core.{node.module or ''}" if node.level else node.module or ""
            imported |= {base.rstrip(".")} | {f"{base}.{a.name}" for a in node.names}
    heavy = {
        name
        for name in imported
        for prefix in (*HEAVY, *HEAVY_OWN)
        if name == prefix or name.startswith(f"{prefix}.")
    }
    assert heavy == set()


# Imports homelab_core.cli without running homelab_core/__init__.py (whose own imports are
# not the command line's concern), runs it, then prints which heavy libraries it loaded.
IMPORT_PROBE = """\
import json, sys, types
package = types.ModuleType("homelab_core")
package.__path__ = [sys.argv[1]]
package.__version__ = "0+probe"
sys.modules["homelab_core"] = package
from homelab_core.cli import main
try:
    main(sys.argv[3:])
except SystemExit:
    pass
heavy = json.loads(sys.argv[2])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy)))
"""


@pytest.mark.parametrize("args", [["--version"], ["plugins"]], ids=" ".join)
def test_light_commands_do_not_import_the_hub_or_the_store(args: list[str], tmp_path: Path) -> None:
    env = source_tree_env()
    env[LOAD_ENV] = ""  # the bundled plugins' own imports are not under test here
    env.pop("HOMELAB_CONFIG", None)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            IMPORT_PROBE,
            str(ROOT / "homelab_core"),
            json.dumps([*HEAVY, *HEAVY_OWN]),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # no homelab.toml, and no homelab.db: nothing is stored
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("homelab, version 0+probe" if args == ["--version"] else "Plugin types")
    assert json.loads(lines[-1]) == []


class OddUnit(Plugin):
    """Reports a metric whose unit JSON cannot encode."""

    name = "odd_unit"

    def collect(self) -> list[Metric]:
        return [Metric("fine", 1.0), Metric("odd", 2.0, unit=object())]  # type: ignore[arg-type]


class OddTypes:
    @hookimpl
    def register_plugins(self, register: Any) -> None:
        register(OddUnit)


def test_run_once_reports_a_metric_it_cannot_encode_without_a_traceback(
    run,
    manager: PluginManager,  # type: ignore[no-untyped-def]
) -> None:
    manager.register(OddTypes(), name="odd_types")
    result = run("run", "odd_unit", "--once")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    # Metric refuses the unit where the plugin makes it: the run is an error, said in a line.
    assert "error: odd_unit: TypeError: metric 'odd': unit must be text" in result.output
