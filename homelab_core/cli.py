"""The ``homelab`` command.

It stays light: the hub, the scheduler and the store (and with them Tortoise, aiocache,
httpx) are imported inside the commands that need them, so ``homelab --version`` and
``homelab plugins`` start quickly.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import anyio
import click

from . import __version__
from .cli_options import config_option
from .config import (
    InstanceSettings,
    Settings,
    bind_problem,
    database_problem,
    isolation_for,
    load_settings,
)
from .errors import ConfigError, HomelabError, InvalidArgumentError, StoreError
from .instances import build_instance, plugin_type_for
from .lifecycle import resolve_enabled
from .model import ExecutionStatus
from .options import config_to_dict
from .plugins import PluginManager
from .runner import run_once
from .shutdown import exit_leaving_hung_threads

if TYPE_CHECKING:
    from .plugin import Plugin
    from .store import StoredInstance

#: Exit status for bad configuration or bad arguments.
EXIT_CONFIG = 2


class ConfigFailure(click.ClickException):
    """Bad configuration or options: exits with status 2."""

    exit_code = EXIT_CONFIG


class _Group(click.Group):
    """The root group; adds commands that plugins contribute through ``register_commands``."""

    _plugin_commands_loaded = False

    def _load_plugin_commands(self, ctx: click.Context) -> None:
        if self._plugin_commands_loaded:
            return
        self._plugin_commands_loaded = True
        for warning in _manager(ctx).add_commands(self):
            click.echo(f"warning: {warning}", err=True)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._load_plugin_commands(ctx)
            command = super().get_command(ctx, cmd_name)
        return command


def plugin_manager(ctx: click.Context) -> PluginManager:
    """The command's plugin manager, with its entry points loaded (one per invocation).

    It prints no load errors itself: :func:`check_configuration` does, as ``error:`` lines.
    """
    return _manager(ctx)


def _manager(ctx: click.Context) -> PluginManager:
    root = ctx.find_root()
    if root.obj is None:
        # The CLI prints load errors itself, as "error:" lines, instead of logging them.
        root.obj = PluginManager(log_errors=False)
    manager: PluginManager = root.obj
    manager.load_entry_points()
    return manager


def _settings(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None


def _report_load_errors(manager: PluginManager) -> None:
    for error in manager.load_errors:
        click.echo(f"error: {error}", err=True)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="homelab")
@click.option(
    "--log-level",
    default="WARNING",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="How much to log to stderr.",
)
def cli(log_level: str) -> None:
    """Homelab Core: run monitoring plugins, store and serve their metrics."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


@cli.command("plugins")
@config_option
@click.pass_context
def plugins_command(ctx: click.Context, config: str | None) -> None:
    """List installed plugin types and configured instances."""
    manager = _manager(ctx)
    types = manager.plugin_types()
    _report_load_errors(manager)
    rows = [
        (t.name, t.category, t.version, manager.source_of(t.name), t.description)
        for t in sorted(types.values(), key=lambda t: (t.category, t.name))
    ]
    click.echo("Plugin types")
    click.echo(_table(rows, ["type", "category", "version", "from", "description"]))
    settings = _settings(config)
    click.echo()
    click.echo(
        "Configured instances"
        + (f" ({settings.source})" if settings.source else " (embedded defaults)")
    )
    states = _stored_states(settings) if settings.plugins else {}
    inst_rows = []
    for i in settings.plugins.values():
        installed = types.get(i.type)
        interval = i.interval or (installed.default_interval if installed else None)
        state = states.get(i.id)
        enabled = (
            resolve_enabled(i.enabled, state.enabled, state.config_enabled)
            if state is not None
            else resolve_enabled(i.enabled, None, None)
        )
        inst_rows.append(
            (
                i.id,
                i.type if installed else f"{i.type} (not installed)",
                "yes" if enabled else "no",
                f"{interval:g}s" if interval else "-",
            )
        )
    click.echo(
        _table(inst_rows, ["id", "type", "enabled", "interval"]) if inst_rows else "  (none)"
    )


