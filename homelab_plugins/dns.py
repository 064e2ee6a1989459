"""The bundled ``dns`` plugin: whether a name resolves, to what, and how fast.

Each run sends one query (``name`` and ``record_type``) to the configured resolver, or to
the system's resolvers from ``/etc/resolv.conf``, with dnspython's async resolver.

A name that does not exist (NXDOMAIN), an answer without records of the type, a resolver
that does not answer in time or that refuses the query are measurements: the collection
succeeds with ``dns.up`` = 0 and ``health()`` says what happened. An answer that does not
hold the ``expected`` values is ``dns.match`` = 0 and a failing health. Only problems of
the plugin itself (no system resolver configured, a bug) raise.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs

from homelab_core import HealthReport, Metric, Plugin, hookimpl, option

from .tcp import target

# dnspython is imported by the functions that use it, so listing plugin types does not load it.
if TYPE_CHECKING:
    import dns.asyncresolver
    from dns._asyncbackend import Backend

RecordType = Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS", "PTR", "SRV", "SOA"]

#: Most answers named in a health message; the rest are counted.
SHOWN_ANSWERS = 5


def _name(_: Any, __: attrs.Attribute[str], value: str) -> None:
    if not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"'name' must be a domain name without spaces, got {value!r}")
    import dns.exception
    import dns.name

    try:
        dns.name.from_text(value)
    except dns.exception.DNSException as exc:
        raise ValueError(f"'name' is not a valid domain name ({exc}), got {value!r}") from None


def _resolver(_: Any, __: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"'resolver' must be an IPv4 or IPv6 address, got {value!r}") from None


def _expected(_: Any, __: attrs.Attribute[list[str] | None], value: list[str] | None) -> None:
    if value is None:
        return
    if not value or any(not item.strip() for item in value):
        raise ValueError("'expected' must list non-empty values, or be unset")


@attrs.define
class DnsConfig:
    """Options of a ``dns`` instance."""

    name: str = option(
        description="Domain name to resolve; for PTR an IP address is turned into its"
        " reverse name.",
        validator=_name,
    )
    record_type: RecordType = option("A", description="Record type to ask for.")
    resolver: str | None = option(
        None,
        description="IP address of the DNS server to ask; unset: the system resolvers"
        " from /etc/resolv.conf.",
        validator=_resolver,
    )
    port: int = option(
        53, description="Port of the DNS server, 1 to 65535.", minimum=1, maximum=65535
    )
    query_timeout: float = option(
        5.0,
        description="Seconds to wait for an answer before reporting the name down."
        " Keep it below the instance's run 'timeout'.",
        exclusive_minimum=0,
    )
    expected: list[str] | None = option(
        None,
        description="Values the answer must contain (each of them; more answers are fine).",
        validator=_expected,
    )
    tcp: bool = option(False, description="Query over TCP instead of UDP.")


def query_name(config: DnsConfig) -> str:
    """The name queried: for PTR, an IP address becomes its ``in-addr.arpa`` name."""
    if config.record_type == "PTR":
        try:
            ipaddress.ip_address(config.name)
        except ValueError:
            return config.name
        import dns.reversename

        return dns.reversename.from_address(config.name).to_text(omit_final_dot=True)
    return config.name


def normalize(value: str, record_type: str) -> str:
    """``value`` in the form answers are compared in.

    IP addresses are compared as addresses, TXT values exactly, everything else (names,
    MX, SRV, SOA) case-insensitively word by word with trailing dots dropped.
    """
    text = value.strip()
    if record_type in ("A", "AAAA"):
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            return text.lower()
    if record_type == "TXT":
        return text
    return " ".join(word.rstrip(".") or word for word in text.lower().split())


def answer_text(rdata: Any, record_type: str) -> str:
    """One answer record as text; TXT strings are joined and unquoted."""
    if record_type == "TXT":
        return "".join(part.decode("utf-8", "replace") for part in rdata.strings)
    text: str = rdata.to_text()
    if record_type in ("A", "AAAA"):
        return text
    return " ".join(word.rstrip(".") or word for word in text.split())


def current_backend() -> Backend:
    """dnspython's backend for the running event loop (asyncio or trio).

    Named on every query: dnspython otherwise keeps the first loop type it saw for good.
    """
    import dns.asyncbackend

    try:
        name = dns.asyncbackend.sniff()
    except dns.asyncbackend.AsyncLibraryNotFoundError:
        if "trio" not in sys.modules:
            raise
        name = "trio"
    return dns.asyncbackend.get_backend(name)


def _listing(values: Iterable[str]) -> str:
    items = list(values)
    shown = ", ".join(items[:SHOWN_ANSWERS])
    if len(items) > SHOWN_ANSWERS:
        shown += f" (+{len(items) - SHOWN_ANSWERS} more)"
    return shown or "nothing"


def _describe_errors(errors: list[Any]) -> str:
    """What each nameserver did, from the ``errors`` of a dnspython exception."""
    import dns.exception

    reasons: list[str] = []
    for entry in errors:
        problem = entry[3] if len(entry) > 3 else entry
        if isinstance(problem, str):
            reason = f"answered {problem}"
        elif isinstance(problem, dns.exception.Timeout):
            reason = "did not answer"
        elif isinstance(problem, BaseException):
            reason = str(problem) or type(problem).__name__
        else:
            reason = str(problem)
        if reason not in reasons:
            reasons.append(reason)
    return "; ".join(reasons)


@attrs.define
class _Outcome:
    """What one query found out."""

    up: bool
    message: str
    answers: list[str] | None = None
    elapsed: float | None = None


class Dns(Plugin[DnsConfig]):
    """Resolves one name per run and judges the answer."""

    name = "dns"
    title = "DNS resolution"
    category = "network"
    description = (
        "Whether a name resolves (with a given resolver and record type), how many answers"
        " came, how fast, and whether they hold the expected values."
    )
    version = "1.0.0"
    default_interval = 60.0

    _resolver: dns.asyncresolver.Resolver
    _report: HealthReport | None = None

    def setup(self) -> None:
        """Build the resolver (raises when there is no system resolver to use)."""
        import dns.asyncresolver

        config = self.config
        if config.resolver is None:
            resolver = dns.asyncresolver.Resolver()  # reads /etc/resolv.conf
        else:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [config.resolver]
        resolver.port = config.port
        resolver.timeout = config.query_timeout
        resolver.lifetime = config.query_timeout
        resolver.cache = None
        self._resolver = resolver

    @property
    def where(self) -> str:
        """The servers asked, as ``host:port`` (IPv6 in brackets)."""
        servers = [str(ns) for ns in self._resolver.nameservers]
        shown = ", ".join(target(ns, self.config.port) for ns in servers)
        return shown if self.config.resolver is not None else f"the system resolver ({shown})"

    async def collect(self) -> list[Metric]:
        """Send the query, time it and compare the answers with ``expected``."""
        outcome = await self._query()
        metrics = [Metric("dns.up", outcome.up, device_class="connectivity")]
        if outcome.answers is not None:
            metrics.append(Metric("dns.answers", len(outcome.answers), "answers"))
        if outcome.elapsed is not None:
            metrics.append(
                Metric("dns.response_time", outcome.elapsed, "s", device_class="duration")
            )
        state, message = ("ok" if outcome.up else "failing"), outcome.message
        expected = self.config.expected
        if expected is not None and outcome.up and outcome.answers is not None:
            record_type = self.config.record_type
            got = {normalize(a, record_type) for a in outcome.answers}
            missing = [e for e in expected if normalize(e, record_type) not in got]
            metrics.append(Metric("dns.match", not missing))
            if missing:
                state = "failing"
                message = (
                    f"{query_name(self.config)} {record_type} at {self.where} answered"
                    f" {_listing(outcome.answers)}, expected {_listing(expected)}"
                    f" (missing {_listing(missing)})"
                )
        self._report = HealthReport(state, message)
        return metrics

    async def health(self) -> HealthReport | None:
        """What the last query found, in a sentence."""
        return self._report

    async def _query(self) -> _Outcome:
        import dns.exception
        import dns.rdatatype
        import dns.resolver

        config = self.config
        name, record_type, timeout = query_name(config), config.record_type, config.query_timeout
        where = self.where
        started = time.perf_counter()
        try:
            # dnspython keeps to its lifetime; the extra second only guards against a bug.
            with anyio.fail_after(timeout + 1):
                answer = await self._resolver.resolve(
                    name,
                    dns.rdatatype.from_text(record_type),
                    tcp=config.tcp,
                    raise_on_no_answer=False,
                    backend=current_backend(),
                )
        except dns.resolver.NXDOMAIN:
            elapsed = time.perf_counter() - started
            return _Outcome(False, f"{name} does not exist (NXDOMAIN) at {where}", [], elapsed)
        except (dns.exception.Timeout, TimeoutError) as exc:
            detail = _describe_errors(getattr(exc, "kwargs", {}).get("errors") or [])
            message = (
                f"{where} did not answer the {record_type} query for {name} within {timeout:g} s"
            )
            if detail and detail != "did not answer":
                message += f" ({detail})"
            return _Outcome(False, message)
        except dns.resolver.NoNameservers as exc:
            detail = _describe_errors(exc.kwargs.get("errors") or []) or str(exc)
            return _Outcome(False, f"{where} failed the {record_type} query for {name}: {detail}")
        except dns.exception.DNSException as exc:
            reason = str(exc) or type(exc).__name__
            return _Outcome(
                False, f"the {record_type} query for {name} at {where} failed: {reason}"
            )
        elapsed = time.perf_counter() - started
        records = list(answer.rrset) if answer.rrset is not None else []
        answers = [answer_text(rdata, record_type) for rdata in records]
        if not answers:
            return _Outcome(False, f"{name} has no {record_type} record at {where}", [], elapsed)
        return _Outcome(
            True,
            f"{name} {record_type} at {where}: {_listing(answers)} in {elapsed * 1000:.1f} ms",
            answers,
            elapsed,
        )


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``dns`` plugin type."""
    register(Dns)
