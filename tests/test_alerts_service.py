"""The alert service in a real hub: rules see every sample as it is collected, and
notifications are grouped, repeated, silenced, retried and not sent twice across restarts.

Values come from a plugin whose next value the test sets; notifications go to notifiers
registered in-process that record what they are sent (the bundled notifiers against real
receivers are in test_notifiers.py and test_alerts_delivery.py)."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import anyio
import attrs
import pytest

from homelab_core import (
    HealthReport,
    Hub,
    Metric,
    Notification,
    Notifier,
    NotifierError,
    Plugin,
    PluginManager,
    hookimpl,
    option,
)
from homelab_core.config import settings_from_mapping

pytestmark = pytest.mark.anyio


@attrs.define
class KnobConfig:
    start: float = option(0.0)


class Knob(Plugin[KnobConfig]):
    """Reports ``level`` = the value the test last set for the instance."""

    name = "knob"
    values: ClassVar[dict[str, float]] = {}
    healthy: ClassVar[dict[str, bool]] = {}
    broken: ClassVar[set[str]] = set()

    async def collect(self) -> list[Metric]:
        if self.instance_id in Knob.broken:
            raise RuntimeError("the knob is stuck")
        value = Knob.values.get(self.instance_id, self.config.start)
        return [
            Metric("level", value, labels={"part": "a"}),
            Metric("level", value, labels={"part": "b"}),
        ]

    async def health(self) -> HealthReport | None:
        if Knob.healthy.get(self.instance_id, True):
            return None
        return HealthReport("failing", "the knob says no")


@attrs.define
class RecordConfig:
    mode: str = option("ok")  # ok | fail | hang


class Record(Notifier[RecordConfig]):
    name = "record"
    sent: ClassVar[dict[str, list[Notification]]] = {}
    arrived: ClassVar[dict[str, list[float]]] = {}

    async def send(self, notification: Notification) -> None:
        if self.config.mode == "hang":
            await anyio.sleep_forever()
        if self.config.mode == "fail":
            raise NotifierError("the receiver said 503")
        Record.sent.setdefault(self.notifier_id, []).append(notification)
        Record.arrived.setdefault(self.notifier_id, []).append(time.monotonic())


class Module:
    @hookimpl
    def register_plugins(self, register: Any) -> None:
        register(Knob)

    @hookimpl
    def register_notifiers(self, register: Any) -> None:
        register(Record)


@pytest.fixture(autouse=True)
def clean() -> None:
    Knob.values.clear()
    Knob.healthy.clear()
    Knob.broken.clear()
    Record.sent.clear()
    Record.arrived.clear()


def hub_for(tmp_path: Path, text: str) -> Hub:
    data = tomllib.loads(text)
    data.setdefault("scheduler", {}).update(jitter=0.0, setup_retry=[0.05])
    data.setdefault("store", {}).update(flush_interval=0.05)
    data.setdefault("alerting", {}).setdefault("evaluation_interval", 0.05)
    data["alerting"].setdefault("group_wait", 0)
    data["alerting"].setdefault("group_interval", 0.2)
    settings = settings_from_mapping(data, source=str(tmp_path / "homelab.toml"))
    settings.database.url = f"sqlite://{tmp_path / 'homelab.db'}"
    manager = PluginManager(load_entry_points=False)
    manager.register(Module(), "test-alerts")
    return Hub(settings, plugin_manager=manager)


async def wait_until(check: Any, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not check():  # noqa: ASYNC110 - polls the hub the test drives
            await anyio.sleep(0.02)


KNOB = """
[plugins.tank]
type = "knob"
interval = 0.1
[notifiers.pager]
type = "record"
"""


async def test_a_value_rule_with_for_fires_after_it_and_resolves_with_one_message_each(
    tmp_path: Path,
) -> None:
    hub = hub_for(
        tmp_path,
        KNOB
        + """
[alerts.full]
metric = "level"
match = { part = "a" }
threshold = 90
for = 0.6
summary = "{instance} {labels[part]} is at {value:.0f} %"
""",
    )
    async with hub:
        Knob.values["tank"] = 95
        began = time.monotonic()
        await wait_until(lambda: any(a.state == "pending" for a in hub.alerts_list()))
        await wait_until(lambda: Record.sent.get("pager"))
        fired_after = time.monotonic() - began
        assert fired_after >= 0.6
        Knob.values["tank"] = 10
        await wait_until(lambda: len(Record.sent["pager"]) == 2)
        await anyio.sleep(0.3)
        history = await hub.alert_history(rule="full")
    firing, resolved = Record.sent["pager"]
    assert (firing.status, resolved.status) == ("firing", "resolved")
    assert [a.summary for a in firing.alerts] == ["tank a is at 95 %"]
    assert resolved.alerts[0].summary == "tank a is at 10 %"
    assert firing.title == "[FIRING:1] tank a is at 95 %"
    assert [(e.old_state, e.new_state) for e in reversed(history)] == [
        ("inactive", "pending"),
        ("pending", "firing"),
        ("firing", "resolved"),
    ]


async def test_alerts_that_fire_together_are_one_message_and_repeat(tmp_path: Path) -> None:
    hub = hub_for(
        tmp_path,
        KNOB
        + """