def _stored_states(settings: Settings) -> Mapping[str, StoredInstance]:
    """What the store remembers of each instance (enabled through the API, say), or nothing.

    An SQLite store whose file does not exist holds nothing, and is not created just to
    list plugins. A store that cannot be opened is a warning: the file's values are shown.
    """
    url = settings.database.url
    if not _may_hold_data(url):
        return {}
    from .store import Store

    async def read() -> Mapping[str, StoredInstance]:
        store = Store(url)
        await store.open()
        try:
            return await store.instance_states()
        finally:
            await store.close()

    try:
        return anyio.run(read)
    except StoreError as exc:
        click.echo(
            f"warning: {exc}; showing the enabled state of the config file instead", err=True
        )
        return {}


def _may_hold_data(url: str) -> bool:
    """False for an SQLite URL whose file does not exist (or an in-memory database)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return True
    path = unquote(parts.netloc + parts.path)
    return path != ":memory:" and Path(path).is_file()


def _parse_sets(values: Sequence[str]) -> dict[str, str]:
    result = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--set")
        result[key.strip()] = value
    return result


@cli.command("run")
@click.argument("target")
@click.option("--once", is_flag=True, help="Run one collection and print it (required).")
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a config field; repeatable."
)
@click.option("--timing", is_flag=True, help="Also print how long the collection took.")
@config_option
@click.pass_context
def run_command(
    ctx: click.Context,
    target: str,
    once: bool,
    sets: Sequence[str],
    timing: bool,
    config: str | None,
) -> None:
    """Run one collection of TARGET (an instance id or a plugin type) and print JSON."""
    if not once:
        raise click.UsageError("add --once: 'homelab run' runs a single collection")

    overrides = _parse_sets(sets)
    manager = _manager(ctx)
    types = manager.plugin_types()
    _report_load_errors(manager)
    settings = _settings(config)
    instance = settings.plugins.get(target)
    if instance is None:
        if target not in types:
            known = sorted({*types, *settings.plugins})
            raise ConfigFailure(
                f"{target!r} is neither a configured instance nor an installed plugin type;"
                f" choose one of: {', '.join(known) or 'none'}"
            )
        instance = InstanceSettings(id=target, type=target)
    try:
        plugin, _, timeout = build_instance(
            instance,
            plugin_type_for(types, instance, settings.source),
            default_timeout=settings.scheduler.default_timeout,
            source=settings.source if target in settings.plugins else "--set",
            overrides=overrides,
        )
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None
    isolation = isolation_for(instance, settings.scheduler)
    try:
        execution, metrics, report = anyio.run(
            lambda: run_once(plugin, instance_id=instance.id, timeout=timeout, isolation=isolation)
        )
    except InvalidArgumentError as exc:
        raise ConfigFailure(f"{instance.id}: {exc}") from None
    output: dict[str, Any] = {
        "instance": instance.id,
        "type": instance.type,
        "status": execution.status.value,
        "error": execution.error,
        "health": ({"state": report.state.value, "message": report.message} if report else None),
        "config": config_to_dict(plugin.config),
        "metrics": [m.to_dict() for m in metrics],
    }
    if execution.cpu is not None:  # it ran in a worker process (isolation = "process")
        output["worker"] = {"cpu_seconds": execution.cpu, "peak_rss_bytes": execution.peak_rss}
    if timing:
        output["timing"] = {"collect_seconds": execution.duration}
    click.echo(json.dumps(output, indent=2))
    if execution.status is not ExecutionStatus.OK:
        click.echo(f"error: {instance.id}: {execution.error}", err=True)
        ctx.exit(1)


def configuration_problems(
    settings: Settings,
    types: Mapping[str, type[Plugin]],
    *,
    insecure: bool = False,
    plugins: PluginManager | None = None,
) -> list[str]:
    """Everything ``homelab serve`` would refuse in ``settings``, one message each.

    Each instance whose type or options are wrong (the first problem of each), the server's
    address without a token (unless ``insecure``) or ``auth = "all"`` without one, and a
    SQLite database whose directory does not exist; with ``plugins``, each notifier whose
    type is not installed or whose options are wrong. Nothing is started or created.
    """
    problems = []
    if plugins is not None:
        from .alerts.service import build_notifier

        for notifier in settings.alerts.notifiers.values():
            try:
                build_notifier(notifier, plugins, where=settings.source)
            except HomelabError as exc:
                problems.append(str(exc))
    for instance in settings.plugins.values():
        try:
            build_instance(
                instance,
                plugin_type_for(types, instance, settings.source),
                default_timeout=settings.scheduler.default_timeout,
                source=settings.source,
            )
        except HomelabError as exc:
            problems.append(str(exc))
    for problem in (
        bind_problem(settings.server, insecure=insecure),
        database_problem(settings.database.url),
    ):
        if problem is not None:
            problems.append(problem)
    return problems


def check_configuration(ctx: click.Context, settings: Settings, *, insecure: bool = False) -> None:
    """Print what :func:`configuration_problems` finds (and plugins that failed to load) as
    ``error:`` lines, and exit with status 2 if it found anything.

    ``homelab check-config`` and ``homelab serve`` both call it, so that they print the
    same lines for the same settings.
    """
    manager = _manager(ctx)
    types = manager.plugin_types()
    # A plugin that failed to load explains an "unknown plugin type" below.
    _report_load_errors(manager)
    problems = configuration_problems(settings, types, insecure=insecure, plugins=manager)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        ctx.exit(EXIT_CONFIG)


def load_configuration(config: str | None) -> Settings:
    """The settings of ``--config`` (or the defaults); bad ones exit with status 2."""
    return _settings(config)


insecure_option = click.option(
    "--insecure",
    is_flag=True,
    help="Allow binding beyond loopback without an API token.",
)


@cli.command("check-config")
@config_option
@insecure_option
@click.pass_context
def check_config_command(ctx: click.Context, config: str | None, insecure: bool) -> None:
    """Validate homelab.toml and every instance's options, as homelab serve would."""
    settings = _settings(config)
    check_configuration(ctx, settings, insecure=insecure)
    where = settings.source or "embedded defaults"
    click.echo(f"ok: {where}: {len(settings.plugins)} plugin instance(s) valid")


