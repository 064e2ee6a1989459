"""Routing, grouping and delivery of alert notifications.

Each firing or resolved alert goes to the routes that take it: the rule's own
``notifiers`` if it names some, else every ``[routes.<id>]`` whose rules, severities and
label matchers match it, else (when no route is configured at all) every notifier. Within a
route, alerts with the same values of the route's ``group_by`` labels form a group, and a
group is one message:

- a new group waits ``group_wait`` for more alerts, then sends;
- a group whose alerts changed (one more fires, one resolves) sends again no sooner than
  ``group_interval`` after its last message;
- a group that still fires and has not changed sends again after ``repeat_interval``.

Every notifier has its own bounded queue and its own task: a message that does not fit is
dropped and counted, a send is bounded by the notifier's timeout, a failure is retried with
doubling delays, and every attempt is recorded. A notifier that hangs or fails therefore
delays nothing but its own later messages; rule evaluation never waits on any of them.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..notifier import AlertNotice, Notification, Notifier
from ..redact import Redactor
from .config import SEVERITIES, AlertingSettings, NotifierSettings, RouteSettings
from .engine import Alert
from .silences import matches

log = logging.getLogger("homelab.alerts")


@attrs.define
class Route:
    """A route with its timings resolved against ``[alerting]``."""

    id: str
    notifiers: list[str]
    rules: list[str]
    severities: list[str]
    match: dict[str, str]
    group_by: list[str]
    group_wait: float
    group_interval: float
    repeat_interval: float

    @classmethod
    def of(cls, settings: RouteSettings, defaults: AlertingSettings) -> Route:
        return cls(
            settings.id,
            list(settings.notifiers),
            list(settings.rules),
            list(settings.severities),
            dict(settings.match),
            list(settings.group_by),
            defaults.group_wait if settings.group_wait is None else settings.group_wait,
            defaults.group_interval if settings.group_interval is None else settings.group_interval,
            defaults.repeat_interval
            if settings.repeat_interval is None
            else settings.repeat_interval,
        )

    def takes(self, alert: Alert) -> bool:
        return (
            any(fnmatch.fnmatchcase(alert.rule_id, p) for p in self.rules)
            and alert.severity in self.severities
            and matches(self.match, alert.labels)
        )

    def group_key(self, alert: Alert) -> str:
        values = ",".join(f"{name}={alert.labels.get(name, '')}" for name in self.group_by)
        return f"{self.id}/{values}"


@attrs.define
class GroupState:
    """What a group has sent, for its timings."""

    first_pending_at: float | None = None
    last_sent_at: float | None = None


@attrs.define
class Delivery:
    """A notifier with its queue, its settings and its counters."""

    id: str
    notifier: Notifier[Any]
    settings: NotifierSettings
    timeout: float
    redact: Redactor
    send: MemoryObjectSendStream[tuple[Notification, list[Alert]]]
    receive: MemoryObjectReceiveStream[tuple[Notification, list[Alert]]]
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    attempts: int = 0
    last_error: str | None = None
    last_sent_at: float | None = None

    @property
    def queued(self) -> int:
        return self.send.statistics().current_buffer_used


#: A stored attempt: (notifier, group, status, outcome, attempt, error, duration, alerts).
RecordAttempt = Callable[[dict[str, Any]], None]


class Dispatcher:
    """Groups alerts per route and hands each group's messages to its notifiers' queues."""

    def __init__(
        self,
        alerting: AlertingSettings,
        routes: Iterable[RouteSettings],
        deliveries: Mapping[str, Delivery],
        *,
        record: RecordAttempt,
        delivered: Callable[[list[Alert], float], None],
        silenced: Callable[[Alert, float], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.alerting = alerting
        self.routes = [Route.of(r, alerting) for r in routes]
        self.deliveries = dict(deliveries)
        self.record = record
        self.delivered = delivered
        self.silenced = silenced
        self.clock = clock
        self.groups: dict[str, GroupState] = {}
        #: rule id -> its own route (a rule that names notifiers).
        self.rule_routes: dict[str, Route] = {}

    def set_rule_notifiers(self, rules: Mapping[str, list[str]]) -> None:
        """Routes of rules that name their notifiers (grouped by rule)."""
        a = self.alerting
        self.rule_routes = {
            rule_id: Route(
                f"rule:{rule_id}",
                names,
                [rule_id],
                list(SEVERITIES),
                {},
                ["rule"],
                a.group_wait,
                a.group_interval,
                a.repeat_interval,
            )
            for rule_id, names in rules.items()
            if names
        }

    def routes_of(self, alert: Alert) -> list[Route]:
        own = self.rule_routes.get(alert.rule_id)
        if own is not None:
            return [own]
        if not self.routes:
            if not self.deliveries:
                return []
            a = self.alerting
            return [
                Route(
                    "default",
                    list(self.deliveries),
                    ["*"],
                    list(SEVERITIES),
                    {},
                    ["rule"],
                    a.group_wait,
                    a.group_interval,
                    a.repeat_interval,
                )
            ]
        return [r for r in self.routes if r.takes(alert)]

    def flush(self, alerts: Iterable[Alert], now: float) -> float | None:
        """Send what is due; returns the seconds until the next thing falls due (or None)."""
        members: dict[str, tuple[Route, list[Alert]]] = {}
        for alert in alerts:
            if alert.state not in ("firing", "resolved"):
                continue
            if alert.state == "resolved" and alert.resolved_notified:
                continue
            for route in self.routes_of(alert):
                key = route.group_key(alert)
                members.setdefault(key, (route, []))[1].append(alert)
        for key in list(self.groups):
            if key not in members:
                del self.groups[key]
        wait: float | None = None
        for key, (route, group) in members.items():
            due = self._flush_group(key, route, group, now)
            if due is not None:
                wait = due if wait is None else min(wait, due)
        return wait

    def _flush_group(self, key: str, route: Route, group: list[Alert], now: float) -> float | None:
        state = self.groups.setdefault(key, GroupState())
        live = [a for a in group if not self.silenced(a, now)]
        firing = [a for a in live if a.state == "firing"]
        new = [a for a in firing if a.notified_at is None]
        resolved = [a for a in live if a.state == "resolved" and not a.resolved_notified]
        if state.last_sent_at is None:
            known = [a.notified_at for a in firing if a.notified_at is not None]
            if known:  # restored after a restart: what was sent before counts
                state.last_sent_at = max(known)
        changed = bool(new or resolved)
        if changed and state.first_pending_at is None:
            state.first_pending_at = now
        if changed:
            if state.last_sent_at is None:
                due = (
                    now if state.first_pending_at is None else state.first_pending_at
                ) + route.group_wait
            else:
                due = max(
                    state.last_sent_at + route.group_interval,
                    (now if state.first_pending_at is None else state.first_pending_at)
                    + route.group_wait,
                )
        elif firing and state.last_sent_at is not None:
            due = state.last_sent_at + route.repeat_interval
        else:
            return None
        if now < due:
            return due - now
        self._send(key, route, firing, resolved, now)
        state.last_sent_at = now
        state.first_pending_at = None
        return route.repeat_interval if firing else None

    def _send(
        self, key: str, route: Route, firing: list[Alert], resolved: list[Alert], now: float
    ) -> None:
        for alert in firing:
            alert.notified_at = now  # in memory now; stored once a notifier delivered it
        for alert in resolved:
            alert.resolved_notified = True
        for name in route.notifiers:
            delivery = self.deliveries.get(name)
            if delivery is None:
                continue
            chosen = firing + (resolved if delivery.settings.send_resolved else [])
            if not chosen:
                continue
            notification = build_notification(name, key, chosen)
            try:
                delivery.send.send_nowait((notification, chosen))
            except anyio.WouldBlock:
                delivery.dropped += 1
                self.record(
                    _attempt(
                        delivery.id,
                        notification,
                        "dropped",
                        0,
                        "the notifier's queue is full",
                        0.0,
                        now,
                    )
                )
                log.warning(
                    "notifier %r: queue full, a %s message of %s dropped",
                    delivery.id,
                    notification.status,
                    key,
                )

    async def run_delivery(self, delivery: Delivery) -> None:
        """The task of one notifier: take its queue's messages and send each, with retries."""
        async for notification, alerts in delivery.receive:
            await self.deliver(delivery, notification, alerts)

    async def deliver(
        self,
        delivery: Delivery,
        notification: Notification,
        alerts: list[Alert],
        *,
        retries: int | None = None,
    ) -> str | None:
        """Send with retries; returns None when sent, else the last error."""
        a = self.alerting
        retries = a.retries if retries is None else retries
        delay = a.retry_delay
        error: str | None = None
        for attempt in range(1, retries + 2):
            started = time.perf_counter()
            delivery.attempts += 1
            try:
                with anyio.fail_after(delivery.timeout):
                    await delivery.notifier.send(notification)
            except TimeoutError:
                error = f"no answer within {delivery.timeout:g} s"
            except Exception as exc:
                error = delivery.redact(str(exc) or type(exc).__name__)
            else:
                error = None
            took = time.perf_counter() - started
            now = self.clock()
            self.record(
                _attempt(
                    delivery.id,
                    notification,
                    "error" if error else "sent",
                    attempt,
                    error,
                    took,
                    now,
                )
            )
            if error is None:
                delivery.sent += 1
                delivery.last_sent_at = now
                if not notification.test:
                    self.delivered(alerts, now)
                return None
            delivery.last_error = error
            log.warning(
                "notifier %r: attempt %d of %d failed: %s", delivery.id, attempt, retries + 1, error
            )
            if attempt <= retries:
                await anyio.sleep(delay)
                delay = min(delay * 2, a.retry_max_delay)
        delivery.failed += 1
        return error


