"""Faults of the database under a running writer (issue 10, items 1 and 10).

Each fault is real: a SQLite file on a full tmpfs, a SQLite file another connection holds
locked, rows the database refuses (a trigger on the test's own file, or rows built past the
Metric validators). Each test shows that the writes of others continue or resume, that
readiness is false while writes fail and true after, that the counters move, and that
nothing is lost without being counted. (PostgreSQL stopped and started again, through the
web API, is in ``test_web_store_faults.py``.)
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from services import unavailable
from waiting import eventually

from homelab_core import (
    Execution,
    Health,
    HealthState,
    Hub,
    InstanceSettings,
    Metric,
    Plugin,
    PluginManager,
    hookimpl,
)
from homelab_core.config import StoreSettings
from homelab_core.store import BatchWriter, Store, WriteQueue

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0


def stored(path: Path) -> tuple[int, int]:
    """(samples, executions) in the SQLite file at ``path``."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        samples = conn.execute("SELECT COUNT(*) FROM homelab_head").fetchone()[0]
        executions = conn.execute("SELECT COUNT(*) FROM homelab_execution").fetchone()[0]
    return samples, executions


def produced(hub: Hub, *instance_ids: str) -> tuple[int, int]:
    """(samples, executions) the instances produced: one sample per good run, each
    execution recorded (the counter type reports one series)."""
    stats = [hub.stats(i) for i in instance_ids]
    return sum(s.ok for s in stats), sum(s.runs + s.skipped for s in stats)


def counter(instance_id: str) -> InstanceSettings:
    return InstanceSettings(id=instance_id, type="counter", interval=0.05)


async def unready(hub: Hub) -> bool:
    return not (await hub.readiness()).ready


async def ready(hub: Hub) -> bool:
    return (await hub.readiness()).ready


async def written_more(hub: Hub, than: float) -> bool:
    return hub.counters()["samples_written"] > than


# -- a full disk ---------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (needs root), unmounted afterwards."""
    if os.geteuid() != 0:
        unavailable("mounting a small tmpfs to fill needs root")
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if result.returncode:
        unavailable(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=10).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last block; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 16 or 1]
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_makes_the_hub_unready_until_space_returns_and_loses_nothing(
    manager: PluginManager, make_settings: Any, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "small", "8m") as disk:
        path = disk / "homelab.db"
        settings = make_settings(counter("a"), counter("b"))
        settings.database.url = f"sqlite://{path}"
        async with Hub(settings, plugin_manager=manager) as hub:
            await eventually(lambda: written_more(hub, 4), 5, "the first samples are written")
            assert await ready(hub)
            filler = fill(disk)
            try:
                await eventually(lambda: unready(hub), 5, "readiness says writes fail")
                readiness = await hub.readiness()
                assert not readiness.writes_succeed
                assert readiness.store_answers, "the database still answers reads"
                assert "full" in (readiness.write_error or "")
                figures = hub.counters()
                assert figures["write_failures"] >= 1
                assert figures["store_writable"] == 0
                queued = hub.counters()["queue_depth"]
                await eventually(
                    lambda: hub.counters()["queue_depth"] > queued,
                    5,
                    "collections keep being queued while the disk is full",
                )
            finally:
                filler.unlink()
            written = hub.counters()["samples_written"]
            await eventually(lambda: ready(hub), 5, "ready again once space is back")
            await eventually(lambda: written_more(hub, written), 5, "writes resume")
            assert hub.counters()["store_writable"] == 1
        figures = hub.counters()
        assert figures["samples_dropped"] == 0
        assert stored(path) == produced(hub, "a", "b"), "every sample and execution was kept"


# -- a locked database -------------------------------------------------------------------------


async def test_a_locked_database_makes_the_hub_unready_until_the_lock_goes_and_loses_nothing(
    manager: PluginManager, make_settings: Any, tmp_path: Path
) -> None:
    path = tmp_path / "homelab.db"
    settings = make_settings(counter("a"), counter("b"))
    # SQLite waits busy_timeout for a lock before it fails; short, to keep the test short.
    settings.database.url = f"sqlite://{path}?busy_timeout=200"
    async with Hub(settings, plugin_manager=manager) as hub:
        await eventually(lambda: written_more(hub, 4), 5, "the first samples are written")
        holder = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
            await eventually(lambda: unready(hub), 5, "readiness says writes fail")
            readiness = await hub.readiness()
            assert not readiness.writes_succeed
            assert readiness.store_answers, "the database still answers reads"
            assert "locked" in (readiness.write_error or "")
            assert hub.counters()["write_failures"] >= 1
            assert hub.counters()["queue_depth"] > 0
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        written = hub.counters()["samples_written"]
        await eventually(lambda: ready(hub), 5, "ready again once the lock is released")
        await eventually(lambda: written_more(hub, written), 5, "writes resume")
    assert hub.counters()["samples_dropped"] == 0
    assert stored(path) == produced(hub, "a", "b"), "every sample and execution was kept"


