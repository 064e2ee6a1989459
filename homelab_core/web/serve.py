"""``homelab serve``: the bundled server, contributed through the ``register_commands`` hook.

Registered by the ``homelab.plugins`` entry point ``web``, so the core CLI never imports
the web layer. Quart and the servers load only when the command runs.
"""

from __future__ import annotations

import errno
import gc
import importlib.util
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import click
from anyio.abc import TaskStatus

from .. import compat
from ..cli import (
    EXIT_CONFIG,
    ConfigFailure,
    check_configuration,
    insecure_option,
    load_configuration,
    plugin_manager,
)
from ..cli_agent import apply_node_option
from ..cli_options import config_option, node_option
from ..config import Settings
from ..errors import ConfigError, HomelabError
from ..hookspecs import hookimpl
from ..plugins import PluginManager

if TYPE_CHECKING:
    from ..hub import Hub

SERVERS = ("hypercorn", "uvicorn")
#: Connections the listening socket holds while the server is busy (hypercorn's default).
BACKLOG = 100


def _url(host: str, port: int, path: str = "") -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"


@click.command("serve")
@config_option
@node_option
@click.option("--host", default=None, help="Address to bind (default: [server] host).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port to bind (default: [server] port); 0 binds a free port and prints it.",
)
@click.option(
    "--server",
    "server_name",
    type=click.Choice(SERVERS),
    default="hypercorn",
    show_default=True,
    help="ASGI server; uvicorn needs the 'uvicorn' extra.",
)
@insecure_option
@click.option(
    "--websocket-compression/--no-websocket-compression",
    default=None,
    help="Accept permessage-deflate on /ws/metrics when clients offer it (default: [server]"
    " websocket_compression, off): it costs CPU and memory per client.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    config: str | None,
    node: str | None,
    host: str | None,
    port: int | None,
    server_name: str,
    insecure: bool,
    websocket_compression: bool | None,
) -> None:
    """Serve the REST API, /ws/metrics and the API docs, running every plugin.

    Everything that can be checked is checked before the server says it serves: the
    settings and every instance, as ``homelab check-config`` does (the same lines, exit
    status 2), then the address is bound and the hub started (the store opened and
    migrated). Only then is the address printed.
    """
    settings = load_configuration(config)
    apply_node_option(settings, node)
    if host is not None:
        settings.server.host = host
    if port:
        settings.server.port = port
    check_configuration(ctx, settings, insecure=insecure)
    try:
        from .extension import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the web server needs the 'web' extra (pip install 'homelab-core[web]'): {exc}"
        ) from None
    if server_name == "uvicorn" and importlib.util.find_spec("uvicorn") is None:
        raise click.ClickException(
            "--server uvicorn needs the 'uvicorn' extra (pip install 'homelab-core[uvicorn]')"
        )
    if websocket_compression is None:
        websocket_compression = settings.server.websocket_compression
    host = settings.server.host
    with _bind(host, settings.server.port if port is None else port) as sock:
        # The port bound (a free one for --port 0) is the server's: its Host check uses it.
        settings.server.port = sock.getsockname()[1]

        def announce() -> None:
            bound = settings.server.port
            click.echo(f"Homelab Core serving on {_url(host, bound)}", err=True)
            click.echo(f"API docs: {_url(host, bound, '/docs')}", err=True)

        if server_name == "hypercorn":
            hypercorn_websocket_compression(websocket_compression)
        run = _Run(settings, plugin_manager(ctx), create_app, announce)
        failure = anyio.run(run.serve, sock, server_name, websocket_compression)
    if failure is not None:
        click.echo(f"error: {failure}", err=True)
        ctx.exit(EXIT_CONFIG if isinstance(failure, ConfigError) else 1)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``; one clear line if it cannot be had.

    Bound here rather than by the server, so that a port in use fails before the hub
    starts, ``--port 0`` has its port before the address is printed, and connections
    made once it is printed wait in the backlog instead of being refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        message = f"cannot listen on {_url(host, port)}: {exc.strerror or exc}"
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            # No such address on this machine: the host setting is wrong.
            raise ConfigFailure(message) from None
        raise click.ClickException(message) from None  # in use, or not allowed
    sock.set_inheritable(True)
    return sock


log = logging.getLogger("homelab.serve")


