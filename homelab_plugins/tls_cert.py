"""The bundled ``tls_cert`` plugin: when a server's certificate expires, and whether it verifies.

Only the standard library is used: :mod:`ssl` for the handshake and a small DER reader for
the few certificate fields reported (validity, issuer, subject), so the certificate can be
read even when it does not verify (``ssl`` only decodes verified certificates).

A server that is down, refuses TLS or presents a certificate that does not verify is a
measurement: the collection succeeds, reports ``tls.up`` / ``tls.valid_chain`` 0 and explains
in its health.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import attrs

from homelab_core import HealthReport, Metric, Plugin, hookimpl, option

SECONDS_PER_DAY = 86400.0

#: Short names of the attribute types seen in certificate names (RFC 4514 and OpenSSL's).
_ATTRIBUTE_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "street",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.97": "organizationIdentifier",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress",
}
_UTC_TIME, _GENERALIZED_TIME, _OID, _SEQUENCE, _SET = 0x17, 0x18, 0x06, 0x30, 0x31
_BMP_STRING, _UNIVERSAL_STRING = 0x1E, 0x1C


@attrs.define
class TlsCertConfig:
    """Options of a ``tls_cert`` instance."""

    host: str = option(description="Host name or address of the server.")
    port: int = option(443, description="TCP port of the TLS service.", minimum=1, maximum=65535)
    server_name: str | None = option(
        None,
        description="Name sent as SNI and checked against the certificate; unset: 'host'.",
    )
    verify: bool = option(
        True,
        description="Verify the certificate (chain and name) and report tls.valid_chain; a"
        " certificate that does not verify makes the health failing. False: only read it.",
    )
    ca_file: str | None = option(
        None,
        description="PEM file of the CA certificates to verify against, instead of the"
        " system's store.",
    )
    connect_timeout: float = option(
        10.0,
        description="Seconds for connecting and for the TLS handshake (each connection).",
        exclusive_minimum=0,
    )
    warn_days: float = option(
        14.0, description="Health is degraded when the certificate expires within this many days."
    )


# -- reading the certificate -------------------------------------------------------------------


class CertificateError(ValueError):
    """A certificate that cannot be decoded."""


def _tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """The DER element at ``offset``: its tag, its content and the offset after it."""
    try:
        tag, length = data[offset], data[offset + 1]
        offset += 2
        if length & 0x80:
            size = length & 0x7F
            if not 1 <= size <= 4:
                raise CertificateError("unsupported DER length")
            length = int.from_bytes(data[offset : offset + size], "big")
            offset += size
    except IndexError:
        raise CertificateError("truncated DER element") from None
    end = offset + length
    if end > len(data):
        raise CertificateError("truncated DER element")
    return tag, data[offset:end], end


def _children(content: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset < len(content):
        tag, value, offset = _tlv(content, offset)
        yield tag, value


def _oid(content: bytes) -> str:
    if not content:
        raise CertificateError("empty object identifier")
    parts, value = [], 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in [first, parts[0] - 40 * first, *parts[1:]])


def _time(tag: int, content: bytes) -> datetime:
    text = content.decode("ascii", errors="replace")
    try:
        if tag == _UTC_TIME:
            parsed = datetime.strptime(text, "%y%m%d%H%M%SZ")
            # RFC 5280: two-digit years 50-99 are 19xx, 00-49 are 20xx (strptime: 69-99).
            year = parsed.year % 100
            parsed = parsed.replace(year=(1900 if year >= 50 else 2000) + year)
        elif tag == _GENERALIZED_TIME:
            parsed = datetime.strptime(text, "%Y%m%d%H%M%SZ")
        else:
            raise CertificateError(f"unexpected time type 0x{tag:02x}")
    except ValueError:
        raise CertificateError(f"bad time {text!r}") from None
    return parsed.replace(tzinfo=UTC)


def _string(tag: int, content: bytes) -> str:
    if tag == _BMP_STRING:
        return content.decode("utf-16-be", errors="replace")
    if tag == _UNIVERSAL_STRING:
        return content.decode("utf-32-be", errors="replace")
    return content.decode("utf-8", errors="replace")


def _escape(value: str) -> str:
    escaped = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped


def _name(content: bytes) -> str:
    """A distinguished name as RFC 4514 text (most specific part first: ``CN=x,O=y``)."""
    rdns = []
    for set_tag, rdn in _children(content):
        if set_tag != _SET:
            raise CertificateError("bad name")
        parts = []
        for _, pair in _children(rdn):
            (oid_tag, oid), (value_tag, value) = list(_children(pair))[:2]
            if oid_tag != _OID:
                raise CertificateError("bad name attribute")
            key = _oid(oid)
            parts.append(f"{_ATTRIBUTE_NAMES.get(key, key)}={_escape(_string(value_tag, value))}")
        rdns.append("+".join(parts))
    return ",".join(reversed(rdns))


@attrs.frozen
class CertificateInfo:
    """The fields of a certificate this plugin reports."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime


