"""PostgreSQL backend through psycopg 3: TimescaleDB hypertables when the extension is
usable, plain PostgreSQL range partitioning otherwise (``mode`` says which). A schema
keeps the mode it was created in; the extension lives in a schema of its own, shared by
every application schema of the database, and is referenced qualified
(``gateway.store.timescale``).

Resource handling: an ``AsyncConnectionPool`` opened in ``__aenter__`` and closed in
``__aexit__``. Every connection uses ``search_path = <schema>, public`` so tests (and
several gateways on one database) can each have their own schema.

Error handling: psycopg's ``OperationalError`` (server away) propagates to the caller,
which spools (see ``gateway.store.durable``); integrity conflicts on idempotency keys are
absorbed and reported as "already stored". A pooled connection idle for a second or more
is checked on checkout, so one broken by an outage is replaced instead of failing a write;
one given back less than a second ago is not (a round trip per statement was 11 % of a
fleet's heartbeat work; :class:`_Fresh`).

Modes: ``timescaledb`` (hypertables for readings and NEWS2 scores, compression after
``compress_after``, retention ``retain_for``, continuous aggregate ``vitals_hourly``;
policies (re)applied at every ``migrate``) or ``postgres`` (monthly range partitions
created ``partitions_ahead_months`` ahead, by ``migrate`` and by ``maintain``, which the
gateway runs daily). Queries are the same SQL in both modes except the bucketing
function (``time_bucket`` / ``date_bin``).
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    Device,
    Dispatch,
    Metric,
    Reading,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Responder,
    Site,
)
from telecare.dispatch.audit_chain import GENESIS, Anchor, ChainReport, ChainVerifier
from telecare.gateway.store import rows, timescale
from telecare.gateway.store.base import (
    AlertNote,
    AuditEntry,
    DeadLetter,
    HistoryPoint,
    News2Record,
    OpenAlarm,
    TimelineEntry,
)
from telecare.gateway.store.clinical import ClinicalChange, ClinicalRecord, plan_clinical
from telecare.gateway.store.errors import SchemaNotReady, TimescaleRequired
from telecare.gateway.store.migrations import migrations_for
from telecare.gateway.store.registry import TABLES, Blocker, Kind, RegistryChange, blocker_queries
from telecare.gateway.store.roles import APPEND_ONLY, check_identifier, runtime_grants
from telecare.gateway.store.sql import Dialect, PostgresSql
from telecare.gateway.store.timescale import Extension

__all__ = ["PostgresStore"]


class _Fresh:
    """The pool's ``check`` (on checkout) and ``reset`` (on return): a connection given
    back less than ``fresh_s`` ago skips the check's round trip (its last use worked; a
    failed one is discarded by the pool)."""

    def __init__(self, fresh_s: float = 1.0) -> None:
        self.fresh_s = fresh_s
        self._returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    async def reset(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._returned[conn] = time.monotonic()

    async def check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if time.monotonic() - self._returned.get(conn, -self.fresh_s) >= self.fresh_s:
            await AsyncConnectionPool.check_connection(conn)


log = structlog.get_logger(__name__)

#: Tables partitioned by month in plain PostgreSQL mode.
PARTITIONED = ("readings", "news2_scores")
#: Origin of history buckets, the same in both modes (and in SQLite).
_BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_COPY_READINGS = (
    "COPY readings (ts, device_id, metric, value, msg_id, resident_id) FROM STDIN (FORMAT BINARY)"
)
#: After a batch hits a duplicate, this many following batches take the de-duplicating
#: path directly (a redelivery or a spool replay usually brings several in a row).
_DEDUPE_BATCHES = 8

_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS readings_stage (ts timestamptz, device_id text,"
    " metric smallint, value double precision, msg_id text, resident_id text)"
    " ON COMMIT DELETE ROWS"
)
_READING_TYPES = ["timestamptz", "text", "int2", "float8", "text", "text"]


class PostgresStore:
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
        check_identifier("PostgreSQL schema", schema)
        if runtime_role is not None:
            check_identifier("PostgreSQL runtime role", runtime_role)
        self.runtime_role = runtime_role
        if retain_for is not None and retain_for <= max(compress_after, timedelta(days=3)):
            raise ValueError(
                f"retain_for {retain_for} must exceed compress_after {compress_after} and the"
                " continuous aggregate's three-day refresh window"
            )
        self.dsn = dsn
        self.schema = schema
        self.use_timescale = use_timescale
        self.timescale_schema = timescale_schema
        #: The TimescaleDB in use (set by ``migrate``); ``None`` in plain PostgreSQL mode.
        self.timescale: Extension | None = None
        self.partitions_ahead_months = partitions_ahead_months
        self.compress_after = compress_after
        self.retain_for = retain_for
        #: Dead letters older than this are deleted by :meth:`maintain` (``None``: kept).
        self.dead_letter_retention = dead_letter_retention
        self._dedupe_batches = 0
        self._fresh = _Fresh()
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            name=f"telecare-{schema}",
            check=self._fresh.check,
            reset=self._fresh.reset,
            kwargs={
                "options": f"-c search_path={schema},public -c TimeZone=UTC",
                "autocommit": True,
            },
        )
        #: The query API (``gateway.store.sql``); its dialect is set once the mode is known.
        self.sql = PostgresSql(self._pool)

    async def __aenter__(self) -> Self:
        await self._pool.open(wait=True, timeout=self._pool.timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._pool.close()

    @property
    def pool(self) -> AsyncConnectionPool:
        return self._pool

    @property
    def mode(self) -> str:
        return "timescaledb" if self.timescale is not None else "postgres"

    # -- migrations ------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        """Create the schema, choose the mode (see ``_choose_timescale``), apply the
        pending migrations of that mode, then the policies or the partitions."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            )
            if await cur.fetchone() is None:  # CREATE SCHEMA checks rights before existence
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
            recorded = await self._recorded_variant(conn)
        self._set_timescale(await self._choose_timescale(recorded))
        async with self._pool.connection() as conn:
            async with conn.transaction():
                # One migrator at a time per schema.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"telecare:{self.schema}",)
                )
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                    " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                cur = await conn.execute("SELECT version FROM schema_migrations")
                done = {r[0] for r in await cur.fetchall()}
                variant = "timescale" if self.timescale is not None else "plain"
                applied = []
                for m in migrations_for("postgres", variant):
                    if m.version in done:
                        continue
                    text = self.timescale.render(m.sql) if self.timescale else m.sql
                    await conn.execute(text.encode())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (m.version, m.name),
                    )
                    applied.append(m.name)
                if self.timescale is not None:
                    await self._apply_policies(conn, self.timescale)
                if self.runtime_role is not None:
                    cur = await conn.execute(
                        "SELECT c.relname FROM pg_class c JOIN pg_namespace n"
                        " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)",
                        (self.schema, list(APPEND_ONLY)),
                    )
                    append_only = sorted(r[0] for r in await cur.fetchall())
                    for grant in runtime_grants(self.schema, self.runtime_role, append_only):
                        await conn.execute(grant)
            if self.timescale is None:
                await self.ensure_partitions(conn, datetime.now(UTC))
        log.info(
            "store_mode",
            mode=self.mode,
            schema=self.schema,
            timescaledb=self.timescale and f"{self.timescale.version} in {self.timescale.schema}",
            applied=applied,
        )
        return applied

    def _set_timescale(self, found: Extension | None) -> None:
        self.timescale = found
        bucket = found.qualified("time_bucket") if found else "date_bin"
        self.sql.dialect = Dialect("postgres", bucket_function=bucket)

    async def _recorded_variant(self, conn: psycopg.AsyncConnection[TupleRow]) -> str | None:
        """``timescale`` or ``plain``: the variant this schema's migrations were applied
        in; ``None`` for a new schema."""
        cur = await conn.execute(
            "SELECT to_regclass(format('%%I.schema_migrations', %s::text)) IS NOT NULL",
            (self.schema,),
        )
        [(exists,)] = await cur.fetchall()
        if not exists:
            return None
        cur = await conn.execute(
            sql.SQL("SELECT name FROM {}.schema_migrations").format(sql.Identifier(self.schema))
        )
        variants = {n.split(".")[1] for (n,) in await cur.fetchall() if n.count(".") == 2}
        return "timescale" if "timescale" in variants else "plain" if variants else None

    async def _choose_timescale(self, recorded: str | None) -> Extension | None:
        """The TimescaleDB to use, or ``None`` for plain partitions. A schema keeps the
        mode it was created in: plain stays plain (even once TimescaleDB is available;
        converting tables is an operator's job), hypertables need the extension (even with
        ``use_timescale=False``). A new schema uses TimescaleDB when asked and usable."""
        if recorded == "plain" or (recorded is None and not self.use_timescale):
            return None
        # A connection of its own: should the server end the session anyway, only this
        # connection is lost (the pool drops it), not the migration's.
        async with self._pool.connection() as conn:
            found = await timescale.prepare(conn, self.timescale_schema)
        if found is None and recorded == "timescale":
            raise TimescaleRequired(self.schema)
        return found

    async def attach(self) -> None:
        """For a runtime role that may not migrate: learn the storage mode from the
        applied migrations and refuse to run on a schema that lacks some."""
        async with self._pool.connection() as conn:
            try:
                cur = await conn.execute("SELECT version, name FROM schema_migrations")
            except psycopg.errors.UndefinedTable:
                raise SchemaNotReady(self.schema, "has no migrations") from None
            done = {int(v): str(n) for v, n in await cur.fetchall()}
        variant = "timescale" if any(".timescale." in n for n in done.values()) else "plain"
        # Hypertables need the extension (already created by the owner or administrator).
        self._set_timescale(await self._choose_timescale(variant))
        wanted = migrations_for("postgres", variant)
        missing = [m.name for m in wanted if m.version not in done]
        if missing:
            raise SchemaNotReady(self.schema, f"lacks {', '.join(missing)}")

    async def role_warnings(self) -> list[str]:
        """What is wrong with the connected role for running the gateway: a superuser,
        or the owner of the audit table, can bypass or disable its guards."""
        row = await self._one(
            "SELECT r.rolsuper, pg_has_role(current_user, c.relowner, 'USAGE')"
            " FROM pg_roles r, pg_class c"
            " WHERE r.rolname = current_user AND c.oid = 'dispatch_audit'::regclass",
            (),
        )
        if row is None:
            return []
        found = []
        if row[0]:
            found.append("the store connects as a superuser")
        elif row[1]:
            found.append("the store's role owns dispatch_audit (it could disable its triggers)")
        return found

    async def _apply_policies(self, conn: psycopg.AsyncConnection[TupleRow], ts: Extension) -> None:
        """(Re)apply the compression and retention policies on ``readings`` with the
        configured ages: removing first, since ``add_*_policy(if_not_exists)`` keeps an
        existing policy with a different age."""
        remove_compression = ts.qualified("remove_compression_policy")
        await conn.execute(f"SELECT {remove_compression}('readings', if_exists => true)".encode())
        await conn.execute(
            f"SELECT {ts.qualified('add_compression_policy')}('readings',"
            " compress_after => %s::interval)".encode(),
            (self.compress_after,),
        )
        remove_retention = ts.qualified("remove_retention_policy")
        await conn.execute(f"SELECT {remove_retention}('readings', if_exists => true)".encode())
        if self.retain_for is not None:
            await conn.execute(
                f"SELECT {ts.qualified('add_retention_policy')}('readings',"
                " drop_after => %s::interval)".encode(),
                (self.retain_for,),
            )

    async def maintain(self, now: datetime | None = None) -> list[str]:
        """Daily housekeeping: dead letters past their retention removed (both modes);
        the partitions ahead created in plain mode (nothing to do in TimescaleDB mode,
        where chunks and policies are the extension's job)."""
        await self.prune_dead_letters(now)
        if self.timescale is not None:
            return []
        async with self._pool.connection() as conn:
            try:
                return await self.ensure_partitions(conn, now or datetime.now(UTC))
            except psycopg.errors.InsufficientPrivilege:
                # The runtime role owns no table; the owner makes partitions ahead at each
                # `telecare db migrate` (run it monthly), rows meanwhile go to the default.
                log.warning("partitions_need_owner", schema=self.schema, see="docs/security.md")
                return []

    async def ensure_partitions(
        self, conn: psycopg.AsyncConnection[TupleRow], now: datetime
    ) -> list[str]:
        """Create monthly partitions of ``readings`` and ``news2_scores`` from last month
        to N months ahead. A month whose rows already sit in the default partition (data
        far in the future) is logged and skipped; the rows stay readable there."""
        created = []
        for table in PARTITIONED:
            year, month = now.year, now.month - 1
            for _ in range(self.partitions_ahead_months + 2):
                if month == 0:
                    year, month = year - 1, 12
                start = datetime(year, month, 1, tzinfo=UTC)
                nxt = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
                name = f"{table}_{year:04d}{month:02d}"
                cur = await conn.execute(
                    "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relname = %s",
                    (self.schema, name),
                )
                if await cur.fetchone() is None:
                    try:
                        await conn.execute(
                            sql.SQL(
                                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {}"
                                " FOR VALUES FROM ({}) TO ({})"
                            ).format(
                                sql.Identifier(name),
                                sql.Identifier(table),
                                sql.Literal(start),
                                sql.Literal(nxt),
                            )
                        )
                        created.append(name)
                    except psycopg.errors.CheckViolation as exc:
                        log.warning("partition_not_created", partition=name, error=str(exc))
                year, month = nxt.year, nxt.month
        return created

    # -- registry --------------------------------------------------------------------
    async def upsert_site(self, site: Site) -> None:
        await self._exec(
            "INSERT INTO sites (site_id, kind, name, address, area) VALUES (%s,%s,%s,%s,%s)"
            " ON CONFLICT (site_id) DO UPDATE SET kind=excluded.kind, name=excluded.name,"
            " address=excluded.address, area=excluded.area",
            (site.site_id, site.kind.value, site.name, site.address, site.area),
        )

    async def upsert_resident(self, resident: Resident) -> None:
        r = resident  # registry fields only: clinical settings change through set_clinical
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO residents ({rows.RESIDENT_COLUMNS}) VALUES (%s,%s,%s,%s,%s)"
                " ON CONFLICT (resident_id) DO UPDATE SET site_id=excluded.site_id,"
                " name=excluded.name, nhs_number=excluded.nhs_number, notes=excluded.notes",
                (r.resident_id, r.site_id, r.name, r.nhs_number, r.notes),
            )
            await conn.execute(
                "DELETE FROM resident_responders WHERE resident_id = %s", (r.resident_id,)
            )
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO resident_responders (resident_id, position, responder_id)"
                    " VALUES (%s,%s,%s)",
                    [(r.resident_id, i, rid) for i, rid in enumerate(r.responders)],
                )

    async def upsert_device(self, device: Device, secret_hash: str | None = None) -> None:
        d = device
        await self._exec(
            f"INSERT INTO devices ({rows.DEVICE_COLUMNS}, secret_hash)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (device_id) DO UPDATE SET site_id=excluded.site_id,"
            " kind=excluded.kind, resident_id=excluded.resident_id, format=excluded.format,"
            " location=excluded.location, heartbeat_interval_s=excluded.heartbeat_interval_s,"
            " hub_id=excluded.hub_id,"
            " secret_hash=COALESCE(excluded.secret_hash, devices.secret_hash)",
            (
                d.device_id,
                d.site_id,
                d.kind.value,
                d.resident_id,
                d.format,
                d.location,
                d.heartbeat_interval_s,
                d.hub_id,
                secret_hash,
            ),
        )

    async def upsert_responder(self, responder: Responder) -> None:
        r = responder
        await self._exec(
            f"INSERT INTO responders ({rows.RESPONDER_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (responder_id) DO UPDATE SET kind=excluded.kind, name=excluded.name,"
            " phone=excluded.phone, area=excluded.area, skills=excluded.skills",
            (r.responder_id, r.kind.value, r.name, r.phone, r.area, list(r.skills)),
        )

    async def _exec(self, query: str, params: Sequence[Any] | Mapping[str, Any]) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return cur.rowcount

    async def _one(self, query: str, params: Sequence[Any]) -> Any:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return await cur.fetchone()

    async def _all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return await cur.fetchall()

    async def set_device_user(self, device_id: str, user_id: int, resident_id: str) -> None:
        await self._exec(
            "INSERT INTO device_users (device_id, user_id, resident_id) VALUES (%s, %s, %s)"
            " ON CONFLICT (device_id, user_id) DO UPDATE SET resident_id = excluded.resident_id",
            (device_id, user_id, resident_id),
        )

    async def device_users(self, device_id: str) -> dict[int, str]:
        found = await self._all(
            "SELECT user_id, resident_id FROM device_users WHERE device_id = %s", (device_id,)
        )
        return {int(u): r for u, r in found}

    async def get_site(self, site_id: str) -> Site | None:
        row = await self._one(
            "SELECT site_id, kind, name, address, area FROM sites WHERE site_id = %s", (site_id,)
        )
        return rows.site(row) if row else None

    async def get_device(self, device_id: str) -> Device | None:
        row = await self._one(
            f"SELECT {rows.DEVICE_COLUMNS} FROM devices WHERE device_id = %s", (device_id,)
        )
        return rows.device(row) if row else None

    async def get_device_secret_hash(self, device_id: str) -> str | None:
        row = await self._one("SELECT secret_hash FROM devices WHERE device_id = %s", (device_id,))
        return row[0] if row else None

    async def device_credentials(self) -> list[tuple[str, str]]:
        found = await self._all(
            "SELECT device_id, secret_hash FROM devices WHERE secret_hash IS NOT NULL"
            " ORDER BY device_id",
            (),
        )
        return [(str(r[0]), str(r[1])) for r in found]

    async def list_devices(self) -> list[Device]:
        found = await self._all(f"SELECT {rows.DEVICE_COLUMNS} FROM devices ORDER BY device_id")
        return [rows.device(r) for r in found]

    # -- receiver accounts (DC-09, SCAIP, serial Contact ID) ------------------------------
    async def upsert_receiver_account(self, mapping: ReceiverAccount) -> None:
        m = mapping
        await self._exec(
            f"INSERT INTO receiver_accounts ({rows.RECEIVER_ACCOUNT_COLUMNS})"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (kind, account, zone)"
            " DO UPDATE SET device_id = excluded.device_id",
            (m.kind.value, m.account, m.zone, m.device_id),
        )

    async def delete_receiver_account(self, kind: ReceiverKind, account: str, zone: str) -> bool:
        n = await self._exec(
            "DELETE FROM receiver_accounts WHERE kind = %s AND account = %s AND zone = %s",
            (kind.value, account, zone),
        )
        return n > 0

    async def receiver_accounts(self, kind: ReceiverKind, account: str) -> list[ReceiverAccount]:
        found = await self._all(
            f"SELECT {rows.RECEIVER_ACCOUNT_COLUMNS} FROM receiver_accounts"
            " WHERE kind = %s AND account = %s ORDER BY zone",
            (kind.value, account),
        )
        return [rows.receiver_account(r) for r in found]

    async def list_receiver_accounts(self) -> list[ReceiverAccount]:
        found = await self._all(
            f"SELECT {rows.RECEIVER_ACCOUNT_COLUMNS} FROM receiver_accounts"
            " ORDER BY kind, account, zone"
        )
        return [rows.receiver_account(r) for r in found]

    async def list_sites(self) -> list[Site]:
        found = await self._all(
            "SELECT site_id, kind, name, address, area FROM sites ORDER BY site_id"
        )
        return [rows.site(r) for r in found]

    async def list_responders(self) -> list[Responder]:
        found = await self._all(
            f"SELECT {rows.RESPONDER_COLUMNS} FROM responders ORDER BY responder_id"
        )
        return [rows.responder(r) for r in found]

    async def list_residents(self, site_id: str | None = None) -> list[Resident]:
        found = await self._all(
            f"SELECT {rows.RESIDENT_SELECT}"
            " WHERE %s::text IS NULL OR r.site_id = %s ORDER BY r.resident_id",
            (site_id, site_id),
        )
        order = await self._all(
            "SELECT resident_id, responder_id FROM resident_responders"
            " ORDER BY resident_id, position"
        )
        cascades: dict[str, list[str]] = {}
        for rid, responder_id in order:
            cascades.setdefault(rid, []).append(responder_id)
        return [rows.resident(r, tuple(cascades.get(r[0], ()))) for r in found]

    async def get_resident(self, resident_id: str) -> Resident | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {rows.RESIDENT_SELECT} WHERE r.resident_id = %s".encode(),
                (resident_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            cur = await conn.execute(
                "SELECT responder_id FROM resident_responders WHERE resident_id = %s"
                " ORDER BY position",
                (resident_id,),
            )
            order = tuple(o[0] for o in await cur.fetchall())
        return rows.resident(row, order)

    async def set_clinical(self, change: ClinicalChange) -> list[ClinicalRecord]:
        c = change
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT 1 FROM residents WHERE resident_id = %s FOR UPDATE", (c.resident_id,)
            )
            if await cur.fetchone() is None:
                raise KeyError(c.resident_id)
            cur = await conn.execute(
                "SELECT spo2_scale, spo2_scale_set_by, spo2_scale_set_at, baseline_consciousness"
                " FROM resident_clinical WHERE resident_id = %s",
                (c.resident_id,),
            )
            new, records = plan_clinical(rows.clinical_state(await cur.fetchone()), c)
            await conn.execute(
                "INSERT INTO resident_clinical (resident_id, spo2_scale, spo2_scale_set_by,"
                " spo2_scale_set_at, baseline_consciousness, updated_by, updated_at)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (resident_id) DO UPDATE SET"
                " spo2_scale=excluded.spo2_scale, spo2_scale_set_by=excluded.spo2_scale_set_by,"
                " spo2_scale_set_at=excluded.spo2_scale_set_at,"
                " baseline_consciousness=excluded.baseline_consciousness,"
                " updated_by=excluded.updated_by, updated_at=excluded.updated_at",
                (
                    c.resident_id,
                    new.spo2_scale,
                    new.spo2_scale_set_by,
                    new.spo2_scale_set_at,
                    new.baseline.value if new.baseline else None,
                    c.recorded_by,
                    c.recorded_at,
                ),
            )
            async with conn.cursor() as cur2:
                await cur2.executemany(
                    f"INSERT INTO resident_clinical_history ({rows.CLINICAL_HISTORY_COLUMNS})"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    [
                        (
                            h.resident_id,
                            h.setting,
                            h.value,
                            h.previous,
                            h.prescribed_by,
                            h.prescribed_at,
                            h.recorded_by,
                            h.recorded_at,
                            h.reason,
                        )
                        for h in records
                    ],
                )
        return records

    async def clinical_history(self, resident_id: str) -> list[ClinicalRecord]:
        found = await self._all(
            f"SELECT {rows.CLINICAL_HISTORY_COLUMNS} FROM resident_clinical_history"
            " WHERE resident_id = %s ORDER BY history_id",
            (resident_id,),
        )
        return [rows.clinical_record(r) for r in found]

    # -- registry lifecycle (remove, pair, audit) ------------------------------------
    async def remove_entity(
        self, kind: Kind, entity_id: str, change: RegistryChange
    ) -> list[Blocker]:
        table, key = TABLES[kind]
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT 1 FROM {table} WHERE {key} = %s FOR UPDATE".encode(), (entity_id,)
            )
            if await cur.fetchone() is None:
                raise KeyError(entity_id)
            blockers: list[Blocker] = []
            for what, query in blocker_queries(kind, "%s"):
                cur = await conn.execute(query.encode(), (entity_id,))
                blockers.extend(Blocker(what, str(ref)) for (ref,) in await cur.fetchall())
            if blockers:
                return blockers
            await conn.execute(f"DELETE FROM {table} WHERE {key} = %s".encode(), (entity_id,))
            await _write_change(conn, change)
            return []

    async def pair_device(
        self, device_id: str, resident_id: str | None, location: str | None, change: RegistryChange
    ) -> Device:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {rows.DEVICE_COLUMNS} FROM devices WHERE device_id = %s"
                " FOR UPDATE".encode(),
                (device_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise KeyError(device_id)
            device = rows.device(row)
            if resident_id is not None:
                cur = await conn.execute(
                    "SELECT site_id FROM residents WHERE resident_id = %s", (resident_id,)
                )
                found = await cur.fetchone()
                if found is None or found[0] != device.site_id:
                    raise ValueError(
                        f"resident {resident_id!r} does not exist at site {device.site_id!r}"
                    )
            new_location = device.location if location is None else location
            await conn.execute(
                "UPDATE devices SET resident_id = %s, location = %s WHERE device_id = %s",
                (resident_id, new_location, device_id),
            )
            await _write_change(conn, change)
            return replace(device, resident_id=resident_id, location=new_location)

    async def site_dispatch_ids(self, site_id: str) -> set[str]:
        found = await self._all("SELECT dispatch_id FROM dispatches WHERE site_id = %s", (site_id,))
        return {r[0] for r in found}

    async def record_registry_change(self, change: RegistryChange) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await _write_change(conn, change)

    async def registry_changes(
        self, kind: Kind | None = None, entity_id: str | None = None
    ) -> list[RegistryChange]:
        found = await self._all(
            "SELECT at, actor, action, kind, entity_id, detail FROM registry_audit"
            " WHERE (%s::text IS NULL OR kind = %s) AND (%s::text IS NULL OR entity_id = %s)"
            " ORDER BY audit_id",
            (kind, kind, entity_id, entity_id),
        )
        return [rows.registry_change(r) for r in found]

    async def get_responder(self, responder_id: str) -> Responder | None:
        row = await self._one(
            f"SELECT {rows.RESPONDER_COLUMNS} FROM responders WHERE responder_id = %s",
            (responder_id,),
        )
        return rows.responder(row) if row else None

    # -- ingest ----------------------------------------------------------------------
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
        async with self._pool.connection() as conn:
            if self._dedupe_batches == 0:
                try:
                    async with conn.transaction():
                        await self._copy(conn, _COPY_READINGS, readings)
                    return len(readings)
                except psycopg.errors.UniqueViolation:
                    self._dedupe_batches = _DEDUPE_BATCHES
            self._dedupe_batches = max(0, self._dedupe_batches - 1)
            async with conn.transaction():
                await conn.execute(_STAGE_DDL)
                await self._copy(
                    conn,
                    "COPY readings_stage (ts, device_id, metric, value, msg_id, resident_id)"
                    " FROM STDIN (FORMAT BINARY)",
                    readings,
                )
                cur = await conn.execute(
                    "INSERT INTO readings (ts, device_id, metric, value, msg_id, resident_id)"
                    " SELECT ts, device_id, metric, value, msg_id, resident_id"
                    " FROM readings_stage ON CONFLICT DO NOTHING"
                )
                return cur.rowcount

    @staticmethod
    async def _copy(
        conn: psycopg.AsyncConnection[TupleRow], statement: str, readings: Sequence[Reading]
    ) -> None:
        async with conn.cursor().copy(statement.encode()) as copy:
            copy.set_types(_READING_TYPES)
            for r in readings:
                await copy.write_row(
                    (r.ts, r.device_id, int(r.metric), r.value, r.msg_id, r.resident_id)
                )

    async def write_event(self, event: AlarmEvent) -> bool:
        n = await self._exec(_INSERT_EVENT, _event_params(event))
        return n == 1

    async def write_events(self, events: Sequence[AlarmEvent]) -> list[bool]:
        if not events:
            return []
        columns = list(zip(*(_event_params(e) for e in events), strict=True))
        found = await self._all(_INSERT_EVENTS, [list(c) for c in columns])
        inserted = {(r[0], r[1]) for r in found}
        out: list[bool] = []
        for e in events:  # a key twice in one batch: only its first is new
            key = (e.device_id, e.msg_id)
            out.append(key in inserted)
            inserted.discard(key)
        return out

    async def write_alerts(self, alerts: Sequence[Alert]) -> list[bool]:
        # One short statement over arrays: a VALUES list of thousands of placeholders
        # costs more to prepare on the client than to run.
        columns = list(zip(*(_alert_params(a) for a in alerts), strict=True)) if alerts else []
        if not columns:
            return []
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"INSERT INTO alerts ({rows.ALERT_COLUMNS})"
                " SELECT a, k, p, r, t, s, res, d, e, sk, det::jsonb FROM unnest("
                "%s::text[], %s::text[], %s::int2[], %s::text[], %s::timestamptz[],"
                " %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
                " AS u(a, k, p, r, t, s, res, d, e, sk, det)"
                " ON CONFLICT DO NOTHING RETURNING alert_id",
                [list(c) for c in columns],
            )
            new = {r[0] for r in await cur.fetchall()}
        return [a.alert_id in new for a in alerts]

    async def stored_event_digest(self, device_id: str, msg_id: str) -> str | None:
        row = await self._one(
            "SELECT digest FROM alarm_events WHERE device_id = %s AND msg_id = %s",
            (device_id, msg_id),
        )
        return row[0] if row else None

    async def stored_message_readings(
        self, device_id: str, msg_id: str
    ) -> set[tuple[Metric, datetime, float]]:
        found = await self._all(
            "SELECT metric, ts, value FROM readings WHERE device_id = %s AND msg_id = %s",
            (device_id, msg_id),
        )
        return {(Metric(m), ts, float(v)) for m, ts, v in found}

    async def write_alert(self, alert: Alert) -> bool:
        a = alert
        n = await self._exec(
            f"INSERT INTO alerts ({rows.ALERT_COLUMNS})"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            (
                a.alert_id,
                a.kind.value,
                a.priority,
                a.reason,
                a.ts,
                a.site_id,
                a.resident_id,
                a.device_id,
                a.event_type.value if a.event_type else None,
                a.source_key,
                json.dumps(a.detail),
            ),
        )
        return n == 1

    async def note_alert(
        self, alert_id: str, *, count: int | None = None, restored_at: datetime | None = None
    ) -> None:
        note: dict[str, Any] = {}
        if count is not None:
            note["count"] = count
        if restored_at is not None:
            note["restored_at"] = restored_at.isoformat()
        if note:
            await self._exec(
                "UPDATE alerts SET detail = detail || %s::jsonb WHERE alert_id = %s",
                (json.dumps(note), alert_id),
            )

    async def note_alerts(self, notes: Sequence[AlertNote]) -> None:
        params = [(json.dumps(p), n.alert_id) for n in notes if (p := n.patch())]
        if not params:
            return
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(
                "UPDATE alerts SET detail = detail || %s::jsonb WHERE alert_id = %s", params
            )

    async def write_dead_letter(self, letter: DeadLetter) -> None:
        dl = letter
        await self._exec(
            f"INSERT INTO dead_letters ({rows.DEAD_LETTER_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s)",
            (
                dl.received_at,
                dl.source,
                dl.origin,
                dl.reason,
                dl.payload,
                dl.device_id,
                dl.payload_bytes,
            ),
        )

    async def prune_dead_letters(self, now: datetime | None = None) -> int:
        if self.dead_letter_retention is None:
            return 0
        cutoff = (now or datetime.now(UTC)) - self.dead_letter_retention
        async with self._pool.connection() as conn:
            cur = await conn.execute(b"DELETE FROM dead_letters WHERE received_at < %s", (cutoff,))
            return cur.rowcount

    async def set_device_status(
        self,
        device_id: str,
        *,
        online: bool | None = None,
        at: datetime,
        heartbeat: bool = False,
        battery: float | None = None,
    ) -> None:
        await self._exec(
            "INSERT INTO device_status (device_id, online, changed_at, last_heartbeat, battery)"
            " SELECT %(d)s, COALESCE(%(o)s, true), %(at)s, %(hb)s, %(b)s"
            " WHERE EXISTS (SELECT 1 FROM devices WHERE device_id = %(d)s)"
            " ON CONFLICT (device_id) DO UPDATE SET"
            " online = COALESCE(%(o)s, device_status.online),"
            " changed_at = CASE WHEN %(o)s::boolean IS NULL THEN device_status.changed_at"
            " ELSE %(at)s END,"
            " last_heartbeat = COALESCE(excluded.last_heartbeat, device_status.last_heartbeat),"
            " battery = COALESCE(excluded.battery, device_status.battery)",
            {"d": device_id, "o": online, "at": at, "hb": at if heartbeat else None, "b": battery},
        )

    # -- dispatch --------------------------------------------------------------------
    async def create_dispatch(self, dispatch: Dispatch, audit: AuditEntry) -> bool:
        async with self._pool.connection() as conn, conn.transaction():
            if not await insert_dispatch(conn, dispatch):
                return False
            await insert_audit(conn, audit)
            return True

    async def get_dispatch(self, dispatch_id: str) -> Dispatch | None:
        row = await self._one(
            f"SELECT {rows.DISPATCH_COLUMNS} FROM dispatches WHERE dispatch_id = %s",
            (dispatch_id,),
        )
        return rows.dispatch(row) if row else None

    async def open_dispatches(self) -> list[Dispatch]:
        found = await self._all(
            f"SELECT {rows.DISPATCH_COLUMNS} FROM dispatches"
            " WHERE state NOT IN ('resolved', 'cancelled') ORDER BY priority, created_at"
        )
        return [rows.dispatch(r) for r in found]

    async def dispatch_audit(self, dispatch_id: str) -> list[AuditEntry]:
        found = await self._all(
            f"SELECT {rows.AUDIT_COLUMNS} FROM dispatch_audit WHERE dispatch_id = %s"
            " ORDER BY audit_id",
            (dispatch_id,),
        )
        return [rows.audit(r) for r in found]

    async def verify_audit(self, anchor: Anchor | None = None) -> ChainReport:
        async with self._pool.connection() as conn:
            return await verify_audit(conn, anchor)

    # -- queries ---------------------------------------------------------------------
    async def recent_alerts(self, limit: int = 50) -> list[Alert]:
        found = await self._all(
            f"SELECT {rows.ALERT_COLUMNS} FROM alerts ORDER BY ts DESC LIMIT %s", (limit,)
        )
        return [rows.alert(r) for r in found]

    async def alerts_without_dispatch(self, limit: int = 1000) -> list[Alert]:
        cols = ", ".join(f"a.{c.strip()}" for c in rows.ALERT_COLUMNS.split(","))
        found = await self._all(
            f"SELECT {cols} FROM alerts a WHERE NOT EXISTS"
            " (SELECT 1 FROM dispatches d WHERE d.alert_id = a.alert_id)"
            " AND NOT EXISTS (SELECT 1 FROM dispatch_members m WHERE m.alert_id = a.alert_id)"
            " ORDER BY a.ts LIMIT %s",
            (limit,),
        )
        return [rows.alert(r) for r in found]

    async def latest_readings(self, resident_id: str) -> dict[str, tuple[datetime, float]]:
        found = await self._all(
            "SELECT DISTINCT ON (metric) metric, ts, value FROM readings"
            " WHERE resident_id = %s ORDER BY metric, ts DESC",
            (resident_id,),
        )
        return {Metric(m).label: (ts, float(v)) for m, ts, v in found}

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        found = await self._all(
            f"SELECT {rows.DEAD_LETTER_COLUMNS} FROM dead_letters"
            " ORDER BY dead_letter_id DESC LIMIT %s",
            (limit,),
        )
        return [rows.dead_letter(r) for r in found]

    async def count(self, table: str) -> int:
        if table not in rows.COUNTABLE:
            raise ValueError(f"unknown table {table!r}")
        row = await self._one(f"SELECT count(*) FROM {table}", ())
        return int(row[0])

    # -- NEWS2 and console/report queries ------------------------------------------------
    async def write_news2(self, score: News2Record) -> bool:
        n = score
        count = await self._exec(
            "INSERT INTO news2_scores (ts, resident_id, observation_id, total, risk, red_flag,"
            " spo2_scale, components, consciousness) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT DO NOTHING",
            (
                n.ts,
                n.resident_id,
                n.observation_id,
                n.total,
                n.risk,
                n.red_flag,
                n.spo2_scale,
                json.dumps(n.components),
                n.consciousness,
            ),
        )
        return count == 1

    async def latest_vitals(
        self, resident_ids: Sequence[str], since: datetime | None = None
    ) -> dict[str, dict[str, tuple[datetime, float]]]:
        # One LIMIT 1 probe of readings_resident (resident_id, metric, ts DESC) per
        # (resident, metric): cost independent of how much history there is (a DISTINCT
        # ON would read every row of each resident's range).
        found = await self._all(
            "SELECT r.resident_id, m.metric, l.ts, l.value"
            " FROM unnest(%s::text[]) AS r (resident_id)"
            " CROSS JOIN unnest(%s::smallint[]) AS m (metric)"
            " CROSS JOIN LATERAL (SELECT ts, value FROM readings"
            "  WHERE resident_id = r.resident_id AND metric = m.metric AND ts >= %s"
            "  ORDER BY ts DESC LIMIT 1) AS l",
            (
                list(resident_ids),
                [int(m) for m in Metric],
                since or datetime.min.replace(tzinfo=UTC),
            ),
        )
        out: dict[str, dict[str, tuple[datetime, float]]] = {rid: {} for rid in resident_ids}
        for rid, metric, ts, value in found:
            out[rid][Metric(metric).label] = (ts, float(value))
        return out

    async def metric_history(
        self,
        resident_id: str,
        metric: Metric,
        start: datetime,
        end: datetime,
        bucket: timedelta,
    ) -> list[HistoryPoint]:
        fn = self.timescale.qualified("time_bucket") if self.timescale else "date_bin"
        found = await self._all(
            f"SELECT {fn}(%s::interval, ts, %s::timestamptz) AS b, min(value), max(value),"
            " avg(value), count(*) FROM readings"
            " WHERE resident_id = %s AND metric = %s AND ts >= %s AND ts < %s"
            " GROUP BY b ORDER BY b",
            (bucket, _BUCKET_ORIGIN, resident_id, int(metric), start, end),
        )
        return [
            HistoryPoint(b, float(lo), float(hi), float(avg), int(n)) for b, lo, hi, avg, n in found
        ]

    async def news2_history(
        self, resident_id: str, start: datetime, end: datetime
    ) -> list[News2Record]:
        found = await self._all(
            "SELECT resident_id, ts, total, risk, red_flag, components, spo2_scale,"
            " observation_id, consciousness FROM news2_scores"
            " WHERE resident_id = %s AND ts >= %s AND ts < %s ORDER BY ts",
            (resident_id, start, end),
        )
        return [rows.news2(r) for r in found]

    async def resident_readings(
        self, resident_id: str, start: datetime, end: datetime, limit: int = 100_000
    ) -> list[Reading]:
        found = await self._all(
            "SELECT device_id, metric, value, ts, msg_id, resident_id FROM readings"
            " WHERE resident_id = %s AND ts >= %s AND ts < %s"
            " ORDER BY ts, device_id, msg_id, metric LIMIT %s",
            (resident_id, start, end, limit),
        )
        return [rows.reading(r) for r in found]

    async def open_alarms(self, now: datetime, limit: int = 200) -> list[OpenAlarm]:
        found = await self._all(
            f"SELECT {rows.OPEN_ALARM_COLUMNS} FROM dispatches d JOIN alerts a USING (alert_id)"
            " WHERE d.state NOT IN ('resolved', 'cancelled')"
            " ORDER BY d.priority, d.created_at LIMIT %s",
            (limit,),
        )
        return [rows.open_alarm(r, now) for r in found]

    async def dispatch_timeline(self, dispatch_id: str) -> list[TimelineEntry]:
        found = await self._all(
            "SELECT a.at, a.from_state, a.to_state, a.actor, a.reason,"
            " extract(epoch FROM a.at - d.created_at)"
            " FROM dispatch_audit a JOIN dispatches d USING (dispatch_id)"
            " WHERE a.dispatch_id = %s ORDER BY a.audit_id",
            (dispatch_id,),
        )
        return [rows.timeline(r) for r in found]


