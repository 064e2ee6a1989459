"""The alert tables on SQLite and on PostgreSQL: states, events, silences, attempts and
rules made through the API, written and read back as the alert service does."""

from __future__ import annotations

import time
from typing import Any

import pytest

from homelab_core.alerts import Silence
from homelab_core.alerts.engine import Alert
from homelab_core.alerts.service import alert_from_row, alert_row
from homelab_core.store.alerts import AlertStore

pytestmark = pytest.mark.anyio


async def test_the_alert_tables_round_trip(any_store: Any) -> None:
    alerts = AlertStore(any_store)
    now = time.time()
    alert = Alert(
        rule_id="disk",
        fingerprint="f" * 16,
        labels={"mount": "/srv", "rule": "disk"},
        instance_id="nas",
        metric="disk.used",
        series={"mount": "/srv"},
        state="firing",
        value=93.5,
        active_since=now - 60,
        fired_at=now,
        notified_at=now,
        summary="nas: /srv is 94 % full — ü",
    )
    await alerts.save_states([alert_row(alert)], now)
    alert.value = 95.0
    await alerts.save_states([alert_row(alert)], now + 1)  # replaced, not added
    (row,) = await alerts.load_states()
    again = alert_from_row(row)
    assert (again.value, again.labels, again.series, again.summary) == (
        95.0,
        alert.labels,
        alert.series,
        alert.summary,
    )
    await alerts.delete_states([alert.fingerprint])
    assert await alerts.load_states() == []

    await alerts.add_events(
        [
            {
                "ts": now + i,
                "fingerprint": "f" * 16,
                "rule_id": "disk",
                "old_state": old,
                "new_state": new,
                "value": 1.0,
                "labels": {"a": "b"},
                "summary": "s",
            }
            for i, (old, new) in enumerate([("inactive", "pending"), ("pending", "firing")])
        ]
    )
    newest, oldest = await alerts.events(rule_id="disk")
    assert (newest.new_state, oldest.new_state) == ("firing", "pending")
    assert [e.id for e in await alerts.events(before=newest.id)] == [oldest.id]

    silence = Silence.create({"instance": "nas*"}, ends_at=now + 60, comment="swap", now=now)
    await alerts.save_silence(silence)
    (stored,) = await alerts.silences(ended_after=now)
    assert Silence(**stored) == silence
    assert await alerts.silences(ended_after=now + 61) == []
    assert await alerts.delete_silence(silence.id) is True
    assert await alerts.delete_silence(silence.id) is False

    await alerts.add_attempts(
        [
            {
                "ts": now,
                "notifier": "hook",
                "group_key": "g",
                "status": "firing",
                "outcome": "error",
                "attempt": 1,
                "error": "503",
                "duration": 0.1,
                "alerts": ["f" * 16],
            },
        ]
    )
    (attempt,) = await alerts.attempts(notifier="hook")
    assert (attempt.outcome, attempt.error, attempt.alerts) == ("error", "503", ["f" * 16])

    await alerts.save_rule("hot", {"metric": "t", "threshold": 1}, now)
    await alerts.save_rule("hot", {"metric": "t", "threshold": 2}, now + 1)
    assert await alerts.rules() == {"hot": {"metric": "t", "threshold": 2}}
    await alerts.delete_rule("hot")
    assert await alerts.rules() == {}
