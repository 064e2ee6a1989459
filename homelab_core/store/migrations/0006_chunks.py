"""Samples move from one row each (``homelab_sample``) to a head and compressed chunks.

The samples the previous release had rolled up (those before its 1-minute watermark) become
chunks of a UTC day each; the rest, which it had not rolled up yet, go to the head, where
compaction rolls them up like any other. Its hour tier is first completed from its minute
tier, up to the same watermark. The store's layout becomes 2 (see :data:`.store.LAYOUT`).
"""

from typing import Any

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

from homelab_core.store import compaction
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
        await _to_chunks(conn, dialect, minute)
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
    await _set(conn, dialect, "layout", LAYOUT)


async def _complete_hours(conn: Any, dialect: Dialect, hour: float | None, minute: float) -> None:
    bucket = dialect.bucket("bucket", compaction.HOUR)
    await conn.execute_query(
        dialect.q(
            f"INSERT INTO homelab_rollup ({compaction.ROLLUP_COLUMNS})"
            f" SELECT series_id, {compaction.HOUR}, {bucket}, MIN(min), MAX(max), SUM(sum),"
            " SUM(count) FROM homelab_rollup"
            f" WHERE resolution = {compaction.MINUTE} AND bucket >= ? AND bucket < ?"
            f" GROUP BY series_id, {bucket}" + compaction.rollup_upsert(dialect)
        ),
        [hour if hour is not None else float("-inf"), minute],
    )


async def _to_chunks(conn: Any, dialect: Dialect, before: float) -> None:
    _, rows = await conn.execute_query(
        dialect.q("SELECT DISTINCT series_id FROM homelab_sample WHERE ts < ? ORDER BY 1"),
        [before],
    )
    ids = [int(r[0]) for r in rows]
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
        chunk_rows, _ = compaction.build(
            *compaction.columns([tuple(s) for s in samples]), compaction.DAY, rollups=False
        )
        await compaction.insert_chunks(conn, dialect, chunk_rows)
        advance(len(part))


async def _set(conn: Any, dialect: Dialect, key: str, value: float) -> None:
    await conn.execute_query(
        dialect.q(
            "INSERT INTO homelab_meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ),
        [key, value],
    )


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
                    Index(fields=["series_id", "start"], name="homelab_chunk_series_start"),
                    Index(fields=["span", "start"], name="homelab_chunk_span_start"),
                ],
                "pk_attr": "id",
                "table_description": "The raw samples of one series over one window.",
            },
            bases=["Model"],
        ),
        ops.RunPython(convert),
        ops.DeleteModel(name="SampleRecord"),
    ]
