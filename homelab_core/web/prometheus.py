"""Prometheus text exposition (format 0.0.4): the latest values, the instances' health, our
counters.

- Every plugin metric's latest value, named by Prometheus's conventions
  (:mod:`~homelab_core.web.prometheus_names`: ``mem.total`` in bytes is
  ``homelab_mem_total_bytes``), with our ``instance`` and ``type`` labels. A plugin's own
  labels of those names are renamed ``exported_instance`` and ``exported_type``, as
  Prometheus renames a target's; so are ``le`` and ``quantile`` outside histograms and
  summaries, and a label name used twice. Counters named ``<x>_bucket`` (with ``le``),
  ``<x>_count`` and ``<x>_sum`` are one histogram ``<x>`` again, ``<x>_count`` and
  ``<x>_sum`` (with ``<x>{quantile}`` gauges) one summary: what the ``prometheus`` plugin
  reports of a scraped histogram or summary.
- Per instance: ``homelab_instance_enabled``, ``homelab_instance_health{state}`` (1 for
  the current state, 0 for the others), ``homelab_instance_consecutive_failures`` and
  ``homelab_instance_last_success_timestamp_seconds``.
- ``homelab_alerts{rule,state}``: how many alerts of each rule are pending, firing or
  resolved (every configured rule and state, zeros too).
- The framework's own figures, ``homelab_core_*`` (:data:`CORE`).

A family name is never shared: the first claimant keeps it (ours, then plugin metrics in
alphabetical order of their names); the series of any other metric that names it alike
are left out, counted in ``homelab_core_exposition_skipped_series`` and logged once. So
two families never merge, whatever their types. docs/api.md ("GET /metrics") has the rules.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from ..codec import utf8_text
from ..model import HealthState, InstanceInfo, Metric, MetricKind, TypeInfo, WorkerInfo
from .prometheus_names import Naming, label_name, naming, unit_of

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("homelab.web.prometheus")

#: (name, type, help) of the framework's own series, keyed by Hub.counters() names.
CORE = {
    "runs": ("homelab_core_runs_total", "counter", "Plugin runs since start."),
    "failures": ("homelab_core_failures_total", "counter", "Runs that failed or timed out."),
    "skipped": ("homelab_core_skipped_runs_total", "counter", "Runs skipped as late or busy."),
    "samples_written": (
        "homelab_core_samples_written_total",
        "counter",
        "Samples written to the store since start.",
    ),
    "samples_dropped": (
        "homelab_core_samples_dropped_total",
        "counter",
        "Samples dropped: the write queue was full, the database refused them, or the store"
        " could not write them at shutdown.",
    ),
    "executions_dropped": (
        "homelab_core_executions_dropped_total",
        "counter",
        "Execution records dropped because the write queue was full.",
    ),
    "queue_depth": ("homelab_core_write_queue_depth", "gauge", "Samples waiting to be written."),
    "subscribers": ("homelab_core_bus_subscribers", "gauge", "Open event bus subscriptions."),
    "websocket_clients": (
        "homelab_core_websocket_clients",
        "gauge",
        "Connected /ws/metrics clients.",
    ),
    "websocket_dropped": (
        "homelab_core_websocket_dropped_total",
        "counter",
        "Events dropped for slow /ws/metrics clients (each told with a lagged notice).",
    ),
    "websocket_lost": (
        "homelab_core_websocket_lost_total",
        "counter",
        "Events the WebSocket broadcaster itself missed from the bus.",
    ),
    "threads_abandoned": (
        "homelab_core_threads_abandoned",
        "gauge",
        "Worker threads still running plugin code after their call was given up.",
    ),
    "loop_stalls": (
        "homelab_core_loop_stalls_total",
        "counter",
        "Times the event loop was blocked longer than the watchdog's threshold.",
    ),
    "loop_stalled_seconds": (
        "homelab_core_loop_stalled_seconds_total",
        "counter",
        "Seconds the event loop was blocked, in all.",
    ),
    "samples_over_run_limit": (
        "homelab_core_samples_over_run_limit_total",
        "counter",
        "Samples of runs refused for returning more than their instance's max_samples_per_run.",
    ),
    "samples_over_series_limit": (
        "homelab_core_samples_over_series_limit_total",
        "counter",
        "Samples of new series dropped because their instance had max_series series already.",
    ),
    "websocket_replay_bytes": (
        "homelab_core_websocket_replay_bytes",
        "gauge",
        "Bytes of encoded events kept for /ws/metrics clients that resume.",
    ),
    "texts_escaped": (
        "homelab_core_texts_escaped_total",
        "counter",
        "Texts sent or stored with lone surrogates as backslash escapes (not valid UTF-8).",
    ),
    "exposition_skipped": (
        "homelab_core_exposition_skipped_series",
        "gauge",
        "Plugin series left out of this exposition: their name is another family's (logged).",
    ),
    "write_failures": (
        "homelab_core_store_write_failures_total",
        "counter",
        "Store writes (transactions) that failed, for any reason.",
    ),
    "samples_refused": (
        "homelab_core_samples_refused_total",
        "counter",
        "Samples the database refused, dropped alone (also in samples_dropped).",
    ),
    "records_refused": (
        "homelab_core_records_refused_total",
        "counter",
        "Execution records and health transitions the database refused, dropped alone.",
    ),
    "store_writable": (
        "homelab_core_store_writable",
        "gauge",
        "1 while store writes succeed, 0 while they fail (the hub is then not ready).",
    ),
    "web_refused": (
        "homelab_core_web_refused_total",
        "counter",
        "Requests refused as from web pages of other sites: an unknown Host name (421),"
        " a foreign Origin (403), a POST that a form could send (415).",
    ),
    "alerts_transitions": (
        "homelab_core_alert_transitions_total",
        "counter",
        "Changes of state of alerts since start.",
    ),
    "alerts_events_missed": (
        "homelab_core_alert_events_missed_total",
        "counter",
        "Bus events the alert service missed because its evaluation fell behind.",
    ),
    "alerts_store_errors": (
        "homelab_core_alert_store_errors_total",
        "counter",
        "Failed writes of alert states, events or attempts (kept and retried).",
    ),
    "alerts_errors": (
        "homelab_core_alert_errors_total",
        "counter",
        "Internal errors of rule evaluation (logged; the alert service goes on).",
    ),
    "notifications_sent": (
        "homelab_core_notifications_sent_total",
        "counter",
        "Notifications delivered, over every notifier.",
    ),
    "notifications_failed": (
        "homelab_core_notifications_failed_total",
        "counter",
        "Notifications given up after their retries failed, over every notifier.",
    ),
    "notifications_dropped": (
        "homelab_core_notifications_dropped_total",
        "counter",
        "Notifications dropped because a notifier's queue was full.",
    ),
    "notification_attempts": (
        "homelab_core_notification_attempts_total",
        "counter",
        "Attempts to send a notification (first tries and retries).",
    ),
    "bus_redis_connected": (
        "homelab_core_bus_redis_connected",
        "gauge",
        "1 while the Redis bus reaches Redis (reading and sending), 0 while it does not.",
    ),
    "bus_redis_published": (
        "homelab_core_bus_redis_published_total",
        "counter",
        "Events this node published on the Redis bus.",
    ),
    "bus_redis_sent": (
        "homelab_core_bus_redis_sent_total",
        "counter",
        "Events this node sent to the Redis stream.",
    ),
    "bus_redis_received": (
        "homelab_core_bus_redis_received_total",
        "counter",
        "Events of other nodes read from the Redis stream.",
    ),
    "bus_redis_dropped": (
        "homelab_core_bus_redis_dropped_total",
        "counter",
        "Events not sent to Redis: the send queue was full while Redis was slow or away.",
    ),
    "bus_redis_reconnects": (
        "homelab_core_bus_redis_reconnects_total",
        "counter",
        "Times the Redis bus reached Redis again after losing it.",
    ),
    "bus_redis_gaps": (
        "homelab_core_bus_redis_gap_events_total",
        "counter",
        "Events of other nodes trimmed from the stream before this node could read them.",
    ),
    "bus_redis_queued": (
        "homelab_core_bus_redis_queued",
        "gauge",
        "Events waiting to be sent to Redis.",
    ),
    "mqtt_connected": (
        "homelab_core_mqtt_connected",
        "gauge",
        "1 while the MQTT exporter is connected to its broker.",
    ),
    "mqtt_published": (
        "homelab_core_mqtt_published_total",
        "counter",
        "MQTT messages published: states, discovery configs, health and enabled states.",
    ),
    "mqtt_dropped": (
        "homelab_core_mqtt_dropped_total",
        "counter",
        "MQTT state messages dropped: [mqtt] queue_size were waiting for the broker.",
    ),
    "mqtt_queued": (
        "homelab_core_mqtt_queued",
        "gauge",
        "MQTT messages waiting to be published.",
    ),
    "mqtt_reconnects": (
        "homelab_core_mqtt_reconnects_total",
        "counter",
        "Times the MQTT broker was reached again after the connection was lost.",
    ),
    "mqtt_commands": (
        "homelab_core_mqtt_commands_total",
        "counter",
        "MQTT commands carried out (switch: enable or disable; button: run now).",
    ),
    "mqtt_commands_refused": (
        "homelab_core_mqtt_commands_refused_total",
        "counter",
        "MQTT commands refused: unknown instance, bad payload, retained, or an error.",
    ),
    "mqtt_events_missed": (
        "homelab_core_mqtt_events_missed_total",
        "counter",
        "Bus events the MQTT exporter missed because its buffer was full.",
    ),
    "cache_redis_connected": (
        "homelab_core_cache_redis_connected",
        "gauge",
        "1 while the Redis cache reaches Redis, 0 while it answers from its local copy.",
    ),
    "cache_redis_write_failures": (
        "homelab_core_cache_redis_write_failures_total",
        "counter",
        "Writes (pipelines) of latest values and health to Redis that failed (retried).",
    ),
    "cache_redis_read_failures": (
        "homelab_core_cache_redis_read_failures_total",
        "counter",
        "Reads from Redis that failed and were answered from the local copy.",
    ),
    "cache_redis_dropped": (
        "homelab_core_cache_redis_dropped_total",
        "counter",
        "Latest values not queued for Redis (too many pending); the next run writes them.",
    ),
    "cache_redis_pending": (
        "homelab_core_cache_redis_pending",
        "gauge",
        "Series whose latest value waits to be written to Redis.",
    ),
    "cluster_connected": (
        "homelab_core_cluster_connected",
        "gauge",
        "1 while this node's heartbeats reach the cluster's Redis.",
    ),
    "cluster_live_nodes": (
        "homelab_core_cluster_live_nodes",
        "gauge",
        "Nodes of the cluster whose heartbeats are recent, this one included.",
    ),
    "cluster_instances_held": (
        "homelab_core_cluster_instances_held",
        "gauge",
        "Instances this node runs (pinned here, or leased).",
    ),
    "cluster_heartbeats_failed": (
        "homelab_core_cluster_heartbeats_failed_total",
        "counter",
        "Heartbeats that did not reach Redis.",
    ),
    "cluster_leases_lost": (
        "homelab_core_cluster_leases_lost_total",
        "counter",
        "Instances this node stopped because their lease could not be renewed in time.",
    ),
    "workers": (
        "homelab_core_workers",
        "gauge",
        "Worker processes running isolated plugin instances (isolation = process).",
    ),
}
#: (name, help) of the gauge of alerts by rule and state.
#: (name, type, help, field) of the per-worker families, labelled ``worker``.
WORKER = (
    (
        "homelab_core_worker_cpu_seconds_total",
        "counter",
        "CPU seconds the worker processes of this name spent in calls of plugin methods.",
        "cpu_seconds",
    ),
    (
        "homelab_core_worker_resident_bytes",
        "gauge",
        "Resident memory of the worker process after its last call (0: none runs).",
        "rss",
    ),
    (
        "homelab_core_worker_peak_resident_bytes",
        "gauge",
        "Peak resident memory of the worker process (0: none runs).",
        "peak_rss",
    ),
    (
        "homelab_core_worker_starts_total",
        "counter",
        "Worker processes started under this name.",
        "starts",
    ),
    (
        "homelab_core_worker_losses_total",
        "counter",
        "Worker processes of this name that ended in use: crashed, killed, over their"
        " memory limit, or ended because a run timed out.",
        "losses",
    ),
)
ALERTS = (
    "homelab_alerts",
    "Alerts of the rule in the state (pending, firing, resolved); 0 for the others.",
)


#: (name, help) of the per-instance gauges.
INSTANCE = {
    "enabled": (
        "homelab_instance_enabled",
        "Whether the plugin instance is enabled (1) or disabled (0).",
    ),
    "health": (
        "homelab_instance_health",
        "The plugin instance's health: 1 for its current state, 0 for the other states.",
    ),
    "failures": (
        "homelab_instance_consecutive_failures",
        "Failed runs of the plugin instance since its last success.",
    ),
    "success": (
        "homelab_instance_last_success_timestamp_seconds",
        "When the plugin instance last ran successfully, in seconds since the epoch.",
    ),
}
#: Labels of ours on every series; a plugin's labels of these names are renamed.
OUR_LABELS = ("instance", "type")
#: Family/owner pairs whose conflict was logged already (bounded).
_LOGGED: set[tuple[str, str]] = set()
_LOGGED_MAX = 10_000


@attrs.frozen
class Source:
    """One instance as the exposition reads it: its description and latest values."""

    info: InstanceInfo
    type_info: TypeInfo
    metrics: Sequence[Metric]


def _escape(value: str) -> str:
    """A label value as the text format writes it (and as UTF-8 encodes it)."""
    if value.isascii() and "\\" not in value and '"' not in value and "\n" not in value:
        return value
    return utf8_text(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help_text(text: str) -> str:
    return utf8_text(text).replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value))


def _le(text: str, scale: float) -> str:
    """A bucket bound in the family's unit."""
    if scale == 1.0:
        return text
    try:
        bound = float(text)
    except ValueError:
        return text
    return "+Inf" if bound == float("inf") else _number(bound * scale)


