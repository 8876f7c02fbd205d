"""The dispatch repository (``dispatch.repository.DispatchRepository``) on PostgreSQL.

Built from a ``PostgresStore``'s pool: ``PgDispatchRepository(store.pool)``. Every write
is one transaction; :meth:`apply` is ``UPDATE ... WHERE version = %s`` (under READ
COMMITTED a concurrent updater blocks on the row lock, then re-checks the ``WHERE`` on
the committed row and matches nothing), so of several racing transitions exactly one
commits and the others see ``False``.

Error handling: psycopg errors propagate; the caller decides (the service retries a
timer on its next tick, an API handler answers 503).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from telecare.devices.model import Dispatch, DispatchState
from telecare.dispatch.audit_chain import Anchor, ChainReport
from telecare.dispatch.records import AuditRecord, CascadeEntry, Receipt, Timer, TimerKind
from telecare.gateway.store import rows
from telecare.gateway.store.postgres import insert_audit, insert_dispatch, verify_audit

__all__ = ["PgDispatchRepository"]


class PgDispatchRepository:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def create(
        self,
        dispatch: Dispatch,
        audit: AuditRecord,
        cascade: Sequence[CascadeEntry],
        timers: Sequence[Timer],
        *,
        group_key: str | None = None,
        members: Sequence[str] = (),
    ) -> bool:
        d = dispatch
        async with self._pool.connection() as conn, conn.transaction():
            if not await insert_dispatch(conn, d):
                return False
            if group_key is not None:
                await conn.execute(
                    "INSERT INTO dispatch_groups (dispatch_id, group_key) VALUES (%s, %s)",
                    (d.dispatch_id, group_key),
                )
                await _add_members(conn, d.dispatch_id, members)
            await insert_audit(conn, audit)
            if cascade:
                async with conn.cursor() as c:
                    await c.executemany(
                        "INSERT INTO dispatch_cascade (dispatch_id, position, responder_id,"
                        " timeout_s) VALUES (%s,%s,%s,%s)",
                        [(d.dispatch_id, e.position, e.responder_id, e.timeout_s) for e in cascade],
                    )
            await _set_timers(conn, timers)
            return True

    async def load(self, dispatch_id: str) -> Dispatch | None:
        row = await self._one(
            f"SELECT {rows.DISPATCH_COLUMNS} FROM dispatches WHERE dispatch_id = %s",
            (dispatch_id,),
        )
        return rows.dispatch(row) if row else None

    async def load_for_alert(self, alert_id: str) -> Dispatch | None:
        row = await self._one(
            f"SELECT {rows.DISPATCH_COLUMNS} FROM dispatches WHERE alert_id = %s", (alert_id,)
        )
        if row is None:
            row = await self._one(
                f"SELECT {_D_COLUMNS} FROM dispatch_members m JOIN dispatches d"
                " USING (dispatch_id) WHERE m.alert_id = %s",
                (alert_id,),
            )
        return rows.dispatch(row) if row else None

    async def open_group(self, group_key: str) -> Dispatch | None:
        row = await self._one(
            f"SELECT {_D_COLUMNS} FROM dispatch_groups g JOIN dispatches d USING (dispatch_id)"
            " WHERE g.group_key = %s AND d.state NOT IN ('resolved', 'cancelled')"
            " ORDER BY d.created_at DESC LIMIT 1",
            (group_key,),
        )
        return rows.dispatch(row) if row else None

    async def add_members(self, dispatch_id: str, alert_ids: Sequence[str]) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            return await _add_members(conn, dispatch_id, alert_ids)

    async def members(self, dispatch_id: str) -> list[str]:
        found = await self._all(
            "SELECT alert_id FROM dispatch_members WHERE dispatch_id = %s ORDER BY alert_id",
            (dispatch_id,),
        )
        return [r[0] for r in found]

    async def clear_member(self, alert_id: str, at: datetime) -> tuple[str, int] | None:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE dispatch_members SET cleared_at = coalesce(cleared_at, %s)"
                " WHERE alert_id = %s RETURNING dispatch_id",
                (at, alert_id),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            cur = await conn.execute(
                "SELECT count(*) FROM dispatch_members WHERE dispatch_id = %s"
                " AND cleared_at IS NULL",
                (row[0],),
            )
            left = await cur.fetchone()
            return row[0], int(left[0]) if left else 0

    async def apply(
        self,
        expected_version: int,
        dispatch: Dispatch,
        audit: AuditRecord,
        set_timers: Sequence[Timer],
        clear_timers: Sequence[TimerKind],
    ) -> bool:
        d = dispatch
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE dispatches SET state = %s, updated_at = %s, responder_id = %s,"
                " cascade_step = %s, outcome = %s, version = %s"
                " WHERE dispatch_id = %s AND version = %s",
                (
                    d.state.value,
                    d.updated_at,
                    d.responder_id,
                    d.cascade_step,
                    d.outcome,
                    d.version,
                    d.dispatch_id,
                    expected_version,
                ),
            )
            if cur.rowcount != 1:
                return False
            await insert_audit(conn, audit)
            if clear_timers:
                await conn.execute(
                    "DELETE FROM dispatch_timers WHERE dispatch_id = %s AND kind = ANY(%s)",
                    (d.dispatch_id, [k.value for k in clear_timers]),
                )
            await _set_timers(conn, set_timers)
            return True

    async def reroute(
        self,
        expected_version: int,
        dispatch: Dispatch,
        audit: AuditRecord,
        cascade: Sequence[CascadeEntry],
    ) -> bool:
        d = dispatch
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE dispatches SET updated_at = %s, responder_id = %s, cascade_step = %s,"
                " version = %s WHERE dispatch_id = %s AND version = %s",
                (
                    d.updated_at,
                    d.responder_id,
                    d.cascade_step,
                    d.version,
                    d.dispatch_id,
                    expected_version,
                ),
            )
            if cur.rowcount != 1:
                return False
            await insert_audit(conn, audit)
            await conn.execute(
                "DELETE FROM dispatch_cascade WHERE dispatch_id = %s", (d.dispatch_id,)
            )
            if cascade:
                async with conn.cursor() as c:
                    await c.executemany(
                        "INSERT INTO dispatch_cascade (dispatch_id, position, responder_id,"
                        " timeout_s) VALUES (%s,%s,%s,%s)",
                        [(d.dispatch_id, e.position, e.responder_id, e.timeout_s) for e in cascade],
                    )
            return True

    async def cascade(self, dispatch_id: str) -> list[CascadeEntry]:
        found = await self._all(
            "SELECT position, responder_id, timeout_s FROM dispatch_cascade"
            " WHERE dispatch_id = %s ORDER BY position",
            (dispatch_id,),
        )
        return [CascadeEntry(int(p), r, int(t)) for p, r, t in found]

    async def timers(self, dispatch_id: str) -> list[Timer]:
        found = await self._all(
            "SELECT dispatch_id, kind, due_at, step FROM dispatch_timers"
            " WHERE dispatch_id = %s ORDER BY due_at, kind",
            (dispatch_id,),
        )
        return [_timer(r) for r in found]

    async def due_timers(self, now: datetime, limit: int = 100) -> list[Timer]:
        found = await self._all(
            "SELECT t.dispatch_id, t.kind, t.due_at, t.step FROM dispatch_timers t"
            " JOIN dispatches d USING (dispatch_id)"
            " WHERE t.due_at <= %s ORDER BY d.priority, t.due_at LIMIT %s",
            (now, limit),
        )
        return [_timer(r) for r in found]

    async def next_due(self) -> datetime | None:
        row = await self._one("SELECT min(due_at) FROM dispatch_timers", ())
        return rows.as_dt(row[0]) if row and row[0] is not None else None

    async def drop_timer(self, timer: Timer) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM dispatch_timers WHERE dispatch_id = %s AND kind = %s"
                " AND due_at = %s AND step = %s",
                (timer.dispatch_id, timer.kind.value, timer.due_at, timer.step),
            )

    async def audit(self, dispatch_id: str) -> list[AuditRecord]:
        found = await self._all(
            f"SELECT {rows.AUDIT_COLUMNS} FROM dispatch_audit WHERE dispatch_id = %s"
            " ORDER BY audit_id",
            (dispatch_id,),
        )
        return [_audit(r) for r in found]

    async def audit_between(self, start: datetime, end: datetime) -> list[AuditRecord]:
        found = await self._all(
            "SELECT a.dispatch_id, a.at, a.from_state, a.to_state, a.actor, a.reason, a.detail"
            " FROM dispatch_audit a JOIN dispatches d USING (dispatch_id)"
            " WHERE d.created_at >= %s AND d.created_at < %s ORDER BY a.audit_id",
            (start, end),
        )
        return [_audit(r) for r in found]

    async def verify_audit(self, anchor: Anchor | None = None) -> ChainReport:
        async with self._pool.connection() as conn:
            return await verify_audit(conn, anchor)

    async def record_receipt(self, receipt: Receipt) -> None:
        r = receipt
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO notification_receipts (dispatch_id, channel, recipient, status,"
                " attempts, at, detail) VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (r.dispatch_id, r.channel, r.recipient, r.status, r.attempts, r.at, r.detail),
            )

    async def receipts(self, dispatch_id: str) -> list[Receipt]:
        found = await self._all(
            "SELECT dispatch_id, channel, recipient, status, attempts, at, detail"
            " FROM notification_receipts WHERE dispatch_id = %s ORDER BY receipt_id",
            (dispatch_id,),
        )
        return [Receipt(r[0], r[1], r[2], r[3], int(r[4]), rows.as_dt(r[5]), r[6]) for r in found]

    async def _one(self, query: str, params: Sequence[Any]) -> Any:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return await cur.fetchone()

    async def _all(self, query: str, params: Sequence[Any]) -> list[Any]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return await cur.fetchall()


_D_COLUMNS = ", ".join(f"d.{c.strip()}" for c in rows.DISPATCH_COLUMNS.split(","))


async def _add_members(
    conn: AsyncConnection[TupleRow], dispatch_id: str, alert_ids: Sequence[str]
) -> int:
    if not alert_ids:
        return 0
    cur = await conn.execute(
        "INSERT INTO dispatch_members (alert_id, dispatch_id)"
        " SELECT unnest(%s::text[]), %s ON CONFLICT (alert_id) DO NOTHING",
        (list(alert_ids), dispatch_id),
    )
    return cur.rowcount


async def _set_timers(conn: AsyncConnection[TupleRow], timers: Sequence[Timer]) -> None:
    if not timers:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO dispatch_timers (dispatch_id, kind, due_at, step) VALUES (%s,%s,%s,%s)"
            " ON CONFLICT (dispatch_id, kind) DO UPDATE SET due_at = excluded.due_at,"
            " step = excluded.step",
            [(t.dispatch_id, t.kind.value, t.due_at, t.step) for t in timers],
        )


def _timer(row: Any) -> Timer:
    return Timer(row[0], TimerKind(row[1]), rows.as_dt(row[2]), int(row[3]))


def _audit(row: Any) -> AuditRecord:
    detail = row[6]
    if isinstance(detail, str):
        detail = json.loads(detail or "{}")
    return AuditRecord(
        dispatch_id=row[0],
        at=rows.as_dt(row[1]),
        from_state=DispatchState(row[2]) if row[2] else None,
        to_state=DispatchState(row[3]),
        actor=row[4],
        reason=row[5],
        detail=dict(detail or {}),
    )
