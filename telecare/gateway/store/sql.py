"""``store.sql``: one small query API both backends expose, so SQL is written once.

Every store (``SqliteStore``, ``PostgresStore``, and ``DurableStore`` passing its
store's through) has a ``sql`` attribute with:

    rows = await store.sql.fetch_all("SELECT a, b FROM t WHERE c = ? AND d < ?", c, d)
    row = await store.sql.fetch_one("SELECT a FROM t WHERE c = ?", c)   # or None
    n = await store.sql.execute("UPDATE t SET a = ? WHERE c = ?", a, c)  # rowcount
    n = await store.sql.execute_many("INSERT INTO t (a, c) VALUES (?, ?)", [(1, 2), (3, 4)])
    async with store.sql.transaction() as tx:      # all or nothing
        await tx.execute(...)
        row = await tx.fetch_one(...)

Rows are plain tuples. Each call outside ``transaction()`` is its own transaction
(autocommit). Inside ``transaction()`` use only ``tx``: on SQLite the transaction holds
the store's one connection, so calling ``store.sql`` (or a store method) from inside it
raises ``RuntimeError`` rather than deadlock; on PostgreSQL it would run on another
connection and not see the transaction's writes. A transaction that raises is rolled
back; one that returns is committed.

Writing SQL that runs on both dialects (SQLite 3.35+, PostgreSQL 14+)
    * Placeholders are ``?`` (positional), never ``%s``. A ``?`` inside a single-quoted
      literal is left alone; ``%`` needs no escaping. So PostgreSQL's jsonb ``?``
      operators are unavailable: use ``jsonb_exists(...)`` (PostgreSQL-only anyway).
    * Casts: ``CAST(? AS TEXT)``, never ``?::text``. A parameter only compared with
      ``IS NULL`` needs a cast for PostgreSQL to know its type.
    * Upsert: ``INSERT ... ON CONFLICT (key) DO UPDATE SET col = excluded.col`` and
      ``ON CONFLICT DO NOTHING`` (then ``execute`` returns 0 for a duplicate) and
      ``RETURNING`` work on both as written.
    * Column types in migrations: timestamps are ``timestamptz`` / ``TEXT``; booleans
      ``boolean`` / ``INTEGER``; JSON ``jsonb`` / ``TEXT``.
    * What differs goes through ``store.sql.dialect`` (the only place that knows):
      ``dialect.name`` (``"sqlite"`` or ``"postgres"``), ``dialect.time_bucket(column,
      width)`` (bucket start, aligned to 2000-01-01T00:00Z), ``dialect.json_merge(column)``
      (the column with a JSON object parameter ``?`` merged in). Anything else that
      differs belongs in :class:`Dialect`, not in a caller.

Values
    * ``datetime``: pass aware datetimes (a naive one raises ``TypeError``); they come
      back as aware UTC datetimes on both backends. SQLite stores them as TEXT in the
      one sortable form ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (so ``<``, ``ORDER BY`` and
      ``MAX`` work); on reading, any TEXT value of the form ``YYYY-MM-DDTHH:MM:SS[.f]Z``
      is returned as a datetime, so store nothing else in that form. An SQL expression
      on a timestamp (``MIN``, ``MAX``, a ``CASE``) comes back as a datetime as long as
      its value is a stored timestamp.
    * ``bool``: pass ``bool``; SQLite returns ``0``/``1``, so read with ``bool(v)``.
    * JSON: pass a ``dict`` or ``list`` (sent as ``jsonb`` in PostgreSQL, so the column
      must be ``jsonb``; TEXT in SQLite); read with :func:`json_value`, which accepts
      either backend's form (parsed in PostgreSQL, text in SQLite).
    * ``bytes`` (``bytea`` / ``BLOB``), ``int``, ``float``, ``str``, ``None``: as is.

Errors: integrity errors are the driver's (``sqlite3.IntegrityError``,
``psycopg.errors.UniqueViolation`` ...); ``gateway.store.errors.is_unavailable``
says whether an error means the database is away.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, Protocol, TypeVar

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

__all__ = [
    "BUCKET_ORIGIN",
    "Dialect",
    "PostgresSql",
    "Queries",
    "Row",
    "Sql",
    "SqliteSql",
    "TextArray",
    "iso",
    "json_value",
]

Row = tuple[Any, ...]
_T = TypeVar("_T")

#: Time buckets (``Dialect.time_bucket``) are aligned to this instant on both backends.
BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
_ORIGIN_EPOCH = int(BUCKET_ORIGIN.timestamp())


class Queries(Protocol):
    """What a caller runs SQL through (``store.sql`` and a transaction's ``tx``)."""

    async def fetch_all(self, sql: str, *params: object) -> list[Row]:
        """Every row the statement returns."""
        ...

    async def fetch_one(self, sql: str, *params: object) -> Row | None:
        """The first row, or ``None`` when there is none."""
        ...

    async def execute(self, sql: str, *params: object) -> int:
        """Run a statement; return how many rows it inserted, updated or deleted."""
        ...

    async def execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> int:
        """Run one statement once per parameter row, all in one transaction; return the
        rows changed in all."""
        ...


class Sql(Queries, Protocol):
    """``store.sql``: :class:`Queries` plus transactions and the dialect."""

    @property
    def dialect(self) -> Dialect: ...

    def transaction(self) -> AbstractAsyncContextManager[Queries]:
        """``async with sql.transaction() as tx``: ``tx``'s statements commit together."""
        ...


def iso(ts: datetime) -> str:
    """The sortable UTC text form SQLite stores timestamps in."""
    if ts.tzinfo is None:
        raise TypeError(f"naive datetime {ts!r}: pass an aware (UTC) datetime")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_value(value: Any) -> Any:
    """A JSON column's value as Python (PostgreSQL gives it parsed, SQLite as text)."""
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


class TextArray(tuple[str, ...]):
    """A list of strings stored as ``text[]`` in PostgreSQL and JSON text in SQLite."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Dialect:
    """Everything the two SQL dialects do differently, and nothing else.

    ``bucket_function``: PostgreSQL's bucketing function (``date_bin``, or TimescaleDB's
    ``time_bucket`` qualified with the extension's schema)."""

    name: Literal["sqlite", "postgres"]
    bucket_function: str = "date_bin"

    def sql(self, text: str) -> str:
        """``text`` with ``?`` placeholders in this dialect's driver's style."""
        return text if self.name == "sqlite" else _pyformat(text)

    def time_bucket(self, column: str, width: timedelta) -> str:
        """An expression for the start of ``column``'s bucket of ``width`` (whole
        seconds, at least one), aligned to :data:`BUCKET_ORIGIN`; it reads back as an
        aware datetime. ``column`` is interpolated: pass a column name, never input."""
        seconds = int(width.total_seconds())
        if seconds < 1 or seconds != width.total_seconds():
            raise ValueError(f"bucket {width} must be a whole number of seconds (>= 1)")
        if self.name == "sqlite":
            return (
                f"strftime('%Y-%m-%dT%H:%M:%SZ', ((CAST(strftime('%s', {column}) AS INTEGER)"
                f" - {_ORIGIN_EPOCH}) / {seconds}) * {seconds} + {_ORIGIN_EPOCH}, 'unixepoch')"
            )
        return (
            f"{self.bucket_function}(make_interval(secs => {seconds}), {column},"
            " TIMESTAMPTZ '2000-01-01T00:00:00Z')"
        )

    @property
    def for_update(self) -> str:
        """`` FOR UPDATE`` where rows can be locked (PostgreSQL); SQLite's one writer
        (``BEGIN IMMEDIATE``) already serialises a transaction."""
        return "" if self.name == "sqlite" else " FOR UPDATE"

    @property
    def json_type(self) -> str:
        """The JSON column type (``SELECT CAST(? AS {json_type})`` gives a JSON value
        back as the database will store it)."""
        return "TEXT" if self.name == "sqlite" else "jsonb"

    @property
    def snapshot(self) -> str | None:
        """First statement of a read-only transaction that must see one snapshot
        (SQLite's transaction already does)."""
        if self.name == "sqlite":
            return None
        return "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

    def serialise(self, name: str) -> str | None:
        """A statement that makes transactions on ``name`` take turns until they end
        (a per-schema advisory lock in PostgreSQL); ``None`` in SQLite, where a
        transaction already holds the one write lock."""
        if self.name == "sqlite":
            return None
        return f"SELECT pg_advisory_xact_lock(hashtext('{name}:' || current_schema()))"

    def json_merge(self, column: str) -> str:
        """``column`` (a JSON object) with the keys of a JSON object parameter ``?``
        merged in: ``UPDATE t SET detail = {json_merge('detail')} WHERE ...``."""
        if self.name == "sqlite":
            return f"json_patch({column}, ?)"
        return f"{column} || CAST(? AS jsonb)"

    def param(self, value: object) -> object:
        """``value`` as this dialect's driver takes it."""
        if isinstance(value, TextArray):
            return json.dumps(list(value)) if self.name == "sqlite" else list(value)
        if isinstance(value, datetime):
            return iso(value) if self.name == "sqlite" else _aware(value)
        if isinstance(value, dict | list):
            return json.dumps(value) if self.name == "sqlite" else Jsonb(value)
        return value

    def params(self, values: Sequence[object]) -> tuple[object, ...]:
        return tuple(self.param(v) for v in values)


def _aware(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise TypeError(f"naive datetime {ts!r}: pass an aware (UTC) datetime")
    return ts


@lru_cache(maxsize=1024)
def _pyformat(text: str) -> str:
    """``?`` to ``%s`` and ``%`` to ``%%``, outside single-quoted literals for ``?``."""
    parts = text.split("'")
    for i, part in enumerate(parts):
        part = part.replace("%", "%%")
        parts[i] = part.replace("?", "%s") if i % 2 == 0 else part
    return "'".join(parts)


def _sqlite_value(value: Any) -> Any:
    """A stored value as the caller gets it: timestamp text becomes a datetime."""
    if (
        type(value) is str
        and 20 <= len(value) <= 30
        and value[-1] == "Z"
        and value[10] == "T"
        and value[4] == "-"
        and value[13] == ":"
    ):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def sqlite_row(row: Sequence[Any]) -> Row:
    return tuple(_sqlite_value(v) for v in row)


# -- SQLite ----------------------------------------------------------------------------
_SQLITE = Dialect("sqlite")
#: The ``SqliteSql`` whose transaction the current task is in (to refuse a deadlock).
_in_transaction: ContextVar[SqliteSql | None] = ContextVar("telecare_sqlite_tx", default=None)


class SqliteSql:
    """The SQLite side: one connection, used in a worker thread under one lock.

    The store opens it (``open(connection)``) and closes it; ``run(fn)`` runs
    ``fn(connection)`` in a worker thread under the lock, for the store's own code."""

    dialect = _SQLITE

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def open(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            async with self._lock:
                await asyncio.to_thread(conn.close)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteStore is not open; use 'async with SqliteStore(...)'")
        if _in_transaction.get() is self:
            raise RuntimeError("inside store.sql.transaction(): use its 'tx', not store.sql")
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """``fn(connection)`` in a worker thread, under the lock."""
        conn = self._connection()
        async with self._lock:
            return await _in_thread(fn, conn)

    async def fetch_all(self, sql: str, *params: object) -> list[Row]:
        return await self.run(lambda c: _fetch_all(c, sql, params))

    async def fetch_one(self, sql: str, *params: object) -> Row | None:
        return await self.run(lambda c: _fetch_one(c, sql, params))

    async def execute(self, sql: str, *params: object) -> int:
        return await self.run(lambda c: _execute(c, sql, params))

    async def execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> int:
        return await self.run(lambda c: _atomic(c, lambda: _execute_many(c, sql, rows)))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        conn = self._connection()
        async with self._lock:
            await _in_thread(lambda c: c.execute("BEGIN IMMEDIATE"), conn)
            token = _in_transaction.set(self)
            try:
                yield _SqliteTx(conn)
            except BaseException:
                _in_transaction.reset(token)
                await asyncio.shield(_in_thread(lambda c: c.execute("ROLLBACK"), conn))
                raise
            _in_transaction.reset(token)
            await _in_thread(lambda c: c.execute("COMMIT"), conn)


class _SqliteTx:
    """The statements of one SQLite transaction (the lock is already held)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def fetch_all(self, sql: str, *params: object) -> list[Row]:
        return await _in_thread(lambda c: _fetch_all(c, sql, params), self._conn)

    async def fetch_one(self, sql: str, *params: object) -> Row | None:
        return await _in_thread(lambda c: _fetch_one(c, sql, params), self._conn)

    async def execute(self, sql: str, *params: object) -> int:
        return await _in_thread(lambda c: _execute(c, sql, params), self._conn)

    async def execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> int:
        return await _in_thread(lambda c: _execute_many(c, sql, rows), self._conn)


async def _in_thread(fn: Callable[[sqlite3.Connection], _T], conn: sqlite3.Connection) -> _T:
    work = asyncio.ensure_future(asyncio.to_thread(fn, conn))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        # The worker thread runs on: keep the caller (and so the lock) until it is done,
        # or closing the store could close the connection under it (a crash in sqlite3).
        await asyncio.wait({work})
        if not work.cancelled():
            work.exception()  # retrieved: the caller was cancelled anyway
        raise


def _atomic(conn: sqlite3.Connection, fn: Callable[[], _T]) -> _T:
    """``fn()`` in one ``BEGIN IMMEDIATE`` transaction (the connection is autocommit)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> list[Row]:
    return [sqlite_row(r) for r in conn.execute(sql, _SQLITE.params(params)).fetchall()]


def _fetch_one(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> Row | None:
    row = conn.execute(sql, _SQLITE.params(params)).fetchone()
    return None if row is None else sqlite_row(row)


def _execute(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> int:
    return conn.execute(sql, _SQLITE.params(params)).rowcount


def _execute_many(conn: sqlite3.Connection, sql: str, rows: Iterable[Sequence[object]]) -> int:
    before = conn.total_changes
    conn.executemany(sql, (_SQLITE.params(r) for r in rows))
    return conn.total_changes - before


# -- PostgreSQL ------------------------------------------------------------------------
Connection = psycopg.AsyncConnection[TupleRow]


class PostgresSql:
    """The PostgreSQL side: a statement per pooled connection, a transaction on one."""

    def __init__(self, pool: AsyncConnectionPool, dialect: Dialect | None = None) -> None:
        self._pool = pool
        #: Replaced by the store once it knows whether TimescaleDB is in use.
        self.dialect = dialect or Dialect("postgres")

    async def fetch_all(self, sql: str, *params: object) -> list[Row]:
        async with self._pool.connection() as conn:
            return await _PgTx(conn, self.dialect).fetch_all(sql, *params)

    async def fetch_one(self, sql: str, *params: object) -> Row | None:
        async with self._pool.connection() as conn:
            return await _PgTx(conn, self.dialect).fetch_one(sql, *params)

    async def execute(self, sql: str, *params: object) -> int:
        async with self._pool.connection() as conn:
            return await _PgTx(conn, self.dialect).execute(sql, *params)

    async def execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            return await _PgTx(conn, self.dialect).execute_many(sql, rows)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        async with self._pool.connection() as conn, conn.transaction():
            yield _PgTx(conn, self.dialect)


class _PgTx:
    """Statements on one PostgreSQL connection (in a transaction, or autocommit)."""

    def __init__(self, conn: Connection, dialect: Dialect) -> None:
        self._conn = conn
        self._dialect = dialect

    async def fetch_all(self, sql: str, *params: object) -> list[Row]:
        cur = await self._conn.execute(_pyformat(sql).encode(), self._dialect.params(params))
        return await cur.fetchall()

    async def fetch_one(self, sql: str, *params: object) -> Row | None:
        cur = await self._conn.execute(_pyformat(sql).encode(), self._dialect.params(params))
        return await cur.fetchone()

    async def execute(self, sql: str, *params: object) -> int:
        cur = await self._conn.execute(_pyformat(sql).encode(), self._dialect.params(params))
        return cur.rowcount

    async def execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> int:
        params = [self._dialect.params(r) for r in rows]
        if not params:
            return 0
        async with self._conn.cursor() as cur:
            await cur.executemany(_pyformat(sql).encode(), params)
            return cur.rowcount