@attrs.define(eq=False)
class _Family:
    """One family of the exposition: its claimant, its help and its rows."""

    name: str
    type: str
    #: The plugin metric name that claimed it; None for ours.
    owner: str | None
    help: str = ""
    naming: Naming | None = None
    units: set[str] = attrs.Factory(set)
    types: dict[str, TypeInfo] = attrs.Factory(dict)
    rows: list[tuple[tuple[object, ...], str]] = attrs.Factory(list)
    #: The series (sample name and label text) already in ``rows``.
    seen: set[str] = attrs.Factory(set)

    def add(self, series: str, value: float, order: tuple[object, ...]) -> bool:
        """Add the row of ``series`` (``name{labels}``); False if the family has it already."""
        seen = self.seen
        if series in seen:
            return False
        seen.add(series)
        self.rows.append((order, f"{series} {_number(value)}"))
        return True

    def describe(self) -> str:
        """HELP of a plugin family: the metric's name, its unit, the plugin type(s)."""
        text = str(self.owner)
        if self.units:
            text += f" in {', '.join(sorted(self.units))}"
            unit = self.naming.unit if self.naming is not None else None
            if unit is not None and unit.converts:
                text += f", shown in {unit.base.replace('_', ' ')}"
        if len(self.types) == 1:
            ((name, info),) = self.types.items()
            text += f", from the {name} plugin"
            summary = (info.description or info.title).strip().splitlines()
            if summary and summary[0].strip() and summary[0].strip() != name:
                text += f": {summary[0].strip()}"
        elif self.types:
            text += f", from the plugins {', '.join(sorted(self.types))}"
        return text

    def lines(self) -> list[str]:
        text = self.help or self.describe()
        self.rows.sort(key=lambda row: row[0])
        return [
            f"# HELP {self.name} {_help_text(text)}",
            f"# TYPE {self.name} {self.type}",
            *(line for _, line in self.rows),
        ]


