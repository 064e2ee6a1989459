"""The alert service: rule evaluation, silences and notification delivery, started and
stopped as one unit (``async with AlertService(...)``), so that a cluster can run it on one
node at a time.

It subscribes to the hub's bus, so every sample reaches the rules as it is collected (no
polling of the store), and ticks every ``[alerting] evaluation_interval`` for conditions
that depend on time. Transitions are kept in memory first and written to the store by a
task of their own: evaluation never waits on the database. At start the states are read
back: an alert that was firing fires on, and one whose firing message was delivered is not
sent again (until its repeat interval); a pending alert keeps the time its condition began.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Annotated, Any

import anyio
import anyio.abc
import attrs

from ..bus import Bus
from ..errors import (
    ConfigError,
    ConflictError,
    HomelabError,
    InvalidArgumentError,
    NotFoundError,
)
from ..events import AlertChanged, ExecutionFinished, HealthChanged, MetricsCollected
from ..fielddoc import about
from ..model import ExecutionStatus, HealthState
from ..options import build_config, config_to_dict, secret_values
from ..plugin import SLUG
from ..plugins import PluginManager
from ..redact import Redactor
from ..store.alerts import STATE_FIELDS, AlertEvent, AlertStore, NotificationAttempt
from ..store.store import Store
from .config import AlertsConfig, NotifierSettings, RuleSettings, parse_rule, unknown_notifiers
from .dispatch import Delivery, Dispatcher, test_notification
from .engine import Alert, AlertEngine, Transition
from .silences import MaintenanceWindow, Silence, matches

log = logging.getLogger("homelab.alerts")

#: Events the service reads from the bus.
_WANTED = frozenset({"metrics", "status", "execution"})
#: Events buffered for the service before further ones are missed (and counted).
BUS_BUFFER = 65_536
#: Seconds between reads of the stored silences (those made by another process apply).
SILENCE_REFRESH = 5.0


class UnknownNotifierError(NotFoundError):
    """No ``[notifiers.<id>]`` table has the given id."""

    def __init__(self, notifier_id: str) -> None:
        self.name = notifier_id
        super().__init__(f"unknown notifier {notifier_id!r}")


class UnknownRuleError(NotFoundError):
    """No rule made through the API has the given id."""

    def __init__(self, rule_id: str) -> None:
        self.name = rule_id
        super().__init__(f"unknown rule {rule_id!r}")


class UnknownSilenceError(NotFoundError):
    """No silence has the given id."""

    def __init__(self, silence_id: str) -> None:
        self.name = silence_id
        super().__init__(f"unknown silence {silence_id!r}")


@attrs.frozen
class AlertInfo:
    """An alert as the API lists it."""

    fingerprint: Annotated[
        str,
        about(
            "The alert's key: its rule and the labels of its series, hashed.", "3f2a9c1d0b7e4a55"
        ),
    ]
    rule: Annotated[str, about("The rule that raised it.", "disk-full")]
    state: Annotated[str, about("pending, firing or resolved.", "firing")]
    severity: Annotated[str, about("critical, warning or info (the rule's).", "critical")]
    labels: Annotated[
        dict[str, str],
        about(
            "The rule's labels, the series' and rule, severity, instance, type and metric.",
            {"rule": "disk-full", "instance": "nas", "mount": "/"},
        ),
    ]
    summary: Annotated[str, about("The rule's summary, filled in.", "nas: / is 95% full")]
    description: Annotated[str, about("The rule's description, filled in.", "Free some space.")]
    value: Annotated[
        float | None,
        about("The value that was last evaluated (null for a health or absence rule).", 95.2),
    ]
    instance_id: Annotated[str | None, about("The instance of the series (null if none).", "nas")]
    metric: Annotated[
        str | None, about("The metric of the series (null for a health rule).", "disk.percent")
    ]
    active_since: Annotated[
        float | None,
        about("When the condition became true, in seconds since the epoch.", 1795970000.0),
    ]
    fired_at: Annotated[
        float | None, about("When it started firing (null while pending).", 1795970600.0)
    ]
    resolved_at: Annotated[float | None, about("When it resolved (null while not).", None)]
    notified_at: Annotated[
        float | None, about("When its last notification was sent (null if none).", 1795970601.2)
    ]
    silenced: Annotated[bool, about("Whether a silence or maintenance window mutes it now.", False)]
    #: Ids of the silences and maintenance windows that mute it.
    silenced_by: Annotated[
        list[str],
        about(
            "Ids of the silences, and maintenance:<id> of the windows, that mute it.",
            ["0b8e5c2a", "maintenance:backup"],
        ),
    ]


@attrs.frozen
class NotifierInfo:
    """A configured notifier, its options (secrets redacted) and its counters."""

    id: Annotated[str, about("The notifier's id, of its [notifiers.<id>] table.", "phone")]
    type: Annotated[str, about("The notifier type.", "ntfy")]
    send_resolved: Annotated[bool, about("Whether it is also told when an alert resolves.", True)]
    timeout: Annotated[float, about("Seconds one attempt may take.", 10.0)]
    config: Annotated[
        dict[str, Any],
        about(
            "Its options, secrets shown as **********.", {"topic": "homelab", "token": "**********"}
        ),
    ]
    queued: Annotated[int, about("Notifications waiting to be sent.", 0)]
    sent: Annotated[int, about("Notifications delivered since start.", 4)]
    failed: Annotated[int, about("Notifications given up after their retries since start.", 0)]
    dropped: Annotated[
        int, about("Notifications dropped since start because its queue was full.", 0)
    ]
    last_error: Annotated[
        str | None, about("The error of the last failed attempt (null if none).", None)
    ]
    last_sent_at: Annotated[
        float | None,
        about("When it last delivered, in seconds since the epoch (null if never).", 1795970601.2),
    ]


def build_notifier(
    settings: NotifierSettings, plugins: PluginManager, *, where: str | None = None
) -> Any:
    """The notifier object of a ``[notifiers.<id>]`` table; ConfigError naming the table."""
    table = f"notifiers.{settings.id}"
    types = plugins.notifier_types()
    kind = types.get(settings.type)
    if kind is None:
        raise ConfigError(
            f"unknown notifier type {settings.type!r};"
            f" installed: {', '.join(sorted(types)) or 'none'}",
            file=where,
            table=table,
            field="type",
        )
    config: Any = build_config(kind.Config, settings.options, file=where, table=table)
    return kind(config, notifier_id=settings.id)


def alert_row(alert: Alert) -> dict[str, Any]:
    """An alert as a state row of the store."""
    return {field: getattr(alert, field) for field in STATE_FIELDS}


def alert_from_row(row: dict[str, Any]) -> Alert:
    return Alert(**{field: row[field] for field in STATE_FIELDS})


class AlertService:
    """Evaluates the rules on the bus's events, keeps silences, sends notifications."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        bus: Bus,
        store: Store,
        plugins: PluginManager,
        type_of: Callable[[str], str | None],
        instances: Callable[[], Iterable[tuple[str, HealthState]]],
        source: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.bus = bus
        self.store = AlertStore(store)
        self.plugins = plugins
        self.instances = instances
        self.source = source
        self.clock = clock
        self.engine = AlertEngine(config.rules.values(), type_of=type_of)
        self.windows = [MaintenanceWindow.from_settings(m) for m in config.maintenance.values()]
        self.silences: dict[str, Silence] = {}
        self.deliveries: dict[str, Delivery] = {}
        self.dispatcher: Dispatcher | None = None
        self._states: dict[str, Alert] = {}  # fingerprint -> alert to save
        self._deleted: set[str] = set()
        self._events: list[dict[str, Any]] = []
        self._attempts: list[dict[str, Any]] = []
        self._wake = anyio.Event()
        self._rules_changed = anyio.Event()
        self._consume_scope: anyio.CancelScope | None = None
        #: Rules made through the API (stored; the file's are in ``config.rules``).
        self.api_rules: dict[str, RuleSettings] = {}
        self._stack: AsyncExitStack | None = None
        self.running = False
        self.events_missed = 0
        self.transitions = 0
        self.store_errors = 0
        #: Internal errors of evaluation (a bug), logged; the service goes on.
        self.errors = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> AlertService:
        stack = AsyncExitStack()
        try:
            for settings in self.config.notifiers.values():
                notifier = build_notifier(settings, self.plugins, where=self.source)
                stack.push_async_callback(_close_notifier, notifier)
                send, receive = anyio.create_memory_object_stream[Any](
                    self.config.alerting.queue_size
                )
                self.deliveries[settings.id] = Delivery(
                    settings.id,
                    notifier,
                    settings,
                    settings.timeout or self.config.alerting.send_timeout,
                    Redactor(secret_values(notifier.config)),
                    send,
                    receive,
                )
            self.dispatcher = Dispatcher(
                self.config.alerting,
                self.config.routes.values(),
                self.deliveries,
                record=self._record_attempt,
                delivered=self._delivered,
                silenced=self.is_silenced,
                clock=self.clock,
            )
            await self._restore()
            # Exited in reverse: the tasks are cancelled and awaited, then what they left is
            # saved, then the queues close.
            for delivery in self.deliveries.values():
                stack.callback(delivery.send.close)
                stack.callback(delivery.receive.close)
            stack.push_async_callback(self._save)
            tasks = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tasks.cancel_scope.cancel)
            # Subscribed (when there are rules) before the hub starts its first run.
            await tasks.start(self._consume_while_rules, name="homelab:alerts")
            tasks.start_soon(self._tick, name="homelab:alerts-tick")
            tasks.start_soon(self._persist, name="homelab:alerts-store")
            for delivery in self.deliveries.values():
                tasks.start_soon(
                    self.dispatcher.run_delivery, delivery, name=f"homelab:notifier:{delivery.id}"
                )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self.running = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.running = False
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _restore(self) -> None:
        now = self.clock()
        try:
            bodies = await self.store.rules()
            rows = await self.store.load_states()
            silences = await self.store.silences(ended_after=now)
        except HomelabError as exc:
            log.error("alerts: cannot read the stored states: %s", exc)
            bodies, rows, silences = {}, [], []
        self._take_api_rules(bodies)
        self._rules_changed_now()
        self.engine.restore(alert_from_row(r) for r in rows)
        known = {r["fingerprint"] for r in rows}
        self._deleted.update(known - set(self.engine.alerts))  # alerts of removed rules
        for s in silences:
            self.silences[s["id"]] = Silence(**s)
        for instance_id, state in self.instances():
            self.engine.track_instance(instance_id, now, enabled=state != HealthState.DISABLED)
            self._apply(self.engine.observe_health(instance_id, state, now))

    def _take_api_rules(self, bodies: Mapping[str, Any], *, quiet: bool = False) -> None:
        """The stored rules of the API, as this service's (those the file shadows left out)."""
        rules = {}
        for rule_id, body in bodies.items():
            if rule_id in self.config.rules:
                if not quiet:
                    log.warning(
                        "alerts: rule %r made through the API is shadowed by [alerts.%s] of"
                        " the file; the file's rule applies (delete one of them)",
                        rule_id,
                        rule_id,
                    )
                continue
            try:
                rules[rule_id] = self._parse_api_rule(rule_id, body)
            except InvalidArgumentError as exc:
                if not quiet:
                    log.error(
                        "alerts: stored rule %r is not valid any more, skipped: %s", rule_id, exc
                    )
        self.api_rules = rules

    async def refresh_rules(self) -> None:
        """Take the rules of the API another node stored (a running service of a cluster:
        a rule made through any node's API applies at the evaluating node's next beat)."""
        try:
            bodies = await self.store.rules()
        except HomelabError as exc:
            log.debug("alerts: cannot read the stored rules: %s", exc)
            return
        before = dict(self.api_rules)
        self._take_api_rules(bodies, quiet=True)
        if self.api_rules != before:
            self._rules_changed_now()

    async def mirror(self) -> None:
        """Take the rules, alerts and silences another node's service stored.

        A node of a cluster that does not evaluate the alerts calls this after every
        heartbeat, so that its API shows what the evaluating node has (as of its last
        save, every 0.5 s). Not for a running service."""
        if self.running:
            return
        try:
            bodies = await self.store.rules()
            rows = await self.store.load_states()
        except HomelabError as exc:
            log.debug("alerts: cannot read the stored alerts: %s", exc)
            return
        self._take_api_rules(bodies, quiet=True)
        self._rules_changed_now()
        self.engine.replace(alert_from_row(r) for r in rows)
        await self._refresh_silences(self.clock())

    # -- rules ---------------------------------------------------------------------------

    def rules(self) -> list[tuple[RuleSettings, str]]:
        """Every rule with where it comes from: ``file`` or ``api``."""
        return [(r, "file") for r in self.config.rules.values()] + [
            (r, "api") for r in self.api_rules.values()
        ]

    def _parse_api_rule(self, rule_id: str, body: Mapping[str, Any]) -> RuleSettings:
        table = f"alerts.{rule_id}"
        if not SLUG.fullmatch(rule_id):
            raise InvalidArgumentError(
                f"[{table}]: a rule id must be a lowercase slug (letters, digits, '_', '-')"
            )
        try:
            rule = parse_rule(rule_id, body, where=None, table=table)
        except ConfigError as exc:
            raise InvalidArgumentError(str(exc)) from None
        missing = unknown_notifiers(rule.notifiers, self.config.notifiers)
        if missing:
            known = ", ".join(sorted(self.config.notifiers)) or "none"
            raise InvalidArgumentError(
                f"[{table}] notifiers: unknown notifier {missing[0]!r}; defined notifiers: {known}"
            )
        return rule

    async def put_rule(
        self, rule_id: str, body: Mapping[str, Any], *, create: bool
    ) -> RuleSettings:
        """Make (``create``) or replace a rule of the API, validated as the file's are,
        stored, and applied at once. A rule of the file is a :class:`ConflictError`."""
        if rule_id in self.config.rules:
            raise ConflictError(
                f"rule {rule_id!r} is defined in {self.source or 'the config file'};"
                f" edit [alerts.{rule_id}] there"
            )
        if create and rule_id in self.api_rules:
            raise ConflictError(f"rule {rule_id!r} exists; replace it with PUT")
        if not create and rule_id not in self.api_rules:
            raise UnknownRuleError(rule_id)
        rule = self._parse_api_rule(rule_id, body)
        await self.store.save_rule(rule_id, dict(body), self.clock())
        self.api_rules[rule_id] = rule
        self._rules_changed_now()
        return rule

    async def remove_rule(self, rule_id: str) -> None:
        """Delete a rule of the API; its alerts are forgotten (their history is kept)."""
        if rule_id in self.config.rules:
            raise ConflictError(
                f"rule {rule_id!r} is defined in {self.source or 'the config file'};"
                f" remove [alerts.{rule_id}] there"
            )
        if rule_id not in self.api_rules:
            raise UnknownRuleError(rule_id)
        await self.store.delete_rule(rule_id)
        del self.api_rules[rule_id]
        self._rules_changed_now()

    def _rules_changed_now(self) -> None:
        every = [*self.config.rules.values(), *self.api_rules.values()]
        for alert in self.engine.set_rules(every):
            self._states.pop(alert.fingerprint, None)
            self._deleted.add(alert.fingerprint)
        if self.dispatcher is not None:
            self.dispatcher.set_rule_notifiers({r.id: r.notifiers for r in every})
        now = self.clock()
        for instance_id, state in self.instances():
            self.engine.track_instance(instance_id, now, enabled=state != HealthState.DISABLED)
        if not every and self._consume_scope is not None:
            self._consume_scope.cancel()  # nothing to evaluate: leave the bus
        self._rules_changed.set()
        self._wake.set()

    def instance_removed(self, instance_id: str) -> None:
        """An instance was deleted (or left the file): its alerts end without a message."""
        for alert in self.engine.forget_instance(instance_id):
            self._states.pop(alert.fingerprint, None)
            self._deleted.add(alert.fingerprint)

    def instance_added(self, instance_id: str, *, enabled: bool) -> None:
        """An instance was created (or came with a reload): absence rules watch it now."""
        self.engine.track_instance(instance_id, self.clock(), enabled=enabled)

    # -- tasks ---------------------------------------------------------------------------

    async def _consume_while_rules(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Read the bus while there are rules; without any, no subscription is open, so
        the data path builds no event for the alert service."""
        started = False
        while True:
            if not self.engine.rules:
                if not started:
                    task_status.started()
                    started = True
                await self._rules_changed.wait()
                self._rules_changed = anyio.Event()
                continue
            with anyio.CancelScope() as scope:
                self._consume_scope = scope
                async with self.bus.subscribe(
                    buffer=BUS_BUFFER, accept=lambda e: e.type in _WANTED
                ) as subscription:
                    if not started:
                        task_status.started()
                        started = True
                    await self._consume(subscription)
            self._consume_scope = None
            self._rules_changed = anyio.Event()

    async def _consume(self, subscription: Any) -> None:
        engine = self.engine
        async for event in subscription:
            missed = subscription.take_missed()
            if missed:
                self.events_missed += missed
                log.warning("alerts: %d events missed (evaluation fell behind)", missed)
            now = self.clock()
            try:
                if isinstance(event, MetricsCollected):
                    found = engine.observe_metrics(event.instance_id, event.metrics, now)
                elif isinstance(event, HealthChanged):
                    found = engine.observe_health(event.instance_id, event.new.state, now)
                elif isinstance(event, ExecutionFinished):
                    ok = event.execution.status == ExecutionStatus.OK
                    found = engine.observe_run(event.instance_id, ok, now)
                else:
                    continue
                if found:
                    self._apply(found)
            except Exception:  # a bug here must not stop the service (nor the hub)
                self._failed(f"evaluating a {event.type} event of {event.instance_id!r}")

    async def _tick(self) -> None:
        interval = self.config.alerting.evaluation_interval
        refreshed = self.clock()
        while True:
            now = self.clock()
            if now - refreshed >= SILENCE_REFRESH:
                refreshed = now
                await self._refresh_silences(now)
            wait: float | None = None
            try:
                self._apply(self.engine.tick(now))
                for alert in self.engine.evict(now, self.config.alerting.resolved_retention):
                    self._states.pop(alert.fingerprint, None)
                    self._deleted.add(alert.fingerprint)
                wait = self._flush(now)
            except Exception:  # a bug here must not stop the service (nor the hub)
                self._failed("advancing the alerts' clock")
            with anyio.move_on_after(min(interval, wait) if wait is not None else interval):
                await self._wake.wait()
            self._wake = anyio.Event()

    def _failed(self, doing: str) -> None:
        self.errors += 1
        if self.errors <= 10 or self.errors % 1000 == 0:
            log.exception("alerts: internal error %s (%d so far)", doing, self.errors)

    async def _refresh_silences(self, now: float) -> None:
        """Take the stored silences: those another process made (the CLI) apply too."""
        try:
            stored = await self.store.silences(ended_after=now)
        except HomelabError as exc:
            log.debug("alerts: cannot read the silences: %s", exc)
            return
        self.silences = {s["id"]: Silence(**s) for s in stored}

    def _flush(self, now: float) -> float | None:
        assert self.dispatcher is not None
        return self.dispatcher.flush(self.engine.alerts.values(), now)

    def _apply(self, transitions: list[Transition]) -> None:
        if not transitions:
            return
        for t in transitions:
            self.transitions += 1
            alert = t.alert
            self._events.append(
                {
                    "ts": t.at,
                    "fingerprint": alert.fingerprint,
                    "rule_id": alert.rule_id,
                    "old_state": t.old,
                    "new_state": t.new,
                    "value": alert.value,
                    "labels": alert.labels,
                    "summary": alert.summary,
                }
            )
            if t.new == "inactive":
                self._states.pop(alert.fingerprint, None)
                self._deleted.add(alert.fingerprint)
            else:
                self._states[alert.fingerprint] = alert
                self._deleted.discard(alert.fingerprint)
            if self.bus.subscriber_count:
                self.bus.publish(
                    AlertChanged(
                        alert.instance_id or "",
                        rule=alert.rule_id,
                        fingerprint=alert.fingerprint,
                        old=t.old,
                        new=t.new,
                        severity=alert.severity,
                        labels=dict(alert.labels),
                        summary=alert.summary,
                        value=alert.value,
                        silenced=self.is_silenced(alert, t.at),
                        timestamp=t.at,
                    )
                )
        self._wake.set()

    def _record_attempt(self, attempt: dict[str, Any]) -> None:
        self._attempts.append(attempt)  # the list is swapped at every save

    def _delivered(self, alerts: list[Alert], now: float) -> None:
        for alert in alerts:
            if alert.state != "inactive":
                self._states[alert.fingerprint] = alert

    async def _persist(self) -> None:
        while True:
            await anyio.sleep(0.5)
            await self._save()

    async def _save(self) -> None:
        states, self._states = list(self._states.values()), {}
        deleted, self._deleted = set(self._deleted), set()
        events, self._events = self._events, []
        attempts, self._attempts = self._attempts, []
        if not (states or deleted or events or attempts):
            return
        try:
            with anyio.CancelScope(shield=True):
                await self.store.save_states([alert_row(a) for a in states], self.clock())
                await self.store.delete_states(deleted)
                await self.store.add_events(events)
                await self.store.add_attempts(attempts)
        except HomelabError as exc:
            self.store_errors += 1
            log.error("alerts: cannot save to the store (kept for the next try): %s", exc)
            for alert in states:
                self._states.setdefault(alert.fingerprint, alert)
            self._deleted |= deleted
            self._events[:0] = events
            self._attempts[:0] = attempts

    # -- silences ------------------------------------------------------------------------

    def silenced_by(self, alert: Alert, now: float) -> list[str]:
        """Ids of the silences and maintenance windows that mute ``alert`` at ``now``."""
        found = [
            s.id
            for s in self.silences.values()
            if s.active(now) and matches(s.matchers, alert.labels)
        ]
        found += [
            f"maintenance:{w.id}"
            for w in self.windows
            if matches(w.matchers, alert.labels) and w.current(now) is not None
        ]
        return found

    def is_silenced(self, alert: Alert, now: float) -> bool:
        return bool(self.silenced_by(alert, now))

    async def add_silence(
        self,
        matchers: dict[str, str],
        *,
        ends_at: float,
        starts_at: float | None = None,
        comment: str = "",
        author: str = "",
    ) -> Silence:
        """Make a silence, store it, and apply it at once."""
        silence = Silence.create(
            matchers,
            ends_at=ends_at,
            starts_at=starts_at,
            comment=comment,
            author=author,
            now=self.clock(),
        )
        await self.store.save_silence(silence)
        self.silences[silence.id] = silence
        self._wake.set()
        return silence

    async def remove_silence(self, silence_id: str) -> None:
        """Remove a silence (its alerts may notify at once)."""
        if silence_id not in self.silences:
            raise UnknownSilenceError(silence_id)
        await self.store.delete_silence(silence_id)
        del self.silences[silence_id]
        self._wake.set()

    def list_silences(self, *, include_expired: bool = False) -> list[Silence]:
        now = self.clock()
        return sorted(
            (s for s in self.silences.values() if include_expired or s.ends_at > now),
            key=lambda s: s.starts_at,
        )

    # -- reading -------------------------------------------------------------------------

    def alerts(self, *, state: str | None = None, severity: str | None = None) -> list[AlertInfo]:
        """Current alerts (pending, firing and recently resolved), firing first."""
        for name, value, allowed in (
            ("state", state, ("pending", "firing", "resolved")),
            ("severity", severity, ("critical", "warning", "info")),
        ):
            if value is not None and value not in allowed:
                raise InvalidArgumentError(
                    f"{name} must be one of {', '.join(allowed)}, got {value!r}"
                )
        now = self.clock()
        order = {"firing": 0, "pending": 1, "resolved": 2}
        found = []
        for alert in self.engine.alerts.values():
            if alert.state == "inactive" or (state and alert.state != state):
                continue
            if severity and alert.severity != severity:
                continue
            muted = self.silenced_by(alert, now)
            found.append(
                AlertInfo(
                    alert.fingerprint,
                    alert.rule_id,
                    alert.state,
                    alert.severity,
                    dict(alert.labels),
                    alert.summary,
                    alert.description,
                    alert.value,
                    alert.instance_id,
                    alert.metric,
                    alert.active_since,
                    alert.fired_at,
                    alert.resolved_at,
                    alert.notified_at,
                    bool(muted),
                    muted,
                )
            )
        found.sort(key=lambda a: (order.get(a.state, 3), a.rule, a.fingerprint))
        return found

    async def history(
        self,
        *,
        rule: str | None = None,
        fingerprint: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[AlertEvent]:
        """Stored transitions, newest first (what is not yet stored is written first)."""
        if limit < 1:
            raise InvalidArgumentError("limit must be at least 1")
        await self._save()
        return await self.store.events(
            rule_id=rule, fingerprint=fingerprint, limit=limit, before=before
        )

    async def attempts(
        self, *, notifier: str | None = None, limit: int = 100
    ) -> list[NotificationAttempt]:
        """Stored notification attempts, newest first."""
        if notifier is not None:
            self._delivery(notifier)
        await self._save()
        return await self.store.attempts(notifier=notifier, limit=limit)

    def _delivery(self, notifier_id: str) -> Delivery:
        try:
            return self.deliveries[notifier_id]
        except KeyError:
            raise UnknownNotifierError(notifier_id) from None

    def notifiers(self) -> list[NotifierInfo]:
        return [
            NotifierInfo(
                d.id,
                d.settings.type,
                d.settings.send_resolved,
                d.timeout,
                config_to_dict(d.notifier.config),
                d.queued,
                d.sent,
                d.failed,
                d.dropped,
                d.last_error,
                d.last_sent_at,
            )
            for d in self.deliveries.values()
        ]

    async def test_notifier(self, notifier_id: str) -> str | None:
        """Send a test message through one notifier, once; None when it was delivered,
        else the error. The attempt is recorded like any other."""
        delivery = self._delivery(notifier_id)
        assert self.dispatcher is not None
        notification = test_notification(
            notifier_id,
            f"Sent to notifier {notifier_id!r} to check that it works.",
            self.clock(),
        )
        error = await self.dispatcher.deliver(delivery, notification, [], retries=0)
        await self._save()
        return error

    def counters(self) -> dict[str, float]:
        """Figures for ``/metrics``."""
        d = self.deliveries.values()
        return {
            "alerts_transitions": self.transitions,
            "alerts_events_missed": self.events_missed,
            "alerts_store_errors": self.store_errors,
            "alerts_errors": self.errors,
            "notifications_sent": sum(x.sent for x in d),
            "notifications_failed": sum(x.failed for x in d),
            "notifications_dropped": sum(x.dropped for x in d),
            "notification_attempts": sum(x.attempts for x in d),
        }

    def state_counts(self) -> dict[tuple[str, str], int]:
        """(rule, state) -> number of alerts, every rule and state listed (zeros too)."""
        counts = {(r, s): 0 for r in self.engine.rules for s in ("pending", "firing", "resolved")}
        for alert in self.engine.alerts.values():
            if alert.state != "inactive":
                key = (alert.rule_id, alert.state)
                counts[key] = counts.get(key, 0) + 1
        return counts


async def _close_notifier(notifier: Any) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        try:
            await notifier.close()
        except Exception as exc:  # a notifier's bug must not stop the shutdown
            log.warning("notifier %r failed to close: %s", notifier.notifier_id, exc)
