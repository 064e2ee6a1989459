"""The store: opens its own Tortoise context, migrates, and reads and writes every table."""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import attrs
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.context import TortoiseContext
from tortoise.migrations.executor import MigrationExecutor

from .. import compat
from ..config import database_problem
from ..errors import StoreError
from ..model import EXECUTION_COLUMNS, Execution, Health, HealthTransition, Metric
from ..redact import Redactor, url_secrets
from . import chunks as chunk_codec
from . import faults, models
from .series import SeriesIds, SeriesKey
from .sql import Dialect, dialect_of, insert_rows

log = logging.getLogger("homelab.store")
#: Tortoise's private current-context variable (see :func:`.compat.tortoise_context`).
_tortoise_context = compat.tortoise_context()

#: The Tortoise app label of the store. The connection label is ``homelab_<dialect>``:
#: Tortoise caches prepared statements by connection label, so two stores on different
#: engines in one process must not share one. An embedding application's own Tortoise
#: set-up never sees either.
APP = "homelab"
#: The PostgreSQL advisory lock that stores hold while they migrate ("homelab" in ASCII).
MIGRATION_LOCK = 0x686F6D656C6162
#: The layout of the tables this release reads and writes. 2: samples in a head and in
#: compressed chunks (migration 0006). A store of a later layout is refused at open, with a
#: message, rather than misread.
LAYOUT = 2
#: Seconds that connecting and migrating may take before the store gives up.
OPEN_TIMEOUT = 60.0
#: Seconds :meth:`Store.ping` waits for an answer (readiness must answer quickly even
#: when the database host does not).
PING_TIMEOUT = 2.0
#: SQLite pragmas the store sets unless the URL does. cache_size: 64 MiB of page cache
#: (SQLite's default is 2 MiB), so that the samples index of a busy store stays in memory:
#: with 2 MiB, inserts slowed fourfold once the table held a few million rows.
_SQLITE_DEFAULTS = {
    "synchronous": "NORMAL",
    "busy_timeout": "5000",
    "journal_mode": "WAL",
    "cache_size": "-65536",
}


def normalise_url(url: str) -> str:
    """Add the SQLite pragmas the store relies on unless the URL sets them."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return url
    query = dict(parse_qsl(parts.query))
    for key, value in _SQLITE_DEFAULTS.items():
        query.setdefault(key, value)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _check_sqlite_directory(url: str) -> None:
    # aiosqlite never answers when SQLite cannot create the file: fail clearly instead.
    problem = database_problem(url)
    if problem is not None:
        raise StoreError(problem)


def _tortoise_config(connection_name: str, url: str) -> dict[str, Any]:
    """The store's one Tortoise app, its models and migrations, on its own connection."""
    return {
        "connections": {connection_name: url},
        "apps": {
            APP: {
                "models": [models.__name__],
                "migrations": f"{__package__}.migrations",
                "default_connection": connection_name,
            }
        },
    }


def execution_row(execution: Execution) -> tuple[Any, ...]:
    """An execution's values in :data:`~homelab_core.model.EXECUTION_COLUMNS` order."""
    values = (getattr(execution, name) for name in EXECUTION_COLUMNS)
    return tuple(v.value if isinstance(v, enum.Enum) else v for v in values)


@attrs.frozen
class SeriesInfo:
    """A stored series."""

    id: int
    instance_id: str
    name: str
    labels: dict[str, str]
    unit: str


@attrs.frozen
class StoredInstance:
    """What the store remembers of an instance across restarts."""

    enabled: bool
    config_enabled: bool


#: Instances whose transitions :meth:`Store.health_spans` reads in one query.
_SPAN_CHUNK = 1000


async def save_dated(model: type[Any], key: str, values: Mapping[str, Any], now: float) -> None:
    """Insert the row ``key`` of ``model`` with ``values`` (``created_at`` and ``updated_at``
    now), or update its ``values`` and ``updated_at`` (keeping ``created_at``)."""
    record = await model.get_or_none(id=key)
    if record is None:
        await model.create(id=key, **values, created_at=now, updated_at=now)
    else:
        record.update_from_dict({**values, "updated_at": now})
        await record.save()