def _reserved(name: str, kind: str) -> tuple[str, ...]:
    """The sample names a family of ``kind`` uses."""
    if kind == "histogram":
        return (name, f"{name}_bucket", f"{name}_count", f"{name}_sum")
    if kind == "summary":
        return (name, f"{name}_count", f"{name}_sum")
    return (name,)


@attrs.frozen
class _Plan:
    """Where the series of one plugin metric (name, kind, unit) go: the family (None when
    another has its name), and the sample's suffix and role in a histogram or summary."""

    family: _Family | None
    naming: Naming
    suffix: str = ""
    role: str = "plain"


_ROLE_ORDER = {"plain": 0, "quantile": 0, "bucket": 0, "sum": 1, "count": 2}


class _Exposition:
    """Families by name, claimed first come, first served; counts the series left out."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}
        self._claimed: dict[str, _Family] = {}
        self.skipped = 0

    def claim(self, name: str, kind: str, owner: str | None, help: str = "") -> _Family | None:
        """The family ``name`` for ``owner``, or None when another owner or type has it."""
        family = self.families.get(name)
        if family is not None:
            return family if family.type == kind and family.owner == owner else None
        names = _reserved(name, kind)
        if any(n in self._claimed for n in names):
            return None
        family = _Family(name, kind, owner, help)
        self.families[name] = family
        for n in names:
            self._claimed[n] = family
        return family

    def lines(self) -> list[str]:
        """Every family that has rows, by name."""
        families = self.families
        return [
            line
            for name in sorted(families)
            if families[name].rows
            for line in families[name].lines()
        ]


def _ours(info: InstanceInfo) -> str:
    """The text of our labels of an instance's series."""
    return f'instance="{_escape(info.id)}",type="{_escape(info.type)}"'


