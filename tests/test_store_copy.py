"""PostgreSQL batches through ``COPY`` (issue 17, item 5), on a real PostgreSQL.

:func:`~homelab_core.store.sql.insert_rows` sends a batch of at least ``COPY_MIN_ROWS``
rows through asyncpg's ``copy_records_to_table`` on the caller's own connection. These
tests show that such a batch stores exactly its rows (every float bit for bit), that it
joins the caller's transaction (a refused row, in that batch or in another batch of the
same transaction, leaves nothing behind), that a refused value is the same kind of error
as on the ``executemany`` path, that the writer still isolates a refused row of a
batch that went through ``COPY``, and that a connection lost in or before a ``COPY`` is an
outage after which the same task writes again. The SQLite and small-batch paths are those of
``test_store.py`` and ``test_store_faults.py``.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from homelab_core import Execution, Metric, StoreError, compat
from homelab_core.config import StoreSettings
from homelab_core.store import BatchWriter, Store, WriteQueue
from homelab_core.store.faults import Fault, classify
from homelab_core.store.sql import COPY_MIN_ROWS, insert_rows

pytestmark = pytest.mark.anyio

asyncpg = pytest.importorskip("asyncpg")

T0 = 1_700_000_000.0
TABLE = "copy_sample"
COLUMNS = "series_id, ts, value"
#: Floats that a lossy path would change: extremes, a subnormal, negative zero, infinities,
#: a NaN and fractions with no short decimal form.
AWKWARD = [
    sys.float_info.max,
    -sys.float_info.max,
    sys.float_info.min,
    5e-324,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    1 / 3,
    0.1 + 0.2,
    math.pi * 1e-300,
]


@pytest.fixture
async def store(postgres_url: str) -> Any:
    """An open store on a fresh PostgreSQL database, with a table of the samples' shape."""
    opened = Store(postgres_url)
    await opened.open()
    await opened.execute(
        f"CREATE TABLE {TABLE} (id BIGSERIAL PRIMARY KEY, series_id INTEGER NOT NULL,"
        " ts DOUBLE PRECISION NOT NULL, value DOUBLE PRECISION NOT NULL)"
    )
    yield opened
    await opened.close()


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The table of every ``copy_records_to_table`` call, in order."""
    calls: list[str] = []
    real = asyncpg.connection.Connection.copy_records_to_table

    async def spy(self: Any, table_name: str, **kwargs: Any) -> Any:
        calls.append(table_name)
        return await real(self, table_name, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "copy_records_to_table", spy)
    yield calls


def bits(rows: Any) -> list[tuple[int, str, str]]:
    """Rows as (series, ts, value) with the floats' exact bits, sorted: order is free."""
    return sorted((int(r[0]), float(r[1]).hex(), float(r[2]).hex()) for r in rows)


async def stored(store: Store) -> list[tuple[int, str, str]]:
    return bits(
        (r["series_id"], r["ts"], r["value"])
        for r in await store.fetch(f"SELECT series_id, ts, value FROM {TABLE}")
    )


async def write(store: Store, *batches: list[tuple[Any, ...]]) -> None:
    """Each batch through ``insert_rows``, all in one transaction of the store's."""
    with store.active():
        async with compat.tortoise_transaction(store.connection_name) as conn:
            for rows in batches:
                await insert_rows(conn, store.dialect, TABLE, COLUMNS, rows)


def sample_rows(count: int, seed: int = 0) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    rows: list[tuple[Any, ...]] = [
        (2**31 - 1, T0, AWKWARD[0]),
        (-(2**31), -T0, AWKWARD[1]),
    ]
    rows += [(i % 7, T0 + i * 0.001, AWKWARD[i % len(AWKWARD)]) for i in range(len(AWKWARD))]
    while len(rows) < count:
        rows.append((rng.randrange(1000), T0 + rng.random() * 1e6, rng.uniform(-1e9, 1e9)))
    return rows


@pytest.mark.parametrize("count", [COPY_MIN_ROWS, 10 * COPY_MIN_ROWS, 25_000])
async def test_a_batch_through_copy_stores_exactly_its_rows(
    store: Store, copies: list[str], count: int
) -> None:
    rows = sample_rows(count, seed=count)
    await write(store, rows)
    assert copies == [TABLE], "the batch went through COPY, in one call"
    assert await stored(store) == bits(rows)


