"""``homelab serve``: the bundled server, contributed through the ``register_commands`` hook.

Registered by the ``homelab.plugins`` entry point ``web``, so the core CLI never imports
the web layer. Quart and the servers load only when the command runs.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import click

from .. import compat
from ..config import load_settings
from ..errors import ConfigError
from ..hookspecs import hookimpl

SERVERS = ("hypercorn", "uvicorn")


def _url(host: str, port: int, path: str = "") -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"


@click.command("serve")
@click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False),
    default=None,
    help="Path of homelab.toml (default: $HOMELAB_CONFIG or ./homelab.toml).",
)
@click.option("--host", default=None, help="Address to bind (default: [server] host).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port to bind (default: [server] port).",
)
@click.option(
    "--server",
    "server_name",
    type=click.Choice(SERVERS),
    default="hypercorn",
    show_default=True,
    help="ASGI server; uvicorn needs the 'uvicorn' extra.",
)
@click.option(
    "--insecure", is_flag=True, help="Allow binding beyond loopback without an API token."
)
@click.option(
    "--websocket-compression/--no-websocket-compression",
    default=None,
    help="Accept permessage-deflate on /ws/metrics when clients offer it (default: [server]"
    " websocket_compression, off): it costs CPU and memory per client.",
)
def serve(
    config: str | None,
    host: str | None,
    port: int | None,
    server_name: str,
    insecure: bool,
    websocket_compression: bool | None,
) -> None:
    """Serve the REST API, /ws/metrics and the API docs, running every plugin."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    from .auth import bind_problem  # the web layer loads only when the command runs

    problem = bind_problem(settings.server, insecure=insecure)
    if problem:
        raise click.ClickException(problem)
    try:
        from .extension import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the web server needs the 'web' extra (pip install 'homelab-core[web]'): {exc}"
        ) from None
    host, port = settings.server.host, settings.server.port
    if websocket_compression is None:
        websocket_compression = settings.server.websocket_compression
    _check_port(host, port)
    app = create_app(settings)
    app.while_serving(_settle_after_startup)  # type: ignore[type-var]

    def announce(bound_port: int) -> None:
        click.echo(f"Homelab Core serving on {_url(host, bound_port)}", err=True)
        click.echo(f"API docs: {_url(host, bound_port, '/docs')}", err=True)

    if server_name == "uvicorn":
        _run_uvicorn(app, host, port, announce, websocket_compression=websocket_compression)
    else:
        hypercorn_websocket_compression(websocket_compression)
        anyio.run(_run_hypercorn, app, host, port, announce)


def _check_port(host: str, port: int) -> None:
    """Fail with one clear line, before the hub starts, if the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {_url(host, port)}: {exc.strerror or exc}"
            ) from None


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


async def _settle_after_startup() -> AsyncIterator[None]:
    """A ``while_serving`` step registered after the extension's: the hub has started."""
    settle_gc()
    yield


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


def hypercorn_config(host: str, port: int) -> Any:
    """The hypercorn settings of ``homelab serve`` (the benchmarks' baselines use them too)."""
    from hypercorn.config import Config

    config = Config()
    # Hypercorn's messages go through our logging (and its level), printed once.
    config.errorlog = logging.getLogger("homelab.server")
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 10
    return config


async def _run_hypercorn(app: Any, host: str, port: int, announce: Callable[[int], None]) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve

    config = hypercorn_config(host, port)
    stop = anyio.Event()

    async def watch_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stop.set()
                return

    async def shutdown_trigger() -> None:
        await stop.wait()
        # Close WebSockets (1001) now: hypercorn would wait its graceful timeout for them.
        stream = app.extensions["homelab"].stream
        if stream is not None:
            await stream.close_clients()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_signals)
        announce(port)
        await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)
        tg.cancel_scope.cancel()


def _run_uvicorn(
    app: Any,
    host: str,
    port: int,
    announce: Callable[[int], None],
    *,
    websocket_compression: bool = False,
) -> None:
    try:
        import uvicorn
    except ImportError as exc:
        raise click.ClickException(
            f"--server uvicorn needs the 'uvicorn' extra (pip install 'homelab-core[uvicorn]'):"
            f" {exc}"
        ) from None
    announce(port)
    # uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; with these no-op
    # handlers in place that ends the command normally (exit 0) instead of by the signal.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    uvicorn.run(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        ws_per_message_deflate=websocket_compression,
    )


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``homelab serve``."""
    cli.add_command(serve)