[alerting]
group_wait = 0.3
repeat_interval = 0.8
[alerts.full]
metric = "level"
threshold = 90
""",
    )
    async with hub:
        Knob.values["tank"] = 95
        await wait_until(lambda: Record.sent.get("pager"))
        await wait_until(lambda: len(Record.sent["pager"]) == 2, timeout=3)
        first, repeat = Record.sent["pager"][:2]
    assert sorted(a.labels["part"] for a in first.alerts) == ["a", "b"]  # one group, 2 alerts
    assert first.title.startswith("[FIRING:2]")
    assert sorted(a.fingerprint for a in repeat.alerts) == sorted(
        a.fingerprint for a in first.alerts
    )
    gap = Record.arrived["pager"][1] - Record.arrived["pager"][0]
    assert gap >= 0.75


async def test_a_silence_mutes_an_alert_that_still_changes_state_and_sends_once_it_ends(
    tmp_path: Path,
) -> None:
    hub = hub_for(
        tmp_path,
        KNOB
        + """
[alerts.full]
metric = "level"
match = { part = "a" }
threshold = 90
""",
    )
    async with hub:
        silence = await hub.add_silence(
            {"rule": "full", "instance": "t*"}, ends_at=time.time() + 1.0, comment="tank work"
        )
        Knob.values["tank"] = 95
        await wait_until(lambda: any(a.state == "firing" for a in hub.alerts_list()))
        (alert,) = hub.alerts_list()
        assert alert.silenced and alert.silenced_by == [silence.id]
        await anyio.sleep(0.5)
        assert Record.sent.get("pager") is None
        await wait_until(lambda: Record.sent.get("pager"), timeout=3)  # the silence ended
        assert not hub.alerts_list()[0].silenced


async def test_removing_a_silence_lets_its_alerts_send(tmp_path: Path) -> None:
    hub = hub_for(tmp_path, KNOB + '[alerts.full]\nmetric = "level"\nthreshold = 90\n')
    async with hub:
        silence = await hub.add_silence({"rule": "full"}, ends_at=time.time() + 3600)
        Knob.values["tank"] = 95
        await wait_until(lambda: len(hub.alerts_list()) == 2)
        await anyio.sleep(0.3)
        assert Record.sent.get("pager") is None
        await hub.remove_silence(silence.id)
        await wait_until(lambda: Record.sent.get("pager"))
        assert hub.silences() == []


async def test_a_maintenance_window_mutes_matching_alerts(tmp_path: Path) -> None:
    hub = hub_for(
        tmp_path,
        KNOB
        + """
[notifiers.other]
type = "record"
[maintenance.always]
cron = "* * * * *"
duration = 60
match = { part = "a" }
[alerts.full]
metric = "level"
threshold = 90
notifiers = ["pager"]
""",
    )
    async with hub:
        Knob.values["tank"] = 95
        await wait_until(lambda: Record.sent.get("pager"))
        alerts = {a.labels["part"]: a for a in hub.alerts_list()}
    assert alerts["a"].silenced_by == ["maintenance:always"]
    assert not alerts["b"].silenced
    (message,) = Record.sent["pager"]
    assert [a.labels["part"] for a in message.alerts] == ["b"]
    assert "other" not in Record.sent  # the rule names its notifiers


async def test_a_notifier_that_fails_is_retried_and_every_attempt_is_recorded(
    tmp_path: Path,
) -> None:
    hub = hub_for(
        tmp_path,
        KNOB
        + """
[alerting]
retries = 2
retry_delay = 0.05
[notifiers.broken]
type = "record"
mode = "fail"
[alerts.full]
metric = "level"
match = { part = "a" }
threshold = 90
""",
    )
    async with hub:
        Knob.values["tank"] = 95
        await wait_until(lambda: Record.sent.get("pager"))
        await wait_until(lambda: hub.notifiers()[1].failed == 1)
        attempts = await hub.notification_attempts(notifier="broken")
        info = {n.id: n for n in hub.notifiers()}
    assert [(a.attempt, a.outcome) for a in reversed(attempts)] == [
        (1, "error"),
        (2, "error"),
        (3, "error"),
    ]
    assert all(a.error == "the receiver said 503" for a in attempts)
    assert info["broken"].last_error == "the receiver said 503"
    assert info["pager"].sent == 1 and info["pager"].failed == 0


async def test_a_hanging_notifier_delays_neither_another_notifier_nor_the_scheduler(
    tmp_path: Path,
) -> None:
    hub = hub_for(
        tmp_path,
        KNOB
        + """