async def insert_dispatch(conn: psycopg.AsyncConnection[TupleRow], d: Dispatch) -> bool:
    """Insert a new dispatch row; ``False`` when one exists for its id or alert."""
    cur = await conn.execute(
        f"INSERT INTO dispatches ({rows.DISPATCH_COLUMNS})"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING".encode(),
        rows.dispatch_params(d),
    )
    return cur.rowcount == 1


async def insert_audit(conn: psycopg.AsyncConnection[TupleRow], a: rows.AuditLike) -> None:
    """Append ``a`` to the hash-chained audit trail. Call inside a transaction: a
    transaction-scoped advisory lock (per schema; no table privilege needed) serialises
    appenders until commit, so racing transitions still make one gapless chain; the
    unique ``seq`` index refuses a fork should anything append without the lock."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('telecare-audit:' || current_schema()))"
    )
    # A new statement after the lock: under READ COMMITTED it sees the last committed row.
    cur = await conn.execute(
        "SELECT (SELECT seq FROM dispatch_audit WHERE seq IS NOT NULL ORDER BY seq DESC"
        " LIMIT 1), (SELECT row_hash FROM dispatch_audit WHERE seq IS NOT NULL"
        " ORDER BY seq DESC LIMIT 1), %s::jsonb",
        (json.dumps(a.detail),),
    )
    row = await cur.fetchone()
    assert row is not None
    last_seq, last_hash, detail = row
    seq = (last_seq or 0) + 1
    prev, digest = rows.chain_link(a, seq, last_hash or GENESIS, detail)
    await conn.execute(
        f"INSERT INTO dispatch_audit ({rows.AUDIT_COLUMNS}, {rows.AUDIT_CHAIN_COLUMNS})"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)".encode(),
        (*rows.audit_params(a), seq, prev, digest),
    )


async def verify_audit(
    conn: psycopg.AsyncConnection[TupleRow], anchor: Anchor | None = None
) -> ChainReport:
    """Walk the audit chain (streamed through a server-side cursor, in one snapshot) and
    cross-check each dispatch's state against its last audit row."""
    verifier = ChainVerifier(anchor)
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        async with conn.cursor(name="telecare_audit_verify") as cur:
            await cur.execute(
                f"SELECT {rows.CHAIN_ROW_COLUMNS} FROM dispatch_audit WHERE seq IS NOT NULL"
                " ORDER BY seq".encode()
            )
            async for found in cur:
                verifier.feed(rows.chain_row(found))
        report = verifier.finish()
        cur2 = await conn.execute("SELECT count(*) FROM dispatch_audit WHERE seq IS NULL")
        (unchained,) = await cur2.fetchone() or (0,)
        report.unchained = int(unchained)
        cur2 = await conn.execute(
            "SELECT d.dispatch_id, d.state, l.to_state FROM dispatches d"
            " LEFT JOIN LATERAL (SELECT a.to_state FROM dispatch_audit a"
            "  WHERE a.dispatch_id = d.dispatch_id ORDER BY a.audit_id DESC LIMIT 1) l ON true"
            " WHERE l.to_state IS DISTINCT FROM d.state ORDER BY d.dispatch_id"
        )
        report.problems.extend(rows.state_mismatch(r) for r in await cur2.fetchall())
    return report


