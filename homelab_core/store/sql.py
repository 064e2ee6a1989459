"""The few places where SQLite and PostgreSQL SQL differ, and batch inserts for both."""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import attrs

from .faults import Fault, classify

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient

_PLACEHOLDER = re.compile(r"\?")
#: Rows from which a PostgreSQL batch goes through ``COPY`` rather than ``executemany``.
#: ``storage.pg_copy`` (bench/ingest_postgres.py) measures both, and a multi-row
#: ``INSERT ... VALUES``, for batches of the samples' shape: ``COPY`` waits for the
#: server's go-ahead before it sends rows (a round trip more), so at 10 and 30 rows the
#: three are within the run's noise of each other; from 100 rows ``COPY`` is the fastest
#: (over three full runs: 1.5 to 1.6 times ``executemany`` at 100 rows, 1.6 to 2.4 at
#: 1,000, 1.8 to 2.8 at 10,000; ``VALUES`` 1.0 to 1.5), on a busy 2-core machine with
#: PostgreSQL on the same host. Below, ``executemany`` stays: ``VALUES`` would gain little
#: there and prepare a statement for every batch size.
COPY_MIN_ROWS = 100
#: Parameters per statement on SQLite (its default limit; 999 before SQLite 3.32).
_SQLITE_MAX_PARAMS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


@attrs.frozen
class Dialect:
    """SQL spelling for one database engine."""

    name: str

    @property
    def postgres(self) -> bool:
        return self.name == "postgres"

    def q(self, query: str) -> str:
        """Rewrite ``?`` placeholders to the engine's style."""
        if not self.postgres:
            return query
        counter = iter(range(1, 10_000))
        return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", query)

    def bucket(self, column: str, step: float) -> str:
        """An expression giving the start of ``column``'s bucket of ``step`` seconds."""
        step_text = repr(float(step))
        if self.postgres:
            return f"(FLOOR({column} / {step_text}) * {step_text})"
        return f"(CAST({column} / {step_text} AS INTEGER) * {step_text})"

    def least(self, a: str, b: str) -> str:
        return f"LEAST({a}, {b})" if self.postgres else f"MIN({a}, {b})"

    def greatest(self, a: str, b: str) -> str:
        return f"GREATEST({a}, {b})" if self.postgres else f"MAX({a}, {b})"


def dialect_of(url: str) -> Dialect:
    """The dialect of a Tortoise database URL."""
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("postgres", "postgresql", "asyncpg"):
        return Dialect("postgres")
    if scheme == "sqlite":
        return Dialect("sqlite")
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:// or postgres://")


async def insert_rows(
    conn: BaseDBAsyncClient,
    dialect: Dialect,
    table: str,
    columns: str,
    rows: Sequence[Sequence[Any]],
    suffix: str = "",
) -> None:
    """Insert ``rows`` into ``table`` (``columns`` as in SQL) in few statements.

    On PostgreSQL a batch of at least :data:`COPY_MIN_ROWS` rows without ``suffix`` goes
    through ``COPY`` on the caller's own connection (so inside the caller's transaction);
    smaller batches, and those with an ``ON CONFLICT`` suffix, which ``COPY`` cannot
    express, go through ``executemany``.
    """
    width = columns.count(",") + 1
    single = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['?'] * width)}){suffix}"
    if dialect.postgres:
        if (
            not suffix
            and len(rows) >= COPY_MIN_ROWS
            and await _copy_rows(conn, table, columns, rows)
        ):
            return
        # asyncpg takes any sequence of rows; Tortoise's annotation says lists.
        await conn.execute_many(dialect.q(single), cast(Any, rows))
        return
    # SQLite: many rows per statement. sqlite3 releases the GIL around every statement
    # step and must take it back from a busy event loop afterwards (up to a switch
    # interval each time): one statement per row made the writer crawl under load
    # (docs/performance.md). Full chunks go in one executemany (one trip to the
    # database thread), the rest in one statement of its own size.
    per = _SQLITE_MAX_PARAMS // width
    values = [value for row in rows for value in row]
    full = len(rows) - len(rows) % per
    if full:
        chunk = per * width
        await conn.execute_many(
            _full_chunk_statement(single, per, suffix),
            [values[start : start + chunk] for start in range(0, full * width, chunk)],
        )
    if full < len(rows):
        rest = _rows_statement(single, len(rows) - full, suffix)
        await conn.execute_query(rest, values[full * width :])


