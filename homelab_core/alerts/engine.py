"""Rule evaluation: every sample, health change and run, as it happens, into alert states.

:class:`AlertEngine` is plain synchronous code with no I/O: the alert service feeds it the
bus's events and a clock tick, and persists and dispatches the transitions it returns.

States, per rule and matched series (value and absence rules) or instance (health and
absence-of-runs rules)::

    inactive -> pending -> firing -> resolved
          \\______________/^            |
           (for = 0)                   v
                                 (pending or firing again)

A value rule's condition is ``value <op> threshold`` (the value being the last sample, or
``avg``/``min``/``max``/``rate`` of the samples of the last ``window`` seconds). It must
hold for ``for`` seconds before the alert fires; while pending, a sample that fails the
condition returns it to inactive. A firing alert resolves when the condition fails, unless
``resolve_threshold`` is set (it then stays firing while the value passes that threshold)
or ``keep_firing_for`` is (it then resolves only once the condition has failed that long).

The hot path is :meth:`AlertEngine.observe_metrics`: the rules that can match a metric of
an instance are looked up once per (instance, metric name) and remembered, so a sample that
no rule matches costs one dictionary look-up, and one that a rule matches but that passes
no threshold and has no alert costs a comparison.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..model import HealthState, Metric, series_key
from .config import RuleSettings
from .templates import Template

log = logging.getLogger("homelab.alerts")

#: What an alert can be in.
STATES = ("inactive", "pending", "firing", "resolved")

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def fingerprint(rule_id: str, instance_id: str | None, key: str) -> str:
    """A short id of an alert that stays the same across restarts."""
    text = f"{rule_id}\0{instance_id or ''}\0{key}"
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@attrs.define(eq=False)
class Alert:
    """One rule's alert about one series or instance, with its state."""

    rule_id: str
    fingerprint: str
    labels: dict[str, str]
    instance_id: str | None = None
    metric: str | None = None
    #: The labels of the matched series (value and absence-of-series rules).
    series: dict[str, str] = attrs.field(factory=dict)
    state: str = "inactive"
    value: float | None = None
    #: When the condition began to hold (the start of pending, or of firing with for = 0).
    active_since: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    #: The last time the condition held.
    last_true_at: float | None = None
    #: Whether the condition held at the last evaluation.
    holds: bool = False
    #: When a firing notification with this alert was last delivered.
    notified_at: float | None = None
    #: Whether its resolution was delivered (or needs none).
    resolved_notified: bool = False
    summary: str = ""
    description: str = ""
    #: The time of the last sample or successful run (absence rules).
    last_seen: float | None = None
    #: An absence-of-runs alert of a disabled instance is not evaluated.
    paused: bool = False
    #: (timestamp, value) of the window's samples (value rules with a window).
    samples: deque[tuple[float, float]] | None = attrs.field(default=None, repr=False)

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "warning")


@attrs.frozen
class Transition:
    """An alert changed state."""

    alert: Alert
    old: str
    new: str
    at: float


class CompiledRule:
    """A rule ready to be evaluated: its matchers and its comparison."""

    def __init__(self, settings: RuleSettings) -> None:
        self.settings = settings
        self.id = settings.id
        self.kind = settings.kind
        self.compare = _COMPARE[settings.op]
        self.threshold = settings.threshold
        self.resolve_threshold = settings.resolve_threshold
        self.window = settings.window
        self.function = settings.function
        self.for_ = settings.for_
        self.keep_firing_for = settings.keep_firing_for
        self.states = frozenset(HealthState(s) for s in settings.states)
        self.match = dict(settings.match)
        self.summary = Template(settings.summary)
        self.description = Template(settings.description)
        exact = [p for p in settings.instances if not _is_pattern(p)]
        self._instances = frozenset(exact) if len(exact) == len(settings.instances) else None

    def instance_matches(self, instance_id: str, type_name: str | None) -> bool:
        s = self.settings
        if self._instances is not None:
            if instance_id not in self._instances:
                return False
        elif not any(fnmatch.fnmatchcase(instance_id, p) for p in s.instances):
            return False
        return any(fnmatch.fnmatchcase(type_name or "", p) for p in s.types)

    def metric_matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.settings.metric)

    def labels_match(self, labels: Mapping[str, str]) -> bool:
        for name, pattern in self.match.items():
            if not fnmatch.fnmatchcase(labels.get(name, ""), pattern):
                return False
        return True

    def labels_for(
        self,
        instance_id: str,
        type_name: str | None,
        metric: str | None,
        series: Mapping[str, str],
    ) -> dict[str, str]:
        labels = {**series, **self.settings.labels}
        labels.update(
            rule=self.id,
            severity=self.settings.severity,
            instance=instance_id,
            type=type_name or "",
        )
        if metric is not None:
            labels["metric"] = metric
        return labels


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


