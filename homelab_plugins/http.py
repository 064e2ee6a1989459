"""The bundled ``http`` plugin: whether a URL answers as expected, how fast, and TLS expiry.

Each run sends one request (following redirects unless told not to) on a fresh connection,
checks the final status and, optionally, a keyword in the body. For ``https`` URLs it also
reads the server certificate of the URL's host and reports the days until it expires.

A target that is down (refused, unresolvable, timed out, TLS failure, wrong status, keyword
missing) is a measurement: the collection succeeds with ``http.up`` = 0 and ``health()``
says what went wrong. Only problems of the plugin itself (a CA file it cannot read, a bug)
raise.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio
import attrs

from homelab_core import HealthReport, Metric, Plugin, hookimpl, option

from .tcp import describe_connect_error

if TYPE_CHECKING:  # httpx is imported when an instance starts, not with the plugin list
    import httpx

#: Most body bytes read per run; the keyword is searched for in this much of the body.
MAX_BODY_BYTES = 1024 * 1024
#: Status codes that count as up when ``expected_status`` is not set.
DEFAULT_STATUS = range(200, 400)

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def http_url(name: str) -> Callable[[Any, Any, str], None]:
    """A validator: option ``name`` must be an http:// or https:// URL with a host (the
    notifiers use it too)."""

    def check(_: Any, __: Any, value: str) -> None:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"'{name}' must be an http:// or https:// URL with a host, got {value!r}"
            )

    return check


_url = http_url("url")


def url_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its user information, and the user name and password it held.

    The request goes to the URL without them and they are sent as basic authentication,
    as httpx would do with them in the URL; but then the URL that httpx logs and puts in
    its exception texts holds no password.
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit(parts._replace(netloc=host))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


def _statuses(_: Any, __: attrs.Attribute[list[int] | None], value: list[int] | None) -> None:
    if value is None:
        return
    if not value:
        raise ValueError("'expected_status' must list at least one status code, or be unset")
    bad = [code for code in value if not 100 <= code <= 599]
    if bad:
        raise ValueError(f"'expected_status' must hold HTTP status codes (100-599), got {bad}")


@attrs.define
class HttpConfig:
    """Options of an ``http`` instance."""

    url: str = option(description="The http:// or https:// URL to request.", validator=_url)
    method: Method = option("GET", description="HTTP method of the request.")
    headers: dict[str, str] = option(
        factory=dict,
        description='Extra request headers, such as {"X-Api-Key" = "..."}. Secret: their'
        " values are never shown.",
        secret=True,
    )
    body: str | None = option(None, description="Request body to send (for POST, PUT, PATCH).")
    expected_status: list[int] | None = option(
        None,
        description="Final status codes that count as up; unset: any 2xx or 3xx (200-399).",
        validator=_statuses,
    )
    keyword: str | None = option(
        None,
        description="Text the body must contain (case-sensitive, first 1 MiB) to count as up.",
    )
    follow_redirects: bool = option(True, description="Follow redirects to the final answer.")
    max_redirects: int = option(
        10, description="Most redirects to follow before reporting down.", minimum=0
    )
    verify_tls: bool = option(
        True, description="Check the server certificate (chain, host name, expiry)."
    )
    ca_file: str | None = option(
        None, description="PEM file of CA certificates to trust instead of the bundled ones."
    )
    request_timeout: float = option(
        10.0,
        description="Seconds the whole request (with redirects and body) may take before the"
        " target counts as down. Keep it below the instance's run 'timeout'.",
        exclusive_minimum=0,
    )
    username: str | None = option(None, description="User name for HTTP basic authentication.")
    password: str | None = option(
        None, description="Password for HTTP basic authentication.", secret=True
    )
    bearer_token: str | None = option(
        None, description="Token sent as 'Authorization: Bearer <token>'.", secret=True
    )
    tls_warn_days: float = option(
        14.0,
        description="Health is 'degraded' when the certificate expires in fewer days than this.",
        minimum=0,
    )

    def __attrs_post_init__(self) -> None:
        if self.keyword is not None and self.method == "HEAD":
            raise ValueError("'keyword' cannot be checked with method HEAD: there is no body")
        if self.keyword == "":
            raise ValueError("'keyword' must not be empty; leave it unset to skip the check")
        if self.password is not None and self.username is None:
            raise ValueError("'password' needs a 'username'")
        if self.bearer_token is not None and self.username is not None:
            raise ValueError("'bearer_token' and 'username' cannot both be set")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from, nearest first."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _expected(codes: list[int] | None) -> str:
    if codes is None:
        return "200-399"
    return ", ".join(str(code) for code in codes)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _read_der(data: bytes, pos: int) -> tuple[int, int, int]:
    """One DER element at ``pos``: its tag, where its content starts and where it ends."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    return tag, pos, pos + length