[alerting]
send_timeout = 30
[notifiers.stuck]
type = "record"
mode = "hang"
[alerts.full]
metric = "level"
match = { part = "a" }
threshold = 90
""",
    )
    async with hub:
        Knob.values["tank"] = 95
        began = time.monotonic()
        await wait_until(lambda: Record.sent.get("pager"), timeout=3)
        took = time.monotonic() - began
        await anyio.sleep(0.5)
        executions = await hub.executions("tank", limit=5)
        stuck = {n.id: n for n in hub.notifiers()}["stuck"]
    assert took < 2  # far below the stuck notifier's 30 s timeout
    assert stuck.sent == 0 and stuck.failed == 0  # still in its first attempt
    assert max(e.lag for e in executions) < 0.5, [e.lag for e in executions]


async def test_a_restart_while_firing_sends_no_second_firing_message(tmp_path: Path) -> None:
    text = KNOB + '[alerts.full]\nmetric = "level"\nmatch = { part = "a" }\nthreshold = 90\n'
    Knob.values["tank"] = 95
    async with hub_for(tmp_path, text) as hub:
        await wait_until(lambda: Record.sent.get("pager"))
        await anyio.sleep(0.7)  # stored (every 0.5 s, and at shutdown)
    async with hub_for(tmp_path, text) as hub:
        await anyio.sleep(1.0)
        (alert,) = hub.alerts_list()
        assert alert.state == "firing"
        assert len(Record.sent["pager"]) == 1
        Knob.values["tank"] = 10
        await wait_until(lambda: len(Record.sent["pager"]) == 2)
    assert Record.sent["pager"][1].status == "resolved"


async def test_a_restart_while_pending_keeps_when_the_condition_began(tmp_path: Path) -> None:
    text = (
        KNOB
        + """
[alerts.full]
metric = "level"
match = { part = "a" }
threshold = 90
for = 1.5
"""
    )
    Knob.values["tank"] = 95
    async with hub_for(tmp_path, text) as hub:
        await wait_until(lambda: hub.alerts_list())
        (pending,) = hub.alerts_list()
        await anyio.sleep(0.6)
    async with hub_for(tmp_path, text) as hub:
        await wait_until(lambda: Record.sent.get("pager"), timeout=5)
        (alert,) = hub.alerts_list()
    assert alert.active_since == pending.active_since
    assert alert.fired_at is not None
    assert alert.fired_at - pending.active_since >= 1.5


async def test_health_and_absence_rules_fire_and_resolve_in_a_hub(tmp_path: Path) -> None:
    hub = hub_for(
        tmp_path,
        KNOB
        + """
