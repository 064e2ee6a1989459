"""The store on a real SQLite file: writes, rollups, history tiers, retention, retries."""

from __future__ import annotations

import itertools
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from store_layouts import store_at, stored_rollups, stored_samples

from homelab_core import Execution, Health, HealthState, Metric, StoreError
from homelab_core.codec import labels_json
from homelab_core.config import RetentionSettings, StoreSettings
from homelab_core.model import EXECUTION_COLUMNS
from homelab_core.store import BatchWriter, Maintenance, Store, WriteQueue, compaction, history
from homelab_core.store.models import ExecutionRecord
from homelab_core.store.retention import DAY, HOUR, MINUTE
from homelab_core.store.sql import _SQLITE_MAX_PARAMS, insert_rows

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0 - (1_700_000_000.0 % HOUR)  # an hour boundary


@pytest.fixture
def store(any_store: Store) -> Store:
    """A store on a real SQLite file, and on a real PostgreSQL database (conftest's)."""
    return any_store


def samples(start: float, count: int, step: float, value: float = 1.0) -> list[Metric]:
    return [Metric("temp", value + i, unit="°C", timestamp=start + i * step) for i in range(count)]


async def test_open_applies_migrations_and_enables_wal(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    store = Store(f"sqlite://{path}")
    await store.open()
    await store.close()
    # Opening again finds the migration applied and does nothing.
    await store.open()
    await store.close()
    with closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        applied = conn.execute("SELECT app, name FROM tortoise_migrations").fetchall()
    assert applied == [
        ("homelab", "0001_initial"),
        ("homelab", "0002_alerts"),
        ("homelab", "0003_api_instances"),
        ("homelab", "0004_execution_node"),
        ("homelab", "0005_execution_usage"),
        ("homelab", "0006_chunks"),
    ]


ALERT_TABLES = (
    "homelab_alert_state",
    "homelab_alert_event",
    "homelab_silence",
    "homelab_notification",
    "homelab_alert_rule",
)


async def test_a_store_of_the_release_before_the_alerts_gains_their_tables_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    url = f"sqlite://{tmp_path / 'old.db'}"
    old = await store_at(url, "0001_initial")
    await old.execute(
        "INSERT INTO homelab_series (id, instance_id, name, labels, unit, kind)"
        " VALUES (1, 'a', 'v', '{}', '', 'gauge')"
    )
    for i in range(3):
        await old.execute(
            "INSERT INTO homelab_sample (series_id, ts, value) VALUES (1, ?, 1)", [T0 + 10 * i]
        )
    await old.close()
    store = Store(url)
    await store.open()
    try:
        assert len(await store.fetch("SELECT * FROM homelab_head")) == 3
        for table in (*ALERT_TABLES, "homelab_api_instance"):
            assert await store.fetch(f"SELECT * FROM {table}") == []
    finally:
        await store.close()


async def test_executions_of_a_store_of_the_release_before_nodes_gain_node_and_fence(
    tmp_path: Path,
) -> None:
    url = f"sqlite://{tmp_path / 'old.db'}"
    old = await store_at(url, "0003_api_instances")
    await old.execute(
        "INSERT INTO homelab_execution (instance_id, started_at, duration, status, metric_count,"
        " trigger, lag) VALUES ('a', ?, 0.5, 'ok', 0, 'schedule', 0)",
        [T0],
    )
    await old.close()
    store = Store(url)
    await store.open()
    try:
        await store.write([], [Execution("a", T0 + 1, 0.5, "ok", node="nas", fence=3)])
        newest, oldest = await store.executions("a")
        assert (newest.node, newest.fence) == ("nas", 3)
        assert (oldest.started_at, oldest.node, oldest.fence) == (T0, None, None)
    finally:
        await store.close()


async def test_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    store = Store(f"sqlite://{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(StoreError, match=r"directory .*missing-dir.* does not exist"):
        await store.open()


async def test_write_creates_series_once_and_stores_samples(store: Store) -> None:
    await store.write([("a", samples(T0, 3, 10)), ("b", samples(T0, 2, 10))])
    await store.write([("a", samples(T0 + 30, 2, 10))])
    series = await store.series("a")
    assert [(s.name, s.unit, s.labels) for s in series] == [("temp", "°C", {})]
    assert await store.count_samples() == 7
    assert store.samples_written == 7


async def test_large_batches_keep_every_row_and_value(store: Store) -> None:
    # More rows than one multi-row statement holds on SQLite (full chunks + a remainder),
    # with new and known series mixed in one batch.
    await store.write([("a", [Metric("known", 1.0, timestamp=T0)])])
    collections = [
        (
            f"i{i}",
            [
                Metric("v", float(i * 100 + n), labels={"n": str(n)}, timestamp=T0 + n)
                for n in range(100)
            ]
            + [Metric("known", float(i), timestamp=T0 + 1)],
        )
        for i in range(250)
    ]
    collections.append(("a", [Metric("known", 2.0, timestamp=T0 + 2)]))
    runs = [Execution(f"i{i}", T0 + i, 0.1, "ok", metric_count=101) for i in range(5_000)]
    assert await store.write(collections, runs) == 250 * 101 + 1
    rows = await store.fetch(
        "SELECT s.instance_id, s.name, s.labels, p.ts, p.value FROM homelab_head p"
        " JOIN homelab_series s ON s.id = p.series_id"
    )
    got = sorted((r["instance_id"], r["name"], r["labels"], r["ts"], r["value"]) for r in rows)
    expected = sorted(
        (iid, m.name, labels_json(m.labels), m.timestamp, m.value)
        for iid, metrics in [("a", [Metric("known", 1.0, timestamp=T0)]), *collections]
        for m in metrics
    )
    assert got == expected
    stored = await store.executions(limit=10_000)
    assert sorted((e.instance_id, e.started_at) for e in stored) == sorted(
        (e.instance_id, e.started_at) for e in runs
    )


@pytest.mark.parametrize("remainder", [0, 7], ids=["whole-chunks", "remainder"])
async def test_insert_rows_on_sqlite_fills_chunks_and_the_rest(
    tmp_path: Path, remainder: int
) -> None:
    # Two full multi-row statements, then either nothing or one statement of its own size.
    store = Store(f"sqlite://{tmp_path / 'store.db'}")
    await store.open()
    rows = [(n, T0 + n, n / 2) for n in range(2 * (_SQLITE_MAX_PARAMS // 3) + remainder)]
    try:
        with store.active():
            await insert_rows(
                store.connection, store.dialect, "homelab_head", "series_id, ts, value", rows
            )
        stored = await store.fetch("SELECT series_id, ts, value FROM homelab_head ORDER BY id")
    finally:
        await store.close()
    assert [(r["series_id"], r["ts"], r["value"]) for r in stored] == rows


async def test_a_rolled_back_write_leaves_no_series_id_behind(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The series row is created, then the samples' insert fails: the transaction rolls the
    # series back, so the next write must create it again rather than reuse its id.
    real = insert_rows

    async def failing(conn: Any, dialect: Any, table: str, *args: Any) -> None:
        if table == "homelab_head":
            raise ConnectionError("database is away")
        await real(conn, dialect, table, *args)

    monkeypatch.setattr("homelab_core.store.store.insert_rows", failing)
    with pytest.raises(StoreError, match="database is away") as failed:
        await store.write([("a", samples(T0, 2, 10))])
    assert isinstance(failed.value.__cause__, ConnectionError)
    monkeypatch.undo()
    assert await store.write([("a", samples(T0, 2, 10))]) == 2
    rows = await store.fetch(
        "SELECT s.name FROM homelab_head p JOIN homelab_series s ON s.id = p.series_id"
    )
    assert [r["name"] for r in rows] == ["temp", "temp"]


async def test_write_records_executions_and_health_transitions(store: Store) -> None:
    execution = Execution("a", T0, 0.5, "error", error="boom", trigger="schedule")
    old = Health(HealthState.OK)
    new = Health(HealthState.FAILING, message="boom", since=T0)
    await store.write([], [execution], [("a", old, new)])
    [stored] = await store.executions("a")
    assert (stored.status, stored.error, stored.duration) == ("error", "boom", 0.5)
    assert stored.id is not None
    assert await store.health_transitions("a") == [(T0, "ok", "failing", "boom")]


async def test_health_history_pages_newest_first_per_instance(store: Store) -> None:
    states = [HealthState.OK, HealthState.FAILING, HealthState.DEGRADED, HealthState.OK]
    changes = [
        ("a", Health(old), Health(new, message=f"change {i}", since=T0 + i))
        for i, (old, new) in enumerate(itertools.pairwise(states))
    ]
    await store.write([], [], [*changes, ("b", Health(), Health(HealthState.FAILING))])
    first = await store.health_history("a", limit=2)
    assert [(t.ts, t.old_state, t.new_state, t.message) for t in first] == [
        (T0 + 2, "degraded", "ok", "change 2"),
        (T0 + 1, "failing", "degraded", "change 1"),
    ]
    rest = await store.health_history("a", limit=2, before=first[-1].id)
    assert [(t.ts, t.new_state) for t in rest] == [(T0, "failing")]
    assert [t.new_state for t in await store.health_history("b")] == ["failing"]


async def test_executions_page_newest_first_and_filter_by_status(store: Store) -> None:
    runs = [Execution("a", T0 + i, 0.1, "ok" if i % 2 else "error", error=None) for i in range(10)]
    await store.write([], runs)
    page = await store.executions("a", limit=4)
    assert [e.started_at - T0 for e in page] == [9, 8, 7, 6]
    next_page = await store.executions("a", limit=4, before=page[-1].id)
    assert [e.started_at - T0 for e in next_page] == [5, 4, 3, 2]
    errors = await store.executions("a", status="error")
    assert {e.status for e in errors} == {"error"}
    assert len(errors) == 5


async def test_compaction_fills_the_hour_tier_and_expiry_the_minute_tier(store: Store) -> None:
    # Two hours of 10 s samples: values 0..719.
    await store.write([("a", [Metric("v", i, timestamp=T0 + i * 10) for i in range(720)])])
    maintenance = Maintenance(store, RetentionSettings(raw_days=1))
    await maintenance.run_once(now=T0 + 2 * HOUR + 120)
    assert [(b - T0, mn, mx, ct) for _, b, mn, mx, _, ct in await stored_rollups(store, HOUR)] == [
        (0, 0, 359, 360),
        (HOUR, 360, 719, 360),
    ]
    # While the raw samples are kept, they are the minute tier.
    assert await stored_rollups(store, MINUTE) == []
    # Every sample left the head for a chunk of its hour; T0 + 2 h is the end of a UTC
    # day, so the two chunks became one of the day.
    assert (T0 + 2 * HOUR) % DAY == 0
    assert await store.fetch("SELECT id FROM homelab_head") == []
    spans = await store.fetch(
        "SELECT start, span, count FROM homelab_chunk WHERE resolution = 0 ORDER BY start"
    )
    assert [(r["start"], r["span"], r["count"]) for r in spans] == [(T0 + 2 * HOUR - DAY, DAY, 720)]
    # A second pass adds nothing twice, forced or not.
    await maintenance.run_once(now=T0 + 2 * HOUR + 120)
    await maintenance.compact(T0 + 2 * HOUR + 120, force=True)
    assert sum(r[-1] for r in await stored_rollups(store, HOUR)) == 720
    # Past the raw retention, the raw chunk becomes minute rollups.
    await maintenance.run_once(now=T0 + 2 * HOUR + DAY + 120)
    minutes = await stored_rollups(store, MINUTE)
    assert len(minutes) == 120
    assert minutes[0][1:] == (T0, 0, 5, 15, 6)
    assert await store.count_samples() == 0


async def test_history_uses_the_coarsest_fitting_tier(store: Store) -> None:
    await store.write([("a", [Metric("v", i, timestamp=T0 + i * 10) for i in range(720)])])
    maintenance = Maintenance(store, RetentionSettings())
    await maintenance.run_once(now=T0 + 2 * HOUR + 120)
    # Remove the raw chunks of the samples rolled up: a query that still read them would
    # find gaps.
    await store.execute("DELETE FROM homelab_chunk WHERE resolution = 0")
    [series] = await history(
        store, maintenance, "a", "v", since=T0, now=T0 + 3 * HOUR, until=T0 + 2 * HOUR, step=HOUR
    )
    assert series.resolution == HOUR
    assert [(p.timestamp - T0, p.value) for p in series.points] == [
        (0, 179.5),
        (HOUR, 539.5),
    ]
    [by_minute] = await history(
        store,
        maintenance,
        "a",
        "v",
        since=T0,
        now=T0 + 3 * HOUR,
        until=T0 + 600,
        step=60,
        agg="max",
    )
    assert by_minute.resolution == MINUTE
    # The minute tier of samples kept raw is the raw samples: gone here.
    assert by_minute.points == []


async def test_history_reads_raw_samples_newer_than_the_rollups(store: Store) -> None:
    maintenance = Maintenance(store, RetentionSettings())
    await store.write([("a", [Metric("v", i, timestamp=T0 + i * 10) for i in range(12)])])
    await maintenance.run_once(now=T0 + 60 + 30)  # rolls the first minute only
    await store.write([("a", [Metric("v", 100, timestamp=T0 + 125)])])
    [series] = await history(
        store,
        maintenance,
        "a",
        "v",
        since=T0,
        now=T0 + 3 * HOUR,
        until=T0 + 180,
        step=60,
        agg="min",
    )
    assert [(p.timestamp - T0, p.value) for p in series.points] == [(0, 0), (60, 6), (120, 100)]


async def test_history_caps_points_and_filters_labels(store: Store) -> None:
    metrics = [
        Metric("v", i, labels={"disk": d}, timestamp=T0 + i) for i in range(1000) for d in "ab"
    ]
    await store.write([("a", metrics)])
    maintenance = Maintenance(store, RetentionSettings())
    result = await history(
        store,
        maintenance,
        "a",
        "v",
        since=T0,
        now=T0 + 3 * HOUR,
        until=T0 + 1000,
        labels={"disk": "b"},
        max_points=100,
    )
    assert [s.labels for s in result] == [{"disk": "b"}]
    assert len(result[0].points) == 100
    assert result[0].resolution == 10


async def test_history_rejects_bad_arguments(store: Store) -> None:
    maintenance = Maintenance(store, RetentionSettings())
    from homelab_core import HomelabError

    with pytest.raises(HomelabError, match="unknown aggregate 'median'"):
        await history(
            store, maintenance, "a", "v", since=T0, now=T0 + 3 * HOUR, until=T0 + 1, agg="median"
        )  # type: ignore[arg-type]
    with pytest.raises(HomelabError, match="'until' must be later than 'since'"):
        await history(store, maintenance, "a", "v", since=T0, now=T0 + 3 * HOUR, until=T0)


async def test_retention_prunes_each_tier(store: Store) -> None:
    day = 86400.0
    now = T0 + 100 * day
    await store.write(
        [("a", [Metric("v", 1, timestamp=now - 8 * day), Metric("v", 2, timestamp=now - day)])],
        [Execution("a", now - 15 * day, 0.1, "ok"), Execution("a", now - day, 0.1, "ok")],
    )
    for bucket in (now - 91 * day, now - 89 * day):
        row = compaction.chunk_row(
            1, MINUTE, bucket, MINUTE, *([[x] for x in (bucket, 1, 1, 1, 1)])
        )
        await compaction.insert_chunks(store.connection, store.dialect, [row])
    await Maintenance(store, RetentionSettings()).run_once(now)
    # The sample of 8 days ago went with its chunk, into the minute tier; yesterday's is in
    # a raw chunk still.
    assert await store.fetch("SELECT value FROM homelab_head") == []
    assert await stored_samples(store) == [(1, now - day, 2)]
    # Of the minute rollups written here, the one of 89 days ago.
    assert [r[1] for r in await stored_rollups(store, MINUTE)] == [now - 89 * day, now - 8 * day]
    assert len(await stored_rollups(store, HOUR)) == 2
    assert len(await store.executions("a")) == 1


async def test_health_changes_are_kept_for_the_status_page_and_the_last_one_always(
    store: Store,
) -> None:
    day = 86400.0
    now = T0 + 200 * day
    rows = [
        ("a", now - 100 * day, "ok"),
        ("a", now - 95 * day, "failing"),
        ("a", now - 20 * day, "ok"),
        ("b", now - 120 * day, "ok"),
    ]
    for instance_id, ts, state in rows:
        await store.execute(
            "INSERT INTO homelab_health_transition (instance_id, ts, old_state, new_state,"
            " message) VALUES (?, ?, 'unknown', ?, '')",
            [instance_id, ts, state],
        )
    await Maintenance(store, RetentionSettings()).prune(now)  # 90 days by default
    kept = await store.fetch(
        "SELECT instance_id, new_state FROM homelab_health_transition ORDER BY instance_id, ts"
    )
    # a's change of 20 days ago is within 90 days; of the older ones only the newest stays
    # (the state a 30-day window starts in); b's only change stays too.
    assert [(r["instance_id"], r["new_state"]) for r in kept] == [
        ("a", "failing"),
        ("a", "ok"),
        ("b", "ok"),
    ]


class FlakyStore:
    """Wraps a store; its first ``failures`` writes raise."""

    def __init__(self, store: Store, failures: int) -> None:
        self.store = store
        self.failures = failures

    async def write(self, *args: object) -> int:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database is away")
        return await self.store.write(*args)  # type: ignore[arg-type]


async def test_writer_retries_until_the_store_is_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("homelab_core.store.writer.RETRY_WAITS", (0.01,))
    queue = WriteQueue(max_samples=1000, batch_size=10)
    writer = BatchWriter(FlakyStore(store, 2), queue, StoreSettings(flush_interval=0.01))  # type: ignore[arg-type]
    queue.put_metrics("a", samples(T0, 25, 1))
    queue.close()
    with anyio.fail_after(5):
        await writer.run()
    assert await store.count_samples() == 25
    assert writer.failures == 2
    assert queue.dropped_samples == 0


async def test_writer_gives_up_during_shutdown_and_counts_the_loss(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("homelab_core.store.writer.RETRY_WAITS", (0.01,))
    queue = WriteQueue(max_samples=1000, batch_size=100)
    writer = BatchWriter(FlakyStore(store, 100), queue, StoreSettings(flush_interval=0.01))  # type: ignore[arg-type]
    queue.put_metrics("a", samples(T0, 7, 1))
    queue.close()
    with anyio.fail_after(5):
        await writer.run()
    assert queue.dropped_samples == 7


class OddStore:
    """Wraps a store; a write that holds a metric named ``odd`` raises an error of no
    known meaning (as a bug could), and the ping answers as ``answers`` says."""

    def __init__(self, store: Store, answers: bool) -> None:
        self.store = store
        self.answers = answers
        self.attempts = 0

    async def write(self, samples: Any, *args: Any) -> int:
        self.attempts += 1
        if any(m.name == "odd" for _, metrics in samples for m in metrics):
            raise RuntimeError("something odd")
        return await self.store.write(samples, *args)

    async def ping(self) -> bool:
        return self.answers


async def test_an_error_of_unknown_meaning_is_a_refusal_while_the_store_answers(
    store: Store,
) -> None:
    queue = WriteQueue(max_samples=1000, batch_size=1000)
    odd = OddStore(store, answers=True)
    writer = BatchWriter(odd, queue, StoreSettings(flush_interval=0.01))  # type: ignore[arg-type]
    queue.put_metrics("a", [*samples(T0, 7, 1), Metric("odd", 1.0, timestamp=T0)])
    queue.put_metrics("b", samples(T0, 8, 1))
    queue.close()
    with anyio.fail_after(5):
        await writer.run()
    assert await store.count_samples() == 15
    assert (writer.refused_samples, queue.dropped_samples) == (1, 1)
    assert odd.attempts < 16, "the batch was halved, not written row by row"
    assert not writer.failing


async def test_an_error_of_unknown_meaning_is_an_outage_while_the_store_does_not_answer(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("homelab_core.store.writer.RETRY_WAITS", (0.01,))
    queue = WriteQueue(max_samples=1000, batch_size=1000)
    odd = OddStore(store, answers=False)
    writer = BatchWriter(odd, queue, StoreSettings(flush_interval=0.01))  # type: ignore[arg-type]
    queue.put_metrics("a", [*samples(T0, 3, 1), Metric("odd", 1.0, timestamp=T0)])
    queue.put_execution(Execution("a", T0, 0.1, "ok"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(writer.run)
        with anyio.fail_after(5):
            while odd.attempts < 3:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert writer.failing
        assert writer.last_error == "RuntimeError: something odd"
        assert writer.refused_samples == 0, "nothing is dropped while the store is away"
        queue.close()
    # Shutdown gives up after SHUTDOWN_ATTEMPTS and counts everything it drops.
    assert (queue.dropped_samples, queue.dropped_executions) == (4, 1)
    assert await store.count_samples() == 0


async def test_writer_batches_by_size(store: Store) -> None:
    queue = WriteQueue(max_samples=10_000, batch_size=100)
    writer = BatchWriter(store, queue, StoreSettings(flush_interval=10))
    for i in range(10):
        queue.put_metrics("a", samples(T0 + i * 100, 50, 1))
    queue.close()
    await writer.run()
    assert writer.batches_written == 5
    assert await store.count_samples() == 500


async def test_closed_queue_refuses_and_counts(store: Store) -> None:
    queue = WriteQueue(max_samples=100, batch_size=10)
    queue.close()
    assert not queue.put_metrics("a", samples(T0, 3, 1))
    assert queue.dropped_samples == 3


async def test_history_of_a_range_past_raw_retention_reads_rollups(store: Store) -> None:
    await store.write([("a", [Metric("v", i, timestamp=T0 + i * 10) for i in range(60)])])
    maintenance = Maintenance(store, RetentionSettings(raw_days=1))
    await maintenance.run_once(now=T0 + 2 * DAY)  # rolls up, then prunes the raw samples
    assert await store.count_samples() == 0
    [series] = await history(
        store, maintenance, "a", "v", since=T0, until=T0 + 600, step=10, now=T0 + 2 * DAY
    )
    assert series.resolution == MINUTE
    assert [p.value for p in series.points] == [2.5 + 6 * i for i in range(10)]


def test_queued_executions_are_bounded_and_counted() -> None:
    queue = WriteQueue(max_samples=3, batch_size=10)
    for i in range(5):
        queue.put_execution(Execution("a", T0 + i, 0.1, "ok"))
    assert queue.dropped_executions == 2
    assert len(queue.take().executions) == 3


def test_the_execution_table_has_exactly_the_models_fields() -> None:
    """The Tortoise record and the model cannot drift: the columns are derived from it."""
    assert set(ExecutionRecord._meta.db_fields) == {"id", *EXECUTION_COLUMNS}


async def test_stores_opening_at_once_on_a_new_postgresql_database_both_open(
    postgres_url: str,
) -> None:
    """Nodes of a cluster that start together migrate one after the other, not both."""
    stores = [Store(postgres_url) for _ in range(3)]
    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(store.open)
    try:
        for store in stores:
            assert await store.ping()
        applied = await stores[0].fetch("SELECT name FROM tortoise_migrations ORDER BY name")
        assert [r["name"] for r in applied] == [
            "0001_initial",
            "0002_alerts",
            "0003_api_instances",
            "0004_execution_node",
            "0005_execution_usage",
            "0006_chunks",
        ]
    finally:
        for store in stores:
            await store.close()
