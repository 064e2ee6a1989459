"""Compaction: samples move from the head into compressed chunks, and into the rollups.

Every sample is written first to the head (``homelab_head``, a row each, committed by the
writer: a crash never loses it). Chunks (``homelab_chunk``, encoded by :mod:`.chunks`) hold
a series over a window (an hour, or a UTC day once merged) at one resolution: 0 for raw
samples, 60 and 3600 for the 1-minute and 1-hour rollups (min, max, sum and count of each
bucket). A sample moves on transactionally, so it always counts once at each resolution:

- once its hour has ended (and :data:`GRACE` seconds more), a maintenance pass takes it out
  of the head and, in the same transaction, adds it to a raw chunk of its series for that
  hour and to an hour-rollup chunk; a sample that comes late (its hour compacted already)
  waits in the head for the next pass and is compacted then, like any other;
- once its raw chunk is past the raw retention, the chunk is dropped and, in the same
  transaction, becomes a minute-rollup chunk. While the raw samples are kept, they are the
  minute tier: minute rollups of them would only take the space twice.

So the raw tier is the head and the raw chunks; the minute tier is those and the
minute-rollup chunks; the hour tier is the head and the hour-rollup chunks (:mod:`.history`).
Once a UTC day has ended, the chunks of each series, resolution and day are merged into one
(late ones too, whenever they come): day chunks compress better, and there are fewer rows.
Retention drops whole chunks.

Each step works in slices of :data:`SLICE` series (or chunks), a transaction each, so that
the writer never waits long for the database; the encoding runs in a worker thread.
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

RAW, MINUTE, HOUR, DAY = 0, 60, 3600, 86400
#: Seconds after the end of a sample's hour before it leaves the head: samples of the hour
#: still on their way through the write queue get there first, mostly.
GRACE = 30.0
#: Series (or chunks) per transaction.
SLICE = 256

#: (series id, resolution, window start, window length, first ts, last ts, count, data)
ChunkRow = tuple[int, int, float, int, float, float, int, bytes]
CHUNK_COLUMNS = "series_id, resolution, start, span, first_ts, last_ts, count, data"
#: Rollup columns: bucket starts, then min, max, sum and count.
Rollups = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def cut_for(now: float) -> float:
    """The compaction boundary at ``now``: samples before it leave the head."""
    return float(math.floor((now - GRACE) / HOUR) * HOUR)


def _sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of ``values`` from each of ``starts``; exact (as integers) for decimals, so that
    a sum of decimals stays a decimal and compresses as well as they do."""
    places = chunks.decimal_places(values)
    if places is None:
        return np.add.reduceat(values, starts)
    scale = 10.0**places
    return np.add.reduceat(np.rint(values * scale).astype(np.int64), starts) / scale


def aggregate(ts: np.ndarray, vs: np.ndarray, resolution: float) -> Rollups:
    """Rollups of time-ordered samples in buckets of ``resolution`` seconds.

    Buckets start where the store's SQL puts them (``floor(ts / resolution) * resolution``).
    """
    buckets = np.floor(ts / resolution) * resolution
    starts = np.flatnonzero(np.concatenate(([True], buckets[1:] != buckets[:-1])))
    counts = np.diff(np.append(starts, len(ts))).astype(np.float64)
    return (
        buckets[starts],
        np.minimum.reduceat(vs, starts),
        np.maximum.reduceat(vs, starts),
        _sums(vs, starts),
        counts,
    )


def combine(rollups: Rollups, resolution: float) -> Rollups:
    """Rollups (in any order) gathered into buckets of ``resolution`` seconds."""
    buckets, mn, mx, sm, ct = rollups
    buckets = np.floor(buckets / resolution) * resolution
    order = np.argsort(buckets, kind="stable")
    buckets, mn, mx, sm, ct = (a[order] for a in (buckets, mn, mx, sm, ct))
    starts = np.flatnonzero(np.concatenate(([True], buckets[1:] != buckets[:-1])))
    return (
        buckets[starts],
        np.minimum.reduceat(mn, starts),
        np.maximum.reduceat(mx, starts),
        _sums(sm, starts),
        np.add.reduceat(ct, starts),
    )


def chunk_row(
    sid: int, resolution: int, start: float, span: int, ts: np.ndarray, *cols: Any
) -> ChunkRow:
    return (
        sid,
        resolution,
        start,
        span,
        float(ts[0]),
        float(ts[-1]),
        len(ts),
        chunks.encode(ts, *cols),
    )


def groups(keys: np.ndarray, *more: np.ndarray) -> Iterable[tuple[int, int]]:
    """(lo, hi) of the runs of equal ``keys`` (and ``more``) in sorted columns."""
    change = keys[1:] != keys[:-1]
    for other in more:
        change |= other[1:] != other[:-1]
    edges = np.flatnonzero(np.concatenate(([True], change, [True]))).tolist()
    return itertools.pairwise(edges)


def build(
    sids: np.ndarray, ts: np.ndarray, vs: np.ndarray, span: int, *, rollups: bool
) -> list[ChunkRow]:
    """Raw chunks of ``span`` seconds (and, with ``rollups``, hour-rollup chunks of the same
    windows) of samples given as three columns in any order (samples of one series and time
    keep their order)."""
    order = np.lexsort((ts, sids))
    sids, ts, vs = sids[order], ts[order], vs[order]
    windows = np.floor(ts / span) * span
    rows: list[ChunkRow] = []
    for lo, hi in groups(sids, windows):
        sid, start, part_ts, part_vs = int(sids[lo]), float(windows[lo]), ts[lo:hi], vs[lo:hi]
        rows.append(chunk_row(sid, RAW, start, span, part_ts, part_vs))
        if rollups:
            hours = aggregate(part_ts, part_vs, HOUR)
            rows.append(chunk_row(sid, HOUR, start, span, hours[0], *hours[1:]))
    return rows


