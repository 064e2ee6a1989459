"""``homelab agent``: the hub of a node without the web server.

A small host that only collects (a Pi next to the NAS) runs its pinned instances and its
share of the leased ones, writes to the cluster's PostgreSQL and publishes on its Redis;
the nodes that run ``homelab serve`` show everything (docs/scale-out.md).
"""

from __future__ import annotations

import logging
import signal

import anyio
import click

from .cli_options import config_option, node_option
from .config import Settings
from .errors import ConfigError, HomelabError
from .plugins import PluginManager

log = logging.getLogger("homelab.agent")


async def run_agent(settings: Settings, manager: PluginManager) -> HomelabError | None:
    """Run the hub until SIGINT or SIGTERM (SIGHUP reloads the config file); the error
    that stopped its start, if any."""
    from .hub import Hub  # the hub imports the store (Tortoise): at run time only

    hub = Hub(settings, plugin_manager=manager)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        try:
            await hub.__aenter__()
        except HomelabError as exc:
            return exc
        try:
            click.echo(f"Homelab Core agent: node {hub.node_name!r} running", err=True)
            async for received in signals:
                if received != signal.SIGHUP:
                    break
                try:
                    await hub.reload()
                except HomelabError as exc:
                    log.error("SIGHUP: the config file was not reloaded: %s", exc)
        except BaseException as exc:
            await hub.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await hub.__aexit__(None, None, None)
    return None


@click.command("agent")
@config_option
@node_option
@click.pass_context
def agent_command(ctx: click.Context, config: str | None, node: str | None) -> None:
    """Run this node's plugins without the web server (a host that only collects).

    The settings and every instance are checked first, as ``homelab check-config`` does.
    """
    from .cli import EXIT_CONFIG, check_configuration, load_configuration, plugin_manager

    settings = load_configuration(config)
    apply_node_option(settings, node)
    check_configuration(ctx, settings, insecure=True)  # nothing listens: no bind to check
    failure = anyio.run(run_agent, settings, plugin_manager(ctx))
    if failure is not None:
        click.echo(f"error: {failure}", err=True)
        ctx.exit(EXIT_CONFIG if isinstance(failure, ConfigError) else 1)


def apply_node_option(settings: Settings, node: str | None) -> None:
    """``--node``: this node's name, checked as ``[node] name`` is."""
    if node is None:
        return
    from .cli import ConfigFailure
    from .plugin import SLUG

    if not SLUG.fullmatch(node):
        raise ConfigFailure(
            f"--node {node!r}: a node name is a lowercase slug (letters, digits, '_', '-'),"
            " starting with a letter"
        )
    settings.node.name = node
