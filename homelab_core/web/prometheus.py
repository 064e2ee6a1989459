"""Prometheus text exposition (format 0.0.4) of the latest values and our own counters.

Plugin metrics are named ``homelab_<name>`` (dots and other characters become ``_``) with
the labels ``instance`` and ``type`` added; the framework's own figures are
``homelab_core_*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..hub import Hub

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9_]")

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
        "Samples dropped because the write queue was full.",
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
    "web_refused": (
        "homelab_core_web_refused_total",
        "counter",
        "Requests refused as from web pages of other sites: an unknown Host name (421),"
        " a foreign Origin (403), a POST that a form could send (415).",
    ),
}


def metric_name(name: str) -> str:
    """A plugin metric's Prometheus name."""
    return "homelab_" + _INVALID.sub("_", name)


def _label_name(name: str) -> str:
    cleaned = _LABEL_INVALID.sub("_", name)
    return cleaned if not cleaned[:1].isdigit() else f"_{cleaned}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{_label_name(k)}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    return repr(float(value))


def render(
    samples: Iterable[tuple[str, str, Mapping[str, str], float]],
    counters: Mapping[str, float],
) -> str:
    """The exposition text of plugin samples (name, kind, labels, value) and counters."""
    lines: list[str] = []
    for key, value in counters.items():
        if key not in CORE:
            continue
        name, kind, text = CORE[key]
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]
    grouped: dict[str, tuple[str, list[str]]] = {}
    for name, kind, labels, value in samples:
        family = metric_name(name)
        entry = grouped.setdefault(family, (kind, []))
        entry[1].append(f"{family}{_labels(labels)} {_number(value)}")
    for family in sorted(grouped):
        kind, rows = grouped[family]
        lines.append(f"# TYPE {family} {'counter' if kind == 'counter' else 'gauge'}")
        lines.extend(rows)
    return "\n".join(lines) + "\n"


async def exposition(hub: Hub, extra: Mapping[str, float] | None = None) -> str:
    """Everything ``GET /metrics`` serves."""
    samples = []
    for info in hub.instances():
        for metric in await hub.latest(info.id):
            labels = {"instance": info.id, "type": info.type, **metric.labels}
            samples.append((metric.name, metric.kind.value, labels, metric.value))
    return render(samples, {**hub.counters(), **(extra or {})})
