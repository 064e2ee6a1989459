"""Compressed chunks: the encoding, compaction, reads against a naive computation,
retention, the migration from the previous layout, and a writer killed while compacting."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import sys
import textwrap
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import anyio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_layouts import store_at, stored_rollups, stored_samples

from homelab_core import Metric, StoreError
from homelab_core.config import RetentionSettings
from homelab_core.store import Maintenance, Store, chunks, compaction, history
from homelab_core.store import store as store_module
from homelab_core.store.history import choose_step, tier_for
from homelab_core.store.retention import DAY, HOUR, MINUTE

pytestmark = pytest.mark.anyio

T0 = 1_700_006_400.0  # midnight UTC
assert T0 % DAY == 0

# -- the encoding -----------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
decimals = st.integers(-(10**9), 10**9).map(lambda n: n / 100)
value_lists = st.one_of(
    st.lists(finite, min_size=1, max_size=300),
    st.lists(decimals, min_size=1, max_size=300),
    st.lists(st.integers(-(2**60), 2**60).map(float), min_size=1, max_size=300),
    st.lists(st.sampled_from([0.0, -0.0, 1.5, 1e300, -2.25e-300, 5e-324]), min_size=1),
)


@given(values=value_lists, data=st.data())
def test_a_chunk_gives_back_every_value_exactly_and_timestamps_to_the_millisecond(
    values: list[float], data: st.DataObject
) -> None:
    steps = data.draw(st.lists(st.integers(0, 10**8), min_size=len(values), max_size=len(values)))
    ms = np.cumsum(steps) + 1_700_000_000_000
    # Timestamps off the millisecond by less than half of one come back rounded.
    ts = (ms + data.draw(st.sampled_from([0.0, 0.4, -0.4]))) / 1000.0
    blob = chunks.encode(ts, values)
    got_ts, got_values = chunks.decode(blob)
    assert got_ts.tolist() == (ms / 1000.0).tolist()
    assert [v.hex() for v in got_values.tolist()] == [float(v).hex() for v in values]
    assert chunks.count_of(blob) == len(values)


def test_regular_series_take_a_byte_or_less_a_sample() -> None:
    ts = T0 + np.arange(8640) * 10.0
    rng = np.random.default_rng(1)
    for values, most in (
        (np.full(8640, 42.0), 0.1),  # a constant
        (np.cumsum(rng.integers(0, 100, 8640)).astype(float), 1.2),  # a counter
        (np.round(50 + np.sin(np.arange(8640) / 300) * 10, 1), 1.0),  # a slow gauge
    ):
        assert len(chunks.encode(ts, values)) / 8640 <= most


def test_a_damaged_chunk_is_an_error_that_says_so() -> None:
    blob = chunks.encode([T0, T0 + 10], [1.0, 2.0])
    with pytest.raises(chunks.ChunkError, match="damaged chunk"):
        chunks.decode(blob[:-3])
    with pytest.raises(chunks.ChunkError, match="layout 9"):
        chunks.decode(bytes([9]) + blob[1:])
    with pytest.raises(chunks.ChunkError, match="not a chunk"):
        chunks.decode(b"\x01")


# -- compaction -------------------------------------------------------------------------


def gauge(i: int, ts: float, value: float) -> Metric:
    return Metric("v", value, labels={"n": str(i)}, timestamp=ts)


async def test_compaction_moves_every_sample_once_and_rolls_up_late_ones(
    any_store: Store,
) -> None:
    store = any_store
    maintenance = Maintenance(store, RetentionSettings())
    await store.write([("a", [gauge(0, T0 + i * 10, i) for i in range(720)])])  # two hours
    before = await stored_samples(store)
    assert await maintenance.compact(T0 + HOUR + 60) == 360
    assert await stored_samples(store) == before
    [row] = await store.fetch("SELECT start, span, count FROM homelab_chunk WHERE resolution = 0")
    assert (row["start"], row["span"], row["count"]) == (T0, HOUR, 360)
    # A late sample for the compacted hour waits in the head, where reads see it...
    await store.write([("a", [gauge(0, T0 + 5, 1000)])])
    [series] = await history(
        store, maintenance, "a", "v", since=T0, until=T0 + HOUR, step=HOUR, agg="max", now=T0
    )
    assert [p.value for p in series.points] == [1000]
    # ...and is rolled up with the next hour.
    assert await maintenance.compact(T0 + 2 * HOUR + 60) == 361
    [first, _] = await stored_rollups(store, HOUR)
    assert first[1:] == (T0, 0, 1000, sum(range(360)) + 1000, 361)
    assert sum(r[-1] for r in await stored_rollups(store, HOUR)) == 721
    assert await store.count_samples() == 721
    # Once the day has ended its chunks become one.
    await maintenance.compact(T0 + DAY + HOUR)
    [day] = await store.fetch("SELECT start, span, count FROM homelab_chunk WHERE resolution = 0")
    assert (day["start"], day["span"], day["count"]) == (T0, DAY, 721)
    # Counts over a range read the chunks across its ends one sample at a time.
    await store.write([("a", [gauge(0, T0 + DAY + 5, 1)])])  # in the head
    assert await store.count_samples(T0 + 5, T0 + 65) == 1 + 6  # the late one, then 10..60
    assert await store.count_samples(T0 + 3000, T0 + 2 * DAY) == 720 - 300 + 1
    assert await store.count_samples(until=T0 + 10) == 2  # T0, and the late one at T0 + 5
    assert await store.count_samples(since=T0) == 722
    [hours] = await store.fetch(
        "SELECT start, span, count FROM homelab_chunk WHERE resolution = ?", [HOUR]
    )
    assert (hours["start"], hours["span"], hours["count"]) == (T0, DAY, 2)
    assert len(await stored_samples(store)) == 722


async def test_compaction_works_in_slices_of_series(any_store: Store) -> None:
    store = any_store
    series = compaction.SLICE * 2 + 5
    await store.write([("a", [gauge(i, T0 + 30, i) for i in range(series)])])
    assert await Maintenance(store, RetentionSettings()).compact(T0 + HOUR + 60) == series
    rows = await store.fetch("SELECT COUNT(*) AS n FROM homelab_chunk WHERE resolution = 0")
    assert rows[0]["n"] == series
    assert await store.fetch("SELECT id FROM homelab_head") == []


async def test_deleting_an_instance_with_its_history_drops_its_chunks(any_store: Store) -> None:
    store = any_store
    await store.write([("a", [gauge(0, T0 + i, i) for i in range(10)]), ("b", [gauge(0, T0, 1)])])
    await Maintenance(store, RetentionSettings()).compact(T0 + HOUR + 60)
    await store.delete_instance("a", purge=True)
    assert await store.count_samples() == 1
    assert len(await store.fetch("SELECT id FROM homelab_chunk")) == 2  # raw and hour


# -- reads against a naive computation ---------------------------------------------------


def naive(
    samples: list[tuple[int, float, float]],
    since: float,
    until: float,
    step: float | None,
    agg: str,
    now: float,
    retention: RetentionSettings,
) -> tuple[float, dict[float, float]]:
    """What a query of series 0 returns, computed from a plain list of samples."""
    width = choose_step(since, until, step, 500)
    tier = tier_for(width, since, retention, now)
    if tier:
        width = math.ceil(width / tier) * tier
        until = math.ceil(until / tier) * tier
    since = math.floor(since / width) * width
    buckets: dict[float, list[float]] = defaultdict(list)
    for _, ts, value in samples:
        if since <= ts < until:
            buckets[math.floor(ts / width) * width].append(value)
    pick = {"min": min, "max": max, "avg": lambda v: sum(v) / len(v)}[agg]
    return width, {b: pick(v) for b, v in buckets.items()}


times = st.integers(0, 3 * DAY * 1000).map(lambda ms: T0 + ms / 1000)
sample_values = st.one_of(
    st.integers(-1000, 1000).map(float), decimals, finite.filter(lambda v: abs(v) < 1e12)
)
batches = st.lists(st.lists(st.tuples(times, sample_values), max_size=40), min_size=1, max_size=4)
queries = st.tuples(
    times,
    st.integers(1, 3 * DAY),
    st.one_of(st.none(), st.sampled_from([1.0, 10.0, 60.0, 300.0, 3600.0, 7200.0, 3600.0])),
    st.sampled_from(["avg", "min", "max"]),
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batches=batches,
    compact_after=st.lists(st.booleans(), min_size=4, max_size=4),
    raw_days=st.sampled_from([30.0, 2.0, 0.5]),
    q=queries,
)
async def test_history_answers_as_a_naive_computation_whatever_was_compacted(
    any_store: Store,
    batches: list[list[tuple[float, float]]],
    compact_after: list[bool],
    raw_days: float,
    q: tuple[float, int, float | None, str],
) -> None:
    """Whatever was compacted, merged or rolled up past the raw retention, and late."""
    store = any_store
    for table in ("homelab_head", "homelab_chunk"):
        await store.execute(f"DELETE FROM {table}")
    retention = RetentionSettings(raw_days=raw_days)
    maintenance = Maintenance(store, retention)
    written: list[tuple[int, float, float]] = []
    clock = T0
    for batch, compact in zip(batches, compact_after, strict=False):
        await store.write([("a", [gauge(0, ts, v) for ts, v in batch])])
        written.extend((0, round(ts * 1000) / 1000, v) for ts, v in batch)
        clock += DAY
        if compact:
            # Later batches may hold samples older than this: late samples.
            await maintenance.compact(clock + HOUR * (len(batch) % 5), force=True)
    since, length, step, agg = q
    now = T0 + 4 * DAY
    # Raw chunks past the retention become minute rollups.
    await maintenance.run_once(now)
    width, expected = naive(written, since, since + length, step, agg, now, retention)
    found = await history(
        store, maintenance, "a", "v", since=since, until=since + length, step=step, agg=agg, now=now
    )
    points = {p.timestamp: p.value for s in found for p in s.points}
    assert sorted(points) == sorted(expected)
    for bucket, value in expected.items():
        assert points[bucket] == pytest.approx(value, rel=1e-9, abs=1e-9)
    if written:
        assert [s.resolution for s in found] == [width]


# -- migration and layout ---------------------------------------------------------------

#: The previous release's rollup pass, as it ran: raw samples to minutes, minutes to hours,
#: each up to a watermark in homelab_meta.
OLD_ROLLUP = (
    (
        60,
        "INSERT INTO homelab_rollup (series_id, resolution, bucket, min, max, sum, count)"
        " SELECT series_id, 60, {bucket}, MIN(value), MAX(value), SUM(value), COUNT(*)"
        " FROM homelab_sample WHERE ts >= ? AND ts < ? GROUP BY series_id, {bucket}",
        "ts",
    ),
    (
        3600,
        "INSERT INTO homelab_rollup (series_id, resolution, bucket, min, max, sum, count)"
        " SELECT series_id, 3600, {bucket}, MIN(min), MAX(max), SUM(sum), SUM(count)"
        " FROM homelab_rollup WHERE resolution = 60 AND bucket >= ? AND bucket < ?"
        " GROUP BY series_id, {bucket}",
        "bucket",
    ),
)


async def old_layout_store(url: str) -> list[tuple[int, float, float]]:
    """A store of the previous release holding two and a half days of three series, rolled
    up by that release up to 20 minutes before its end; its samples, sorted."""
    old = await store_at(url, "0005_execution_usage")
    rng = np.random.default_rng(7)
    rows = []
    for sid in (1, 2, 3):
        await old.execute(
            "INSERT INTO homelab_series (id, instance_id, name, labels, unit, kind)"
            " VALUES (?, 'a', 'v', ?, '', 'gauge')",
            [sid, f'{{"n":"{sid}"}}'],
        )
        for i in range(0, int(2.5 * DAY), 60):
            rows.append((sid, T0 + i + float(rng.integers(0, 999)) / 1000, float(rng.normal())))
    for start in range(0, len(rows), 300):
        part = rows[start : start + 300]
        values = ", ".join(["(?, ?, ?)"] * len(part))
        await old.execute(
            f"INSERT INTO homelab_sample (series_id, ts, value) VALUES {values}",
            [x for r in part for x in r],
        )
    end = T0 + 2.5 * DAY - 20 * MINUTE
    for resolution, query, column in OLD_ROLLUP:
        stop = math.floor(end / resolution) * resolution
        bucket = old.dialect.bucket(column, resolution)
        await old.execute(query.format(bucket=bucket), [T0, stop])
        await old.execute(
            "INSERT INTO homelab_meta (key, value) VALUES (?, ?)", [f"rollup_{resolution}", stop]
        )
    await old.close()
    return sorted(rows)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'old.db'}"
    return str(request.getfixturevalue("postgres_url"))


async def test_a_store_of_the_previous_layout_is_converted_with_every_sample(
    empty_url: str,
) -> None:
    written = await old_layout_store(empty_url)
    store = Store(empty_url)
    await store.open()
    try:
        tables = await store.fetch("SELECT name FROM tortoise_migrations ORDER BY name")
        assert tables[-1]["name"] == "0006_chunks"
        # Every sample is there, its timestamp to the millisecond.
        assert await stored_samples(store) == [
            (s, round(t * 1000) / 1000, v) for s, t, v in written
        ]
        spans = {r["span"] for r in await store.fetch("SELECT span FROM homelab_chunk")}
        assert spans == {DAY}
        # The minute rollups of samples still raw are gone; the hour tier is whole.
        assert await stored_rollups(store, MINUTE) == []
        # What the old release had not rolled up is in the head, and is rolled up by the
        # first compaction; then every sample counts once in each tier.
        maintenance = Maintenance(store, RetentionSettings())
        await maintenance.run_once(now=T0 + 2.5 * DAY + HOUR)
        assert sum(r[-1] for r in await stored_rollups(store, HOUR)) == len(written)
        await store.write([("a", [gauge(1, T0 + 3 * DAY, 1.0)])])
        assert await store.count_samples() == len(written) + 1
    finally:
        await store.close()


async def test_a_store_of_a_later_layout_is_refused_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite://{tmp_path / 'store.db'}"
    store = Store(url)
    await store.open()
    await store.close()
    # This release's code, as the previous layout's would see the store.
    monkeypatch.setattr(store_module, "LAYOUT", 1)
    with pytest.raises(StoreError, match=r"layout 2, made by a later release.*reads layout 1"):
        await Store(url).open()


# -- a writer killed while it compacts ---------------------------------------------------

SERIES = 3000
TICKS = 60
WRITER = textwrap.dedent(
    f"""
    import sys, anyio
    from homelab_core import Metric
    from homelab_core.config import RetentionSettings
    from homelab_core.store import Maintenance, Store

    async def main(url, t0):
        store = Store(url)
        await store.open()
        for tick in range({TICKS}):
            await store.write([("a", [Metric("v", tick * 10000 + i, labels={{"n": str(i)}},
                                              timestamp=t0 + tick * 60) for i in range({SERIES})])])
        print("written", flush=True)
        await Maintenance(store, RetentionSettings()).compact(t0 + 2 * 3600)
        print("compacted", flush=True)
        await anyio.sleep(60)

    anyio.run(main, sys.argv[1], float(sys.argv[2]))
    """
)


def count(path: Path, table: str) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.mark.parametrize("slices", [1, 5])
async def test_a_writer_killed_while_it_compacts_loses_no_committed_sample(
    tmp_path: Path, slices: int
) -> None:
    """kill -9 once ``slices`` slices of the compaction have committed, the rest not."""
    path = tmp_path / "store.db"
    url = f"sqlite://{path}"
    async with await anyio.open_process([sys.executable, "-c", WRITER, url, str(T0)]) as child:
        try:
            assert child.stdout is not None
            with anyio.fail_after(120):
                said = b""
                while b"written" not in said:
                    said += await child.stdout.receive()
                while count(path, "homelab_chunk") < 2 * slices * compaction.SLICE:  # noqa: ASYNC110
                    await anyio.sleep(0.002)  # (another process: no event to wait on)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            await child.wait()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Killed half-way: some series are in chunks, others still in the head.
    assert count(path, "homelab_head") > 0
    assert count(path, "homelab_chunk") >= 2 * slices * compaction.SLICE
    store = Store(url)
    await store.open()
    try:
        expected = sorted(float(t * 10000 + i) for t in range(TICKS) for i in range(SERIES))
        found = await stored_samples(store)
        assert sorted(v for _, _, v in found) == expected
        # The compaction it did not finish is done again, and finished.
        await Maintenance(store, RetentionSettings()).compact(T0 + 2 * 3600)
        assert await store.fetch("SELECT id FROM homelab_head") == []
        assert sorted(v for _, _, v in await stored_samples(store)) == expected
        assert sum(r[-1] for r in await stored_rollups(store, HOUR)) == len(expected)
    finally:
        await store.close()