def _attempt(
    notifier: str,
    notification: Notification,
    outcome: str,
    attempt: int,
    error: str | None,
    duration: float,
    now: float,
) -> dict[str, Any]:
    return {
        "ts": now,
        "notifier": notifier,
        "group_key": notification.group,
        "status": "test" if notification.test else notification.status,
        "outcome": outcome,
        "attempt": attempt,
        "error": error,
        "duration": duration,
        "alerts": [a.fingerprint for a in notification.alerts],
    }


def notice(alert: Alert) -> AlertNotice:
    """What a notifier is told about an alert."""
    return AlertNotice(
        rule=alert.rule_id,
        fingerprint=alert.fingerprint,
        status="firing" if alert.state == "firing" else "resolved",
        severity=alert.severity,
        labels=dict(alert.labels),
        summary=alert.summary,
        description=alert.description,
        value=alert.value,
        instance_id=alert.instance_id,
        started_at=next((t for t in (alert.active_since, alert.fired_at) if t is not None), 0.0),
        resolved_at=alert.resolved_at if alert.state == "resolved" else None,
    )


def build_notification(
    notifier: str, group: str, alerts: list[Alert], *, test: bool = False
) -> Notification:
    """The message of a group: a title, and a line per alert (firing first)."""
    notices = [notice(a) for a in alerts]
    firing = [n for n in notices if n.status == "firing"]
    resolved = [n for n in notices if n.status == "resolved"]
    status = "firing" if firing else "resolved"
    severity = min((n.severity for n in notices), key=_rank, default="info")
    headline = (firing or resolved)[0] if notices else None
    count = len(firing) if firing else len(resolved)
    title = f"[{status.upper()}:{count}] {headline.summary}" if headline else "[TEST]"
    if count > 1 and headline is not None:
        title += f" (and {count - 1} more)"
    lines: list[str] = []
    for heading, items in (("Firing", firing), ("Resolved", resolved)):
        if not items:
            continue
        lines.append(f"{heading}:")
        for n in items:
            lines.append(f"- {n.summary}")
            if n.description:
                lines.append(f"  {n.description}")
    return Notification(
        notifier=notifier,
        group=group,
        status=status,  # type: ignore[arg-type]
        alerts=notices,
        title=title,
        text="\n".join(lines),
        severity=severity,
        test=test,
    )


def test_notification(notifier: str, description: str, now: float) -> Notification:
    """The message of ``homelab notify-test`` and ``POST /api/notifiers/{id}/test``."""
    probe = Alert(
        rule_id="test",
        fingerprint="test",
        state="firing",
        labels={"rule": "test", "severity": "info", "instance": "homelab"},
        summary="Test message from Homelab Core",
        active_since=now,
        fired_at=now,
        description=description,
    )
    return build_notification(notifier, "test", [probe], test=True)


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)
