"""The bundled ``prometheus`` plugin: scrape any Prometheus exporter and report its samples.

The exposition is fetched with httpx and parsed with ``prometheus_client``'s parser (the
text format, or OpenMetrics when the target answers with that content type). Every sample
becomes a :class:`~homelab_core.Metric`: counters as counters, histograms and summaries as
their ``_bucket``/``_sum``/``_count`` (and ``quantile``) samples. A target that is down or
answers with something that is not an exposition is a measurement (``prometheus.up`` 0 and
a failing health), not a failure of the plugin.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import attrs

from homelab_core import (
    HealthReport,
    HealthState,
    Metric,
    MetricKind,
    Plugin,
    hookimpl,
    option,
    redact_urls,
)

from .http import url_credentials

if TYPE_CHECKING:  # httpx is imported when an instance starts, not with the plugin list
    import httpx

#: Prefer the classic text format; OpenMetrics is parsed too if a target insists on it.
ACCEPT = "text/plain;version=0.0.4;q=1.0,application/openmetrics-text;q=0.5,*/*;q=0.1"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")

#: Unit suffixes of Prometheus base units (per the naming conventions) and their unit text.
_UNIT_SUFFIXES = (
    ("_seconds", "s"),
    ("_bytes", "bytes"),
    ("_celsius", "°C"),
    ("_volts", "V"),
    ("_amperes", "A"),
    ("_joules", "J"),
    ("_watts", "W"),
    ("_hertz", "Hz"),
    ("_meters", "m"),
    ("_grams", "g"),
    ("_percent", "%"),
)
_OPENMETRICS_UNITS = {"seconds": "s", "bytes": "bytes", "celsius": "°C", "percent": "%"}


def sanitize_name(name: str, prefix: str = "") -> str:
    """``name`` turned into a valid Metric name: invalid characters become ``_``.

    Without a prefix, a name that does not start with a letter or ``_`` gets a leading ``_``.
    """
    cleaned = _INVALID_CHARS.sub("_", name)
    if prefix:
        return prefix + cleaned
    if not cleaned or not (cleaned[0].isascii() and (cleaned[0].isalpha() or cleaned[0] == "_")):
        cleaned = "_" + cleaned
    return cleaned


def _check_url(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"'{attribute.name}' must be an http:// or https:// URL with a host, got {value!r}"
        )


def _check_prefix(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not _NAME.fullmatch(value):
        raise ValueError(
            f"'{attribute.name}' must start with a letter or '_' and contain only letters,"
            f" digits, '_', '.', ':' or '-', got {value!r}"
        )


@attrs.define
class PrometheusConfig:
    """Options of a ``prometheus`` instance."""

    url: str = option(
        description="The exporter's metrics URL (http:// or https://), such as"
        " 'http://127.0.0.1:9100/metrics'.",
        validator=_check_url,
    )
    request_timeout: float = option(
        10.0,
        description="Seconds the scrape request may take; keep it below the instance's timeout.",
        exclusive_minimum=0,
    )
    headers: dict[str, str] = option(
        factory=dict,
        description="Extra HTTP headers sent with each scrape. Secret: their values are never"
        " shown.",
        secret=True,
    )
    verify_tls: bool = option(True, description="Verify the certificate of an https:// target.")
    bearer_token: str | None = option(
        None, description="Token sent as 'Authorization: Bearer <token>'.", secret=True
    )
    include: list[str] = option(
        factory=list,
        description="Metric-name shell patterns to keep ('node_cpu_*'); empty keeps all. A"
        " pattern matches the sample name or its family name.",
    )
    exclude: list[str] = option(
        factory=list, description="Metric-name shell patterns to drop; applied after include."
    )
    labels: dict[str, str] = option(
        factory=dict,
        description="Keep only samples whose labels match: label name to value or shell"
        " pattern (a missing label counts as the empty string).",
    )
    max_samples: int = option(
        10_000,
        description="Report at most this many samples per scrape; the excess is counted and"
        " makes the health degraded.",
        exclusive_minimum=0,
    )
    prefix: str = option(
        "",
        description="Text prepended as is to every reported sample name ('node.' gives"
        " 'node.node_load1').",
        validator=_check_prefix,
    )


@attrs.define
class _Scrape:
    """The outcome of turning one exposition into metrics."""

    metrics: list[Metric] = attrs.field(factory=list)
    exposed: int = 0
    filtered: int = 0
    non_finite: int = 0
    over_limit: int = 0


def _unit(family: Any) -> str:
    if family.unit:
        return str(_OPENMETRICS_UNITS.get(family.unit, family.unit))
    base = family.name.removesuffix("_total")
    for suffix, unit in _UNIT_SUFFIXES:
        if base.endswith(suffix):
            return unit
    return ""


def _kind_and_unit(family: Any, sample_name: str, unit: str) -> tuple[MetricKind, str]:
    """How a sample of ``family`` is reported: its kind, and whether it carries the unit."""
    if sample_name.endswith("_created"):
        return MetricKind.GAUGE, "s"  # a creation timestamp
    if family.type == "counter":
        return MetricKind.COUNTER, unit
    if family.type in ("histogram", "summary"):
        if sample_name.endswith("_sum"):
            return MetricKind.COUNTER, unit
        if sample_name.endswith(("_count", "_bucket")):
            return MetricKind.COUNTER, ""
        return MetricKind.GAUGE, unit  # a summary quantile
    if family.type == "gaugehistogram" and sample_name.endswith(("_bucket", "_gcount")):
        return MetricKind.GAUGE, ""
    return MetricKind.GAUGE, unit


def _matches(names: tuple[str, str], patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns for name in names)


def convert(families: Iterable[Any], config: PrometheusConfig) -> _Scrape:
    """Turn parsed metric families into Metrics, applying the filters and the cap."""
    result = _Scrape()
    seen: set[str] = set()
    for family in families:
        unit = _unit(family)
        for sample in family.samples:
            result.exposed += 1
            names = (sample.name, family.name)
            labels: Mapping[str, str] = sample.labels
            if (
                (config.include and not _matches(names, config.include))
                or _matches(names, config.exclude)
                or not all(
                    fnmatchcase(labels.get(k, ""), pattern) for k, pattern in config.labels.items()
                )
            ):
                result.filtered += 1
                continue
            value = float(sample.value)
            if not math.isfinite(value):
                result.non_finite += 1
                continue
            if len(result.metrics) >= config.max_samples:
                result.over_limit += 1
                continue
            kind, sample_unit = _kind_and_unit(family, sample.name, unit)
            metric = Metric(
                sanitize_name(sample.name, config.prefix),
                value,
                sample_unit,
                labels,
                kind=kind,
            )
            if metric.series_key in seen:  # a duplicate, or two names sanitized alike
                result.filtered += 1
                continue
            seen.add(metric.series_key)
            result.metrics.append(metric)
    return result


def _parse(text: str, content_type: str, config: PrometheusConfig) -> _Scrape:
    # prometheus_client is imported on the first scrape, not with the plugin list.
    parse: Callable[[str], Iterable[Any]]
    if content_type.startswith("application/openmetrics-text"):
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse
    else:
        from prometheus_client.parser import text_string_to_metric_families as parse
    return convert(list(parse(text)), config)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Prometheus(Plugin[PrometheusConfig]):
    """Samples of a Prometheus exporter."""

    name = "prometheus"
    title = "Prometheus exporter"
    category = "service"
    description = "Scrapes a Prometheus exporter URL and reports its samples as metrics."
    version = "1.0.0"
    default_interval = 30.0

    _client: httpx.AsyncClient | None = None
    _problem: str | None = None
    _last: _Scrape | None = None
    #: The URL scraped: ``url`` without the user information, sent as basic auth.
    _target: str = ""

    async def setup(self) -> None:
        """Open the HTTP client used for every scrape."""
        import httpx

        headers = {"Accept": ACCEPT, **self.config.headers}
        if self.config.bearer_token:
            headers["Authorization"] = f"Bearer {self.config.bearer_token}"
        self._target, in_url = url_credentials(self.config.url)
        self._client = httpx.AsyncClient(
            headers=headers,
            auth=httpx.BasicAuth(*in_url) if in_url is not None else None,
            timeout=self.config.request_timeout,
            verify=self.config.verify_tls,
            follow_redirects=True,
        )

    async def collect(self) -> list[Metric]:
        """Scrape the target once."""
        import httpx

        if self._client is None:
            raise RuntimeError("collect() called before setup()")
        self._problem, self._last = None, None
        started = time.perf_counter()
        scrape = _Scrape()
        try:
            response = await self._client.get(self._target)
            if not response.is_success:
                self._problem = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
            else:
                content_type = response.headers.get("content-type", "")
                text = response.text
                scrape = await anyio.to_thread.run_sync(_parse, text, content_type, self.config)
        except httpx.HTTPError as exc:
            self._problem = _describe(exc)
        except ValueError as exc:  # the parser's word for "not an exposition"
            self._problem = f"not a Prometheus exposition ({exc})"
        duration = time.perf_counter() - started
        if self._problem is not None:
            scrape = _Scrape()
        self._last = scrape
        up = self._problem is None
        return [
            *scrape.metrics,
            Metric("prometheus.up", 1 if up else 0, device_class="connectivity"),
            Metric("prometheus.scrape_duration", duration, "s", device_class="duration"),
            Metric("prometheus.samples", scrape.exposed, "samples"),
            Metric("prometheus.samples_reported", len(scrape.metrics), "samples"),
            *self._dropped(scrape),
        ]

    @staticmethod
    def _dropped(scrape: _Scrape) -> Iterator[Metric]:
        for reason, count in (
            ("filtered", scrape.filtered),
            ("non_finite", scrape.non_finite),
            ("over_limit", scrape.over_limit),
        ):
            yield Metric("prometheus.samples_dropped", count, "samples", {"reason": reason})

    async def health(self) -> HealthReport | None:
        """Failing while the target cannot be scraped; degraded when samples were capped."""
        url = redact_urls(self.config.url)
        if self._problem is not None:
            return HealthReport(HealthState.FAILING, f"cannot scrape {url}: {self._problem}")
        scrape = self._last
        if scrape is not None and scrape.over_limit:
            return HealthReport(
                HealthState.DEGRADED,
                f"{url} exposed {scrape.over_limit} sample(s) more than max_samples"
                f" ({self.config.max_samples}); they were not reported",
            )
        return None

    async def teardown(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``prometheus`` plugin type."""
    register(Prometheus)
