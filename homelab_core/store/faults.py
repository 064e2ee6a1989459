"""What a database error means for the writer: an outage to wait out, or refused rows.

The writer needs one decision per failed write: wait and try the same rows again (the
database is away, locked, full: nothing is wrong with the rows), or look for the rows the
database refuses (a constraint, a value it cannot encode or store) and drop only those.
:func:`classify` makes it from the error and the errors it wraps (Tortoise wraps the
driver's), by the drivers' own codes rather than by message: SQLite's result code
(``sqlite_errorname``) and PostgreSQL's SQLSTATE class. asyncpg is optional, so its
errors are recognised by their module and ``sqlstate`` attribute, never imported.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Iterator

from ..codec import storable_text


class Fault(enum.Enum):
    """The meaning of a failed write."""

    #: The database cannot write now (away, locked, full, read-only, broken): wait and
    #: retry the same rows; nothing is dropped.
    OUTAGE = "outage"
    #: The database refused something in the rows themselves (a constraint, a value it
    #: cannot take): isolate the rows it refuses.
    REFUSED = "refused"
    #: Neither is known: the writer asks the database whether it answers.
    UNKNOWN = "unknown"


#: SQLite primary result codes of rows the database refuses.
_SQLITE_REFUSED = frozenset({"SQLITE_CONSTRAINT", "SQLITE_TOOBIG", "SQLITE_MISMATCH"})
#: PostgreSQL SQLSTATE classes of refused rows: 22 data exception (a value too long, a
#: NUL, a number out of range; asyncpg's client-side DataError is 22000 too) and 23
#: integrity constraint violation. Every other class (08 connection, 53 disk full, 55
#: lock not available, 57 shutdown, 42 permission or schema, XX internal ...) is about
#: the database or the statement, never one row.
_POSTGRES_REFUSED = frozenset({"22", "23"})


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors it wraps, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        wrapped = current.args[0] if current.args else None
        if isinstance(wrapped, BaseException):
            current = wrapped  # Tortoise's SQLite client wraps without "from"
        else:
            current = current.__cause__ or current.__context__


def _from_driver(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error | OSError) or type(exc).__module__.startswith("asyncpg")


def _meaning(exc: BaseException) -> Fault:
    """The meaning of one error of the chain."""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", None)
        if name:  # SQLITE_CONSTRAINT_NOTNULL -> SQLITE_CONSTRAINT
            primary = "_".join(name.split("_")[:2])
            return Fault.REFUSED if primary in _SQLITE_REFUSED else Fault.OUTAGE
        if isinstance(exc, sqlite3.DataError) or "binding parameter" in str(exc):
            return Fault.REFUSED  # a value of a type SQLite has no storage for
        return Fault.OUTAGE  # a closed connection and the like
    if type(exc).__module__.startswith("asyncpg"):
        sqlstate = getattr(exc, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in _POSTGRES_REFUSED:
            return Fault.REFUSED
        return Fault.OUTAGE  # the server's other classes; connection closed or released
    if isinstance(exc, OSError):  # connection refused or reset, timeouts, disk errors
        return Fault.OUTAGE
    if isinstance(exc, UnicodeError | OverflowError):
        return Fault.REFUSED  # a value the driver cannot encode: a lone surrogate, 10**30
    return Fault.UNKNOWN


def classify(exc: BaseException) -> Fault:
    """Whether ``exc``, raised by a write, is an outage or a refusal of rows.

    Every error in the chain (:func:`causes`) is read: an outage anywhere wins (retrying
    never loses data), else a refusal, else the meaning is unknown.
    """
    meanings = {_meaning(cause) for cause in causes(exc)}
    for fault in (Fault.OUTAGE, Fault.REFUSED):
        if fault in meanings:
            return fault
    return Fault.UNKNOWN


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from the database, its driver or Tortoise, not from a bug."""
    return any(
        _from_driver(cause) or type(cause).__module__.startswith(("tortoise", "aiosqlite"))
        for cause in causes(exc)
    )


def reason(exc: BaseException) -> str:
    """The driver's own message for ``exc``, on one line and storable, for the log."""
    chain = list(causes(exc))
    cause = next((c for c in chain if _from_driver(c)), chain[-1])
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    return storable_text(text)
