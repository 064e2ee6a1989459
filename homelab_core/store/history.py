"""History queries: bucketed aggregates read from the coarsest tier that fits the step."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Literal

import anyio
import numpy as np

from ..config import RetentionSettings
from ..errors import InvalidArgumentError
from ..model import HistorySeries, Point
from . import chunks
from .compaction import RAW, Rollups, aggregate, combine
from .retention import DAY, HOUR, MINUTE, Maintenance
from .store import Store

Aggregate = Literal["avg", "min", "max"]
AGGREGATES = ("avg", "min", "max")
#: Most points per series a query returns unless told otherwise.
MAX_POINTS = 500


def choose_step(since: float, until: float, step: float | None, max_points: int) -> float:
    """The bucket width: at least ``step`` and wide enough for ``max_points`` buckets."""
    minimum = (until - since) / max_points
    return max(step or 0.0, minimum, 1.0)


def tier_for(step: float, since: float, retention: RetentionSettings, now: float) -> int:
    """The tier to read (0 means raw samples): the coarsest whose resolution fits in
    ``step``, but never one whose retention has already dropped the start of the range."""
    if step >= HOUR or since < now - retention.minute_days * DAY:
        return HOUR
    if step >= MINUTE or since < now - retention.raw_days * DAY:
        return MINUTE
    return 0


async def history(
    store: Store,
    maintenance: Maintenance,
    instance_id: str,
    metric: str | None,
    *,
    since: float,
    until: float,
    step: float | None = None,
    agg: Aggregate = "avg",
    labels: Mapping[str, str] | None = None,
    max_points: int = MAX_POINTS,
    now: float | None = None,
) -> list[HistorySeries]:
    """Points of every series of ``metric`` (None: of any) whose labels include ``labels``.

    A sample is in the head until it is compacted, and then counts once in each tier
    (:mod:`.compaction`): a raw query reads the head and the raw chunks, a minute query
    those and the minute rollups (of raw chunks past retention), an hour query the head and
    the hour rollups. Late samples count too.
    """
    if agg not in AGGREGATES:
        raise InvalidArgumentError(f"unknown aggregate {agg!r}; use one of {', '.join(AGGREGATES)}")
    if until <= since:
        raise InvalidArgumentError("'until' must be later than 'since'")
    series = [
        s
        for s in await store.series(instance_id, metric)
        if not labels or all(s.labels.get(k) == v for k, v in labels.items())
    ]
    if not series:
        return []
    width = choose_step(since, until, step, max_points)
    now = time.time() if now is None else now
    tier = tier_for(width, since, maintenance.settings, now)
    if tier:
        width = math.ceil(width / tier) * tier
        # A rollup bucket counts whole: the raw samples are read to its end too, so that
        # the answer does not depend on how far compaction has gone.
        until = math.ceil(until / tier) * tier
    # Align buckets so that tiers agree on where a bucket starts.
    since = math.floor(since / width) * width
    buckets: Buckets = {s.id: {} for s in series}
    ids = list(buckets)
    await _read_head(store, ids, since, until, width, buckets)
    for resolution in (HOUR,) if tier == HOUR else (RAW, MINUTE) if tier else (RAW,):
        found = await store.chunks(ids, since, until, resolution)
        if found:
            parts = await anyio.to_thread.run_sync(_bucket_chunks, found, since, until, width)
            for sid, rollups in parts:
                for row in zip(*(c.tolist() for c in rollups), strict=True):
                    _add(buckets, sid, *row)
    result = []
    for s in series:
        points = [Point(b, _aggregate(agg, v)) for b, v in sorted(buckets[s.id].items())]
        result.append(HistorySeries(s.name, s.labels, s.unit, points, width))
    return result


Buckets = dict[int, dict[float, list[float]]]


async def _read_head(
    store: Store, ids: list[int], lo: float, hi: float, width: float, buckets: Buckets
) -> None:
    d = store.dialect
    query = (
        f"SELECT series_id, {d.bucket('ts', width)} AS b, MIN(value) AS mn,"
        f" MAX(value) AS mx, SUM(value) AS sm, COUNT(*) AS ct FROM homelab_head"
        f" WHERE series_id IN ({_marks(ids)}) AND ts >= ? AND ts < ? GROUP BY series_id, b"
    )
    for row in await store.fetch(query, [*ids, lo, hi]):
        _add(buckets, row["series_id"], row["b"], row["mn"], row["mx"], row["sm"], row["ct"])


def _bucket_chunks(
    found: list[tuple[int, bytes]], lo: float, hi: float, width: float
) -> list[tuple[int, Rollups]]:
    """Decode chunks (raw or rollups) and gather what falls in [lo, hi) into buckets of
    ``width``, one series at a time."""
    by_series: dict[int, list[tuple[np.ndarray, list[np.ndarray]]]] = {}
    for sid, blob in found:
        by_series.setdefault(sid, []).append(chunks.decode_columns(blob))
    parts = []
    for sid, decoded in by_series.items():
        ts = np.concatenate([t for t, _ in decoded])
        columns = [np.concatenate(c) for c in zip(*(cols for _, cols in decoded), strict=True)]
        keep = (ts >= lo) & (ts < hi)
        if not keep.any():
            continue
        ts = ts[keep]
        if len(columns) == 1:
            values = columns[0][keep]
            order = np.argsort(ts, kind="stable")
            parts.append((sid, aggregate(ts[order], values[order], width)))
        else:
            mn, mx, sm, ct = (c[keep] for c in columns)
            parts.append((sid, combine((ts, mn, mx, sm, ct), width)))
    return parts


def _marks(ids: list[int]) -> str:
    return ", ".join("?" for _ in ids)


def _add(buckets: Buckets, sid: int, b: float, mn: float, mx: float, sm: float, ct: float) -> None:
    acc = buckets[sid].get(float(b))
    if acc is None:
        buckets[sid][float(b)] = [mn, mx, sm, ct]
    else:
        acc[0] = min(acc[0], mn)
        acc[1] = max(acc[1], mx)
        acc[2] += sm
        acc[3] += ct


def _aggregate(agg: str, acc: list[float]) -> float:
    if agg == "min":
        return float(acc[0])
    if agg == "max":
        return float(acc[1])
    return float(acc[2]) / float(acc[3])