async def _copy_rows(
    conn: BaseDBAsyncClient, table: str, columns: str, rows: Sequence[Sequence[Any]]
) -> bool:
    """``COPY`` ``rows`` into ``table`` through asyncpg; False, having written nothing, when
    ``conn`` is not an asyncpg client.

    ``conn.acquire_connection()`` gives the asyncpg connection that ``conn`` runs its own
    queries on: inside a Tortoise transaction, the transaction's connection (under the
    transaction's lock), so the rows commit or roll back with the rest of the transaction.

    asyncpg encodes the rows of a ``COPY`` itself and lets Python's own error through for a
    value it cannot encode (``TypeError``, ``OverflowError``, ``UnicodeEncodeError``), where
    ``executemany`` raises its ``DataError`` (SQLSTATE 22000). The ``COPY`` path raises the
    same ``DataError``, caused by Python's error, so that callers see one kind of refusal
    whichever path a batch took (:mod:`.faults` counts it as refused rows).
    """
    async with conn.acquire_connection() as raw:
        copy = getattr(raw, "copy_records_to_table", None)
        if copy is None:
            return False
        import asyncpg.exceptions  # type: ignore[import-untyped]  # no stubs; only here

        names = [name.strip() for name in columns.split(",")]
        # Called outside the ``try``: a call asyncpg does not accept (a bug, not a row)
        # raises its TypeError here, before any row is encoded, and is not taken for one.
        pending = copy(table, records=rows, columns=names)
        try:
            await pending
        except (TypeError, ValueError, OverflowError) as exc:
            if type(exc).__module__.startswith("asyncpg"):
                _close_unless_refused(raw, exc)
                raise
            raise asyncpg.exceptions.DataError(
                f"invalid input for COPY into {table}: {exc}"
            ) from exc
        except BaseException as exc:
            _close_unless_refused(raw, exc)
            raise
    return True


def _close_unless_refused(raw: Any, exc: BaseException) -> None:
    """Close ``raw`` (an asyncpg connection) after a ``COPY`` that failed for another reason
    than its rows.

    A ``COPY`` started as the server ends the connection can leave asyncpg's connection
    "in" the operation: the rollback that Tortoise then tries fails ("another operation is
    in progress"), and the task can be left in the dead transaction, every later query of
    it failing ("connection has been released back to the pool"; tests/test_store_copy.py
    shows it). Closed, the connection is what ``executemany`` leaves after a lost
    connection: the rollback and the release see it closed, and the pool connects anew;
    the server rolls back the transaction of a closed connection. A cancelled ``COPY`` is
    closed too (its state unknown). After refused rows the server has ended the ``COPY``
    cleanly, and the connection is kept.
    """
    if classify(exc) is Fault.REFUSED:
        return
    # A connection the pool has already taken back (it saw the connection close) refuses
    # every call: there is nothing left to close then.
    with contextlib.suppress(Exception):
        if not raw.is_closed():
            raw.terminate()


def _rows_statement(single: str, rows: int, suffix: str) -> str:
    """``single`` (an INSERT of one row, then ``suffix``) made to insert ``rows`` rows."""
    head, _, row = single.removesuffix(suffix).partition(" VALUES ")
    return f"{head} VALUES {', '.join([row] * rows)}{suffix}"


#: The full-chunk statement of each table is the same every batch: built once. (Remainders
#: vary in size and are built each time rather than kept.)
_full_chunk_statement = functools.lru_cache(maxsize=8)(_rows_statement)
