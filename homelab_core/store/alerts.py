"""The alert service's tables: alert states, alert events, silences, notification attempts.

Small and rare writes (a transition, a silence, an attempt), made through the ORM on the
store's connection; the alert service batches them in a task of its own so that rule
evaluation never waits on the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import attrs

from ..fielddoc import about
from .models import (
    AlertEventRecord,
    AlertRuleRecord,
    AlertStateRecord,
    NotificationRecord,
    SilenceRecord,
)
from .store import Store, save_dated

#: Fields of an alert state row, in the order of :class:`AlertStateRecord`.
STATE_FIELDS = (
    "fingerprint",
    "rule_id",
    "state",
    "labels",
    "series",
    "instance_id",
    "metric",
    "value",
    "active_since",
    "fired_at",
    "resolved_at",
    "last_true_at",
    "notified_at",
    "resolved_notified",
    "summary",
    "description",
)


@attrs.frozen
class AlertEvent:
    """A stored change of an alert's state."""

    id: Annotated[int, about("The event's id; the before cursor of the alert history.", 311)]
    ts: Annotated[
        float, about("When the alert changed state, in seconds since the epoch.", 1795970600.0)
    ]
    fingerprint: Annotated[str, about("The alert's key (see AlertInfo).", "3f2a9c1d0b7e4a55")]
    rule_id: Annotated[str, about("The rule of the alert.", "disk-full")]
    old_state: Annotated[
        str, about("The state before: inactive, pending, firing or resolved.", "pending")
    ]
    new_state: Annotated[str, about("The state after.", "firing")]
    value: Annotated[
        float | None, about("The value evaluated then (null for a health or absence rule).", 95.2)
    ]
    labels: Annotated[
        dict[str, str], about("The alert's labels.", {"rule": "disk-full", "instance": "nas"})
    ]
    summary: Annotated[str, about("The alert's summary then.", "nas: / is 95% full")]


@attrs.frozen
class NotificationAttempt:
    """A stored attempt to send (``outcome``: ``sent``, ``error`` or ``dropped``)."""

    id: int
    ts: float
    notifier: str
    group_key: str
    status: str
    outcome: str
    attempt: int
    error: str | None
    duration: float
    alerts: list[str]


class AlertStore:
    """Reads and writes of the alert tables, on a :class:`Store`'s connection."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def save_states(self, rows: Sequence[dict[str, Any]], now: float) -> None:
        """Insert or replace alert state rows (mappings with :data:`STATE_FIELDS`)."""
        if not rows:
            return
        with self.store.using("save the alert states"):
            for row in rows:
                values = {k: row[k] for k in STATE_FIELDS if k != "fingerprint"}
                await AlertStateRecord.update_or_create(
                    defaults={**values, "updated_at": now}, fingerprint=row["fingerprint"]
                )

    async def delete_states(self, fingerprints: Iterable[str]) -> None:
        fps = list(fingerprints)
        if not fps:
            return
        with self.store.using("delete alert states"):
            await AlertStateRecord.filter(fingerprint__in=fps).delete()

    async def load_states(self) -> list[dict[str, Any]]:
        with self.store.using("read the alert states"):
            records = await AlertStateRecord.all().values(*STATE_FIELDS)
        return list(records)

    async def add_events(self, events: Sequence[dict[str, Any]]) -> None:
        if not events:
            return
        with self.store.using("save the alert events"):
            await AlertEventRecord.bulk_create([AlertEventRecord(**e) for e in events])

    async def events(
        self,
        *,
        rule_id: str | None = None,
        fingerprint: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[AlertEvent]:
        """Stored alert events, newest first."""
        with self.store.using("read the alert events"):
            query = AlertEventRecord.all()
            if rule_id is not None:
                query = query.filter(rule_id=rule_id)
            if fingerprint is not None:
                query = query.filter(fingerprint=fingerprint)
            if before is not None:
                query = query.filter(id__lt=before)
            rows = await query.order_by("-id").limit(limit)
        return [
            AlertEvent(
                r.id,
                r.ts,
                r.fingerprint,
                r.rule_id,
                r.old_state,
                r.new_state,
                r.value,
                {str(k): str(v) for k, v in r.labels.items()},
                r.summary,
            )
            for r in rows
        ]

    async def save_silence(self, silence: Any) -> None:
        with self.store.using("save the silence"):
            await SilenceRecord.update_or_create(
                defaults={
                    "matchers": silence.matchers,
                    "starts_at": silence.starts_at,
                    "ends_at": silence.ends_at,
                    "comment": silence.comment,
                    "author": silence.author,
                    "created_at": silence.created_at,
                },
                id=silence.id,
            )

    async def delete_silence(self, silence_id: str) -> bool:
        with self.store.using("delete the silence"):
            return bool(await SilenceRecord.filter(id=silence_id).delete())

    async def silences(self, *, ended_after: float) -> list[dict[str, Any]]:
        with self.store.using("read the silences"):
            rows = await SilenceRecord.filter(ends_at__gt=ended_after).order_by("starts_at")
        return [
            {
                "id": r.id,
                "matchers": {str(k): str(v) for k, v in r.matchers.items()},
                "starts_at": r.starts_at,
                "ends_at": r.ends_at,
                "comment": r.comment,
                "author": r.author,
                "created_at": r.created_at,
            }
            for r in rows
        ]

    async def add_attempts(self, attempts: Sequence[dict[str, Any]]) -> None:
        if not attempts:
            return
        with self.store.using("save the notification attempts"):
            await NotificationRecord.bulk_create([NotificationRecord(**a) for a in attempts])

    async def attempts(
        self, *, notifier: str | None = None, limit: int = 100
    ) -> list[NotificationAttempt]:
        """Stored notification attempts, newest first."""
        with self.store.using("read the notification attempts"):
            query = NotificationRecord.all()
            if notifier is not None:
                query = query.filter(notifier=notifier)
            rows = await query.order_by("-id").limit(limit)
        return [
            NotificationAttempt(
                r.id,
                r.ts,
                r.notifier,
                r.group_key,
                r.status,
                r.outcome,
                r.attempt,
                r.error,
                r.duration,
                [str(a) for a in r.alerts],
            )
            for r in rows
        ]

    async def save_rule(self, rule_id: str, body: dict[str, Any], now: float) -> None:
        """Store (or replace) a rule made through the API, as the body it was given."""
        with self.store.using("save the alert rule"):
            await save_dated(AlertRuleRecord, rule_id, {"body": body}, now)

    async def delete_rule(self, rule_id: str) -> None:
        with self.store.using("delete the alert rule"):
            await AlertRuleRecord.filter(id=rule_id).delete()

    async def rules(self) -> dict[str, dict[str, Any]]:
        """The rules made through the API: id -> the body they were made with."""
        with self.store.using("read the alert rules"):
            rows = await AlertRuleRecord.all().order_by("created_at")
        return {r.id: dict(r.body) for r in rows}