_INSERT_EVENT = (
    "INSERT INTO alarm_events (device_id, msg_id, type, phase, ts, site_id,"
    " resident_id, zone, source, code, digest, device_type, location)"
    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (device_id, msg_id) DO NOTHING"
)


#: Many events in one statement (one round trip, one commit); returns the new keys.
_INSERT_EVENTS = (
    "INSERT INTO alarm_events (device_id, msg_id, type, phase, ts, site_id,"
    " resident_id, zone, source, code, digest, device_type, location)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[], %s::integer[],"
    " %s::text[], %s::text[], %s::text[])"
    " ON CONFLICT (device_id, msg_id) DO NOTHING RETURNING device_id, msg_id"
)


def _event_params(e: AlarmEvent) -> tuple[Any, ...]:
    return (
        e.device_id,
        e.msg_id,
        e.type.value,
        e.phase.value,
        e.ts,
        e.site_id,
        e.resident_id,
        e.zone,
        e.source,
        e.code,
        rows.event_digest(e),
        e.device_type,
        e.location,
    )


def _alert_params(a: Alert) -> tuple[Any, ...]:
    return (
        a.alert_id,
        a.kind.value,
        a.priority,
        a.reason,
        a.ts,
        a.site_id,
        a.resident_id,
        a.device_id,
        a.event_type.value if a.event_type else None,
        a.source_key,
        json.dumps(a.detail),
    )


async def _write_change(conn: psycopg.AsyncConnection[TupleRow], change: RegistryChange) -> None:
    await conn.execute(
        "INSERT INTO registry_audit (at, actor, action, kind, entity_id, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (
            change.at,
            change.actor,
            change.action,
            change.kind,
            change.entity_id,
            Jsonb(change.detail),
        ),
    )