[alerts.sick]
kind = "health"
summary = "{instance} is unwell"
[alerts.silent]
kind = "absence"
of = "runs"
for = 0.5
""",
    )
    async with hub:
        Knob.healthy["tank"] = False
        await wait_until(
            lambda: any(a.rule == "sick" and a.state == "firing" for a in hub.alerts_list())
        )
        Knob.healthy["tank"] = True
        await wait_until(
            lambda: any(a.rule == "sick" and a.state == "resolved" for a in hub.alerts_list())
        )
        await hub.set_enabled("tank", False)  # disabled: not absent
        await anyio.sleep(0.8)
        assert not any(a.rule == "silent" for a in hub.alerts_list())
        await hub.set_enabled("tank", True)
        await anyio.sleep(0.3)
        assert not any(a.rule == "silent" for a in hub.alerts_list())
    messages = Record.sent["pager"]
    assert [m.status for m in messages][:2] == ["firing", "resolved"]
    assert messages[0].alerts[0].summary == "tank is unwell"


async def test_an_unknown_notifier_type_stops_the_hub_with_the_table_named(tmp_path: Path) -> None:
    from homelab_core import ConfigError

    hub = hub_for(tmp_path, '[notifiers.n]\ntype = "pigeon"\n')
    with pytest.raises(ConfigError, match=r"\[notifiers.n\] type: unknown notifier type 'pigeon'"):
        async with hub:
            pass


async def test_test_notifier_sends_once_and_records_the_attempt(tmp_path: Path) -> None:
    hub = hub_for(tmp_path, KNOB + '[notifiers.broken]\ntype = "record"\nmode = "fail"\n')
    async with hub:
        assert await hub.test_notifier("pager") is None
        assert await hub.test_notifier("broken") == "the receiver said 503"
        attempts = await hub.notification_attempts()
    assert Record.sent["pager"][0].test
    assert {(a.notifier, a.status, a.outcome) for a in attempts} == {
        ("pager", "test", "sent"),
        ("broken", "test", "error"),
    }


async def test_an_alert_that_fires_again_after_resolving_is_sent_again(tmp_path: Path) -> None:
    hub = hub_for(
        tmp_path, KNOB + '[alerts.full]\nmetric = "level"\nmatch = { part = "a" }\nthreshold = 90\n'
    )
    async with hub:
        for value, count in ((95, 1), (10, 2), (95, 3)):
            Knob.values["tank"] = value
            await wait_until(lambda count=count: len(Record.sent.get("pager", [])) == count)
    assert [m.status for m in Record.sent["pager"]] == ["firing", "resolved", "firing"]


async def test_a_rule_made_through_the_api_is_stored_and_restored(tmp_path: Path) -> None:
    Knob.values["tank"] = 95
    async with hub_for(tmp_path, KNOB) as hub:
        assert hub.alerts.rules() == []
        assert hub.bus.subscriber_count == 0  # no rule: the service reads no event
        await hub.put_alert_rule("full", {"metric": "level", "threshold": 90, "for": "0s"})
        await wait_until(lambda: hub.bus.subscriber_count == 1)
        await wait_until(lambda: Record.sent.get("pager"))
    async with hub_for(tmp_path, KNOB) as hub:
        ((rule, source),) = hub.alert_rules()
        assert (rule.id, rule.threshold, source) == ("full", 90, "api")
        await anyio.sleep(0.5)
        assert {a.state for a in hub.alerts_list()} == {"firing"}
        assert len(Record.sent["pager"]) == 1  # restored, not sent again
        await hub.remove_alert_rule("full")
        assert hub.alerts_list() == []
        await wait_until(lambda: hub.bus.subscriber_count == 0)


async def test_a_silence_made_by_another_process_applies_within_seconds(tmp_path: Path) -> None:
    from homelab_core.alerts import Silence
    from homelab_core.store import Store
    from homelab_core.store.alerts import AlertStore

    hub = hub_for(tmp_path, KNOB + '[alerts.full]\nmetric = "level"\nthreshold = 90\n')
    async with hub:
        other = Store(hub.settings.database.url)  # what `homelab silence add` does
        await other.open()
        try:
            await AlertStore(other).save_silence(
                Silence.create({"rule": "full"}, ends_at=time.time() + 3600)
            )
        finally:
            await other.close()
        Knob.values["tank"] = 95
        await wait_until(lambda: len(hub.alerts_list()) == 2)
        await wait_until(lambda: all(a.silenced for a in hub.alerts_list()), timeout=8)


async def test_an_absence_rule_fires_when_an_instance_stops_succeeding_and_resolves(
    tmp_path: Path,
) -> None:
    hub = hub_for(
        tmp_path,
        KNOB
        + """
[alerts.silent]
kind = "absence"
of = "runs"
for = 0.6
summary = "{instance} has not reported"
[alerts.series-gone]
kind = "absence"
metric = "level"
match = { part = "a" }
for = 0.6
""",
    )
    async with hub:
        await anyio.sleep(0.5)
        assert hub.alerts_list() == []  # it reports: nothing is absent
        Knob.broken.add("tank")  # runs fail from now on: no sample, no success
        await wait_until(
            lambda: {a.rule for a in hub.alerts_list(state="firing")} == {"silent", "series-gone"}
        )
        Knob.broken.clear()
        await wait_until(lambda: {a.state for a in hub.alerts_list()} == {"resolved"})
        await wait_until(lambda: [m.status for m in Record.sent["pager"]].count("resolved") == 2)
    statuses = [m.status for m in Record.sent["pager"]]
    assert sorted(statuses) == ["firing", "firing", "resolved", "resolved"]
    summaries = {a.summary for m in Record.sent["pager"] for a in m.alerts}
    assert "tank has not reported" in summaries


async def test_an_internal_error_of_evaluation_is_counted_and_the_service_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hub_for(tmp_path, KNOB + '[alerts.full]\nmetric = "level"\nthreshold = 90\n')
    async with hub:
        engine = hub.alerts.engine
        real = engine.observe_metrics
        calls = 0

        def buggy(*args: Any) -> Any:  # stands for a bug met by one odd event
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ZeroDivisionError("a bug")
            return real(*args)

        engine.observe_metrics = buggy  # type: ignore[method-assign]
        Knob.values["tank"] = 95
        await wait_until(lambda: Record.sent.get("pager"))
        assert hub.alerts.errors == 1 and hub.alerts.counters()["alerts_errors"] == 1
        executions = await hub.executions("tank", limit=3)
    assert all(e.status == "ok" for e in executions)
    assert "internal error evaluating a metrics event of 'tank'" in caplog.text
