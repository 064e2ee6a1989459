"""Samples and rollups move from a row each to a head and compressed chunks.

The samples the previous release had rolled up (those before its 1-minute watermark) become
raw chunks of a UTC day each; the rest, which it had not rolled up yet, go to the head, where
compaction rolls them up like any other. Its hour rollups (completed first from its minute
rollups, up to the same watermark) become hour-rollup chunks; of its minute rollups, those of
the samples it had dropped already become minute-rollup chunks (while raw samples are kept,
they are the minute tier). The store's layout becomes 2 (see ``LAYOUT`` in ``store.py``).
"""

from typing import Any

import numpy as np
from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

from homelab_core.store import compaction
from homelab_core.store.compaction import DAY, HOUR, MINUTE
from homelab_core.store.sql import Dialect

#: The layout this migration makes.
LAYOUT = 2


async def convert(apps: Any, schema_editor: Any) -> None:
    conn = schema_editor.client
    dialect = Dialect("postgres" if schema_editor.DIALECT == "postgres" else "sqlite")
    _, rows = await conn.execute_query("SELECT key, value FROM homelab_meta")
    marks = {key: float(value) for key, value in rows}
    minute = marks.get("rollup_60")
    if minute is not None:
        await _complete_hours(conn, dialect, marks.get("rollup_3600"), minute)
        await _samples_to_chunks(conn, dialect, minute)
        await _rollups_to_chunks(conn, dialect)
    # ts to the millisecond, as the store now keeps it.
    await conn.execute_query(
        dialect.q(
            "INSERT INTO homelab_head (series_id, ts, value)"
            " SELECT series_id, ROUND(ts * 1000) / 1000.0, value FROM homelab_sample"
            " WHERE ts >= ? ORDER BY id"
        ),
        [minute if minute is not None else float("-inf")],
    )
    await conn.execute_query("DELETE FROM homelab_meta WHERE key IN ('rollup_60', 'rollup_3600')")
    await conn.execute_query(
        dialect.q(
            "INSERT INTO homelab_meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ),
        ["layout", LAYOUT],
    )


async def _complete_hours(conn: Any, dialect: Dialect, hour: float | None, minute: float) -> None:
    bucket = dialect.bucket("bucket", HOUR)
    await conn.execute_query(
        dialect.q(
            "INSERT INTO homelab_rollup (series_id, resolution, bucket, min, max, sum, count)"
            f" SELECT series_id, {HOUR}, {bucket}, MIN(min), MAX(max), SUM(sum), SUM(count)"
            f" FROM homelab_rollup WHERE resolution = {MINUTE} AND bucket >= ? AND bucket < ?"
            f" GROUP BY series_id, {bucket}"
            " ON CONFLICT (series_id, resolution, bucket) DO UPDATE SET"
            f" min = {dialect.least('homelab_rollup.min', 'excluded.min')},"
            f" max = {dialect.greatest('homelab_rollup.max', 'excluded.max')},"
            " sum = homelab_rollup.sum + excluded.sum,"
            " count = homelab_rollup.count + excluded.count"
        ),
        [hour if hour is not None else float("-inf"), minute],
    )


async def _series(conn: Any, table: str) -> list[int]:
    _, rows = await conn.execute_query(f"SELECT DISTINCT series_id FROM {table} ORDER BY 1")
    return [int(r[0]) for r in rows]


async def _samples_to_chunks(conn: Any, dialect: Dialect, before: float) -> None:
    ids = await _series(conn, "homelab_sample")
    advance = compaction.progress("converting the samples into chunks", len(ids))
    for part in compaction.in_slices(ids):
        marks = ", ".join("?" * len(part))
        _, samples = await conn.execute_query(
            dialect.q(
                "SELECT series_id, ts, value FROM homelab_sample"
                f" WHERE series_id IN ({marks}) AND ts < ? ORDER BY id"
            ),
            [*part, before],
        )
        if samples:
            columns = compaction.columns([tuple(s) for s in samples])
            rows = compaction.build(*columns, DAY, rollups=False)
            await compaction.insert_chunks(conn, dialect, rows)
        advance(len(part))


async def _rollups_to_chunks(conn: Any, dialect: Dialect) -> None:
    ids = await _series(conn, "homelab_rollup")
    advance = compaction.progress("converting the rollups into chunks", len(ids))
    for part in compaction.in_slices(ids):
        marks = ", ".join("?" * len(part))
        # Minute rollups only of samples dropped already: the raw samples kept are the
        # minute tier now. (A minute that was dropped in part is left out.)
        _, rows = await conn.execute_query(
            dialect.q(
                "SELECT r.series_id, r.resolution, r.bucket, r.min, r.max, r.sum, r.count"
                " FROM homelab_rollup r LEFT JOIN (SELECT series_id, MIN(ts) AS first"
                f" FROM homelab_sample WHERE series_id IN ({marks}) GROUP BY series_id) s"
                f" ON s.series_id = r.series_id WHERE r.series_id IN ({marks}) AND"
                f" (r.resolution = {HOUR} OR s.first IS NULL OR r.bucket + {MINUTE} <= s.first)"
            ),
            [*part, *part],
        )
        if rows:
            await compaction.insert_chunks(conn, dialect, _rollup_chunks(rows))
        advance(len(part))


def _rollup_chunks(rows: Any) -> list[compaction.ChunkRow]:
    data = np.asarray([tuple(r) for r in rows], dtype=np.float64)
    sids, resolutions, buckets = data[:, 0], data[:, 1], data[:, 2]
    days = np.floor(buckets / DAY) * DAY
    order = np.lexsort((buckets, days, resolutions, sids))
    data, days = data[order], days[order]
    chunk_rows = []
    for lo, hi in compaction.groups(data[:, 0], data[:, 1], days):
        part = data[lo:hi]
        chunk_rows.append(
            compaction.chunk_row(
                int(part[0, 0]), int(part[0, 1]), float(days[lo]), DAY, *part[:, 2:].T
            )
        )
    return chunk_rows


class Migration(migrations.Migration):
    dependencies = [("homelab", "0005_execution_usage")]

    operations = [
        ops.CreateModel(
            name="HeadRecord",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True)),
                ("series_id", fields.IntField()),
                ("ts", fields.FloatField()),
                ("value", fields.FloatField()),
            ],
            options={
                "table": "homelab_head",
                "app": "homelab",
                "indexes": [Index(fields=["series_id", "ts"], name="homelab_head_series_ts")],
                "pk_attr": "id",
                "table_description": "One raw sample not yet compacted into a chunk.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ChunkRecord",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True)),
                ("series_id", fields.IntField()),
                ("resolution", fields.IntField()),
                ("start", fields.FloatField()),
                ("span", fields.IntField()),
                ("first_ts", fields.FloatField()),
                ("last_ts", fields.FloatField()),
                ("count", fields.IntField()),
                ("data", fields.BinaryField()),
            ],
            options={
                "table": "homelab_chunk",
                "app": "homelab",
                "indexes": [
                    Index(
                        fields=["series_id", "resolution", "start"],
                        name="homelab_chunk_series_start",
                    ),
                    Index(fields=["span", "start"], name="homelab_chunk_span_start"),
                ],
                "pk_attr": "id",
                "table_description": "One series over one window at one resolution.",
            },
            bases=["Model"],
        ),
        ops.RunPython(convert),
        ops.DeleteModel(name="SampleRecord"),
        ops.DeleteModel(name="RollupRecord"),
    ]