class AlertEngine:
    """Alert states of a set of rules, advanced by observations and a clock tick.

    ``type_of`` gives an instance's plugin type (None when unknown).
    """

    def __init__(
        self,
        rules: Iterable[RuleSettings] = (),
        *,
        type_of: Callable[[str], str | None] = lambda _: None,
    ) -> None:
        self.type_of = type_of
        self.rules: dict[str, CompiledRule] = {}
        #: Every alert that is not inactive, or that tracks a window or an absence.
        self.alerts: dict[str, Alert] = {}
        # rule id -> (instance, series key) -> alert, for value and absence-series rules.
        self._series: dict[str, dict[tuple[str, Any], Alert]] = {}
        # (instance, metric name) -> the value and absence rules that may match it.
        self._candidates: dict[tuple[str, str], tuple[CompiledRule, ...]] = {}
        self.samples_evaluated = 0
        self.set_rules(rules)

    # -- rules ---------------------------------------------------------------------------

    def set_rules(self, rules: Iterable[RuleSettings]) -> list[Alert]:
        """Replace the rules; returns the alerts of rules that no longer exist (dropped)."""
        self.rules = {r.id: CompiledRule(r) for r in rules}
        self._candidates.clear()
        # Rules that name exact instances are found by instance; the others by scanning.
        self._by_instance: dict[str, list[CompiledRule]] = {}
        self._scanned: list[CompiledRule] = []
        for compiled in self.rules.values():
            if compiled.kind == "value" or (
                compiled.kind == "absence" and compiled.settings.of == "series"
            ):
                exact = compiled._instances
                if exact is None:
                    self._scanned.append(compiled)
                else:
                    for instance_id in exact:
                        self._by_instance.setdefault(instance_id, []).append(compiled)
        dropped = [a for a in self.alerts.values() if a.rule_id not in self.rules]
        for alert in dropped:
            del self.alerts[alert.fingerprint]
        self._series = {
            rule_id: {k: a for k, a in table.items() if a.fingerprint in self.alerts}
            for rule_id, table in self._series.items()
            if rule_id in self.rules
        }
        return dropped

    def _candidates_for(self, instance_id: str, name: str) -> tuple[CompiledRule, ...]:
        type_name = self.type_of(instance_id)
        found = tuple(
            rule
            for rule in [*self._by_instance.get(instance_id, ()), *self._scanned]
            if (rule.kind == "value" or (rule.kind == "absence" and rule.settings.of == "series"))
            and rule.metric_matches(name)
            and rule.instance_matches(instance_id, type_name)
        )
        self._candidates[(instance_id, name)] = found
        return found

    def replace(self, alerts: Iterable[Alert]) -> None:
        """Forget every alert and take ``alerts`` instead (a copy of another node's)."""
        self.alerts.clear()
        self._series.clear()
        self.restore(alerts)

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Take back persisted alerts (after a restart); those of unknown rules are skipped."""
        for alert in alerts:
            rule = self.rules.get(alert.rule_id)
            if rule is None:
                continue
            self.alerts[alert.fingerprint] = alert
            if rule.kind == "value" or (rule.kind == "absence" and rule.settings.of == "series"):
                series = alert.series
                name = (alert.metric or "", tuple(sorted(series.items())) if series else ())
                key = (alert.instance_id or "", name)
                self._series.setdefault(rule.id, {})[key] = alert

    # -- observations --------------------------------------------------------------------

    def observe_metrics(
        self, instance_id: str, metrics: Sequence[Metric], now: float
    ) -> list[Transition]:
        """Evaluate the value and absence rules on a collection's metrics."""
        out: list[Transition] = []
        candidates = self._candidates
        series = self._series
        evaluated = 0
        for metric in metrics:
            rules = candidates.get((instance_id, metric.name))
            if rules is None:
                rules = self._candidates_for(instance_id, metric.name)
            if not rules:
                continue
            labels = metric.labels
            key: tuple[str, Any] | None = None
            at = metric.timestamp if metric.timestamp is not None else now
            value = metric.value
            for rule in rules:
                if rule.match and not rule.labels_match(labels):
                    continue
                evaluated += 1
                table = series.get(rule.id)
                alert = None
                if table:  # only a rule with alerts needs the series' key
                    if key is None:
                        key = _key(instance_id, metric)
                    alert = table.get(key)
                if rule.kind == "absence":
                    if alert is None:
                        key = key or _key(instance_id, metric)
                        alert = self._new_series_alert(rule, instance_id, metric, key)
                    alert.last_seen = at
                    alert.value = value
                    if alert.state == "firing":
                        self._fails(rule, alert, at, value, out)
                    continue
                if rule.window > 0:
                    if alert is None:
                        key = key or _key(instance_id, metric)
                        alert = self._new_series_alert(rule, instance_id, metric, key)
                    x = _window_value(rule, alert, at, value)
                    if x is None:
                        continue
                else:
                    x = value
                if alert is None:
                    if not rule.compare(x, rule.threshold):  # type: ignore[arg-type]
                        continue  # the common case: nothing to do
                    key = key or _key(instance_id, metric)
                    alert = self._new_series_alert(rule, instance_id, metric, key)
                self._evaluate_value(rule, alert, x, at, out)
        self.samples_evaluated += evaluated
        return out

    def _new_series_alert(
        self, rule: CompiledRule, instance_id: str, metric: Metric, key: tuple[str, Any]
    ) -> Alert:
        skey = series_key(metric.name, metric.labels)
        labels = rule.labels_for(instance_id, self.type_of(instance_id), metric.name, metric.labels)
        alert = Alert(
            rule_id=rule.id,
            fingerprint=fingerprint(rule.id, instance_id, skey),
            labels=labels,
            instance_id=instance_id,
            metric=metric.name,
            series=dict(metric.labels),
            samples=deque() if rule.window > 0 else None,
        )
        self._series.setdefault(rule.id, {})[key] = alert
        self.alerts[alert.fingerprint] = alert
        return alert

    def _evaluate_value(
        self, rule: CompiledRule, alert: Alert, x: float, at: float, out: list[Transition]
    ) -> None:
        assert rule.threshold is not None
        alert.value = x
        if alert.state == "firing" and rule.resolve_threshold is not None:
            holds = rule.compare(x, rule.resolve_threshold)
        else:
            holds = rule.compare(x, rule.threshold)
        if holds:
            self._holds(rule, alert, at, x, out)
        else:
            self._fails(rule, alert, at, x, out)

    def _holds(
        self,
        rule: CompiledRule,
        alert: Alert,
        at: float,
        value: float | None,
        out: list[Transition],
    ) -> None:
        alert.holds = True
        alert.last_true_at = at
        state = alert.state
        if state in ("inactive", "resolved"):
            alert.active_since = at
            alert.fired_at = alert.resolved_at = None
            self._move(rule, alert, "pending" if rule.for_ > 0 else "firing", at, value, out)
        elif state == "pending" and at - _or(alert.active_since, at) >= rule.for_:
            self._move(rule, alert, "firing", at, value, out)

    def _fails(
        self,
        rule: CompiledRule,
        alert: Alert,
        at: float,
        value: float | None,
        out: list[Transition],
    ) -> None:
        alert.holds = False
        state = alert.state
        if state == "pending":
            self._move(rule, alert, "inactive", at, value, out)
        elif state == "firing":
            since = alert.last_true_at if alert.last_true_at is not None else at
            if rule.keep_firing_for <= 0 or at - since >= rule.keep_firing_for:
                self._move(rule, alert, "resolved", at, value, out)

    def _move(
        self,
        rule: CompiledRule,
        alert: Alert,
        new: str,
        at: float,
        value: float | None,
        out: list[Transition],
    ) -> None:
        old, alert.state = alert.state, new
        if new == "firing":
            alert.fired_at = at
            alert.resolved_at = None
            alert.resolved_notified = False
            alert.notified_at = None  # a new firing: its message is still to be sent
        elif new == "resolved":
            alert.resolved_at = at
            # Nothing to tell about an alert whose firing was never delivered.
            alert.resolved_notified = alert.notified_at is None
        elif new == "inactive":
            alert.active_since = None
        self._render(rule, alert)
        out.append(Transition(alert, old, new, at))
        if new == "inactive" and alert.samples is None and rule.kind != "absence":
            self._forget(alert)

    def _forget(self, alert: Alert) -> None:
        self.alerts.pop(alert.fingerprint, None)
        table = self._series.get(alert.rule_id)
        if table:
            for key, known in list(table.items()):
                if known is alert:
                    del table[key]
                    break

    def _render(self, rule: CompiledRule, alert: Alert) -> None:
        context = {
            "value": alert.value,
            "threshold": rule.threshold,
            "rule": rule.id,
            "severity": rule.settings.severity,
            "state": alert.state,
            "instance": alert.instance_id or "",
            "type": alert.labels.get("type", ""),
            "metric": alert.metric or "",
            "unit": "",
            "labels": alert.labels,
        }
        alert.summary = _safe_render(rule.summary, context)
        alert.description = _safe_render(rule.description, context)

    def observe_health(self, instance_id: str, state: HealthState, now: float) -> list[Transition]:
        """Evaluate the health rules (and pause absence-of-runs rules of a disabled one)."""
        out: list[Transition] = []
        type_name = self.type_of(instance_id)
        for rule in self.rules.values():
            if rule.kind == "health":
                if not rule.instance_matches(instance_id, type_name):
                    continue
                alert = self._instance_alert(rule, instance_id, type_name)
                alert.value = None
                if state in rule.states:
                    if not alert.holds:
                        alert.active_since = None  # the condition starts now
                        self._holds(rule, alert, now, None, out)
                else:
                    self._fails(rule, alert, now, None, out)
                    if alert.state == "inactive":
                        self._forget(alert)
            elif rule.kind == "absence" and rule.settings.of == "runs":
                if not rule.instance_matches(instance_id, type_name):
                    continue
                alert = self._instance_alert(rule, instance_id, type_name)
                if state == HealthState.DISABLED:
                    alert.paused = True
                    if alert.state == "firing":
                        self._move(rule, alert, "resolved", now, None, out)
                elif alert.paused:
                    alert.paused = False
                    alert.last_seen = now
        return out

    def observe_run(self, instance_id: str, ok: bool, now: float) -> list[Transition]:
        """A run ended: a successful one is a sign of life for absence-of-runs rules."""
        if not ok:
            return []
        out: list[Transition] = []
        type_name = self.type_of(instance_id)
        for rule in self.rules.values():
            if rule.kind != "absence" or rule.settings.of != "runs":
                continue
            if not rule.instance_matches(instance_id, type_name):
                continue
            alert = self._instance_alert(rule, instance_id, type_name)
            alert.last_seen = now
            if alert.state == "firing":
                self._fails(rule, alert, now, None, out)
        return out

    def track_instance(self, instance_id: str, now: float, *, enabled: bool = True) -> None:
        """Start watching an instance for absence-of-runs rules (at start, or when added)."""
        type_name = self.type_of(instance_id)
        for rule in self.rules.values():
            runs = rule.kind == "absence" and rule.settings.of == "runs"
            if runs and rule.instance_matches(instance_id, type_name):
                alert = self._instance_alert(rule, instance_id, type_name)
                if alert.last_seen is None:
                    alert.last_seen = now
                alert.paused = not enabled

    def _instance_alert(self, rule: CompiledRule, instance_id: str, type_name: str | None) -> Alert:
        fp = fingerprint(rule.id, instance_id, "")
        alert = self.alerts.get(fp)
        if alert is None:
            alert = Alert(
                rule_id=rule.id,
                fingerprint=fp,
                labels=rule.labels_for(instance_id, type_name, None, {}),
                instance_id=instance_id,
            )
            self.alerts[fp] = alert
        return alert

    def forget_instance(self, instance_id: str) -> list[Alert]:
        """Drop the alerts of an instance that no longer exists; returns them."""
        gone = [a for a in self.alerts.values() if a.instance_id == instance_id]
        for alert in gone:
            self._forget(alert)
        self._candidates = {k: v for k, v in self._candidates.items() if k[0] != instance_id}
        return gone

    # -- time ----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Transition]:
        """Advance time-based conditions: ``for``, ``keep_firing_for`` and absences."""
        out: list[Transition] = []
        for alert in list(self.alerts.values()):
            rule = self.rules.get(alert.rule_id)
            if rule is None:
                continue
            if rule.kind == "absence":
                if alert.paused or alert.last_seen is None:
                    continue
                silent = now - alert.last_seen
                if silent >= rule.for_ and alert.state != "firing":
                    alert.holds = True
                    alert.last_true_at = now
                    alert.active_since = alert.last_seen + rule.for_
                    alert.value = silent
                    self._move(rule, alert, "firing", now, silent, out)
                elif alert.state == "firing" and silent >= rule.for_:
                    alert.value = silent
                    alert.last_true_at = now
                continue
            if alert.state == "pending" and alert.holds:
                if now - _or(alert.active_since, now) >= rule.for_:
                    self._move(rule, alert, "firing", now, alert.value, out)
            elif alert.state == "firing" and not alert.holds and rule.keep_firing_for > 0:
                since = alert.last_true_at if alert.last_true_at is not None else now
                if now - since >= rule.keep_firing_for:
                    self._move(rule, alert, "resolved", now, alert.value, out)
        return out

    def evict(self, now: float, retention: float) -> list[Alert]:
        """Forget resolved alerts older than ``retention`` seconds whose news was sent."""
        gone = [
            a
            for a in self.alerts.values()
            if a.state == "resolved"
            and a.resolved_notified
            and now - _or(a.resolved_at, now) >= retention
        ]
        for alert in gone:
            rule = self.rules.get(alert.rule_id)
            alert.state = "inactive"
            if rule is not None and (rule.window > 0 or rule.kind == "absence"):
                continue  # still tracks its window or its absence
            self._forget(alert)
        return gone