def read_certificate(der: bytes) -> CertificateInfo:
    """Decode the validity, subject and issuer of a DER X.509 certificate."""
    tag, certificate, _ = _tlv(der, 0)
    if tag != _SEQUENCE:
        raise CertificateError("not a DER certificate")
    tag, tbs, _ = _tlv(certificate, 0)
    if tag != _SEQUENCE:
        raise CertificateError("not a DER certificate")
    fields = list(_children(tbs))
    if fields and fields[0][0] == 0xA0:  # explicit [0] version; absent in v1 certificates
        fields = fields[1:]
    if len(fields) < 5:
        raise CertificateError("certificate is missing fields")
    (_, _), (_, _), (_, issuer), (_, validity), (_, subject) = fields[:5]
    times = list(_children(validity))
    if len(times) != 2:
        raise CertificateError("bad validity")
    return CertificateInfo(
        subject=_name(subject),
        issuer=_name(issuer),
        not_before=_time(*times[0]),
        not_after=_time(*times[1]),
    )


# -- the plugin --------------------------------------------------------------------------------


class Unreachable(Exception):
    """The server could not be reached or would not complete a TLS handshake."""


def _reason(exc: BaseException, target: str, timeout: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"{target} refused the connection"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{target} did not answer within {timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {target.rsplit(':', 1)[0]}: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {target} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionError | EOFError):
        return f"{target} closed the connection: {exc}"
    return f"cannot connect to {target}: {exc}"


def _date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class TlsCert(Plugin[TlsCertConfig]):
    """Days until a server's certificate expires, and whether it verifies."""

    name = "tls_cert"
    title = "TLS certificate"
    category = "network"
    description = (
        "Days until a TLS server's certificate expires, whether it verifies against the"
        " system's CAs (or a CA file), and its issuer and subject."
    )
    version = "1.0.0"
    default_interval = 3600.0

    _health: HealthReport | None = None

    @property
    def target(self) -> str:
        """``host:port`` as shown in messages (IPv6 addresses in brackets)."""
        host = self.config.host
        return f"[{host}]:{self.config.port}" if ":" in host else f"{host}:{self.config.port}"

    def _context(self, verify: bool) -> ssl.SSLContext:
        if not verify:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        # A missing or unreadable ca_file raises here: a failure of the plugin's config.
        return ssl.create_default_context(cafile=self.config.ca_file)

    def _handshake(self, context: ssl.SSLContext) -> tuple[bytes, float]:
        """Connect, shake hands and return the server's certificate (DER) and the time taken."""
        server_name = self.config.server_name or self.config.host
        started = time.perf_counter()
        timeout = self.config.connect_timeout
        with (
            socket.create_connection((self.config.host, self.config.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            elapsed = time.perf_counter() - started
        if not der:
            raise ssl.SSLError("the server sent no certificate")
        return der, elapsed

    def _fetch(self, context: ssl.SSLContext) -> tuple[bytes, float]:
        try:
            return self._handshake(context)
        except ssl.SSLCertVerificationError:
            raise
        except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError
            raise Unreachable(_reason(exc, self.target, self.config.connect_timeout)) from exc

    def collect(self) -> list[Metric]:
        """Connect once (twice when the certificate does not verify) and read the certificate."""
        valid: bool | None = None
        verify_error = ""
        unverified = self._context(verify=False)
        try:
            if self.config.verify:
                try:
                    der, handshake = self._fetch(self._context(verify=True))
                    valid = True
                except ssl.SSLCertVerificationError as exc:
                    valid = False
                    verify_error = exc.verify_message or exc.reason or str(exc)
                    der, handshake = self._fetch(unverified)  # to read it all the same
            else:
                der, handshake = self._fetch(unverified)
        except Unreachable as exc:
            self._health = HealthReport("failing", str(exc))
            return [Metric("tls.up", 0)]
        try:
            cert = read_certificate(der)
        except CertificateError as exc:
            self._health = HealthReport("failing", f"cannot read the certificate: {exc}")
            return [Metric("tls.up", 1)]
        now = datetime.now(UTC)
        days_left = (cert.not_after - now).total_seconds() / SECONDS_PER_DAY
        labels = {"subject": cert.subject, "issuer": cert.issuer}
        metrics = [
            Metric("tls.up", 1),
            Metric("tls.handshake_time", handshake, "s", device_class="duration"),
            Metric("tls.days_left", days_left, "days", labels, device_class="duration"),
            Metric(
                "tls.expires_at", cert.not_after.timestamp(), "s", labels, device_class="timestamp"
            ),
        ]
        if valid is not None:
            metrics.append(Metric("tls.valid_chain", valid, labels=labels))
        self._health = self._judge(cert, days_left, now, valid, verify_error)
        return metrics

    def _judge(
        self,
        cert: CertificateInfo,
        days_left: float,
        now: datetime,
        valid: bool | None,
        verify_error: str,
    ) -> HealthReport:
        about = f"certificate of {cert.subject or '(no subject)'} issued by {cert.issuer}"
        if days_left < 0:
            ago = -days_left
            return HealthReport(
                "failing", f"{about} expired {ago:.1f} days ago ({_date(cert.not_after)})"
            )
        if now < cert.not_before:
            return HealthReport("failing", f"{about} is not valid before {_date(cert.not_before)}")
        if valid is False:
            return HealthReport("failing", f"{about} does not verify: {verify_error}")
        expires = f"expires in {days_left:.1f} days ({_date(cert.not_after)})"
        if days_left < self.config.warn_days:
            return HealthReport("degraded", f"{about} {expires}")
        return HealthReport("ok", f"{about} {expires}")

    def health(self) -> HealthReport | None:
        """Failing when down, expired or not verifying; degraded within ``warn_days``."""
        return self._health


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``tls_cert`` plugin type."""
    register(TlsCert)
