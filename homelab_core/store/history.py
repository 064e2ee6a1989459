"""History queries: bucketed aggregates read from the coarsest tier that fits the step."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Literal

from ..config import RetentionSettings
from ..errors import InvalidArgumentError
from ..model import HistorySeries, Point
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

    Buckets older than a tier's watermark come from that tier; newer ones from the tier
    below, so the latest minutes are never missing while rollups catch up.
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
    # Align buckets so that tiers agree on where a bucket starts.
    since = math.floor(since / width) * width
    buckets: dict[int, dict[float, list[float]]] = {s.id: {} for s in series}
    ids = list(buckets)
    # Segments from the coarsest tier down: [since, wm_hour), [wm_hour, wm_minute), raw.
    bounds = [since]
    tiers = [t for t in (HOUR, MINUTE) if t <= tier] if tier else []
    for t in tiers:
        mark = await maintenance.watermark(t)
        bounds.append(max(bounds[-1], min(until, mark if mark is not None else since)))
    bounds.append(until)
    sources = [*tiers, 0]
    for source, lo, hi in zip(sources, bounds[:-1], bounds[1:], strict=True):
        if hi > lo:
            await _read(store, source, ids, lo, hi, width, buckets)
    result = []
    for s in series:
        points = [Point(b, _aggregate(agg, v)) for b, v in sorted(buckets[s.id].items())]
        result.append(HistorySeries(s.name, s.labels, s.unit, points, width))
    return result


async def _read(
    store: Store,
    tier: int,
    ids: list[int],
    lo: float,
    hi: float,
    width: float,
    buckets: dict[int, dict[float, list[float]]],
) -> None:
    d = store.dialect
    marks = ", ".join("?" for _ in ids)
    if tier:
        column = "bucket"
        query = (
            f"SELECT series_id, {d.bucket(column, width)} AS b, MIN(min) AS mn, MAX(max) AS mx,"
            f" SUM(sum) AS sm, SUM(count) AS ct FROM homelab_rollup"
            f" WHERE resolution = {tier} AND series_id IN ({marks})"
            f" AND bucket >= ? AND bucket < ? GROUP BY series_id, b"
        )
    else:
        column = "ts"
        query = (
            f"SELECT series_id, {d.bucket(column, width)} AS b, MIN(value) AS mn,"
            f" MAX(value) AS mx, SUM(value) AS sm, COUNT(*) AS ct FROM homelab_sample"
            f" WHERE series_id IN ({marks}) AND ts >= ? AND ts < ? GROUP BY series_id, b"
        )
    for row in await store.fetch(query, [*ids, lo, hi]):
        acc = buckets[row["series_id"]].get(float(row["b"]))
        if acc is None:
            buckets[row["series_id"]][float(row["b"])] = [
                row["mn"],
                row["mx"],
                row["sm"],
                row["ct"],
            ]
        else:
            acc[0] = min(acc[0], row["mn"])
            acc[1] = max(acc[1], row["mx"])
            acc[2] += row["sm"]
            acc[3] += row["ct"]


def _aggregate(agg: str, acc: list[float]) -> float:
    if agg == "min":
        return float(acc[0])
    if agg == "max":
        return float(acc[1])
    return float(acc[2]) / float(acc[3])
