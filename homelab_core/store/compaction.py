"""Compaction: samples move from the head into compressed chunks, and into the rollups.

Every sample is written first to the head (``homelab_head``, a row each, committed by the
writer: a crash never loses it). Once the hour of a sample has ended (and :data:`GRACE`
seconds more), a maintenance pass takes it out of the head and, in the same transaction,

- adds it to a chunk of its series for that hour (``homelab_chunk``, see :mod:`.chunks`),
- adds it to the 1-minute and 1-hour rollups of its series.

So a sample is in the head or in a chunk, never both and never neither, and it is counted in
the rollups exactly when it is in a chunk: a sample that arrives late (its hour compacted
already) waits in the head for the next pass and is rolled up then, like any other. Reads
combine the rollups, the chunks and the head on these terms (:mod:`.history`).

Once a UTC day has ended, the hour chunks of each series for that day are merged into one
chunk of the day (late ones too, whenever they come): day chunks compress better, and there
are fewer rows. Retention drops whole chunks.

Each step works in slices of :data:`SLICE` series, a transaction each, so that the writer
never waits long for the database; the encoding runs in a worker thread.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np

from . import chunks
from .sql import Dialect, insert_rows

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient

log = logging.getLogger("homelab.store.compaction")

MINUTE, HOUR, DAY = 60, 3600, 86400
#: Seconds after the end of a sample's hour before it leaves the head: samples of the hour
#: still on their way through the write queue get there first, mostly.
GRACE = 30.0
#: Series per transaction.
SLICE = 256
#: The rollup resolutions filled at compaction.
RESOLUTIONS = (MINUTE, HOUR)

#: (series id, window start, window length, first ts, last ts, count, encoded samples)
ChunkRow = tuple[int, float, int, float, float, int, bytes]
#: (series id, resolution, bucket, min, max, sum, count)
RollupRow = tuple[int, int, float, float, float, float, int]

CHUNK_COLUMNS = "series_id, start, span, first_ts, last_ts, count, data"
ROLLUP_COLUMNS = "series_id, resolution, bucket, min, max, sum, count"


def cut_for(now: float) -> float:
    """The compaction boundary at ``now``: samples before it leave the head."""
    return float(math.floor((now - GRACE) / HOUR) * HOUR)


def rollup_upsert(dialect: Dialect) -> str:
    """The ``ON CONFLICT`` clause that adds a rollup row to the one already stored."""
    return (
        " ON CONFLICT (series_id, resolution, bucket) DO UPDATE SET"
        f" min = {dialect.least('homelab_rollup.min', 'excluded.min')},"
        f" max = {dialect.greatest('homelab_rollup.max', 'excluded.max')},"
        " sum = homelab_rollup.sum + excluded.sum,"
        " count = homelab_rollup.count + excluded.count"
    )


def aggregate(ts: np.ndarray, vs: np.ndarray, resolution: float) -> Iterable[tuple[float, ...]]:
    """(bucket, min, max, sum, count) of time-ordered samples in buckets of ``resolution``.

    Buckets start where the store's SQL puts them (``floor(ts / resolution) * resolution``).
    """
    buckets = np.floor(ts / resolution) * resolution
    starts = np.flatnonzero(np.concatenate(([True], buckets[1:] != buckets[:-1])))
    counts = np.diff(np.append(starts, len(ts)))
    return zip(
        buckets[starts].tolist(),
        np.minimum.reduceat(vs, starts).tolist(),
        np.maximum.reduceat(vs, starts).tolist(),
        np.add.reduceat(vs, starts).tolist(),
        counts.tolist(),
        strict=True,
    )


def build(
    sids: np.ndarray, ts: np.ndarray, vs: np.ndarray, span: int, *, rollups: bool
) -> tuple[list[ChunkRow], list[RollupRow]]:
    """Chunks of ``span`` seconds (and, with ``rollups``, rollup rows) of samples given as
    three columns in any order (samples of one series and time keep their order)."""
    order = np.lexsort((ts, sids))
    sids, ts, vs = sids[order], ts[order], vs[order]
    chunk_rows: list[ChunkRow] = []
    rollup_rows: list[RollupRow] = []
    windows = np.floor(ts / span) * span
    change = (sids[1:] != sids[:-1]) | (windows[1:] != windows[:-1])
    edges = np.flatnonzero(np.concatenate(([True], change, [True]))).tolist()
    for lo, hi in itertools.pairwise(edges):
        sid, part_ts, part_vs = int(sids[lo]), ts[lo:hi], vs[lo:hi]
        chunk_rows.append(
            (
                sid,
                float(windows[lo]),
                span,
                float(part_ts[0]),
                float(part_ts[-1]),
                hi - lo,
                chunks.encode(part_ts, part_vs),
            )
        )
        if rollups:
            for resolution in RESOLUTIONS:
                rollup_rows.extend(
                    (sid, resolution, b, mn, mx, sm, int(n))
                    for b, mn, mx, sm, n in aggregate(part_ts, part_vs, resolution)
                )
    return chunk_rows, rollup_rows


def columns(rows: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(series ids, timestamps, values) of (series id, ts, value) rows."""
    data = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return data[:, 0].astype(np.int64), data[:, 1], data[:, 2]


