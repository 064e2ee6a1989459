"""Per-instance bounds on what runs bring: samples per run and series in all.

A plugin that invents a new label value every run (a request id, a timestamp, a random
port) would otherwise add series without end: to the latest-values cache, the store's
series table and the write path's series ids, which all keep every series for as long as
the hub runs. Two limits, as Prometheus has ``sample_limit`` for a scrape and Mimir a
per-tenant series limit:

- ``max_samples_per_run``: a run that returns more samples is refused whole (like a
  Prometheus scrape over its ``sample_limit``): it becomes an ``error`` execution that
  says so, and none of its samples is kept. Cutting it at the limit would store an
  arbitrary part of the collection instead.
- ``max_series``: once an instance has that many distinct series (name and labels), a
  sample of a further new series is dropped, while the known ones keep flowing; the run
  still succeeds, but the instance's health is ``degraded`` with a message that names
  the limit and the number dropped.

``0`` switches a limit off. Both drops are counted per instance (:class:`RunStats`) and
logged once each time an instance starts or stops hitting a limit. The scheduler applies
a :class:`Limiter` to every run of a hub; ``homelab run`` does not (it stores nothing).
Pure: no event loop, no clock.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import attrs

from .config import (
    DEFAULT_MAX_SAMPLES_PER_RUN,
    DEFAULT_MAX_SERIES,
    InstanceSettings,
    SchedulerSettings,
)
from .model import Execution, ExecutionStatus, HealthReport, HealthState, Metric, RunStats

log = logging.getLogger("homelab.limits")

#: The health states worse than ``degraded``, which a plugin's own report keeps.
_WORSE = frozenset({HealthState.FAILING, HealthState.FAILED})

#: A series as the limiter knows it: the name, then the labels' items (a Metric keeps its
#: labels sorted, so the items are canonical; the store's write path keys series alike).
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@attrs.frozen
class Limits:
    """An instance's limits; ``0`` is no limit."""

    max_samples_per_run: int = DEFAULT_MAX_SAMPLES_PER_RUN
    max_series: int = DEFAULT_MAX_SERIES

    @classmethod
    def of(cls, instance: InstanceSettings, scheduler: SchedulerSettings) -> Limits:
        """The instance's own limits, else the ``[scheduler]`` defaults."""
        samples, series = instance.max_samples_per_run, instance.max_series
        return cls(
            scheduler.max_samples_per_run if samples is None else samples,
            scheduler.max_series if series is None else series,
        )


class Checked(NamedTuple):
    """A run after its limits: what the scheduler judges and hands on."""

    execution: Execution
    metrics: list[Metric]
    report: HealthReport | None


class Limiter:
    """Applies one instance's :class:`Limits` to its runs, remembering its series.

    :param instance_id: the instance, for messages and log lines.
    :param limits: the limits.
    :param stats: the instance's counters, where the series and the drops are counted
        (a new :class:`RunStats` if not given).
    """

    __slots__ = ("_hitting", "_known", "instance_id", "limits", "stats")

    def __init__(self, instance_id: str, limits: Limits, stats: RunStats | None = None) -> None:
        self.instance_id = instance_id
        self.limits = limits
        self.stats = stats if stats is not None else RunStats()
        #: Every series the instance has brought since the hub started, up to the limit.
        self._known: set[SeriesKey] = set()
        #: The limit the last run hit ("samples", "series") or None, to log changes once.
        self._hitting: str | None = None

    def check(
        self, execution: Execution, metrics: list[Metric], report: HealthReport | None
    ) -> Checked:
        """Apply the limits to one run's outcome; a failed run passes unchanged."""
        if execution.status is not ExecutionStatus.OK:
            return Checked(execution, metrics, report)
        limit = self.limits.max_samples_per_run
        if limit and len(metrics) > limit:
            return self._refuse(execution, len(metrics), limit)
        if self.limits.max_series and metrics:
            kept = self._series(metrics)
            if len(kept) < len(metrics):
                return self._dropped(execution, kept, len(metrics) - len(kept), report)
        self._hit(None, "")
        return Checked(execution, metrics, report)

    def _series(self, metrics: list[Metric]) -> list[Metric]:
        """The metrics whose series is known, or new and within the limit."""
        known = self._known
        keys = [(m.name, tuple(m.labels.items())) for m in metrics]
        if known.issuperset(keys):  # the common case: the same series as before
            return metrics
        room = self.limits.max_series - len(known)
        kept = []
        for metric, key in zip(metrics, keys, strict=True):
            if key not in known:
                if room <= 0:
                    continue
                known.add(key)
                room -= 1
            kept.append(metric)
        self.stats.series = len(known)
        return kept

    def _refuse(self, execution: Execution, count: int, limit: int) -> Checked:
        self.stats.samples_over_run_limit += count
        error = (
            f"collect() returned {count} samples, more than max_samples_per_run ({limit}):"
            f" the run is refused and its {count} samples are dropped"
        )
        self._hit("samples", error)
        refused = attrs.evolve(execution, status=ExecutionStatus.ERROR, error=error, metric_count=0)
        return Checked(refused, [], None)

    def _dropped(
        self,
        execution: Execution,
        kept: list[Metric],
        dropped: int,
        report: HealthReport | None,
    ) -> Checked:
        stats = self.stats
        stats.samples_over_series_limit += dropped
        limit = self.limits.max_series
        message = (
            f"max_series ({limit}) reached: {dropped} sample(s) of new series dropped in this"
            f" run ({stats.samples_over_series_limit} since start); the {limit} known series"
            " are still collected"
        )
        self._hit("series", message)
        # Degraded, unless the plugin itself reported worse; its message comes first.
        state = report.state if report is not None and report.state in _WORSE else None
        if report is not None and report.message:
            message = f"{report.message}; {message}"
        report = HealthReport(state or HealthState.DEGRADED, message)
        return Checked(attrs.evolve(execution, metric_count=len(kept)), kept, report)

    def _hit(self, which: str | None, message: str) -> None:
        """Log when the instance starts hitting a limit, or stops: once per change."""
        if which == self._hitting:
            return
        self._hitting = which
        if which is None:
            log.info("plugin instance %r is back within its limits", self.instance_id)
        else:
            log.warning("plugin instance %r: %s", self.instance_id, message)
