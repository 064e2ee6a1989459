"""The bundled ``tcp`` plugin: whether a TCP port accepts connections, and how fast.

A port that refuses, a host that does not resolve and a connection that times out are
measurements (``tcp.up`` = 0 and a ``failing`` health saying why), not failures of the
plugin: the collection succeeds so the series keep their points while the target is down.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable
from typing import Any

import anyio
import attrs

from homelab_core import HealthReport, Metric, Plugin, hookimpl, option


def _host(_: Any, __: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise ValueError("'host' must not be empty")
    if any(c.isspace() for c in value) or "/" in value:
        raise ValueError(f"'host' must be a host name or an IP address, got {value!r}")


@attrs.define
class TcpConfig:
    """Options of a ``tcp`` instance."""

    host: str = option(description="Host name or IP address to connect to.", validator=_host)
    port: int = option(description="TCP port, 1 to 65535.", minimum=1, maximum=65535)
    connect_timeout: float = option(
        5.0,
        description="Seconds to wait for the connection before reporting the port down."
        " Keep it below the instance's run 'timeout'.",
        exclusive_minimum=0,
    )


def target(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _first_os_error(exc: BaseException) -> OSError | None:
    """The most specific OSError in ``exc``, its cause chain or exception group."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    found: OSError | None = None
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        elif isinstance(current, OSError) and (found is None or found.errno is None):
            found = current
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)
    return found


def describe_connect_error(where: str, exc: BaseException, timeout: float) -> str:
    """A sentence saying why connecting to ``where`` failed."""
    if isinstance(exc, TimeoutError):
        return f"{where} did not accept a connection within {timeout:g} s"
    error = _first_os_error(exc) or exc
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host of {where}: {error.strerror or error}"
    if isinstance(error, ConnectionRefusedError) or getattr(error, "errno", None) == (
        errno.ECONNREFUSED
    ):
        return f"{where} refused the connection"
    if isinstance(error, TimeoutError):
        return f"{where} did not accept a connection within {timeout:g} s"
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return f"cannot connect to {where}: {reason}"


class Tcp(Plugin[TcpConfig]):
    """Connects to one TCP port per run and reports whether, and how fast, it answered."""

    name = "tcp"
    title = "TCP port"
    category = "network"
    description = "Whether a TCP port accepts connections, and how long connecting takes."
    version = "1.0.0"
    default_interval = 30.0

    _report: HealthReport | None = None

    async def collect(self) -> list[Metric]:
        """Open one connection, time it and close it again."""
        host, port, timeout = self.config.host, self.config.port, self.config.connect_timeout
        where = target(host, port)
        started = time.perf_counter()
        try:
            with anyio.fail_after(timeout):
                stream = await anyio.connect_tcp(host, port)
        except (OSError, TimeoutError) as exc:
            # The target being down is a measurement, not a failure of the plugin.
            self._report = HealthReport("failing", describe_connect_error(where, exc, timeout))
            return [Metric("tcp.up", 0, device_class="connectivity")]
        elapsed = time.perf_counter() - started
        with anyio.move_on_after(1):
            await stream.aclose()
        self._report = HealthReport(
            "ok", f"{where} accepted a connection in {elapsed * 1000:.1f} ms"
        )
        return [
            Metric("tcp.up", 1, device_class="connectivity"),
            Metric("tcp.connect_time", elapsed, "s", device_class="duration"),
        ]

    async def health(self) -> HealthReport | None:
        """Whether the port accepted the last connection, and why not if it did not."""
        return self._report


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``tcp`` plugin type."""
    register(Tcp)
