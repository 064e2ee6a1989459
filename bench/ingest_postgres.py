"""``storage.pg_copy``: rows/s of ``COPY`` against ``executemany`` into PostgreSQL.

A throw-away PostgreSQL on 127.0.0.1 (as ``scaleout`` starts it) holds a table of the
samples' shape (``series_id`` integer, ``ts`` and ``value`` double precision, a bigserial
key and an index on ``(series_id, ts)``, as ``homelab_sample``). Batches of 10, 30, 100,
300, 1,000 and 10,000 rows are written, each batch in a transaction of its own on the
store's Tortoise connection (the way the store writes), by four methods:

- ``executemany``: one ``INSERT`` of one row, run for every row (the store's path before);
- ``values``: one multi-row ``INSERT ... VALUES`` per batch (per 21,845 rows: PostgreSQL
  takes at most 65,535 parameters a statement);
- ``copy``: asyncpg's ``copy_records_to_table`` on the transaction's connection;
- ``insert_rows``: the store's :func:`~homelab_core.store.sql.insert_rows`, which takes
  ``COPY`` from :data:`~homelab_core.store.sql.COPY_MIN_ROWS` rows and ``executemany``
  below.

Rounds alternate the methods, so that the table grows alike under each; the table is
emptied between batch sizes. The figures are medians over the rounds. One result per batch
size from 100 rows (``insert_rows`` takes ``COPY`` there): ``COPY``'s rate against
``executemany``'s measured in the same run, target ratio >= 1 (``COPY`` is not slower where
the store uses it). ``storage.pg_copy`` is the one of 10,000-row batches, and carries the
rates of every method and batch size in its details; ``storage.pg_copy.100`` and
``storage.pg_copy.1000`` are the others.

Without PostgreSQL's binaries (``initdb``, ``postgres``) the benchmark reports one row
that says it was skipped, unless ``HOMELAB_REQUIRE_SERVICES`` is set, when it fails.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from homelab_core import compat
from homelab_core.store import Store
from homelab_core.store.sql import COPY_MIN_ROWS, insert_rows

from .common import Result, log, median, ratio_target, result, workdir
from .scaleout import _postgres_bin, create_database, postgres

TABLE = "bench_sample"
COLUMNS = "series_id, ts, value"
DDL = (
    f"CREATE TABLE {TABLE} (id BIGSERIAL PRIMARY KEY, series_id INTEGER NOT NULL,"
    " ts DOUBLE PRECISION NOT NULL, value DOUBLE PRECISION NOT NULL)",
    f"CREATE INDEX {TABLE}_series_ts ON {TABLE} (series_id, ts)",
)
#: Batch sizes measured; those with a result row (smaller ones are in the details only).
BATCHES = (10, 30, 100, 300, 1_000, 10_000)
REPORTED = (100, 1_000, 10_000)
#: Series the rows are spread over.
SERIES = 500
#: Most parameters of one PostgreSQL statement.
MAX_PARAMS = 65_535

Rows = list[tuple[int, float, float]]
Method = Callable[[Any, Rows], Awaitable[None]]


async def by_executemany(conn: Any, rows: Rows) -> None:
    await conn.execute_many(f"INSERT INTO {TABLE} ({COLUMNS}) VALUES ($1, $2, $3)", rows)


async def by_values(conn: Any, rows: Rows) -> None:
    per = MAX_PARAMS // 3
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        marks = ", ".join(f"(${3 * i + 1}, ${3 * i + 2}, ${3 * i + 3})" for i in range(len(part)))
        values = [value for row in part for value in row]
        await conn.execute_query(f"INSERT INTO {TABLE} ({COLUMNS}) VALUES {marks}", values)


async def by_copy(conn: Any, rows: Rows) -> None:
    async with conn.acquire_connection() as raw:
        await raw.copy_records_to_table(TABLE, records=rows, columns=["series_id", "ts", "value"])


def by_insert_rows(store: Store) -> Method:
    async def write(conn: Any, rows: Rows) -> None:
        await insert_rows(conn, store.dialect, TABLE, COLUMNS, rows)

    return write


def make_rows(count: int, offset: int) -> Rows:
    """``count`` samples of :data:`SERIES` series, with fresh timestamps after ``offset``."""
    rng = random.Random(offset)
    base = 1_700_000_000.0 + offset * 10.0
    return [(i % SERIES, base + (i // SERIES) * 10.0, rng.uniform(0, 100)) for i in range(count)]


async def timed(store: Store, method: Method, rows: Rows, batch: int) -> float:
    """Rows/s of writing ``rows`` by ``method``, ``batch`` rows per transaction."""
    with store.active():
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            async with compat.tortoise_transaction(store.connection_name) as conn:
                await method(conn, rows[start : start + batch])
        return len(rows) / (time.perf_counter() - started)


def rows_per_round(batch: int, quick: bool) -> int:
    return max(5 * batch, 10_000) if quick else max(20 * batch, 30_000)


async def measure(url: str, quick: bool) -> dict[int, dict[str, list[float]]]:
    store = Store(url)
    await store.open()
    try:
        for statement in DDL:
            await store.execute(statement)
        methods: dict[str, Method] = {
            "executemany": by_executemany,
            "values": by_values,
            "copy": by_copy,
            "insert_rows": by_insert_rows(store),
        }
        rounds = 3 if quick else 5
        rates: dict[int, dict[str, list[float]]] = {}
        offset = 0
        for batch in BATCHES:
            await store.execute(f"TRUNCATE {TABLE}")
            count = rows_per_round(batch, quick)
            rates[batch] = {name: [] for name in methods}
            # One warm-up batch each: prepared statements, the pool's connection.
            for method in methods.values():
                await timed(store, method, make_rows(batch, offset), batch)
                offset += 1
            for n in range(rounds):
                order = list(methods.items())
                if n % 2:
                    order.reverse()
                for name, method in order:
                    rows = make_rows(count, offset)
                    offset += 1
                    rates[batch][name].append(await timed(store, method, rows, batch))
            log(
                f"batch {batch:>6,}: "
                + ", ".join(f"{k} {median(v):,.0f}/s" for k, v in rates[batch].items())
            )
        stored = await store.fetch(f"SELECT count(*) AS n FROM {TABLE}")
        # Every row of the last batch size (warm-up and rounds, every method) is there.
        expected = len(methods) * (batch + rounds * count)
        if stored[0]["n"] != expected:
            raise RuntimeError(f"{stored[0]['n']} rows stored in the last part, not {expected}")
        return rates
    finally:
        await store.close()


def skipped(reason: str) -> list[Result]:
    """The one row of a run without PostgreSQL (or fail when services are required)."""
    if os.environ.get("HOMELAB_REQUIRE_SERVICES"):
        raise RuntimeError(f"{reason} (HOMELAB_REQUIRE_SERVICES is set: cannot skip)")
    log(f"skipped: {reason}")
    return [
        Result(
            name="storage.pg_copy",
            value=None,
            unit="rows/s",
            baseline=None,
            baseline_name=None,
            ratio=None,
            target=f"skipped: {reason}",
            meets_target=True,
            details={"skipped": reason},
        )
    ]


def run(quick: bool) -> list[Result]:
    try:
        _postgres_bin("initdb")
        _postgres_bin("postgres")
    except RuntimeError as exc:
        return skipped(str(exc))
    with workdir("ingest-postgres") as directory:
        Path(directory).chmod(0o755)  # the postgres user walks into it
        with postgres(directory) as server_url:
            rates = asyncio.run(measure(create_database(server_url, "copy"), quick))
    details: dict[str, Any] = {
        "copy_min_rows": COPY_MIN_ROWS,
        "rows_per_round": {str(b): rows_per_round(b, quick) for b in BATCHES},
        "rounds": len(rates[BATCHES[0]]["copy"]),
        "rates": {
            str(b): {name: round(median(v)) for name, v in by_method.items()}
            for b, by_method in rates.items()
        },
        "copy_over_executemany": {
            str(b): round(median(r["copy"]) / median(r["executemany"]), 3) for b, r in rates.items()
        },
        "values_over_executemany": {
            str(b): round(median(r["values"]) / median(r["executemany"]), 3)
            for b, r in rates.items()
        },
        "insert_rows_over_executemany": {
            str(b): round(median(r["insert_rows"]) / median(r["executemany"]), 3)
            for b, r in rates.items()
        },
        "copy_rounds": {str(b): [round(v) for v in r["copy"]] for b, r in rates.items()},
        "executemany_rounds": {
            str(b): [round(v) for v in r["executemany"]] for b, r in rates.items()
        },
    }
    return [
        result(
            "storage.pg_copy" if batch == max(REPORTED) else f"storage.pg_copy.{batch}",
            median(rates[batch]["copy"]),
            "rows/s",
            ratio_target(">=", 1.0),
            baseline=median(rates[batch]["executemany"]),
            baseline_name=f"executemany, {batch:,}-row batches",
            details=details if batch == max(REPORTED) else {"batch": batch},
        )
        for batch in REPORTED
    ]
