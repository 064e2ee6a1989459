"""The bundled ``ping`` plugin: whether a host answers ICMP echo requests, and how fast.

The echo requests are built and sent here with the stdlib ``socket`` module: over a raw
socket when the process may open one (root, or ``CAP_NET_RAW``), otherwise over an
unprivileged ICMP datagram socket (allowed when ``net.ipv4.ping_group_range`` includes the
process's group). A host that does not answer, or does not resolve, is a measurement
(``ping.up`` = 0 and a ``failing`` health), not a failure of the plugin; being allowed to
open neither kind of socket is one.
"""

from __future__ import annotations

import errno
import secrets
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from homelab_core import HealthReport, Metric, Plugin, hookimpl, option

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
#: Largest payload that fits an IPv4 packet (65535 - 20 byte IP header - 8 byte ICMP header).
MAX_PAYLOAD = 65507
#: The payload starts with the send time (8 bytes) and a per-run token (8 bytes).
_STAMP = struct.Struct("!d8s")

PERMISSION_HINT = (
    "the process may open neither a raw ICMP socket nor an unprivileged ICMP datagram"
    " socket: run it as root, give the Python interpreter CAP_NET_RAW"
    " (setcap cap_net_raw+ep <python>), or widen net.ipv4.ping_group_range to include"
    " the process's group (sysctl -w net.ipv4.ping_group_range='0 2147483647')"
)


