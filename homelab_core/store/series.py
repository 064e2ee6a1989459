"""The write path's cache of series ids, and the creation of the series it lacks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..codec import labels_json
from ..model import Metric
from .sql import Dialect, insert_rows

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient

#: (instance id, metric name, label items in sorted order): the store's key of a series.
SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]


class SeriesIds:
    """Series ids by :data:`SeriesKey`, so that a sample costs one dict lookup."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._ids: dict[SeriesKey, int] = {}

    def forget(self, keys: Iterable[SeriesKey]) -> None:
        """Drop the ids of ``keys``: those created in a rolled-back transaction (see
        :meth:`sample_rows`) must not be reused."""
        for key in keys:
            self._ids.pop(key, None)

    async def sample_rows(
        self,
        conn: BaseDBAsyncClient,
        samples: Sequence[tuple[str, Sequence[Metric]]],
        created: list[SeriesKey],
    ) -> list[tuple[Any, ...]]:
        """(series id, ts, value) of each sample, creating the series not yet stored.

        The keys of the series it may have created are added to ``created``: if the
        transaction does not commit, :meth:`forget` them.
        """
        # The hot path: one dict lookup per sample, keyed by the labels' items (already
        # sorted by Metric), so no sample is JSON-encoded unless its series is new.
        series = self._ids
        rows: list[tuple[Any, ...]] = []
        missing: dict[SeriesKey, Metric] = {}
        for instance_id, metrics in samples:
            for m in metrics:
                key = (instance_id, m.name, tuple(m.labels.items()))
                sid = series.get(key)
                # The store keeps timestamps to the millisecond (see .chunks).
                ts = round(m.timestamp * 1000) / 1000  # type: ignore[operator]
                if sid is None:
                    missing.setdefault(key, m)
                    rows.append((key, ts, m.value))
                else:
                    rows.append((sid, ts, m.value))
        if missing:
            # Only these can be new; every other series of these instances was committed.
            created.extend(missing)
            await self._create(conn, missing)
            rows = [(series[r[0]], r[1], r[2]) if type(r[0]) is tuple else r for r in rows]
        return rows

    async def _create(self, conn: BaseDBAsyncClient, missing: Mapping[SeriesKey, Metric]) -> None:
        await insert_rows(
            conn,
            self._dialect,
            "homelab_series",
            "instance_id, name, labels, unit, kind, device_class",
            [
                (key[0], key[1], labels_json(m.labels), m.unit, m.kind.value, m.device_class)
                for key, m in missing.items()
            ],
            " ON CONFLICT (instance_id, name, labels) DO NOTHING",
        )
        instance_ids = sorted({key[0] for key in missing})
        marks = ", ".join("?" for _ in instance_ids)
        rows = await conn.execute_query_dict(
            self._dialect.q(
                f"SELECT id, instance_id, name, labels FROM homelab_series"
                f" WHERE instance_id IN ({marks})"
            ),
            instance_ids,
        )
        for row in rows:
            labels = tuple(json.loads(row["labels"]).items())
            self._ids[(row["instance_id"], row["name"], labels)] = row["id"]
