"""``storage``: what the compressed chunks cost on disk, whether ingest holds as the store
grows, and whether a writer killed while it compacts loses anything.

- ``storage.bytes_per_sample``: a simulated week (a day with ``--quick``) of a homelab's
  series, written through the store's write path at 10 s with the hub's own maintenance run
  every simulated hour (compaction, day merges, the hour tier), then the database and its WAL
  on disk after a checkpoint, over the samples written. Target: at most 2.0 bytes.
  The mix, per simulated host (see :func:`host_series`): what the ``system`` plugin reports
  (CPU percentages, load, memory and disk bytes, network counters and rates, uptime,
  temperatures, rounded as it rounds them), slowly changing gauges, counters, small integers
  and noisy floats; runs start with a lag of a millisecond on average (exponentially
  distributed), and those later than the scheduler's stamp tolerance keep their lag in their
  timestamps.
- ``storage.ingest_flat``: samples/s of the store's write path on a store that already holds
  20 M samples (2 M with ``--quick``, in chunks, as compaction leaves them), against the same
  on an empty store in the same run. Target: ratio at least 0.8.
- ``storage.recovery``: a writer process is killed (SIGKILL) half-way through a compaction;
  the store is reopened: the share of committed samples readable (target: 1, all of them),
  with ``PRAGMA integrity_check`` in the details. ``tests/test_store_chunks.py`` checks the
  same.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np

from homelab_core import Metric
from homelab_core.config import RetentionSettings
from homelab_core.runner import STAMP_TOLERANCE
from homelab_core.store import Maintenance, Store, compaction

from .common import Result, log, median, ratio_target, result, value_target, workdir
from .ingest import collections, store_round

T0 = 1_798_761_600.0  # a midnight UTC
STEP = 10.0
HOSTS = 4
DAY = 86_400


def host_series(
    rng: np.random.Generator, host: int
) -> list[tuple[str, dict[str, str], Callable[[int], float]]]:
    """(metric, labels, value at tick) of one simulated host: 42 series."""
    labels = {"host": f"h{host}"}
    base_load = rng.uniform(0.2, 2)
    series: list[tuple[str, dict[str, str], Callable[[int], float]]] = []

    def add(name: str, make: Callable[[int], float], **extra: str) -> None:
        series.append((name, {**labels, **extra}, make))

    busy = rng.gamma(2.0, 4.0, size=1)
    # system: CPU percentages as the plugin computes them (full floats), per CPU too.
    for cpu in ("", "0", "1", "2", "3"):
        noise = np.random.default_rng(rng.integers(1 << 30))
        make = lambda t, n=noise: round(min(100.0, n.gamma(2.0, busy[0] / 2)), 1)  # noqa: E731
        if cpu:
            add("cpu.percent", make, cpu=cpu)
        else:
            add("cpu.percent", make)
    for minutes in (1, 5, 15):
        add(f"load.{minutes}m", lambda t, m=minutes: round(base_load + np.sin(t / (60 * m)) / 4, 2))
    total = 16 * 2**30
    add("mem.total", lambda t: float(total))
    add("mem.used", lambda t: float(6 * 2**30 + (t % 720) * 4096 * 37))
    add("mem.available", lambda t: float(total - 6 * 2**30 - (t % 720) * 4096 * 37))
    add("mem.percent", lambda t: round(100 * (6 * 2**30 + (t % 720) * 4096 * 37) / total, 1))
    add("swap.total", lambda t: float(2**31))
    add("swap.used", lambda t: float(2**24 + (t // 8640) * 4096))
    add("swap.percent", lambda t: round(100 * (2**24 + (t // 8640) * 4096) / 2**31, 1))
    for mount in ("/", "/srv"):
        size = 512 * 2**30
        add("disk.total", lambda t, s=size: float(s), mount=mount)
        add("disk.used", lambda t, s=size: float(s // 3 + (t // 6) * 8192), mount=mount)
        add("disk.free", lambda t, s=size: float(s - s // 3 - (t // 6) * 8192), mount=mount)
        add(
            "disk.percent",
            lambda t, s=size: round(100 * (s // 3 + (t // 6) * 8192) / s, 1),
            mount=mount,
        )
    traffic = np.random.default_rng(rng.integers(1 << 30))
    sent = traffic.integers(2_000, 400_000, size=DAY * 8 // 10).cumsum()
    recv = traffic.integers(5_000, 900_000, size=DAY * 8 // 10).cumsum()
    add("net.bytes_sent", lambda t: float(sent[t]), interface="eth0")
    add("net.bytes_recv", lambda t: float(recv[t]), interface="eth0")
    add("net.packets_sent", lambda t: float(sent[t] // 1400), interface="eth0")
    add("net.packets_recv", lambda t: float(recv[t] // 1400), interface="eth0")
    add(
        "net.tx_rate",
        lambda t: float((sent[t] - sent[t - 1]) / 10.0003) if t else 0.0,
        interface="eth0",
    )
    add(
        "net.rx_rate",
        lambda t: float((recv[t] - recv[t - 1]) / 10.0003) if t else 0.0,
        interface="eth0",
    )
    add("uptime", lambda t: 86_400.0 * 12 + t * STEP + 0.37)
    for sensor in ("cpu", "nvme"):
        add(
            "temperature",
            lambda t: round(45 + 5 * np.sin(t / 900) + (t % 7) / 10, 1),
            sensor=sensor,
        )
    # Other plugins: slowly changing gauges, counters, integers, noisy floats.
    add("http.response_time", lambda t: float(traffic.gamma(3.0, 0.01)), check="web")
    add("ping.rtt", lambda t: round(float(traffic.gamma(4.0, 0.25)), 3), target="router")
    add("ups.battery", lambda t: float(100 - (t // 2000) % 3), ups="ups0")
    add("docker.containers", lambda t: float(12 + (t // 5000) % 2))
    add("tcp.up", lambda t: 1.0, port="22")
    add("prometheus.requests_total", lambda t: float(t * 7 + t // 13), job="app")
    add("dns.query_time", lambda t: round(float(traffic.gamma(2.0, 2.0)), 1), server="lan")
    return series


async def simulate(path: Path, days: float) -> dict[str, float]:
    """Write ``days`` of the mix at 10 s, with maintenance every simulated hour."""
    rng = np.random.default_rng(17)
    series = [s for host in range(HOSTS) for s in host_series(rng, host)]
    store = Store(f"sqlite://{path}")
    await store.open()
    # Every sample of the simulated time is kept raw (the default keeps 7 days).
    maintenance = Maintenance(store, RetentionSettings(raw_days=days + 2))
    # Start lags: mostly under a millisecond, a few much more (a busy loop). Runs that start
    # within the scheduler's tolerance are stamped with their tick (runner.STAMP_TOLERANCE).
    lag = rng.exponential(0.001, size=int(days * DAY / STEP) + 1)
    lag[lag <= STAMP_TOLERANCE] = 0.0
    written = 0
    batch: list[Metric] = []
    started = time.perf_counter()
    try:
        for tick in range(int(days * DAY / STEP)):
            ts = T0 + tick * STEP + float(lag[tick])
            batch.extend(Metric(n, make(tick), labels=lb, timestamp=ts) for n, lb, make in series)
            if tick % 60 == 59:  # ten minutes per transaction
                written += await store.write([("bench", batch)])
                batch = []
            if tick % 360 == 359:
                await maintenance.run_once(now=ts + 60)
        written += await store.write([("bench", batch)])
        await maintenance.run_once(now=T0 + days * DAY + DAY)  # the last day ends
        assert await store.count_samples() == written
    finally:
        await store.close()
    return {
        "samples": written,
        "series": len(series),
        "days": days,
        "seconds": round(time.perf_counter() - started, 1),
    }


def disk_figures(path: Path) -> dict[str, float]:
    """Bytes of the database and its WAL after a checkpoint, and how they divide."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    wal = path.with_name(path.name + "-wal")
    on_disk = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    chunk_bytes = sum(v for k, v in pages.items() if "chunk" in k)
    head_bytes = sum(v for k, v in pages.items() if "head" in k)
    return {
        "bytes_on_disk": on_disk,
        "chunk_table_and_index_bytes": chunk_bytes,
        "head_table_and_index_bytes": head_bytes,
        "free_pages_bytes": free * page,
    }