def certificate_not_after(der: bytes) -> dt.datetime:
    """The ``notAfter`` time of a DER-encoded X.509 certificate, in UTC."""
    _, cert, _ = _read_der(der, 0)  # Certificate ::= SEQUENCE
    _, pos, _ = _read_der(der, cert)  # tbsCertificate ::= SEQUENCE
    tag, _, end = _read_der(der, pos)
    if tag == 0xA0:  # [0] version, absent in v1 certificates
        pos = end
    for _field in ("serial", "signature", "issuer"):
        pos = _read_der(der, pos)[2]
    _, validity, _ = _read_der(der, pos)
    not_before_end = _read_der(der, validity)[2]
    tag, start, end = _read_der(der, not_before_end)
    text = der[start:end].decode("ascii")
    if tag == 0x17:  # UTCTime: YYMMDDHHMMSSZ, years 1950-2049
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime: YYYYMMDDHHMMSSZ
        raise ValueError(f"unexpected ASN.1 tag {tag:#x} for a certificate time")
    return dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)


@attrs.define
class _Outcome:
    """What one request found out."""

    up: bool
    message: str
    status: int | None = None
    elapsed: float | None = None
    redirects: int | None = None
    keyword_found: bool | None = None
    reached_server: bool = False


class Http(Plugin[HttpConfig]):
    """Requests one URL per run and judges the answer."""

    name = "http"
    title = "HTTP endpoint"
    category = "network"
    description = (
        "Whether a URL answers with an expected status (and keyword), how fast, how many"
        " redirects it took, and the days until its TLS certificate expires."
    )
    version = "1.0.0"
    default_interval = 60.0

    _client: httpx.AsyncClient
    _report: HealthReport | None = None
    #: The URL requested: ``url`` without the user information, sent as basic auth.
    _target: str = ""

    def _verify(self) -> ssl.SSLContext | bool:
        if not self.config.verify_tls:
            return False
        if self.config.ca_file is None:
            return True
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=self.config.ca_file)  # raises if unreadable
        return context

    async def setup(self) -> None:
        """Create the HTTP client (raises if ``ca_file`` cannot be read)."""
        import httpx

        config = self.config
        auth = None
        headers = dict(config.headers)
        self._target, in_url = url_credentials(config.url)
        if config.username is not None:
            auth = httpx.BasicAuth(config.username, config.password or "")
        elif in_url is not None:
            auth = httpx.BasicAuth(*in_url)
        if config.bearer_token is not None:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        self._client = httpx.AsyncClient(
            headers=headers,
            auth=auth,
            verify=self._verify(),
            follow_redirects=config.follow_redirects,
            max_redirects=config.max_redirects,
            timeout=httpx.Timeout(config.request_timeout),
            # A fresh connection per run: a server that stopped accepting connections must
            # not look up through a kept-alive one, and response_time includes connecting.
            limits=httpx.Limits(max_keepalive_connections=0),
            # Measure the target itself, not whatever proxy the environment names.
            trust_env=False,
        )

    async def teardown(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def collect(self) -> list[Metric]:
        """Send the request, then read the certificate expiry of an https URL."""
        outcome = await self._request()
        metrics = [Metric("http.up", outcome.up, device_class="connectivity")]
        if outcome.status is not None:
            metrics.append(Metric("http.status_code", outcome.status))
        if outcome.elapsed is not None:
            metrics.append(
                Metric("http.response_time", outcome.elapsed, "s", device_class="duration")
            )
        if outcome.keyword_found is not None:
            metrics.append(Metric("http.keyword_found", outcome.keyword_found))
        if outcome.redirects is not None:
            metrics.append(Metric("http.redirects", outcome.redirects, "redirects"))
        state = "ok" if outcome.up else "failing"
        message = outcome.message
        if urlsplit(self.config.url).scheme == "https" and outcome.reached_server:
            days = await self._tls_days_left()
            if days is not None:
                metrics.append(Metric("http.tls_days_left", days, "days"))
                if days < 0:
                    message += f"; its TLS certificate expired {-days:.1f} days ago"
                    state = "failing" if state == "failing" else "degraded"
                elif days < self.config.tls_warn_days:
                    message += f"; its TLS certificate expires in {days:.1f} days"
                    state = "failing" if state == "failing" else "degraded"
        self._report = HealthReport(state, message)
        return metrics

    async def health(self) -> HealthReport | None:
        """What the last request found, in a sentence."""
        return self._report

    async def _request(self) -> _Outcome:
        import httpx

        config, url, target = self.config, self.config.url, self._target
        timeout = config.request_timeout
        started = time.perf_counter()
        try:
            with anyio.fail_after(timeout):
                stream = self._client.stream(config.method, target, content=config.body)
                async with stream as response:
                    elapsed = time.perf_counter() - started
                    body = await _read_body(response) if config.keyword is not None else b""
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(False, f"{url} did not answer within {timeout:g} s")
        except httpx.TooManyRedirects:
            return _Outcome(
                False,
                f"{url} redirected more than {_plural(config.max_redirects, 'time')}",
                reached_server=True,
            )
        except httpx.HTTPError as exc:
            return _describe_failure(url, exc, timeout)
        status, redirects = response.status_code, len(response.history)
        outcome = _Outcome(
            True, "", status=status, elapsed=elapsed, redirects=redirects, reached_server=True
        )
        answered = f"{url} answered {status}"
        if redirects:
            answered += f" after {_plural(redirects, 'redirect')}"
        if config.keyword is not None:
            text = body.decode(response.encoding or "utf-8", errors="replace")
            outcome.keyword_found = config.keyword in text
        allowed = config.expected_status if config.expected_status is not None else DEFAULT_STATUS
        if status not in allowed:
            outcome.up = False
            outcome.message = f"{answered}, expected {_expected(config.expected_status)}"
        elif outcome.keyword_found is False:
            outcome.up = False
            outcome.message = f"{answered} but the body does not contain {config.keyword!r}"
        else:
            outcome.message = f"{answered} in {elapsed:.3f} s"
        return outcome

    async def _tls_days_left(self) -> float | None:
        """Days until the certificate of the URL's host expires; None if it cannot be read.

        Read on a connection of its own without verification (nothing is sent over it), so
        an expired or untrusted certificate still shows when it expires.
        """
        from anyio.streams.tls import TLSAttribute

        parts = urlsplit(self.config.url)
        host, port = parts.hostname or "", parts.port or 443
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with anyio.fail_after(self.config.request_timeout):
                stream = await anyio.connect_tcp(
                    host, port, ssl_context=context, tls_standard_compatible=False
                )
                try:
                    der = stream.extra(TLSAttribute.peer_certificate_binary)
                finally:
                    await stream.aclose()
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.log.debug("cannot read the TLS certificate of %s:%s: %s", host, port, exc)
            return None
        if der is None:
            return None
        try:
            not_after = certificate_not_after(der)
        except (IndexError, ValueError) as exc:
            self.log.warning("cannot read the expiry of the certificate of %s: %s", host, exc)
            return None
        seconds = (not_after - dt.datetime.now(dt.UTC)).total_seconds()
        return round(seconds / 86400, 3)


async def _read_body(response: httpx.Response) -> bytes:
    """The first :data:`MAX_BODY_BYTES` of the body."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_BYTES:
            break
    return b"".join(chunks)[:MAX_BODY_BYTES]


def _describe_failure(url: str, exc: httpx.HTTPError, timeout: float) -> _Outcome:
    """Why a request that got no answer failed, as an outcome with ``up`` = False."""
    import httpx

    chain = _chain(exc)
    for error in chain:
        if isinstance(error, ssl.SSLCertVerificationError):
            reason = error.verify_message or error.reason or str(error)
            return _Outcome(
                False, f"{url} failed TLS certificate verification: {reason}", reached_server=True
            )
    for error in chain:
        if isinstance(error, ssl.SSLError):
            reason = error.reason or str(error)
            return _Outcome(
                False, f"TLS handshake with {url} failed: {reason}", reached_server=True
            )
    if isinstance(exc, httpx.ConnectError):
        return _Outcome(False, describe_connect_error(url, exc, timeout))
    reason = str(exc) or type(exc).__name__
    return _Outcome(False, f"request to {url} failed: {reason}", reached_server=True)


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``http`` plugin type."""
    register(Http)
