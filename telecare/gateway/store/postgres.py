"""PostgreSQL backend through psycopg 3: the shared ``Store`` plus opening, migrating,
maintenance and faster batch writes (binary COPY, arrays) built from the table specs.

Modes (``mode``: ``timescaledb`` with hypertables and policies, the extension in a
schema of its own; ``postgres`` with monthly partitions), how a schema's mode is chosen
and kept: docs/storage.md, "Modes (PostgreSQL)".

Resources: an ``AsyncConnectionPool`` opened in ``__aenter__``; a connection idle for a
second or more is checked on checkout, so one broken by an outage is replaced (one given
back less than a second ago is not: a round trip per statement was 11 % of a fleet's
heartbeat work; ``PostgresStore._check``); every connection uses ``search_path =
<schema>, public`` and ``TimeZone = UTC``. ``OperationalError`` (server away)
propagates to the caller, which spools (``gateway.store.durable``).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import psycopg
import structlog
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from telecare.devices.model import AlarmEvent, Alert, Reading
from telecare.gateway.store import timescale
from telecare.gateway.store.base import Store
from telecare.gateway.store.errors import SchemaNotReady, TimescaleRequired
from telecare.gateway.store.migrations import RECORD, Migration, apply_pending, migrations_for
from telecare.gateway.store.roles import check_identifier, runtime_grants
from telecare.gateway.store.sql import Dialect, PostgresSql, Queries
from telecare.gateway.store.tables import ALERTS, EVENTS, READINGS, Table
from telecare.gateway.store.timescale import Extension

__all__ = ["PostgresStore"]


log = structlog.get_logger(__name__)

#: Tables partitioned by month in plain PostgreSQL mode.
PARTITIONED = ("readings", "news2_scores")
#: After a batch hits a duplicate, this many following batches take the de-duplicating
#: path directly (a redelivery or a spool replay usually brings several in a row).
_DEDUPE_BATCHES = 8
#: A pooled connection given back less than this many seconds ago is handed out without
#: the pool's check (its last use worked; a failed one is discarded by the pool).
_FRESH_S = 1.0
#: One row when the table ``?`` (``schema.table``) exists: asked first, as ``CREATE ...
#: IF NOT EXISTS`` checks the right to create before existence (a runtime role has none).
_EXISTS = "SELECT 1 WHERE to_regclass(CAST(? AS text)) IS NOT NULL"
_STAGE_DDL = "CREATE TEMP TABLE IF NOT EXISTS readings_stage (LIKE readings) ON COMMIT DELETE ROWS"


class PostgresStore(Store):
    sql: PostgresSql

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "telecare",
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 10.0,
        use_timescale: bool = True,
        timescale_schema: str = "timescaledb",
        partitions_ahead_months: int = 3,
        compress_after: timedelta = timedelta(days=7),
        retain_for: timedelta | None = timedelta(days=400),
        runtime_role: str | None = None,
        dead_letter_retention: timedelta | None = timedelta(days=30),
    ) -> None:
        # The schema goes into libpq ``options`` below: a space there would start another
        # server setting ("x -c log_statement=none"), so only plain identifiers pass.
        self.schema = check_identifier("PostgreSQL schema", schema)
        if runtime_role is not None:
            check_identifier("PostgreSQL runtime role", runtime_role)
        self.runtime_role = runtime_role
        if retain_for is not None and retain_for <= max(compress_after, timedelta(days=3)):
            raise ValueError(
                f"retain_for {retain_for} must exceed compress_after {compress_after} and the"
                " continuous aggregate's three-day refresh window"
            )
        self.dsn = dsn
        self.use_timescale = use_timescale
        self.timescale_schema = timescale_schema
        #: The TimescaleDB in use (set by ``migrate``); ``None`` in plain PostgreSQL mode.
        self.timescale: Extension | None = None
        self.partitions_ahead_months = partitions_ahead_months
        self.compress_after = compress_after
        self.retain_for = retain_for
        self.dead_letter_retention = dead_letter_retention
        self._dedupe_batches = 0
        self._returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._bad_returns = 0
        self.pool = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            name=f"telecare-{schema}",
            check=self._check,
            reset=self._given_back,
            kwargs={
                "options": f"-c search_path={schema},public -c TimeZone=UTC",
                "autocommit": True,
            },
        )
        #: The query API (``gateway.store.sql``); its dialect is set once the mode is known.
        self.sql = PostgresSql(self.pool)

    async def __aenter__(self) -> Self:
        await self.pool.open(wait=True, timeout=self.pool.timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()

    @property
    def mode(self) -> str:
        return "timescaledb" if self.timescale is not None else "postgres"

    async def _given_back(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The pool's ``reset`` (on return): when ``conn`` came back (:data:`_FRESH_S`)."""
        self._returned[conn] = time.monotonic()

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The pool's ``check`` (on checkout), skipped for a fresh one (:data:`_FRESH_S`)."""
        # A connection came back broken since the last checkout (the server went away):
        # every pooled connection is suspect, so each is checked again before use.
        bad = self.pool.get_stats().get("returns_bad", 0)
        if bad != self._bad_returns:
            self._bad_returns = bad
            self._returned.clear()
        if time.monotonic() - self._returned.get(conn, -_FRESH_S) >= _FRESH_S:
            await AsyncConnectionPool.check_connection(conn)

    # -- migrations ------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        """Create the schema, choose the mode (see ``_choose_mode``), apply the pending
        migrations of that mode, then the policies or the partitions."""
        q = self.sql
        if await q.fetch_one("SELECT 1 FROM pg_namespace WHERE nspname = ?", self.schema) is None:
            # CREATE SCHEMA checks rights before existence
            await q.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        await self._choose_mode(_variant((await self._applied()).values()))
        ts = self.timescale
        async with q.transaction() as tx:
            # One migrator at a time per schema.
            await tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", f"telecare:{self.schema}")

            async def apply(m: Migration) -> None:
                await tx.execute(ts.render(m.sql) if ts else m.sql)
                await tx.execute(RECORD, m.version, m.name)

            applied = await apply_pending(tx, "postgres", "timescale" if ts else "plain", apply)
            if ts is not None:
                await self._apply_policies(tx, ts)
            if self.runtime_role is not None:
                for grant in runtime_grants(self.schema, self.runtime_role):
                    await tx.execute(grant.as_string())
        if ts is None:
            await self.ensure_partitions(datetime.now(UTC))
        log.info(
            "store_mode",
            mode=self.mode,
            schema=self.schema,
            timescaledb=ts and f"{ts.version} in {ts.schema}",
            applied=applied,
        )
        return applied

    async def _applied(self) -> dict[int, str]:
        """The applied migrations of this schema, version to file name (none yet: empty)."""
        table = f"{self.schema}.schema_migrations"
        if await self.sql.fetch_one(_EXISTS, table) is None:
            return {}
        return {
            int(v): str(n)
            for v, n in await self.sql.fetch_all(f"SELECT version, name FROM {table}")
        }

    async def _choose_mode(self, recorded: str | None) -> None:
        """Set :attr:`timescale` (``None``: plain partitions) and the dialect to match. A
        schema keeps the mode it was created in (``recorded``): plain stays plain (even
        once TimescaleDB is available; converting tables is an operator's job), hypertables
        need the extension (even with ``use_timescale=False``). A new schema uses
        TimescaleDB when asked and usable."""
        found = None
        if recorded == "timescale" or (recorded is None and self.use_timescale):
            # A connection of its own: should the server end the session anyway, only this
            # connection is lost (the pool drops it), not the migration's.
            async with self.pool.connection() as conn:
                found = await timescale.prepare(conn, self.timescale_schema)
            if found is None and recorded == "timescale":
                raise TimescaleRequired(self.schema)
        self.timescale = found
        bucket = found.qualified("time_bucket") if found else "date_bin"
        self.sql.dialect = Dialect("postgres", bucket_function=bucket)

    async def attach(self) -> None:
        """For a runtime role that may not migrate: learn the storage mode from the
        applied migrations and refuse to run on a schema that lacks some."""
        done = await self._applied()
        if not done:
            raise SchemaNotReady(self.schema, "has no migrations")
        # Hypertables need the extension (already created by the owner or administrator).
        variant = _variant(done.values()) or "plain"
        await self._choose_mode(variant)
        missing = [m.name for m in migrations_for("postgres", variant) if m.version not in done]
        if missing:
            raise SchemaNotReady(self.schema, f"lacks {', '.join(missing)}")

    async def role_warnings(self) -> list[str]:
        """What is wrong with the connected role for running the gateway: a superuser,
        or the owner of the audit table, can bypass or disable its guards."""
        row = await self.sql.fetch_one(
            "SELECT r.rolsuper, pg_has_role(current_user, c.relowner, 'USAGE')"
            " FROM pg_roles r, pg_class c"
            " WHERE r.rolname = current_user AND c.oid = CAST('dispatch_audit' AS regclass)"
        )
        if row is not None and row[0]:
            return ["the store connects as a superuser"]
        if row is not None and row[1]:
            return ["the store's role owns dispatch_audit (it could disable its triggers)"]
        return []

    async def _apply_policies(self, q: Queries, ts: Extension) -> None:
        """Apply the compression and retention policies on ``readings`` with the
        configured ages. One that has its age already is left alone (a new job would run
        at once and a removed one is cancelled mid-run, at every start); one with another
        age is removed and added again (``add_*_policy(if_not_exists)`` keeps the old)."""
        for policy, arg, age in (
            ("compression", "compress_after", self.compress_after),
            ("retention", "drop_after", self.retain_for),
        ):
            same = await q.fetch_one(
                "SELECT 1 FROM timescaledb_information.jobs WHERE hypertable_schema = ?"
                " AND hypertable_name = 'readings' AND proc_name = ?"
                " AND CAST(config->>? AS interval) = CAST(? AS interval)",
                self.schema,
                f"policy_{policy}",
                arg,
                age,
            )
            if same is not None:
                continue
            remove = ts.qualified(f"remove_{policy}_policy")
            await q.execute(f"SELECT {remove}('readings', if_exists => true)")
            if age is not None:
                add = ts.qualified(f"add_{policy}_policy")
                await q.execute(f"SELECT {add}('readings', {arg} => CAST(? AS interval))", age)

    async def maintain(self, now: datetime | None = None) -> list[str]:
        """Daily housekeeping: dead letters past their retention removed; in plain mode the
        partitions ahead (TimescaleDB's chunks and policies are the extension's job)."""
        await self.prune_dead_letters(now)
        if self.timescale is not None:
            return []
        try:
            return await self.ensure_partitions(now or datetime.now(UTC))
        except psycopg.errors.InsufficientPrivilege:
            # The runtime role owns no table; the owner makes partitions ahead at each
            # `telecare db migrate` (run it monthly), rows meanwhile go to the default.
            log.warning("partitions_need_owner", schema=self.schema, see="docs/security.md")
            return []

    async def ensure_partitions(self, now: datetime) -> list[str]:
        """Create monthly partitions of ``readings`` and ``news2_scores`` from last month
        to N months ahead. A month whose rows already sit in the default partition (data
        far in the future) is logged and skipped; the rows stay readable there."""
        created = []
        for table in PARTITIONED:
            for ahead in range(-1, self.partitions_ahead_months + 1):
                start, end = _month(now, ahead), _month(now, ahead + 1)
                name = f"{table}_{start:%Y%m}"
                if await self.sql.fetch_one(_EXISTS, f"{self.schema}.{name}") is not None:
                    continue
                try:
                    await self.sql.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table}"
                        f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                    )
                    created.append(name)
                except psycopg.errors.CheckViolation as exc:
                    log.warning("partition_not_created", partition=name, error=str(exc))
        return created

    # -- faster batch writes: the same statements, as binary COPY and arrays ---------------
    async def write_readings(self, readings: Sequence[Reading]) -> int:
        """Store a batch; return how many rows were new.

        Fast path: one binary COPY straight into ``readings``. If the unique index
        rejects a row (a redelivery), that transaction rolls back and the batch takes the
        de-duplicating path: binary COPY into a session-local staging table, then one
        ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. Either way the idempotency key
        is enforced by the unique index, without a round trip per row.
        """
        if not readings:
            return 0
        async with self.pool.connection() as conn:
            if self._dedupe_batches == 0:
                try:
                    async with conn.transaction():
                        await _copy(conn, "readings", readings)
                    return len(readings)
                except psycopg.errors.UniqueViolation:
                    self._dedupe_batches = _DEDUPE_BATCHES
            self._dedupe_batches = max(0, self._dedupe_batches - 1)
            async with conn.transaction():
                await conn.execute(_STAGE_DDL)
                await _copy(conn, "readings_stage", readings)
                cur = await conn.execute(
                    f"INSERT INTO readings ({READINGS.names}) SELECT {READINGS.names}"
                    " FROM readings_stage ON CONFLICT DO NOTHING".encode()
                )
                return cur.rowcount

    async def write_events(self, events: Sequence[AlarmEvent]) -> list[bool]:
        return await self._insert_arrays(EVENTS, events, "device_id", "msg_id")

    async def write_alerts(self, alerts: Sequence[Alert]) -> list[bool]:
        return await self._insert_arrays(ALERTS, alerts, "alert_id")

    async def _insert_arrays(
        self, table: Table[Any], items: Sequence[Any], *key: str
    ) -> list[bool]:
        """Insert ``items`` in one short statement over one array per column (a VALUES
        list of thousands of placeholders costs more to prepare than to run); whether
        each was new (a ``key`` twice in one batch: only its first, as on SQLite)."""
        if not items:
            return []
        columns = zip(*map(table.params, items), strict=True)
        arrays = [
            [Jsonb(v) for v in col] if c.kind == "json" else list(col)
            for c, col in zip(table.written, columns, strict=True)
        ]
        unnest = ", ".join(f"%s::{t}[]" for t in table.pg_types)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"INSERT INTO {table.name} ({table.names}) SELECT * FROM unnest({unnest})"
                f" ON CONFLICT DO NOTHING RETURNING {', '.join(key)}".encode(),
                arrays,
            )
            new = {tuple(r) for r in await cur.fetchall()}
        out = []
        for k in (tuple(getattr(i, name) for name in key) for i in items):
            out.append(k in new)
            new.discard(k)
        return out


async def _copy(
    conn: psycopg.AsyncConnection[TupleRow], table: str, readings: Sequence[Reading]
) -> None:
    statement = f"COPY {table} ({READINGS.names}) FROM STDIN (FORMAT BINARY)"
    async with conn.cursor().copy(statement.encode()) as copy:
        copy.set_types(READINGS.pg_types)
        for row in map(READINGS.params, readings):
            await copy.write_row(row)


def _month(now: datetime, ahead: int) -> datetime:
    """The first instant (UTC) of the month ``ahead`` months after ``now``'s."""
    year, month = divmod(now.year * 12 + now.month - 1 + ahead, 12)
    return datetime(year, month + 1, 1, tzinfo=UTC)


def _variant(names: Iterable[str]) -> str | None:
    """The variant the applied migrations ``names`` were made for (``None``: no variant
    file among them yet, a new schema)."""
    variants = {n.split(".")[1] for n in names if n.count(".") == 2}
    return "timescale" if "timescale" in variants else "plain" if variants else None