def _instance_rows(exposition: _Exposition, sources: Sequence[Source]) -> None:
    families = {
        key: exposition.claim(name, "gauge", None, text) for key, (name, text) in INSTANCE.items()
    }
    for index, source in enumerate(sources):
        info = source.info
        ours, health = _ours(info), info.health
        rows: list[tuple[str, str, float]] = [
            ("enabled", ours, float(info.enabled)),
            *(
                ("health", f'{ours},state="{state.value}"', float(health.state is state))
                for state in HealthState
            ),
            ("failures", ours, float(health.consecutive_failures)),
        ]
        if health.last_success is not None:
            rows.append(("success", ours, health.last_success))
        for key, labels, value in rows:
            family = families[key]
            if family is not None:
                family.add(f"{family.name}{{{labels}}}", value, (index, labels))


@attrs.frozen
class _Groups:
    """The histograms and summaries the plugin metrics spell out, by base name: the unit of
    each (its ``_sum``'s), and the gauges that are a summary's quantiles."""

    histograms: dict[str, str]
    summaries: dict[str, str]
    quantiles: frozenset[str]

    @classmethod
    def find(cls, sources: Sequence[Source], keys: set[tuple[str, MetricKind, str]]) -> _Groups:
        """Look for them among the distinct metrics ``keys`` (name, kind, unit)."""
        kinds: dict[str, set[str]] = {}
        units: dict[str, str] = {}
        for name, kind, unit in sorted(keys):
            kinds.setdefault(name, set()).add(kind.value)
            if unit:
                units.setdefault(name, unit)

        def counter(name: str) -> bool:
            return kinds.get(name) == {"counter"}

        buckets = {
            name
            for name in kinds
            if (base := name.removesuffix("_bucket")) != name
            and counter(name)
            and counter(f"{base}_count")
        }
        sums = {
            base
            for name in kinds
            if (base := name.removesuffix("_count")) != name
            and counter(name)
            and counter(f"{base}_sum")
            and f"{base}_bucket" not in buckets
        }
        candidates = {*buckets, *(n for n in sums if kinds.get(n) == {"gauge"})}
        lacking: set[str] = set()  # a series of it has no "le" (buckets) or "quantile"
        if candidates:
            for source in sources:
                for metric in source.metrics:
                    name = metric.name
                    if name in candidates and name not in lacking:
                        label = "le" if name in buckets else "quantile"
                        if label not in metric.labels:
                            lacking.add(name)
        histograms = {
            base: units.get(f"{base}_sum", "")
            for name in buckets - lacking
            if (base := name.removesuffix("_bucket"))
        }
        summaries = {
            base: units.get(f"{base}_sum") or units.get(base, "")
            for base in sums
            if base not in histograms
        }
        quantiles = frozenset(n for n in candidates - lacking if n in summaries)
        return cls(histograms, summaries, quantiles)

    def role(self, name: str, kind: str) -> tuple[str, str, str] | None:
        """(base, family type, role) of a metric that belongs to a histogram or summary."""
        if kind == "gauge":
            return (name, "summary", "quantile") if name in self.quantiles else None
        if kind != "counter":
            return None
        for suffix, role in (("_bucket", "bucket"), ("_count", "count"), ("_sum", "sum")):
            base = name.removesuffix(suffix)
            if base == name:
                continue
            if base in self.histograms:
                return base, "histogram", role
            if base in self.summaries and role != "bucket":
                return base, "summary", role
        return None