def _key(instance_id: str, metric: Metric) -> tuple[str, Any]:
    labels = metric.labels
    return (instance_id, (metric.name, tuple(sorted(labels.items())) if labels else ()))


def _or(value: float | None, default: float) -> float:
    """``value`` unless it is None (0.0 is a time like any other)."""
    return default if value is None else value


def _window_value(rule: CompiledRule, alert: Alert, at: float, value: float) -> float | None:
    samples = alert.samples
    assert samples is not None
    samples.append((at, value))
    start = at - rule.window
    while samples and samples[0][0] < start:
        samples.popleft()
    function = rule.function
    if function == "avg":
        return sum(v for _, v in samples) / len(samples)
    if function == "min":
        return min(v for _, v in samples)
    if function == "max":
        return max(v for _, v in samples)
    # rate: the change per second from the window's first sample to its last.
    if len(samples) < 2:
        return None
    (t0, v0), (t1, v1) = samples[0], samples[-1]
    if t1 <= t0:
        return None
    return (v1 - v0) / (t1 - t0)


def _safe_render(template: Template, context: Mapping[str, Any]) -> str:
    try:
        return template.render(context)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        # A number spec on a missing value (a health alert has none): say so, never fail.
        log.debug("template %r: %s", template.text, exc)
        return template.text