def _host(_: Any, __: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise ValueError("'host' must not be empty")
    if any(c.isspace() for c in value) or "/" in value:
        raise ValueError(f"'host' must be a host name or an IP address, got {value!r}")


@attrs.define
class PingConfig:
    """Options of a ``ping`` instance."""

    host: str = option(description="Host name or IP address to ping.", validator=_host)
    count: int = option(3, description="Echo requests per run, 1 to 100.", minimum=1, maximum=100)
    probe_interval: float = option(
        0.2,
        description="Seconds between the starts of two echo requests of one run.",
        minimum=0,
    )
    probe_timeout: float = option(
        1.0,
        description="Seconds to wait for the reply to each echo request. A run takes up to"
        " count * max(probe_interval, probe_timeout): keep that below the run 'timeout'.",
        exclusive_minimum=0,
    )
    payload_size: int = option(
        56,
        description=f"Bytes of payload per echo request, {_STAMP.size} to {MAX_PAYLOAD}.",
        minimum=_STAMP.size,
        maximum=MAX_PAYLOAD,
    )


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(family: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP (or ICMPv6) echo request; the kernel fills in the ICMPv6 checksum."""
    kind = ICMP6_ECHO_REQUEST if family == socket.AF_INET6 else ICMP_ECHO_REQUEST
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if family == socket.AF_INET6:
        return header + payload
    return struct.pack("!BBHHH", kind, 0, checksum(header + payload), ident, seq) + payload


def _open_socket(family: int, kind: int) -> socket.socket:
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    return socket.socket(family, kind, proto)


def open_icmp_socket(family: int, kinds: Sequence[int]) -> socket.socket:
    """The first kind of ICMP socket in ``kinds`` that the process may open."""
    denied: list[OSError] = []
    for kind in kinds:
        try:
            return _open_socket(family, kind)
        except OSError as exc:  # EPERM / EACCES: not allowed; others are real errors
            if exc.errno not in (errno.EPERM, errno.EACCES):
                raise
            denied.append(exc)
    raise PermissionError(errno.EPERM, PERMISSION_HINT) from (denied[-1] if denied else None)


def _same_address(a: str, b: str) -> bool:
    a, b = a.split("%", 1)[0], b.split("%", 1)[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, a) == socket.inet_pton(family, b)
        except OSError:
            continue
    return a == b


@attrs.frozen
class PingResult:
    """What one run of echo requests found."""

    where: str
    sent: int
    rtts: list[float]
    error: str | None = None

    @property
    def received(self) -> int:
        return len(self.rtts)

    @property
    def loss(self) -> float:
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 100.0


def ping(
    host: str,
    *,
    count: int,
    interval: float,
    probe_timeout: float,
    payload_size: int,
    kinds: Sequence[int] = (socket.SOCK_RAW, socket.SOCK_DGRAM),
) -> PingResult:
    """Send ``count`` echo requests to ``host``, one after the other (blocking)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    address = str(sockaddr[0])
    where = host if _same_address(host, address) else f"{host} ({address})"
    reply_type = ICMP6_ECHO_REPLY if family == socket.AF_INET6 else ICMP_ECHO_REPLY
    token = secrets.token_bytes(8)
    ident = secrets.randbelow(0x10000)
    first_seq = secrets.randbelow(0x10000)
    rtts: list[float] = []
    error: str | None = None
    sent = 0
    with open_icmp_socket(family, kinds) as sock:
        raw = sock.type == socket.SOCK_RAW
        next_send = time.perf_counter()
        for n in range(count):
            if (pause := next_send - time.perf_counter()) > 0:
                time.sleep(pause)
            seq = (first_seq + n) & 0xFFFF
            payload = _STAMP.pack(time.time(), token).ljust(payload_size, b"\xa5")
            started = time.perf_counter()
            next_send = started + interval
            try:
                sock.sendto(echo_request(family, ident, seq, payload), sockaddr)
            except OSError as exc:  # no route, network down...: the probe is lost
                sent += 1
                error = exc.strerror or str(exc)
                continue
            sent += 1
            deadline = started + probe_timeout
            while (remaining := deadline - time.perf_counter()) > 0:
                sock.settimeout(remaining)
                try:
                    data, source = sock.recvfrom(65535)
                except TimeoutError:
                    break
                except OSError as exc:  # e.g. an ICMP error queued on a datagram socket
                    error = exc.strerror or str(exc)
                    continue
                received_at = time.perf_counter()
                if raw and family == socket.AF_INET:
                    data = data[(data[0] & 0x0F) * 4 :] if data else data
                if len(data) < 8 + _STAMP.size or not _same_address(str(source[0]), address):
                    continue
                kind, _, _, r_ident, r_seq = struct.unpack_from("!BBHHH", data)
                # A datagram socket only sees replies to itself, with the identifier the
                # kernel chose; a raw socket sees every echo (and our own requests on lo).
                if kind != reply_type or r_seq != seq or (raw and r_ident != ident):
                    continue
                if _STAMP.unpack_from(data, 8)[1] != token:
                    continue
                rtts.append(received_at - started)
                break
    return PingResult(where, sent, rtts, error)


def judge(result: PingResult) -> HealthReport:
    """``ok`` when every request was answered, ``degraded`` on some loss, else ``failing``."""
    pings = f"{result.sent} ping{'s' if result.sent != 1 else ''}"
    if not result.rtts:
        reason = f" ({result.error})" if result.error else ""
        return HealthReport("failing", f"{result.where} did not answer any of {pings}{reason}")
    rtt = "rtt min/avg/max " + "/".join(f"{v * 1000:.3g}" for v in _stats(result.rtts)) + " ms"
    if result.received < result.sent:
        return HealthReport(
            "degraded",
            f"{result.where} answered {result.received} of {pings}"
            f" ({result.loss:.0f}% loss), {rtt}",
        )
    return HealthReport("ok", f"{result.where} answered {result.received} of {pings}, {rtt}")


def _stats(rtts: Sequence[float]) -> tuple[float, float, float]:
    return min(rtts), sum(rtts) / len(rtts), max(rtts)


def metrics(result: PingResult) -> list[Metric]:
    """The metrics of one run."""
    found = [
        Metric("ping.up", 1 if result.rtts else 0, device_class="connectivity"),
        Metric("ping.packet_loss", result.loss, "%"),
        Metric("ping.sent", result.sent),
        Metric("ping.received", result.received),
    ]
    if result.rtts:
        low, avg, high = _stats(result.rtts)
        found += [
            Metric("ping.rtt_min", low, "s", device_class="duration"),
            Metric("ping.rtt_avg", avg, "s", device_class="duration"),
            Metric("ping.rtt_max", high, "s", device_class="duration"),
        ]
    return found


class Ping(Plugin[PingConfig]):
    """Sends a few ICMP echo requests per run and reports the answers and round-trip times."""

    name = "ping"
    title = "Ping"
    category = "network"
    description = "Whether a host answers ICMP echo requests, round-trip times and packet loss."
    version = "1.0.0"
    default_interval = 30.0

    _report: HealthReport | None = None
    #: Socket kinds to try, in order (tests force the unprivileged datagram socket).
    _socket_kinds: tuple[int, ...] = (socket.SOCK_RAW, socket.SOCK_DGRAM)

    def collect(self) -> list[Metric]:
        """Ping the host (blocking: the framework runs this in a worker thread)."""
        c = self.config
        try:
            result = ping(
                c.host,
                count=c.count,
                interval=c.probe_interval,
                probe_timeout=c.probe_timeout,
                payload_size=c.payload_size,
                kinds=self._socket_kinds,
            )
        except socket.gaierror as exc:
            # A name that does not resolve is a measurement, like an unanswered ping.
            self._report = HealthReport(
                "failing", f"cannot resolve {c.host}: {exc.strerror or exc}"
            )
            return [Metric("ping.up", 0, device_class="connectivity")]
        self._report = judge(result)
        return metrics(result)

    def health(self) -> HealthReport | None:
        """Whether the host answered the last run, fully, partly or not at all."""
        return self._report


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``ping`` plugin type."""
    register(Ping)