def _plans(
    exposition: _Exposition, sources: Sequence[Source]
) -> dict[tuple[str, MetricKind, str], _Plan]:
    """The family of every distinct plugin metric (name, kind, unit), claimed in alphabetical
    order of the names (a histogram's or summary's by its base name, first among equals)."""
    keys = {(m.name, m.kind, m.unit) for s in sources for m in s.metrics}
    groups = _Groups.find(sources, keys)
    planned: list[tuple[tuple[str, int, str, MetricKind, str], str, Naming, str, str, str]] = []
    for name, kind, unit in keys:
        grouped = groups.role(name, kind.value)
        if grouped is None:
            order = (name, 1, name, kind, unit)
            planned.append((order, name, naming(name, kind.value, unit), "", "plain", unit))
            continue
        owner, family_type, role = grouped
        shown = (groups.histograms if family_type == "histogram" else groups.summaries)[owner]
        found = unit_of(shown)
        if found is not None and found.offset:
            shown = ""  # a sum of offset values (°F) cannot be converted without its count
        suffix = "" if role == "quantile" else f"_{role}"
        order = (owner, 0, name, kind, unit)
        planned.append(
            (order, owner, naming(owner, family_type, shown), suffix, role, unit and shown)
        )
    plans: dict[tuple[str, MetricKind, str], _Plan] = {}
    for order, owner, named, suffix, role, shown in sorted(planned, key=lambda p: p[0]):
        family = exposition.claim(named.family, named.type, owner)
        if family is not None:
            family.naming = named
            if shown:
                family.units.add(shown)
        plans[order[2:]] = _Plan(family, named, suffix, role)
    return plans