_DELETE_INSTANCE = (
    "DELETE FROM homelab_api_instance WHERE id = ?",
    "DELETE FROM homelab_instance WHERE id = ?",
)
_PURGE_INSTANCE = (
    "DELETE FROM homelab_head WHERE series_id IN"
    " (SELECT id FROM homelab_series WHERE instance_id = ?)",
    "DELETE FROM homelab_chunk WHERE series_id IN"
    " (SELECT id FROM homelab_series WHERE instance_id = ?)",
    "DELETE FROM homelab_series WHERE instance_id = ?",
    "DELETE FROM homelab_execution WHERE instance_id = ?",
    "DELETE FROM homelab_health_transition WHERE instance_id = ?",
)


class Store:
    """All database work of a hub, in a Tortoise context of its own.

    Every method enters the store's context only for its own duration, so an application
    that uses Tortoise with its own models and connections is not disturbed. A database
    that fails (unreachable, locked, full, closed) raises :class:`StoreError` from every
    method, with the driver's error as its cause.
    """

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        #: Removes the URL's password from messages (also from a driver's reason).
        self._redact = Redactor(url_secrets(self.url))
        self.dialect: Dialect = dialect_of(self.url)
        self.connection_name = f"homelab_{self.dialect.name}"
        self._context = TortoiseContext()
        self._series = SeriesIds(self.dialect)
        self.samples_written = 0
        self._open = False

    # -- lifecycle -----------------------------------------------------------------------

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make the store's Tortoise context current for the code inside."""
        token = _tortoise_context.set(self._context)
        try:
            yield
        finally:
            _tortoise_context.reset(token)

    @contextlib.contextmanager
    def using(self, doing: str) -> Iterator[None]:
        """:meth:`active`, with the database's failures raised as :class:`StoreError`.

        ``doing`` says what failed, for the message ("read the executions").
        """
        redact = self._redact
        if not self._open:
            raise StoreError(redact(f"cannot {doing}: the store at {self.url} is not open"))
        with self.active():
            try:
                yield
            except StoreError:
                raise
            except Exception as exc:
                if not faults.is_database_error(exc):
                    raise
                raise StoreError(
                    redact(f"cannot {doing}: the store at {self.url} failed: {faults.reason(exc)}")
                ) from exc

    @property
    def connection(self) -> BaseDBAsyncClient:
        """The store's database client (use inside :meth:`active`)."""
        return self._context.db(self.connection_name)

    async def open(self) -> None:
        """Connect and bring the schema up to date with the built-in migrations."""
        config = _tortoise_config(self.connection_name, self.url)
        _check_sqlite_directory(self.url)
        with self.active():
            try:
                with anyio.fail_after(OPEN_TIMEOUT):
                    await self._context.init(config=config)
                    await self._migrate(MigrationExecutor(self.connection, config["apps"]))
                    await self._check_layout()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await self._context.close_connections()
                reason = (
                    f"no answer within {OPEN_TIMEOUT:g} s"
                    if isinstance(exc, TimeoutError)
                    else str(exc) or type(exc).__name__
                )
                # The URL's password is redacted, also from the driver's reason.
                raise StoreError(
                    self._redact(f"cannot open the store at {self.url}: {reason}")
                ) from exc
        self._open = True

    async def _migrate(self, executor: MigrationExecutor) -> None:
        """Apply the migrations; on PostgreSQL, one store at a time.

        The nodes of a cluster may start together on a new database: without the lock,
        each would create the same tables, and all but one would fail. The lock is a
        session lock held on a connection of its own while the migrations run on others.
        """
        if self.dialect.name != "postgres":
            await executor.migrate()
            return
        async with self.connection.acquire_connection() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await executor.migrate()
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def _check_layout(self) -> None:
        _, rows = await self.connection.execute_query(
            self.dialect.q("SELECT value FROM homelab_meta WHERE key = ?"), ["layout"]
        )
        layout = int(rows[0][0]) if rows else LAYOUT
        if layout > LAYOUT:
            raise StoreError(
                f"its tables have layout {layout}, made by a later release of homelab-core;"
                f" this release reads layout {LAYOUT} and would misread them. Run the release"
                " that made the store (or a later one), or restore a backup made before it"
            )

    @contextlib.asynccontextmanager
    async def transaction(self, doing: str) -> AsyncIterator[BaseDBAsyncClient]:
        """A transaction on the store's connection, failures raised as for :meth:`using`."""
        with self.using(doing):
            async with compat.tortoise_transaction(self.connection_name) as conn:
                yield conn

    async def close(self) -> None:
        """Close the store's connections."""
        if not self._open:
            return
        self._open = False
        with self.active():
            await self._context.close_connections()

    async def ping(self) -> bool:
        """Whether the database answers, within ``PING_TIMEOUT`` seconds."""
        if not self._open:
            return False
        try:
            with self.active(), anyio.fail_after(PING_TIMEOUT):
                await self.connection.execute_query("SELECT 1")
        except Exception:
            return False
        return True

    # -- instances -----------------------------------------------------------------------

    async def instance_states(self) -> dict[str, StoredInstance]:
        """The persisted state of every instance the store knows."""
        with self.using("read the instances"):
            rows = await models.InstanceRecord.all().values("id", "enabled", "config_enabled")
        return {r["id"]: StoredInstance(r["enabled"], r["config_enabled"]) for r in rows}

    async def save_instance(
        self,
        instance_id: str,
        *,
        type_name: str,
        enabled: bool,
        config_enabled: bool,
        config: Mapping[str, Any],
        interval: float,
    ) -> None:
        """Create or update an instance's row."""
        with self.using(f"save instance {instance_id!r}"):
            await models.InstanceRecord.update_or_create(
                id=instance_id,
                defaults={
                    "type": type_name,
                    "enabled": enabled,
                    "config_enabled": config_enabled,
                    "config": dict(config),
                    "interval": interval,
                    "updated_at": time.time(),
                },
            )

    async def api_instances(self) -> dict[str, dict[str, Any]]:
        """Instances created through the API: id -> the table they were made with."""
        with self.using("read the instances made through the API"):
            rows = await models.ApiInstanceRecord.all().order_by("created_at", "id")
        return {r.id: dict(r.body) for r in rows}

    async def save_api_instance(
        self, instance_id: str, type_name: str, body: Mapping[str, Any]
    ) -> None:
        """Store (or replace) the table of an instance created through the API."""
        with self.using(f"save instance {instance_id!r}"):
            values = {"type": type_name, "body": dict(body)}
            await save_dated(models.ApiInstanceRecord, instance_id, values, time.time())

    async def delete_instance(self, instance_id: str, *, purge: bool = False) -> None:
        """Forget an instance: its row (and its API table); with ``purge``, its history too
        (series, samples, rollups, executions, health transitions)."""
        with self.using(f"delete instance {instance_id!r}"):
            async with compat.tortoise_transaction(self.connection_name) as conn:
                for query in _DELETE_INSTANCE + (_PURGE_INSTANCE if purge else ()):
                    await conn.execute_query(self.dialect.q(query), [instance_id])

    async def set_enabled(self, instance_id: str, enabled: bool) -> None:
        """Persist an instance's enabled state."""
        with self.using(f"save the enabled state of {instance_id!r}"):
            await models.InstanceRecord.filter(id=instance_id).update(
                enabled=enabled, updated_at=time.time()
            )

    # -- writes ----------------------------------------------------------------------------

    async def write(
        self,
        samples: Sequence[tuple[str, Sequence[Metric]]],
        executions: Sequence[Execution] = (),
        transitions: Sequence[tuple[str, Health, Health]] = (),
    ) -> int:
        """Write a batch in one transaction; returns the number of samples written.

        Nothing of the batch is written if it fails: a :class:`StoreError` whose cause is
        the driver's error (see :mod:`.faults` for what it means), or the driver's error
        itself for a value it cannot encode.
        """
        created: list[SeriesKey] = []
        try:
            with self.using("write"):
                rows = await self._write(samples, executions, transitions, created)
        except BaseException:
            self._series.forget(created)
            raise
        self.samples_written += len(rows)
        return len(rows)

    async def _write(
        self,
        samples: Sequence[tuple[str, Sequence[Metric]]],
        executions: Sequence[Execution],
        transitions: Sequence[tuple[str, Health, Health]],
        created: list[SeriesKey],
    ) -> list[tuple[Any, ...]]:
        async with compat.tortoise_transaction(self.connection_name) as conn:
            rows = await self._series.sample_rows(conn, samples, created)
            if rows:
                await insert_rows(conn, self.dialect, "homelab_head", "series_id, ts, value", rows)
            if executions:
                await insert_rows(
                    conn,
                    self.dialect,
                    "homelab_execution",
                    ", ".join(EXECUTION_COLUMNS),
                    [execution_row(e) for e in executions],
                )
            if transitions:
                await insert_rows(
                    conn,
                    self.dialect,
                    "homelab_health_transition",
                    "instance_id, ts, old_state, new_state, message",
                    [
                        (iid, new.since, old.state.value, new.state.value, new.message)
                        for iid, old, new in transitions
                    ],
                )
        return rows

    # -- reads -----------------------------------------------------------------------------

    async def series(self, instance_id: str, name: str | None = None) -> list[SeriesInfo]:
        """The stored series of an instance, optionally of one metric name."""
        with self.using("read the series"):
            query = models.SeriesRecord.filter(instance_id=instance_id)
            if name is not None:
                query = query.filter(name=name)
            rows = await query.order_by("name", "labels").values(
                "id", "instance_id", "name", "labels", "unit"
            )
        return [
            SeriesInfo(r["id"], r["instance_id"], r["name"], json.loads(r["labels"]), r["unit"])
            for r in rows
        ]

    async def executions(
        self,
        instance_id: str | None = None,
        *,
        status: str | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[Execution]:
        """Executions, newest first; ``before`` is an execution id to page from."""
        filters: dict[str, Any] = {}
        if instance_id is not None:
            filters["instance_id"] = instance_id
        if status is not None:
            filters["status"] = status
        if before is not None:
            filters["id__lt"] = before
        with self.using("read the executions"):
            query = models.ExecutionRecord.filter(**filters).order_by("-id").limit(limit)
            rows = await query.values("id", *EXECUTION_COLUMNS)
        return [Execution(**row) for row in rows]

    async def health_transitions(self, instance_id: str) -> list[tuple[float, str, str, str]]:
        """(time, old state, new state, message) of an instance, oldest first."""
        with self.using("read the health transitions"):
            rows = await models.HealthTransitionRecord.filter(instance_id=instance_id).order_by(
                "id"
            )
        return [(r.ts, r.old_state, r.new_state, r.message) for r in rows]

    async def health_history(
        self, instance_id: str, *, limit: int = 100, before: int | None = None
    ) -> list[HealthTransition]:
        """An instance's health transitions, newest first; ``before`` is an id to page from."""
        filters: dict[str, Any] = {"instance_id": instance_id}
        if before is not None:
            filters["id__lt"] = before
        with self.using("read the health history"):
            rows = await (
                models.HealthTransitionRecord.filter(**filters)
                .order_by("-id")
                .limit(limit)
                .values("id", "ts", "old_state", "new_state", "message")
            )
        return [HealthTransition(**row) for row in rows]

    async def health_spans(
        self, instance_ids: Sequence[str], *, since: float
    ) -> dict[str, list[tuple[float, str]]]:
        """(time, new state) of each instance's transitions from ``since`` on, led by its
        last transition before ``since`` (the state the period starts in), oldest first;
        one query per thousand instances, and no older transition is read."""
        found: dict[str, list[tuple[float, str]]] = {i: [] for i in instance_ids}
        ids = list(found)
        for start in range(0, len(ids), _SPAN_CHUNK):
            chunk = ids[start : start + _SPAN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = await self.fetch(
                "SELECT t.id, t.instance_id, t.ts, t.new_state FROM homelab_health_transition t"
                f" WHERE t.instance_id IN ({marks}) AND t.ts >= ?"
                " UNION ALL"
                " SELECT t.id, t.instance_id, t.ts, t.new_state FROM homelab_health_transition t"
                " JOIN (SELECT MAX(id) AS id FROM homelab_health_transition"
                f" WHERE instance_id IN ({marks}) AND ts < ? GROUP BY instance_id) last"
                " ON t.id = last.id"
                " ORDER BY 2, 3, 1",
                [*chunk, since, *chunk, since],
            )
            for row in rows:
                found[row["instance_id"]].append((float(row["ts"]), row["new_state"]))
        return found

    async def execution_counts(self, *, since: float) -> dict[str, int]:
        """How many executions of each status started at or after ``since``."""
        rows = await self.fetch(
            "SELECT status, COUNT(*) AS n FROM homelab_execution WHERE started_at >= ?"
            " GROUP BY status",
            [since],
        )
        return {r["status"]: int(r["n"]) for r in rows}

    async def count_samples(self, since: float | None = None, until: float | None = None) -> int:
        """The number of raw samples held (in the head and in raw chunks); with ``since``
        or ``until``, of those whose time is in [``since``, ``until``)."""
        if since is None and until is None:
            rows = await self.fetch(
                "SELECT (SELECT COUNT(*) FROM homelab_head)"
                " + (SELECT COALESCE(SUM(count), 0) FROM homelab_chunk WHERE resolution = 0)"
                " AS n"
            )
            return int(rows[0]["n"])
        lo = -math.inf if since is None else since
        hi = math.inf if until is None else until
        [head] = await self.fetch(
            "SELECT COUNT(*) AS n FROM homelab_head WHERE ts >= ? AND ts < ?", [lo, hi]
        )
        found = int(head["n"])
        for row in await self.fetch(
            "SELECT first_ts, last_ts, count, data FROM homelab_chunk"
            " WHERE resolution = 0 AND last_ts >= ? AND first_ts < ?",
            [lo, hi],
        ):
            if row["first_ts"] >= lo and row["last_ts"] < hi:
                found += int(row["count"])
            else:  # a chunk across an end of the range: its samples are counted one by one
                ts, _ = chunk_codec.decode(bytes(row["data"]))
                found += int(((ts >= lo) & (ts < hi)).sum())
        return found

    async def chunks(
        self, series_ids: Sequence[int], since: float, until: float, resolution: int = 0
    ) -> list[tuple[int, bytes]]:
        """(series id, encoded data) of the chunks of ``series_ids`` at ``resolution`` (0:
        raw samples; 60, 3600: rollups) that hold times in [``since``, ``until``), by series
        and time (decode them with :mod:`.chunks`)."""
        if not series_ids:
            return []
        marks = ", ".join("?" * len(series_ids))
        rows = await self.fetch(
            f"SELECT series_id, data FROM homelab_chunk WHERE series_id IN ({marks})"
            # A window is at most a day: the index on (series_id, resolution, start) finds
            # them.
            " AND resolution = ? AND start > ? AND start < ? AND last_ts >= ? AND first_ts < ?"
            " ORDER BY series_id, first_ts",
            [*series_ids, resolution, since - 86400.0, until, since, until],
        )
        return [(int(r["series_id"]), bytes(r["data"])) for r in rows]

    async def fetch(self, query: str, values: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a read query (``?`` placeholders) on the store's connection."""
        with self.using("read"):
            return await self.connection.execute_query_dict(self.dialect.q(query), list(values))

    async def execute(self, query: str, values: Sequence[Any] = ()) -> int:
        """Run a write statement (``?`` placeholders); returns the rows affected."""
        with self.using("write"):
            count, _ = await self.connection.execute_query(self.dialect.q(query), list(values))
        return count