@cli.command("schema")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the schema to this file instead of printing it.",
)
@click.pass_context
def schema_command(ctx: click.Context, output: str | None) -> None:
    """Print a JSON Schema of homelab.toml for the installed plugin and notifier types."""
    from .toml_schema import manager_schema

    manager = _manager(ctx)
    schema = manager_schema(manager)
    _report_load_errors(manager)
    text = json.dumps(schema, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from None
    click.echo(f"wrote {output}", err=True)


@cli.command("new-plugin")
@click.argument("name")
@click.option(
    "--directory",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write (default: ./NAME); it must not exist.",
)
def new_plugin_command(name: str, directory: Path | None) -> None:
    """Write a new plugin package for plugin type NAME: pyproject.toml, module, README, tests."""
    from .scaffold import next_steps, write_plugin_package

    try:
        target = write_plugin_package(name, directory)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None
    click.echo(next_steps(name, target))


def _add_alert_commands() -> None:
    from .cli_alerts import add_alert_commands

    add_alert_commands(cli)


_add_alert_commands()


def _add_status_command() -> None:
    from .cli_status import status_command

    cli.add_command(status_command)


_add_status_command()


def _add_agent_command() -> None:
    from .cli_agent import agent_command

    cli.add_command(agent_command)


_add_agent_command()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``homelab`` console script.

    The process ends here even if a plugin's worker thread still hangs (a timed-out sync
    method of ``homelab run`` or ``homelab serve``): see
    :func:`~homelab_core.shutdown.exit_leaving_hung_threads`.
    """
    code: int = 0
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="homelab")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        raise
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        code = 130
        sys.exit(130)
    finally:
        exit_leaving_hung_threads(code)


if __name__ == "__main__":  # pragma: no cover
    main()
