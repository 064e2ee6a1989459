"""What keeps web pages of other sites away from the API: ``Host``, ``Origin`` and bodies.

A page on another site can make a visitor's browser send requests to a server on the
visitor's machine or network in three ways, and each is refused:

- **DNS rebinding**: the page's own name is made to resolve to 127.0.0.1, so its scripts
  reach the server as if it were their own site, with ``Host: evil.example:8765``. The
  bundled server answers only the names it is reached under (:class:`HostCheck`): 421.
- **Cross-site changes**: a form or ``fetch`` sent from the page carries
  ``Origin: http://evil.example``. A change (POST, PUT, PATCH, DELETE), and the upgrade to
  ``/ws/metrics``, are accepted only from the server's own origin (that of the ``Host``
  the request was sent to) or a configured one (:func:`origin_allowed`): 403.
- **Simple requests**: browsers send a form's POST (no body, form data or ``text/plain``)
  without asking the server first. A POST must carry ``Content-Type: application/json``
  or a bearer ``Authorization`` header, neither of which a page can send to another site
  without the browser asking the server, which never agrees (:func:`changes_by_form`): 415.
  (PUT, PATCH and DELETE are never sent without asking.)

Programs other than browsers send no ``Origin`` and are not affected by the last two.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

import attrs

from .errors import ApiError

log = logging.getLogger("homelab.web")

#: Methods that change something; the others only read.
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Names of this machine's loopback interface, answered whenever the server listens there.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Addresses that mean "every interface".
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
#: Host header values remembered as accepted, at most (a cache, not a limit).
_CACHE_SIZE = 256


class Refusals:
    """Counts the requests refused by these checks, and logs them, one line a minute at
    most: a page of another site trying, or a name or origin missing from the settings
    (a reverse proxy's), which only the client would otherwise see."""

    def __init__(self, log_every: float = 60.0) -> None:
        #: Requests refused since start (``homelab_core_web_refused_total``).
        self.count = 0
        self.log_every = log_every
        self._logged_at = -math.inf

    def note(self, error: ApiError) -> None:
        """Count one refusal (``error`` is what the client is answered)."""
        self.count += 1
        now = time.monotonic()
        if now - self._logged_at >= self.log_every:
            self._logged_at = now
            log.warning(
                "refused a request (%d %s; %d refused so far): %s",
                error.status,
                error.code,
                self.count,
                error.message,
            )


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` (a ``Host`` header) as the lowercase name and the port, or None
    if it is not of that form. ``[::1]:8765`` gives ``("::1", 8765)``; a final dot is
    dropped (``localhost.`` is ``localhost``)."""
    text = value.strip().lower()
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        name, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
        elif ":" in port_text:  # a bare IPv6 address: no port can be told apart
            name, port_text = text, None
    name = name.rstrip(".")
    if not name or any(c in name for c in "/\\@?#% "):
        return None
    if port_text is None:
        return name, None
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        return None
    return name, int(port_text)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _own_names(host: str) -> frozenset[str]:
    """The names a server bound to ``host`` is reached under without configuration."""
    bound = host.strip("[]").lower()
    if bound == "localhost" or (_is_address(bound) and ipaddress.ip_address(bound).is_loopback):
        return LOOPBACK_NAMES | {bound}
    # Beyond loopback: its address, the loopback names when it listens on every interface,
    # and this machine's own name (which the local network resolves, not an attacker).
    names = {bound} if bound not in WILDCARD_ADDRESSES else set(LOOPBACK_NAMES)
    machine = socket.gethostname().lower()
    if machine:
        names |= {machine, f"{machine}.local"}
    return frozenset(names)


@attrs.define
class HostCheck:
    """Which ``Host`` header values to answer.

    Build it with :meth:`for_server` (the bundled server: the names it is reached under,
    plus configured ones) or :meth:`configured` (an embedding application's list).
    """

    #: Names answered on ``port`` (or with no port in the header).
    names: frozenset[str] = frozenset()
    #: The port the server listens on; None for any.
    port: int | None = None
    #: Configured (name, port) pairs; a port of None matches any port.
    extra: frozenset[tuple[str, int | None]] = frozenset()
    #: Whether any address literal is answered (a server listening on every interface:
    #: rebinding needs a name, and an address is nobody's name).
    any_address: bool = False
    #: Whether every host is answered (``"*"`` configured).
    any_host: bool = False
    #: What to tell the client about where the accepted names are configured.
    setting: str = "[server] allowed_hosts"
    _accepted: set[str] = attrs.field(factory=set, init=False, repr=False)

    @classmethod
    def for_server(cls, host: str, port: int, allowed: Iterable[str] = ()) -> HostCheck:
        """For a server bound to ``host``:``port``, answering ``allowed`` names too."""
        extra, any_host = _entries(allowed)
        return cls(
            names=_own_names(host),
            port=port,
            extra=extra,
            any_address=host.strip("[]") in WILDCARD_ADDRESSES,
            any_host=any_host,
        )

    @classmethod
    def configured(cls, allowed: Iterable[str], *, setting: str = "allowed_hosts") -> HostCheck:
        """Only the ``allowed`` names (``name`` for any port, ``name:port`` for one)."""
        extra, any_host = _entries(allowed)
        return cls(extra=extra, any_host=any_host, setting=setting)

    def allows(self, header: str | None) -> bool:
        """Whether to answer a request with this ``Host`` header (None: no header, which
        no browser sends)."""
        if header is None or self.any_host or header in self._accepted:
            return True
        parsed = split_host(header)
        if parsed is None:
            return False
        name, port = parsed
        allowed = (
            (
                (name in self.names or (self.any_address and _is_address(name)))
                and (port is None or self.port is None or port == self.port)
            )
            or (name, port) in self.extra
            or (name, None) in self.extra
        )
        if allowed and len(self._accepted) < _CACHE_SIZE:
            self._accepted.add(header)
        return allowed

    def check(self, header: str | None) -> None:
        """Raise the API's 421 error unless ``header`` is answered."""
        if not self.allows(header):
            parsed = split_host(header or "")
            shown = parsed[0] if parsed is not None else header
            raise ApiError(
                421,
                "unknown_host",
                f"this server does not answer to the name {shown!r}; a web page reaching it"
                f" under a name of its own is refused. If this is how you reach the server,"
                f" add the name to {self.setting}.",
            )


def _entries(allowed: Iterable[str]) -> tuple[frozenset[tuple[str, int | None]], bool]:
    extra: set[tuple[str, int | None]] = set()
    any_host = False
    for entry in allowed:
        if entry.strip() == "*":
            any_host = True
            continue
        parsed = split_host(entry)
        if parsed is not None:
            extra.add(parsed)
    return frozenset(extra), any_host


def normal_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lowercase, without the scheme's default port; None if
    ``origin`` is not of that form (``null``, a path, credentials)."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path or parts.query or parts.fragment:
        return None
    if "@" in parts.netloc:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme):
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def configured_origins(allowed: Iterable[str]) -> frozenset[str]:
    """The configured origins, normalised (``"*"`` stays ``"*"``)."""
    result = set()
    for entry in allowed:
        normal = "*" if entry.strip() == "*" else normal_origin(entry)
        if normal is not None:
            result.add(normal)
    return frozenset(result)


def same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` is the site that the request's ``Host`` names (scheme aside:
    behind a TLS proxy the server sees http where the page has https)."""
    if host is None:
        return False
    parsed = split_host(host)
    try:
        parts = urlsplit(origin.strip().lower())
        origin_port = parts.port
    except ValueError:
        return False
    if parsed is None or not parts.hostname:
        return False
    name, port = parsed
    default = _DEFAULT_PORTS.get(parts.scheme)
    return parts.hostname.rstrip(".") == name and (origin_port or default) == (port or default)


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a change (or a WebSocket) sent with this ``Origin`` to this ``Host`` comes
    from the server's own pages, a configured origin, or a program that is not a browser
    (no ``Origin``)."""
    if origin is None or "*" in allowed:
        return True
    if same_origin(origin, host):
        return True
    normal = normal_origin(origin)
    return normal is not None and normal in allowed


def check_origin(origin: str | None, host: str | None, allowed: frozenset[str]) -> None:
    """Raise the API's 403 error unless :func:`origin_allowed`."""
    if not origin_allowed(origin, host, allowed):
        raise ApiError(
            403,
            "forbidden_origin",
            f"changes and the live stream are not accepted from pages of {origin!r}, another"
            " site than this server's. To allow a site of your own, add its origin to"
            " [server] allowed_origins.",
        )


def changes_by_form(mimetype: str, authorization: str | None) -> bool:
    """Whether a change could have been sent by a page of another site without the browser
    asking the server first: neither a JSON body nor a bearer token."""
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return False
    return not (authorization and authorization[:7].lower() == "bearer ")


def check_not_form(mimetype: str, authorization: str | None) -> None:
    """Raise the API's 415 error if :func:`changes_by_form`."""
    if changes_by_form(mimetype, authorization):
        raise ApiError(
            415,
            "unsupported_media_type",
            "requests that change something need 'Content-Type: application/json' (with a"
            " JSON body, or none), or a bearer token: a web page of another site cannot"
            " send either without the browser asking first.",
        )