def _marks(count: int) -> str:
    return ", ".join("?" * count)


async def insert_chunks(
    conn: BaseDBAsyncClient, dialect: Dialect, chunk_rows: Sequence[ChunkRow]
) -> None:
    """Insert chunk rows."""
    if chunk_rows:
        await insert_rows(conn, dialect, "homelab_chunk", CHUNK_COLUMNS, chunk_rows)


async def add_rollups(
    conn: BaseDBAsyncClient, dialect: Dialect, rollup_rows: Sequence[RollupRow]
) -> None:
    """Add rollup rows to the rollups stored (a new bucket, or merged into its row)."""
    if rollup_rows:
        await insert_rows(
            conn, dialect, "homelab_rollup", ROLLUP_COLUMNS, rollup_rows, rollup_upsert(dialect)
        )


async def head_series(conn: BaseDBAsyncClient, dialect: Dialect, before: float) -> list[int]:
    """The series that have samples in the head before ``before``."""
    _, rows = await conn.execute_query(
        dialect.q("SELECT DISTINCT series_id FROM homelab_head WHERE ts < ? ORDER BY 1"),
        [before],
    )
    return [int(r[0]) for r in rows]


async def compact_slice(
    conn: BaseDBAsyncClient,
    dialect: Dialect,
    series_ids: Sequence[int],
    before: float,
    *,
    rollups: bool = True,
    span: int = HOUR,
) -> int:
    """Move the head's samples of ``series_ids`` before ``before`` into chunks (and the
    rollups); run it inside a transaction. Returns the number of samples moved."""
    # execute_query_dict: Tortoise's execute_query returns no rows for a DELETE on
    # PostgreSQL, RETURNING or not.
    rows = await conn.execute_query_dict(
        dialect.q(
            f"DELETE FROM homelab_head WHERE series_id IN ({_marks(len(series_ids))})"
            " AND ts < ? RETURNING series_id, ts, value"
        ),
        [*series_ids, before],
    )
    if not rows:
        return 0
    taken = [(r["series_id"], r["ts"], r["value"]) for r in rows]
    chunk_rows, rollup_rows = await anyio.to_thread.run_sync(
        lambda: build(*columns(taken), span, rollups=rollups)
    )
    await insert_chunks(conn, dialect, chunk_rows)
    await add_rollups(conn, dialect, rollup_rows)
    return len(taken)


async def days_to_merge(
    conn: BaseDBAsyncClient, dialect: Dialect, before: float
) -> list[tuple[float, list[int]]]:
    """(day, series) of the days before ``before`` that have chunks shorter than a day."""
    _, rows = await conn.execute_query(
        dialect.q(
            "SELECT DISTINCT series_id, start FROM homelab_chunk WHERE span < ? AND start < ?"
        ),
        [DAY, before],
    )
    days: dict[float, set[int]] = defaultdict(set)
    for sid, start in rows:
        days[float(math.floor(float(start) / DAY) * DAY)].add(int(sid))
    return [(day, sorted(ids)) for day, ids in sorted(days.items())]


async def merge_slice(
    conn: BaseDBAsyncClient, dialect: Dialect, day: float, series_ids: Sequence[int]
) -> int:
    """Replace the chunks of ``series_ids`` in the day starting at ``day`` by one chunk per
    series; run it inside a transaction. Returns the number of chunks replaced."""
    rows = await conn.execute_query_dict(
        dialect.q(
            f"DELETE FROM homelab_chunk WHERE series_id IN ({_marks(len(series_ids))})"
            " AND start >= ? AND start < ? RETURNING series_id, data"
        ),
        [*series_ids, day, day + DAY],
    )
    if not rows:
        return 0
    blobs = [(int(r["series_id"]), bytes(r["data"])) for r in rows]
    chunk_rows, _ = await anyio.to_thread.run_sync(
        lambda: build(*decoded(blobs), DAY, rollups=False)
    )
    await insert_chunks(conn, dialect, chunk_rows)
    return len(blobs)


def decoded(blobs: Iterable[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(series ids, timestamps, values) of the samples of (series id, chunk) pairs."""
    parts = [(sid, *chunks.decode(blob)) for sid, blob in blobs]
    if not parts:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    return (
        np.concatenate([np.full(len(ts), sid, dtype=np.int64) for sid, ts, _ in parts]),
        np.concatenate([ts for _, ts, _ in parts]),
        np.concatenate([vs for _, _, vs in parts]),
    )


def in_slices(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    """``ids`` in slices of :data:`SLICE`."""
    for start in range(0, len(ids), SLICE):
        yield ids[start : start + SLICE]


def progress(doing: str, total: int) -> Callable[[int], None]:
    """A callback that logs ``doing`` every tenth of ``total`` (for long passes only)."""
    step = max(total // 10, 1)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        before, done = done, done + count
        if total >= 10 * SLICE and before // step != done // step:
            log.info("%s: %d of %d series done", doing, done, total)

    return advance