@functools.lru_cache(maxsize=16_384)
def _label_names(keys: tuple[str, ...], role: str) -> tuple[str, ...]:
    """A plugin's label names as exposed: valid, and renamed where they would clash with ours,
    with each other, or with a label Prometheus reserves (``exported_*``)."""
    used = set(OUR_LABELS)
    names = []
    for key in keys:
        name = label_name(key)
        if (
            name in used
            or name.startswith("__")
            or (name == "le" and role != "bucket")
            or (name == "quantile" and role != "quantile")
        ):
            name = f"exported_{name}"
            while name in used:
                name = f"exported_{name}"
        used.add(name)
        names.append(name)
    return tuple(names)


def _plugin_rows(exposition: _Exposition, sources: Sequence[Source]) -> None:
    plans = _plans(exposition, sources)
    for index, source in enumerate(sources):
        info = source.info
        ours = _ours(info)
        for metric in source.metrics:
            plan = plans[(metric.name, metric.kind, metric.unit)]
            family, named, role = plan.family, plan.naming, plan.role
            if family is None:
                _skipped(exposition, named.family, metric.name)
                continue
            if info.type not in family.types:
                family.types[info.type] = source.type_info
            labels = metric.labels
            if role == "plain":
                value = named.value(metric.value)
                text = (
                    ",".join(
                        f'{name}="{_escape(v)}"'
                        for name, v in zip(
                            _label_names(tuple(labels), role), labels.values(), strict=True
                        )
                    )
                    if labels
                    else ""
                )
                order: tuple[object, ...] = (index, text)
            else:
                value, text, order = _grouped(metric, named, role, index)
            series = (
                f"{family.name}{plan.suffix}{{{ours},{text}}}"
                if text
                else (f"{family.name}{plan.suffix}{{{ours}}}")
            )
            if not family.add(series, value, order):
                _skipped(exposition, family.name, metric.name)