def merged(resolution: int, blobs: Sequence[tuple[int, bytes]]) -> list[ChunkRow]:
    """Chunks of a UTC day, one per series, of ``blobs`` ((series id, chunk) pairs of one
    resolution and day)."""
    by_series: dict[int, list[bytes]] = defaultdict(list)
    for sid, blob in blobs:
        by_series[sid].append(blob)
    rows: list[ChunkRow] = []
    for sid, parts in by_series.items():
        decoded = [chunks.decode_columns(b) for b in parts]
        ts = np.concatenate([d[0] for d in decoded])
        cols = [np.concatenate(c) for c in zip(*(d[1] for d in decoded), strict=True)]
        day = float(math.floor(ts.min() / DAY) * DAY)
        if resolution == RAW:
            order = np.argsort(ts, kind="stable")
            rows.append(chunk_row(sid, RAW, day, DAY, ts[order], cols[0][order]))
        else:
            buckets, *values = combine((ts, *cols), resolution)  # type: ignore[arg-type]
            rows.append(chunk_row(sid, resolution, day, DAY, buckets, *values))
    return rows


def minute_rollups(found: Sequence[tuple[int, float, int, bytes]]) -> list[ChunkRow]:
    """Minute-rollup chunks of raw chunks ((series id, start, span, chunk)), one each."""
    rows: list[ChunkRow] = []
    for sid, start, span, blob in found:
        ts, vs = chunks.decode(blob)
        order = np.argsort(ts, kind="stable")
        minutes = aggregate(ts[order], vs[order], MINUTE)
        rows.append(chunk_row(sid, MINUTE, start, span, minutes[0], *minutes[1:]))
    return rows


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


async def head_series(conn: BaseDBAsyncClient, dialect: Dialect, before: float) -> list[int]:
    """The series that have samples in the head before ``before``."""
    _, rows = await conn.execute_query(
        dialect.q("SELECT DISTINCT series_id FROM homelab_head WHERE ts < ? ORDER BY 1"),
        [before],
    )
    return [int(r[0]) for r in rows]


async def compact_slice(
    conn: BaseDBAsyncClient, dialect: Dialect, series_ids: Sequence[int], before: float
) -> int:
    """Move the head's samples of ``series_ids`` before ``before`` into raw and hour-rollup
    chunks; run it inside a transaction. Returns the number of samples moved."""
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
    chunk_rows = await anyio.to_thread.run_sync(lambda: build(*columns(taken), HOUR, rollups=True))
    await insert_chunks(conn, dialect, chunk_rows)
    return len(taken)


async def days_to_merge(
    conn: BaseDBAsyncClient, dialect: Dialect, before: float
) -> list[tuple[int, float, list[int]]]:
    """(resolution, day, series) of the days before ``before`` that have chunks shorter
    than a day."""
    _, rows = await conn.execute_query(
        dialect.q(
            "SELECT DISTINCT series_id, resolution, start FROM homelab_chunk"
            " WHERE span < ? AND start < ?"
        ),
        [DAY, before],
    )
    days: dict[tuple[int, float], set[int]] = defaultdict(set)
    for sid, resolution, start in rows:
        days[int(resolution), float(math.floor(float(start) / DAY) * DAY)].add(int(sid))
    return [(res, day, sorted(ids)) for (res, day), ids in sorted(days.items())]


async def merge_slice(
    conn: BaseDBAsyncClient,
    dialect: Dialect,
    resolution: int,
    day: float,
    series_ids: Sequence[int],
) -> int:
    """Replace the chunks of ``series_ids`` at ``resolution`` in the day starting at ``day``
    by one chunk per series; run it inside a transaction. Returns the chunks replaced."""
    rows = await conn.execute_query_dict(
        dialect.q(
            f"DELETE FROM homelab_chunk WHERE series_id IN ({_marks(len(series_ids))})"
            " AND resolution = ? AND start >= ? AND start < ? RETURNING series_id, data"
        ),
        [*series_ids, resolution, day, day + DAY],
    )
    if not rows:
        return 0
    blobs = [(int(r["series_id"]), bytes(r["data"])) for r in rows]
    chunk_rows = await anyio.to_thread.run_sync(lambda: merged(resolution, blobs))
    await insert_chunks(conn, dialect, chunk_rows)
    return len(blobs)


async def expired_raw(conn: BaseDBAsyncClient, dialect: Dialect, before: float) -> list[int]:
    """The ids of the raw chunks whose last sample is before ``before``."""
    _, rows = await conn.execute_query(
        dialect.q("SELECT id FROM homelab_chunk WHERE resolution = 0 AND last_ts < ? ORDER BY 1"),
        [before],
    )
    return [int(r[0]) for r in rows]


async def expire_raw_slice(
    conn: BaseDBAsyncClient, dialect: Dialect, chunk_ids: Sequence[int]
) -> int:
    """Drop the raw chunks ``chunk_ids``, keeping their minute rollups; run it inside a
    transaction. Returns the number of chunks dropped."""
    rows = await conn.execute_query_dict(
        dialect.q(
            f"DELETE FROM homelab_chunk WHERE id IN ({_marks(len(chunk_ids))}) AND resolution = 0"
            " RETURNING series_id, start, span, data"
        ),
        list(chunk_ids),
    )
    found = [
        (int(r["series_id"]), float(r["start"]), int(r["span"]), bytes(r["data"])) for r in rows
    ]
    if found:
        await insert_chunks(conn, dialect, await anyio.to_thread.run_sync(minute_rollups, found))
    return len(found)


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
            log.info("%s: %d of %d done", doing, done, total)

    return advance