async def test_a_smaller_batch_or_one_with_a_suffix_goes_through_executemany(
    store: Store, copies: list[str]
) -> None:
    rows = sample_rows(COPY_MIN_ROWS - 1, seed=1)
    await write(store, rows)
    assert copies == [], "below COPY_MIN_ROWS, executemany"
    assert await stored(store) == bits(rows)
    await store.execute(f"CREATE UNIQUE INDEX {TABLE}_key ON {TABLE} (series_id, ts)")
    with store.active():
        async with compat.tortoise_transaction(store.connection_name) as conn:
            await insert_rows(
                conn,
                store.dialect,
                TABLE,
                COLUMNS,
                [*rows, *sample_rows(COPY_MIN_ROWS, seed=2)],
                " ON CONFLICT (series_id, ts) DO NOTHING",
            )
    assert copies == [], "COPY has no ON CONFLICT: a batch with a suffix takes executemany"
    assert await stored(store) == bits({*rows, *sample_rows(COPY_MIN_ROWS, seed=2)})


#: A row that PostgreSQL refuses (a NULL in a NOT NULL column), and values that asyncpg
#: cannot encode for the column (an integer out of range, text for a float).
REFUSED = {
    "null": (1, None, 1.0),
    "int out of range": (2**40, T0, 1.0),
    "text for a float": (1, T0, "x"),
}


@pytest.mark.parametrize("bad", REFUSED.values(), ids=REFUSED.keys())
async def test_a_refused_row_of_a_copy_rolls_the_whole_transaction_back(
    store: Store, copies: list[str], bad: tuple[Any, ...]
) -> None:
    good = sample_rows(2 * COPY_MIN_ROWS, seed=3)
    poisoned = [*sample_rows(COPY_MIN_ROWS, seed=4), bad]
    with pytest.raises(Exception) as caught:
        await write(store, good, poisoned)
    assert copies == [TABLE, TABLE], "both batches went through COPY"
    assert classify(caught.value) is Fault.REFUSED, repr(caught.value)
    assert await stored(store) == [], "the first batch was rolled back with the second"
    # The same row through executemany (a batch too small for COPY) fails alike.
    with pytest.raises(Exception) as small:
        await write(store, [bad])
    assert classify(small.value) is Fault.REFUSED
    assert type(small.value.__cause__ or small.value).__module__.startswith("asyncpg")
    await write(store, good)
    assert await stored(store) == bits(good), "the connection works after the failures"


def execution(instance_id: Any, n: int) -> Execution:
    return Execution(
        instance_id, T0 + n, 0.001 * n, "error" if n % 3 else "ok", error=f"run {n}", lag=0.5
    )


async def test_a_store_write_with_a_refused_execution_writes_nothing(
    store: Store, copies: list[str]
) -> None:
    metrics = [Metric(f"m{i % 10}", float(i), timestamp=T0 + i) for i in range(3 * COPY_MIN_ROWS)]
    executions = [execution("a", n) for n in range(COPY_MIN_ROWS)]
    bad = execution("a", COPY_MIN_ROWS)
    object.__setattr__(bad, "instance_id", None)  # past the validators, as a bug could
    with pytest.raises(StoreError) as caught:
        await store.write([("a", metrics)], [*executions, bad])
    assert "homelab_execution" in copies, "the executions went through COPY"
    assert classify(caught.value) is Fault.REFUSED
    assert await store.count_samples() == 0, "the samples were rolled back with it"
    assert await store.executions() == []
    # The same write without the refused execution stores every execution as it was.
    await store.write([("a", metrics)], executions)
    assert await store.count_samples() == len(metrics)
    read = await store.executions(limit=len(executions))
    assert [(e.instance_id, e.started_at, e.duration, e.status, e.error) for e in read] == [
        (e.instance_id, e.started_at, e.duration, e.status, e.error) for e in reversed(executions)
    ]