def _grouped(
    metric: Metric, named: Naming, role: str, index: int
) -> tuple[float, str, tuple[object, ...]]:
    """The value, label text and order of a histogram's or summary's row: rows sorted by
    series, then buckets by bound (or quantiles), then the sum, then the count."""
    labels = metric.labels
    scale = named.scale
    rest, bound, bound_text = [], "", ""
    for name, v in zip(_label_names(tuple(labels), role), labels.values(), strict=True):
        if name in ("le", "quantile"):
            bound = v
            shown = _le(v, scale) if name == "le" else v
            bound_text = f'{name}="{_escape(shown)}"'
        else:
            rest.append(f'{name}="{_escape(v)}"')
    rest_text = ",".join(rest)
    text = ",".join(t for t in (rest_text, bound_text) if t)
    try:
        number = float(bound) if bound else 0.0
    except ValueError:
        number = 0.0
    value = metric.value * scale if role in ("sum", "quantile") else metric.value
    return value, text, (index, rest_text, _ROLE_ORDER[role], number)


def _skipped(exposition: _Exposition, family: str, owner: str) -> None:
    exposition.skipped += 1
    if (family, owner) in _LOGGED or len(_LOGGED) >= _LOGGED_MAX:
        return
    _LOGGED.add((family, owner))
    log.warning(
        "/metrics leaves out plugin metric %r: its Prometheus name %s is another family's"
        " (or a series of it twice); counted in homelab_core_exposition_skipped_series",
        owner,
        family,
    )


def _alert_rows(exposition: _Exposition, counts: Mapping[tuple[str, str], int]) -> None:
    family = exposition.claim(ALERTS[0], "gauge", None, ALERTS[1])
    if family is None:
        return
    for rule, state in sorted(counts):
        labels = f'rule="{_escape(rule)}",state="{_escape(state)}"'
        family.add(f"{family.name}{{{labels}}}", counts[rule, state], (rule, state))


def _worker_rows(exposition: _Exposition, workers: Sequence[WorkerInfo]) -> None:
    for name, kind, text, field in WORKER:
        family = exposition.claim(name, kind, None, text)
        if family is None:
            continue
        for worker in workers:
            value = getattr(worker, field) if worker.pid is not None or kind == "counter" else 0
            labels = f'worker="{_escape(worker.name)}"'
            family.add(f"{family.name}{{{labels}}}", value, (worker.name,))


def render(
    sources: Sequence[Source],
    figures: Mapping[str, float],
    alerts: Mapping[tuple[str, str], int] | None = None,
    workers: Sequence[WorkerInfo] = (),
) -> str:
    """The exposition text of the instances' latest values and health, the alerts by rule
    and state, the worker processes, and our figures."""
    exposition = _Exposition()
    for name, kind, _ in CORE.values():
        exposition.claim(name, kind, None)
    _instance_rows(exposition, sources)
    _alert_rows(exposition, alerts or {})
    _worker_rows(exposition, workers)
    _plugin_rows(exposition, sources)
    values = {**figures, "exposition_skipped": exposition.skipped}
    lines: list[str] = []
    for key, (name, kind, text) in CORE.items():
        if key in values:
            lines += [
                f"# HELP {name} {text}",
                f"# TYPE {name} {kind}",
                f"{name} {_number(values[key])}",
            ]
        exposition.families.pop(name, None)
    return "\n".join(lines + exposition.lines()) + "\n"


async def exposition(hub: Hub, extra: Mapping[str, float] | None = None) -> str:
    """Everything ``GET /metrics`` serves."""
    sources = [
        Source(info, hub.type_info(info.id), await hub.latest(info.id)) for info in hub.instances()
    ]
    return render(
        sources, {**hub.counters(), **(extra or {})}, hub.alerts.state_counts(), hub.workers()
    )
