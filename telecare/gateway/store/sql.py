"""``store.sql``: one small query API both backends expose, so SQL is written once.

Every store (``SqliteStore``, ``PostgresStore``, ``DurableStore``) has ``store.sql``::

    rows = await store.sql.fetch_all("SELECT a, b FROM t WHERE c = ? AND d < ?", c, d)
    row = await store.sql.fetch_one("SELECT a FROM t WHERE c = ?", c)   # or None
    n = await store.sql.execute("UPDATE t SET a = ? WHERE c = ?", a, c)  # rowcount
    n = await store.sql.execute_many("INSERT INTO t (a, c) VALUES (?, ?)", [(1, 2), (3, 4)])
    ns = await store.sql.execute_each("INSERT ... ON CONFLICT DO NOTHING", rows)  # [0, 1, ...]
    async with store.sql.transaction() as tx:      # all or nothing
        row = await tx.fetch_one(...)

Rows are plain tuples. Each call outside ``transaction()`` is its own transaction. A
transaction that raises is rolled back, one that returns is committed. Inside it use
only ``tx``: on SQLite the transaction holds the store's one connection, so using
``store.sql`` (or a store method) inside it raises ``RuntimeError`` rather than deadlock;
on PostgreSQL it would run on another connection and not see the transaction's writes.

SQL for both dialects (SQLite 3.35+, PostgreSQL 14+)
    * Placeholders are ``?``, never ``%s`` (a ``?`` in a single-quoted literal is left
      alone; ``%`` needs no escaping; PostgreSQL's jsonb ``?`` operators are out).
    * Casts: ``CAST(? AS TEXT)``, never ``?::text``; a parameter only compared with
      ``IS NULL`` needs one for PostgreSQL to know its type.
    * ``INSERT ... ON CONFLICT (key) DO UPDATE SET col = excluded.col``, ``ON CONFLICT
      DO NOTHING`` (``execute`` then returns 0 for a duplicate) and ``RETURNING`` work on
      both as written.
    * Migration column types: timestamps ``timestamptz`` / ``TEXT``; booleans
      ``boolean`` / ``INTEGER``; JSON ``jsonb`` / ``TEXT``.
    * What differs goes through ``store.sql.dialect`` (:class:`Dialect`, the only place
      that knows): ``name``, ``time_bucket(column, width)`` (bucket start, aligned to
      2000-01-01T00:00Z), ``json_merge(column)``, ``any_of(column)`` (against a
      ``TextArray`` parameter), ``for_update``, ``serialise(name)``.

Values
    * ``datetime``: pass aware datetimes (a naive one raises ``TypeError``); they come
      back as aware UTC datetimes on both. SQLite stores them as TEXT in the one
      sortable form ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (so ``<``, ``ORDER BY``, ``MAX``
      work) and any TEXT of the form ``YYYY-MM-DDTHH:MM:SS[.f]Z`` is read back as a
      datetime, so store nothing else in that form.
    * ``bool``: SQLite returns ``0``/``1``, so read with ``bool(v)``.
    * JSON: pass a ``dict`` or ``list`` (``jsonb`` in PostgreSQL, so the column must be
      ``jsonb``); read with :func:`json_value` (parsed in PostgreSQL, text in SQLite).
    * ``bytes`` (``bytea`` / ``BLOB``), ``int``, ``float``, ``str``, ``None``: as is.

Errors are the driver's (``sqlite3.IntegrityError``, ``psycopg.errors.UniqueViolation``
...); ``gateway.store.errors.is_unavailable`` says whether one means the database is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, TypeVar, cast

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from telecare.gateway.turns import WriteOrder

__all__ = [
    "BUCKET_ORIGIN",
    "SQLITE",
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


class Queries:
    """What a caller runs SQL through (``store.sql`` and a transaction's ``tx``): these
    methods on one primitive each backend provides, ``_do(op, sql, params)``."""

    async def _do(self, op: str, sql: str, params: Any) -> Any:
        raise NotImplementedError

    async def fetch_all(self, sql: str, *params: object) -> list[Row]:
        return cast(list[Row], await self._do("all", sql, params))

    async def fetch_one(self, sql: str, *params: object) -> Row | None:
        return cast(Row | None, await self._do("one", sql, params))

    async def execute(self, sql: str, *params: object) -> int:
        """Run a statement; return how many rows it inserted, updated or deleted."""
        return cast(int, await self._do("exec", sql, params))

    async def execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> int:
        """One statement per parameter row, all in one transaction; rows changed in all
        (in a pipelined transaction: not known, ``0``)."""
        return cast(int, await self._do("many", sql, rows))

    async def execute_each(self, sql: str, rows: Iterable[Sequence[object]]) -> list[int]:
        """Like :meth:`execute_many`, but how many rows each parameter row changed (one
        trip to SQLite's worker thread: a batch of idempotent inserts says which were new)."""
        return cast(list[int], await self._do("each", sql, rows))

    async def send(self, sql: str, *params: object) -> None:
        """Run a statement whose result nobody reads: in a pipelined transaction it is
        sent without waiting (its error, if any, is raised by the next read or the
        commit); elsewhere it is :meth:`execute`."""
        await self._do("send", sql, params)


class Sql(Queries):
    """``store.sql``: :class:`Queries` plus transactions and the dialect."""

    dialect: Dialect

    def transaction(self, *, pipelined: bool = False) -> AbstractAsyncContextManager[Queries]:
        """``async with sql.transaction() as tx``: ``tx``'s statements commit together.

        ``pipelined``: on PostgreSQL the statements are sent in pipeline mode, so that
        ``BEGIN``, every :meth:`~Queries.send` and ``execute_many`` up to the next read
        (``fetch_one``, ``fetch_all``, ``execute``) and ``COMMIT`` travel together: one
        round trip per read plus one for the commit (SQLite: no difference)."""
        raise NotImplementedError


def iso(ts: datetime) -> str:
    """The sortable UTC text form SQLite stores timestamps in (``isoformat``: a third
    less CPU than ``strftime``, and the year always four digits)."""
    if ts.tzinfo is not UTC:
        ts = _aware(ts).astimezone(UTC)
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"  # less "+00:00"


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
    """Everything the two SQL dialects do differently, and nothing else (the fields'
    defaults are PostgreSQL's; :data:`SQLITE` is SQLite's)."""

    name: Literal["sqlite", "postgres"] = "postgres"
    #: PostgreSQL's bucketing function (``date_bin``, or TimescaleDB's ``time_bucket``
    #: qualified with the extension's schema).
    bucket_function: str = "date_bin"
    #: `` FOR UPDATE`` where rows can be locked (PostgreSQL); SQLite's one writer
    #: (``BEGIN IMMEDIATE``) already serialises a transaction.
    for_update: str = " FOR UPDATE"
    #: The JSON column type (``SELECT CAST(? AS {json_type})`` gives a JSON value back as
    #: the database will store it).
    json_type: str = "jsonb"
    #: First statement of a read-only transaction that must see one snapshot (SQLite's
    #: transaction already does).
    snapshot: str | None = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

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

    def serialise(self, name: str) -> str | None:
        """A statement that makes transactions on ``name`` take turns until they end
        (a per-schema advisory lock in PostgreSQL); ``None`` in SQLite, where a
        transaction already holds the one write lock."""
        if self.name == "sqlite":
            return None
        return f"SELECT pg_advisory_xact_lock(hashtext('{name}:' || current_schema()))"

    def any_of(self, column: str) -> str:
        """``column`` equal to any element of a :class:`TextArray` parameter ``?``:
        ``WHERE {any_of('alert_id')}``."""
        if self.name == "sqlite":
            return f"{column} IN (SELECT value FROM json_each(?))"
        return f"{column} = ANY(?)"

    def json_merge(self, column: str) -> str:
        """``column`` (a JSON object) with the keys of a JSON object parameter ``?``
        merged in: ``UPDATE t SET detail = {json_merge('detail')} WHERE ...``."""
        if self.name == "sqlite":
            return f"json_patch({column}, ?)"
        return f"{column} || CAST(? AS jsonb)"

    def params(self, values: Sequence[object]) -> tuple[object, ...]:
        """PostgreSQL parameters as psycopg takes them (SQLite's: the adapters below)."""
        return tuple(f(v) if (f := _PG_PARAM.get(type(v))) else v for v in values)


SQLITE = Dialect("sqlite", for_update="", json_type="TEXT", snapshot=None)


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


#: The one form SQLite timestamps are stored in (``iso``), read back as datetimes.
_TS_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def _sqlite_value(value: Any) -> Any:
    if type(value) is str and value[-1:] == "Z" and _TS_TEXT.fullmatch(value):
        return datetime.fromisoformat(value)
    return value


def _sqlite_row(_cursor: sqlite3.Cursor, row: Sequence[Any]) -> Row:
    return tuple(map(_sqlite_value, row))


def sqlite_rows(columns: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """``executemany`` rows from their columns, each converted at once: a ``map`` of the
    adapter of a column's one type (``iso``, JSON), an ``IntEnum`` column's to ``int``.
    sqlite3's adapters, called per value, cost +20 % CPU on a batch of readings, and
    so does transposing rows already made (an iterator per row)."""
    return list(zip(*map(_sqlite_column, columns), strict=True))


def _sqlite_column(values: Sequence[Any]) -> Iterable[Any]:
    if len(kinds := set(map(type, values))) != 1:
        return values
    kind = kinds.pop()
    enum = kind is not int and issubclass(kind, int)  # bound as its number anyway
    adapt = _ADAPT.get(kind, int if enum else None)
    return values if adapt is None else map(adapt, values)


# SQLite's parameters are converted by sqlite3 itself (in C, process-wide) via adapters.
_ADAPT: dict[type, Callable[[Any], str]] = {datetime: iso, dict: json.dumps, list: json.dumps}
for _type, _adapt in (*_ADAPT.items(), (TextArray, json.dumps)):
    sqlite3.register_adapter(_type, _adapt)
_PG_PARAM: dict[type, Callable[[Any], object]] = {TextArray: list, dict: Jsonb, list: Jsonb}
_PG_PARAM[datetime] = _aware


# -- SQLite ----------------------------------------------------------------------------
#: The ``SqliteSql`` whose transaction the current task is in (to refuse a deadlock).
_in_transaction: ContextVar[SqliteSql | None] = ContextVar("telecare_sqlite_tx", default=None)


class SqliteSql(Sql):
    """The SQLite side: one connection, used in a worker thread under one lock, taking
    turns with the process's other connections to the database (``order``).

    The store opens it (``open(connection)``) and closes it; ``run(fn)`` runs
    ``fn(connection)`` in a worker thread under the lock, for the store's own code."""

    def __init__(self, order: WriteOrder | None = None, *, urgent: bool = False) -> None:
        self.dialect = SQLITE
        self.order = order or WriteOrder()
        self.urgent = urgent
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def open(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = _sqlite_row  # rows as tuples, timestamps as datetimes
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
        conn = self._connection()
        async with self._lock:
            await self.order.take(self.urgent)
            try:
                return await _in_thread(fn, conn)
            finally:
                self.order.give_back()

    async def _do(self, op: str, sql: str, params: Any) -> Any:
        return await self.run(lambda c: _sqlite_do(c, op, sql, params))

    @asynccontextmanager
    async def transaction(self, *, pipelined: bool = False) -> AsyncIterator[Queries]:
        conn = self._connection()
        async with self._lock:
            await self.order.take(self.urgent)
            try:
                await _in_thread(lambda c: c.execute("BEGIN IMMEDIATE"), conn)
                token = _in_transaction.set(self)
                try:
                    yield _SqliteTx(conn)
                except BaseException:
                    await asyncio.shield(_in_thread(lambda c: c.execute("ROLLBACK"), conn))
                    raise
                finally:
                    _in_transaction.reset(token)
                await _in_thread(lambda c: c.execute("COMMIT"), conn)
            finally:
                self.order.give_back()


@dataclass(frozen=True, slots=True)
class _SqliteTx(Queries):
    """The statements of one SQLite transaction (the lock is already held)."""

    conn: sqlite3.Connection

    async def _do(self, op: str, sql: str, params: Any) -> Any:
        return await _in_thread(lambda c: _sqlite_do(c, op, sql, params), self.conn)


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


def _sqlite_do(conn: sqlite3.Connection, op: str, sql: str, params: Any) -> Any:
    if op in ("many", "each") and not conn.in_transaction:  # one transaction, as documented
        conn.execute("BEGIN IMMEDIATE")
        with conn:  # committed, or rolled back if it raises
            return _sqlite_do(conn, op, sql, params)
    if op == "many":
        return conn.executemany(sql, params).rowcount
    if op == "each":
        return [conn.execute(sql, row).rowcount for row in params]
    cur = conn.execute(sql, params)
    if op in ("exec", "send"):
        return cur.rowcount
    return cur.fetchone() if op == "one" else cur.fetchall()


# -- PostgreSQL ------------------------------------------------------------------------
class PostgresSql(Sql):
    """The PostgreSQL side: a statement per pooled connection, a transaction on one."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        #: Replaced by the store once it knows whether TimescaleDB is in use.
        self.dialect = Dialect()

    async def _do(self, op: str, sql: str, params: Any) -> Any:
        if op in ("many", "each"):
            async with self.transaction() as tx:  # one transaction, as documented
                return await tx._do(op, sql, params)
        async with self._pool.connection() as conn:
            return await _PgTx(conn, self.dialect)._do(op, sql, params)

    @asynccontextmanager
    async def transaction(self, *, pipelined: bool = False) -> AsyncIterator[Queries]:
        async with self._pool.connection() as conn:
            if not pipelined:
                async with conn.transaction():
                    yield _PgTx(conn, self.dialect)
                return
            # BEGIN and COMMIT as statements: psycopg's transaction() syncs on entering
            # and twice on leaving a pipeline, three round trips of its own.
            try:
                async with conn.pipeline() as pipeline:
                    await conn.execute(b"BEGIN")
                    yield _PgTx(conn, self.dialect, pipeline)
                    await conn.execute(b"COMMIT")
            except BaseException:
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):  # else the pool discards it
                        await conn.execute(b"ROLLBACK")
                raise


@dataclass(frozen=True, slots=True)
class _PgTx(Queries):
    """Statements on one PostgreSQL connection (in a transaction, or autocommit); with a
    ``pipeline``, in pipeline mode (``Sql.transaction(pipelined=True)``)."""

    conn: psycopg.AsyncConnection[TupleRow]
    dialect: Dialect
    pipeline: psycopg.AsyncPipeline | None = None

    async def _do(self, op: str, sql: str, params: Any) -> Any:
        if op == "each":
            return [await self._do("exec", sql, row) for row in params]
        query = _pyformat(sql).encode()
        if op == "many":
            rows = [self.dialect.params(r) for r in params]
            if not rows:
                return 0
            async with self.conn.cursor() as cur:
                await cur.executemany(query, rows)
                return 0 if self.pipeline else cur.rowcount
        cur = await self.conn.execute(query, self.dialect.params(params))
        if op == "send":
            return None
        if op == "exec":
            if self.pipeline is not None:
                await self.pipeline.sync()  # the count is known once the server answered
            return cur.rowcount
        return await (cur.fetchone() if op == "one" else cur.fetchall())