async def test_the_writer_isolates_a_refused_row_of_a_batch_that_went_through_copy(
    store: Store, copies: list[str]
) -> None:
    good = [Metric(f"m{i % 10}", float(i), timestamp=T0 + i) for i in range(4 * COPY_MIN_ROWS)]
    bad = Metric("x", 1.0, timestamp=T0)
    object.__setattr__(bad, "timestamp", None)  # past the validators, as a bug could
    queue = WriteQueue(max_samples=100_000, batch_size=100_000)
    writer = BatchWriter(store, queue, StoreSettings(flush_interval=0.01))
    queue.put_metrics("a", [*good[: 2 * COPY_MIN_ROWS], bad, *good[2 * COPY_MIN_ROWS :]])
    queue.close()
    with anyio.fail_after(30):
        await writer.run()
    assert copies, "the first attempt went through COPY"
    assert await store.count_samples() == len(good)
    assert writer.refused_samples == 1
    assert queue.dropped_samples == 1
    assert not writer.failing


async def test_a_connection_lost_during_a_copy_is_an_outage_and_the_store_writes_on(
    store: Store, copies: list[str]
) -> None:
    """The server ends the connection in the middle of a ``COPY`` (a trigger terminates its
    own backend at a marked row): the write fails as an outage, which the writer waits out
    and retries, never as refused rows; nothing of the transaction is stored; and the
    store's next writes, in the same task, work on a new connection."""
    await store.execute(
        "CREATE FUNCTION copy_sample_cut() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$"
    )
    await store.execute(
        f"CREATE TRIGGER copy_sample_cut BEFORE INSERT ON {TABLE} FOR EACH ROW"
        " WHEN (NEW.series_id = -1) EXECUTE FUNCTION copy_sample_cut()"
    )
    good = sample_rows(COPY_MIN_ROWS, seed=5)
    cut = [*sample_rows(COPY_MIN_ROWS, seed=6), (-1, T0, 0.0)]
    with pytest.raises(Exception) as caught:
        await write(store, good, cut)
    assert copies == [TABLE, TABLE], "both batches went through COPY"
    assert classify(caught.value) is Fault.OUTAGE, repr(caught.value)
    assert await stored(store) == []
    await write(store, good)
    assert await stored(store) == bits(good), "the store writes again on a new connection"


async def test_a_connection_ended_between_two_copies_leaves_the_task_able_to_write(
    store: Store, copies: list[str], postgres_url: str
) -> None:
    """Another session ends the transaction's backend between two batches, so that the
    server's notice may reach asyncpg while the next ``COPY`` starts (asyncpg then leaves
    the connection "in" an operation). Every time, the write fails as an outage and the
    next query of the same task works: the failed ``COPY`` closed its connection, so that
    Tortoise's rollback and the pool's release went through and left the task's
    transaction. (Without that close, this failed within a few rounds: "connection has
    been released back to the pool" on every later query.)"""
    rows = sample_rows(COPY_MIN_ROWS, seed=7)
    other = await asyncpg.connect(postgres_url)
    loop = asyncio.get_running_loop()
    # asyncpg may leave the lost connection's own future unretrieved: the event loop's
    # "Future exception was never retrieved", which is only a log line.
    lost: list[BaseException | None] = []
    loop.set_exception_handler(lambda _, context: lost.append(context.get("exception")))
    try:
        for _ in range(10):
            with pytest.raises(Exception) as caught, store.active():
                async with compat.tortoise_transaction(store.connection_name) as conn:
                    await insert_rows(conn, store.dialect, TABLE, COLUMNS, rows)
                    async with conn.acquire_connection() as raw:
                        pid = raw.get_server_pid()
                    assert await other.fetchval("SELECT pg_terminate_backend($1)", pid)
                    await insert_rows(conn, store.dialect, TABLE, COLUMNS, rows)
            assert classify(caught.value) is Fault.OUTAGE, repr(caught.value)
            assert await stored(store) == []
    finally:
        loop.set_exception_handler(None)
        await other.close()
    assert all(isinstance(e, asyncpg.ConnectionDoesNotExistError) for e in lost), lost
    await write(store, rows)
    assert await stored(store) == bits(rows)