@attrs.define
class _Run:
    """One run of ``homelab serve``: the hub, then the app and its server, until a signal."""

    settings: Settings
    manager: PluginManager
    create_app: Callable[..., Any]
    announce: Callable[[], None]
    #: Set by SIGINT or SIGTERM.
    stop: anyio.Event = attrs.field(init=False)
    #: The hub's start, which a signal cancels.
    starting: anyio.CancelScope = attrs.field(init=False)
    #: Whether the hub has started (a signal then stops the server, and the hub drains).
    started: bool = attrs.field(init=False, default=False)
    #: The running hub (SIGHUP reloads its config file).
    hub: Any = attrs.field(init=False, default=None)

    async def serve(
        self, sock: socket.socket, server_name: str, websocket_compression: bool
    ) -> HomelabError | None:
        """Serve until SIGINT or SIGTERM; the error that stopped the start, if any."""
        self.stop, self.starting = anyio.Event(), anyio.CancelScope()
        failure: HomelabError | None = None
        async with anyio.create_task_group() as tg:
            await tg.start(self._watch_signals)
            try:
                failure = await self._serve(sock, server_name, websocket_compression)
            finally:
                tg.cancel_scope.cancel()
        return failure

    async def _started(self) -> AsyncIterator[None]:
        """A ``while_serving`` step after the extension's: everything has started."""
        settle_gc()
        self.announce()
        yield

    async def _watch_signals(self, *, task_status: TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            task_status.started()
            async for received in signals:
                if received == signal.SIGHUP:
                    await self._reload()
                    continue
                self.stop.set()
                if not self.started:
                    self.starting.cancel()  # a start still under way (a database that hangs)

    async def _reload(self) -> None:
        """SIGHUP: read the config file again and apply it (as ``POST /api/reload``)."""
        if self.hub is None or not self.started:
            log.warning("SIGHUP: the server is still starting; nothing reloaded")
            return
        try:
            await self.hub.reload()  # it logs what it changed
        except HomelabError as exc:
            log.error("SIGHUP: the config file was not reloaded, nothing changed: %s", exc)

    async def _serve(
        self, sock: socket.socket, server_name: str, websocket_compression: bool
    ) -> HomelabError | None:
        from ..hub import Hub  # at run time only: the hub imports the store (Tortoise)

        hub = self.hub = Hub(self.settings, plugin_manager=self.manager)
        # The scope encloses the hub's whole life (its task group must nest in it), but a
        # signal cancels it only while the hub starts: never during the drain.
        with self.starting:
            try:
                await hub.__aenter__()
            except HomelabError as exc:
                return exc
            self.started = True
            try:
                await self._serve_app(hub, sock, server_name, websocket_compression)
            except BaseException as exc:
                await hub.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            await hub.__aexit__(None, None, None)
        return None  # served, or stopped by a signal before the hub had started

    async def _serve_app(
        self, hub: Hub, sock: socket.socket, server_name: str, websocket_compression: bool
    ) -> None:
        app = self.create_app(self.settings, hub=hub)
        app.while_serving(self._started)
        if self.stop.is_set():
            return
        # In a task of its own: hypercorn's asyncio.TaskGroup leaves its task marked as
        # being cancelled (Python 3.11), which would cancel the hub's writer during the
        # drain if the hub's task were that task.
        async with anyio.create_task_group() as server:
            if server_name == "uvicorn":
                server.start_soon(_run_uvicorn, app, sock, self.stop, websocket_compression)
            else:
                server.start_soon(_run_hypercorn, app, sock, self.stop)


def settle_gc() -> None:
    """Move every object alive now out of the garbage collector's sight (``gc.freeze``).

    The modules, the app, the hub and the web layer live as long as the process; without
    this, each full collection walks all of them again and delays every request in flight
    (measured on a bare Quart app: docs/performance.md, ``rest_latest``). Called once
    everything has started; only by ``homelab serve``: an app that embeds the extension
    owns its process.
    """
    gc.collect()
    gc.freeze()


def hypercorn_websocket_compression(enabled: bool) -> None:
    """Whether hypercorn accepts permessage-deflate when a WebSocket client offers it.

    Hypercorn has no setting for it: it accepts whenever a client offers, and browsers
    always offer. Compressing every message for every client (small messages, to clients
    on a LAN) was the costliest part of the broadcast, in CPU, memory and latency alike
    (the figures: docs/performance.md, ``websocket_fanout``). Disabled, the handshake
    ignores the client's offer and the connection is not compressed.

    This changes hypercorn for the whole process (through a private method: see
    :func:`~homelab_core.compat.hypercorn_permessage_deflate`): ``homelab serve`` owns its
    process; an app that embeds the extension may call it for itself.
    """
    compat.hypercorn_permessage_deflate(enabled)


def hypercorn_config(host: str, port: int, *, sock: socket.socket | None = None) -> Any:
    """The hypercorn settings of ``homelab serve`` (the benchmarks' baselines use them too).

    With ``sock``, hypercorn serves on that listening socket, which it then owns.
    """
    from hypercorn.config import Config

    config = Config()
    # Hypercorn's messages go through our logging (and its level), printed once.
    config.errorlog = logging.getLogger("homelab.server")
    if sock is not None:
        config.bind = [f"fd://{sock.detach()}"]
    else:
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 10
    return config


async def _run_hypercorn(app: Any, sock: socket.socket, stop: anyio.Event) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve

    host, port = sock.getsockname()[:2]
    config = hypercorn_config(host, port, sock=sock)

    async def shutdown_trigger() -> None:
        await stop.wait()
        # Close WebSockets (1001) now: hypercorn would wait its graceful timeout for them.
        stream = app.extensions["homelab"].stream
        if stream is not None:
            await stream.close_clients()

    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)


async def _run_uvicorn(
    app: Any, sock: socket.socket, stop: anyio.Event, websocket_compression: bool
) -> None:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            lifespan="on",
            log_level="warning",
            ws_per_message_deflate=websocket_compression,
        )
    )

    async def stop_on_signal() -> None:
        await stop.wait()
        server.should_exit = True

    # uvicorn handles SIGINT and SIGTERM itself while it serves (and passes them on
    # afterwards, to the watcher of _Run, which then has nothing left to stop).
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal)
        await server.serve(sockets=[sock])
        tg.cancel_scope.cancel()


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``homelab serve``."""
    cli.add_command(serve)