# -- rows the database refuses ---------------------------------------------------------------


class Tainted(Plugin):
    """Reports a good metric and one named ``poison``, which the test's trigger refuses."""

    name = "tainted"

    def collect(self) -> list[Metric]:
        return [Metric("fine", 1.0), Metric("poison", 1.0)]


class TaintedTypes:
    @hookimpl
    def register_plugins(self, register: Callable[[type[Plugin]], None]) -> None:
        register(Tainted)


async def test_a_row_the_database_refuses_is_dropped_alone_and_counted_with_its_reason(
    manager: PluginManager, make_settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager.register(TaintedTypes(), name="tainted_types")
    path = tmp_path / "homelab.db"
    # The metric passes the Metric boundary; only this database refuses it.
    schema = Store(f"sqlite://{path}")
    await schema.open()
    await schema.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON homelab_series WHEN NEW.name = 'poison'"
            " BEGIN SELECT RAISE(ABORT, 'poison series refused by a trigger'); END"
        )
        conn.commit()
    settings = make_settings(
        counter("good"), InstanceSettings(id="tainted", type="tainted", interval=0.05)
    )
    caplog.set_level(logging.WARNING, logger="homelab.store")
    async with Hub(settings, plugin_manager=manager) as hub:

        async def others_stored() -> bool:
            good = await hub.history("good", "count", since=0)
            fine = await hub.history("tainted", "fine", since=0)
            return bool(good and fine) and hub.counters()["samples_refused"] >= 3

        await eventually(others_stored, 5, "the other rows are written, the poison ones refused")
        assert await ready(hub), "a refused row is no outage: the database works"
    figures = hub.counters()
    poison = hub.stats("tainted").ok  # one poison sample per good run
    assert figures["samples_refused"] == poison
    assert figures["samples_dropped"] == poison, "refused samples count as dropped"
    samples, executions = stored(path)
    assert samples == produced(hub, "good")[0] + poison, "every other sample was written"
    assert executions == produced(hub, "good", "tainted")[1]
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals, "the refusal is logged"
    assert "poison series refused by a trigger" in refusals[0]
    assert "'tainted'" in refusals[0], "the log names the instance"


def unvalidated(metric: Metric, **fields: Any) -> Metric:
    """``metric`` with ``fields`` set past its validators (as a bug could)."""
    for name, value in fields.items():
        object.__setattr__(metric, name, value)
    return metric


async def test_the_writer_isolates_every_row_the_database_refuses(
    any_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store = any_store
    caplog.set_level(logging.WARNING, logger="homelab.store")
    bad = [
        unvalidated(Metric("v", 1.0, timestamp=T0), unit=None),
        unvalidated(Metric("w", 1.0, timestamp=T0), unit=object()),
        unvalidated(Metric("x", 1.0, timestamp=T0), timestamp=None),
    ]
    if store.dialect.postgres:  # SQLite stores these; PostgreSQL refuses them
        bad += [
            unvalidated(Metric("y", 1.0, timestamp=T0), unit="u" * 40),
            unvalidated(Metric("z", 1.0, timestamp=T0), unit="a\x00b"),
            unvalidated(Metric("n", 1.0, timestamp=T0), name="n" * 300),
        ]
    good = [Metric("temp", float(i), timestamp=T0 + i) for i in range(50)]
    bad_execution = unvalidated(Execution("b", T0, 0.1, "ok"), instance_id=None)
    queue = WriteQueue(max_samples=10_000, batch_size=10_000)
    writer = BatchWriter(store, queue, StoreSettings(flush_interval=0.01))
    queue.put_metrics("a", good[:20])
    queue.put_metrics("b", [*good[20:30], *bad, *good[30:40]])
    queue.put_metrics("c", good[40:])
    queue.put_execution(Execution("a", T0, 0.1, "ok"))
    queue.put_execution(bad_execution)
    queue.put_execution(Execution("c", T0, 0.1, "ok"))
    queue.put_transition("a", Health(), Health(HealthState.OK, since=T0))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(writer.run)

        async def good_rows_written() -> bool:
            return await store.count_samples() == len(good)

        await eventually(good_rows_written, 10, "the good rows are written beside the bad")
        queue.close()
    assert [e.instance_id for e in reversed(await store.executions())] == ["a", "c"]
    assert len(await store.health_transitions("a")) == 1
    assert writer.refused_samples == len(bad)
    assert queue.dropped_samples == len(bad)
    assert writer.refused_records == 1
    assert queue.dropped_executions == 1
    assert not writer.failing, "refused rows are no outage"
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == len(bad) + 1, refusals
    assert any("'b'" in text and "unit" in text for text in refusals), refusals
