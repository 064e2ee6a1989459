"""``ingest``: samples/s through the store's real write path into a SQLite file (WAL).

Subject: collections of :class:`~homelab_core.Metric` put on a :class:`WriteQueue` and
drained by the :class:`BatchWriter` into :class:`Store` (the path every collection takes).
Baseline: Python's ``sqlite3.executemany`` of the same (series, ts, value) rows, in batches of
the same size, into a file with the same schema and pragmas. Rounds alternate between the
two so that both tables grow alike; the figures are medians.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from homelab_core import Metric
from homelab_core.codec import labels_json
from homelab_core.config import StoreSettings
from homelab_core.store import BatchWriter, Store, WriteQueue

from .common import Result, log, median, ratio_target, result, workdir

INSTANCES = 100
METRICS = 50  # per instance: 5,000 samples per collection round


def collections(tick: int) -> list[tuple[str, list[Metric]]]:
    """One collection of every instance, as plugins return them."""
    ts = 1_700_000_000.0 + tick * 10
    return [
        (
            f"inst{i}",
            [
                Metric(f"m{m % 10}", float(tick + m), unit="%", labels={"n": str(m)}, timestamp=ts)
                for m in range(METRICS)
            ],
        )
        for i in range(INSTANCES)
    ]


async def store_round(store: Store, data: list[list[tuple[str, list[Metric]]]]) -> float:
    settings = StoreSettings()
    queue = WriteQueue(max_samples=10_000_000, batch_size=settings.batch_size)
    writer = BatchWriter(store, queue, settings)
    before = store.samples_written
    started = time.perf_counter()
    for tick in data:
        for instance_id, metrics in tick:
            queue.put_metrics(instance_id, metrics)
    queue.close()
    await writer.run()
    elapsed = time.perf_counter() - started
    assert queue.dropped_samples == 0, "the benchmark's queue dropped samples"
    return (store.samples_written - before) / elapsed


def raw_round(conn: sqlite3.Connection, rows: list[tuple[int, float, float]], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        with conn:
            conn.executemany(
                "INSERT INTO homelab_head (series_id, ts, value) VALUES (?, ?, ?)",
                rows[start : start + batch],
            )
    return len(rows) / (time.perf_counter() - started)


async def measure(directory: Path, rounds: int, ticks: int) -> tuple[list[float], list[float]]:
    # Both files get the schema from the store's own migrations.
    baseline_store = Store(f"sqlite://{directory / 'raw.db'}")
    await baseline_store.open()
    await baseline_store.close()
    store = Store(f"sqlite://{directory / 'store.db'}")
    await store.open()
    try:
        # Warm-up: create every series, so both sides then insert samples only.
        await store_round(store, [collections(-1)])
        series = {
            (r["instance_id"], r["name"], r["labels"]): r["id"]
            for r in await store.fetch("SELECT id, instance_id, name, labels FROM homelab_series")
        }
        conn = sqlite3.connect(directory / "raw.db", isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-65536")  # as the store sets it
        batch = StoreSettings().batch_size
        subject, baseline = [], []
        for n in range(rounds):
            data = [collections(n * ticks + t) for t in range(ticks)]
            rows = [
                (series[(iid, m.name, labels_json(m.labels))], m.timestamp or 0.0, m.value)
                for tick in data
                for iid, metrics in tick
                for m in metrics
            ]
            baseline.append(raw_round(conn, rows, batch))
            subject.append(await store_round(store, data))
            log(f"round {n + 1}/{rounds}: store {subject[-1]:,.0f}/s, raw {baseline[-1]:,.0f}/s")
        conn.close()
        return subject, baseline
    finally:
        await store.close()


def run(quick: bool) -> list[Result]:
    rounds, ticks = (5, 10) if quick else (9, 40)
    with workdir("ingest") as directory:
        subject, baseline = asyncio.run(measure(directory, rounds, ticks))
    samples = rounds * ticks * INSTANCES * METRICS
    return [
        result(
            "ingest",
            median(subject),
            "samples/s",
            ratio_target(">=", 0.5),
            baseline=median(baseline),
            baseline_name="sqlite3.executemany",
            details={
                "samples_per_round": ticks * INSTANCES * METRICS,
                "rounds": rounds,
                "samples": samples,
                "store_rounds": [round(v) for v in subject],
                "raw_rounds": [round(v) for v in baseline],
            },
        )
    ]