# -- ingest on a full store -------------------------------------------------------------


async def fill(store: Store, samples: int) -> None:
    """``samples`` already stored: day chunks of 2,000 series, as compaction leaves them."""
    series = 2_000
    per = samples // series
    await store.execute(
        "INSERT INTO homelab_series (id, instance_id, name, labels, unit, kind)"
        " VALUES (100000, 'old', 'm', '{}', '', 'gauge')"
    )
    ts = T0 - 400 * DAY + np.arange(per) * STEP
    rng = np.random.default_rng(3)
    for first in range(0, series, 100):
        rows = []
        for sid in range(first, first + 100):
            values = np.round(rng.normal(50, 10, per), 1)
            for lo in range(0, per, DAY // 10):
                part = slice(lo, lo + DAY // 10)
                rows.append(
                    compaction.chunk_row(
                        100000 + sid, 0, float(ts[lo]), DAY, ts[part], values[part]
                    )
                )
        async with store.transaction("fill") as conn:
            await compaction.insert_chunks(conn, store.dialect, rows)


async def ingest_flat(
    directory: Path, stored: int, rounds: int
) -> tuple[float, float, dict[str, float]]:
    empty, full = (
        Store(f"sqlite://{directory / 'empty.db'}"),
        Store(f"sqlite://{directory / 'full.db'}"),
    )
    for store in (empty, full):
        await store.open()
    try:
        began = time.perf_counter()
        await fill(full, stored)
        took = time.perf_counter() - began
        log(f"stored {await full.count_samples():,} samples in chunks in {took:.0f} s")
        data = [collections(t) for t in range(20)]
        empty_rates, full_rates = [], []
        for r in range(rounds):  # alternate, so both files grow alike and neither goes first
            pair = (empty, full) if r % 2 == 0 else (full, empty)
            for store in pair:
                rate = await store_round(store, data)
                (empty_rates if store is empty else full_rates).append(rate)
            log(f"round {r}: empty {empty_rates[-1]:,.0f}/s, full {full_rates[-1]:,.0f}/s")
        details = {
            "stored_samples": await full.count_samples(),
            "rounds": rounds,
            "samples_per_round": 100_000,
        }
    finally:
        for store in (empty, full):
            await store.close()
    return median(full_rates), median(empty_rates), details


# -- recovery ---------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, anyio
    from homelab_core import Metric
    from homelab_core.config import RetentionSettings
    from homelab_core.store import Maintenance, Store

    async def main(url, t0):
        store = Store(url)
        await store.open()
        for tick in range(60):
            await store.write([("a", [Metric("v", tick * 10000 + i, labels={"n": str(i)},
                                              timestamp=t0 + tick * 60) for i in range(3000)])])
        print("written", flush=True)
        await Maintenance(store, RetentionSettings()).compact(t0 + 2 * 3600)
        print("compacted", flush=True)
        await anyio.sleep(60)

    anyio.run(main, sys.argv[1], float(sys.argv[2]))
    """
)


def count_rows(path: Path, table: str) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def kill_while_compacting(path: Path) -> dict[str, object]:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, f"sqlite://{path}", str(T0)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "written":
            raise RuntimeError("the writer did not write")
        deadline = time.monotonic() + 60
        while count_rows(path, "homelab_chunk") < 4 * compaction.SLICE:
            if time.monotonic() > deadline:
                raise RuntimeError("the compaction never began")
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    with closing(sqlite3.connect(path)) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    return {
        "integrity_check": integrity,
        "head_rows_at_kill": count_rows(path, "homelab_head"),
        "chunks_at_kill": count_rows(path, "homelab_chunk"),
    }


async def reopen(path: Path) -> tuple[int, float]:
    store = Store(f"sqlite://{path}")
    began = time.perf_counter()
    await store.open()
    try:
        opened = time.perf_counter() - began
        return await store.count_samples(), opened
    finally:
        await store.close()


def run(quick: bool) -> list[Result]:
    results = []
    with workdir("storage") as directory:
        details = asyncio.run(simulate(directory / "week.db", 1.0 if quick else 7.0))
        details.update(disk_figures(directory / "week.db"))
        log(f"{details['samples']:,} samples: {details['bytes_on_disk']:,} bytes on disk")
        results.append(
            result(
                "storage.bytes_per_sample",
                details["bytes_on_disk"] / details["samples"],
                "bytes",
                value_target("<=", 2.0, "bytes"),
                details=details,
            )
        )
        full, empty, flat = asyncio.run(
            ingest_flat(directory, 2_000_000 if quick else 20_000_000, 3 if quick else 7)
        )
        results.append(
            result(
                "storage.ingest_flat",
                full,
                "samples/s",
                ratio_target(">=", 0.8),
                baseline=empty,
                baseline_name="the same writes on an empty store",
                details=flat,
            )
        )
        path = directory / "recovery.db"
        found = kill_while_compacting(path)
        readable, opened = asyncio.run(reopen(path))
        found.update(committed=60 * 3000, readable=readable, reopen_s=round(opened, 3))
        ok = found["integrity_check"] == "ok"
        results.append(
            result(
                "storage.recovery",
                readable / (60 * 3000) if ok else 0.0,
                "share",
                value_target(">=", 1.0),
                details=found,
            )
        )
    return results
