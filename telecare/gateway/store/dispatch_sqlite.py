"""The dispatch repository (``dispatch.repository.DispatchRepository``) on SQLite.

Built from a ``SqliteStore``: ``SqliteDispatchRepository(store._run)`` (seam for the
lead: ``_run`` is the store's "run this function on the connection, in a worker thread,
under the store's lock"; a public name for it would be better). Every write is one
``BEGIN IMMEDIATE`` transaction, and the store's lock serialises writers, so
:meth:`apply`'s ``WHERE version = ?`` compare-and-set gives exactly one winner.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from telecare.devices.model import Dispatch, DispatchState
from telecare.dispatch.audit_chain import Anchor, ChainReport
from telecare.dispatch.records import AuditRecord, CascadeEntry, Receipt, Timer, TimerKind
from telecare.gateway.store import rows
from telecare.gateway.store.rows import iso
from telecare.gateway.store.sqlite import insert_audit, insert_dispatch, transaction, verify_audit

__all__ = ["SqliteDispatchRepository"]

_T = TypeVar("_T")
Runner = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]


class SqliteDispatchRepository:
    def __init__(self, run: Runner) -> None:
        self._run = run

    async def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        result: _T = await self._run(lambda c: transaction(c, fn))
        return result

    async def _all(self, query: str, params: Sequence[Any]) -> list[Any]:
        found: list[Any] = await self._run(lambda c: c.execute(query, params).fetchall())
        return found

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

        def run(conn: sqlite3.Connection) -> bool:
            if not insert_dispatch(conn, d):
                return False
            if group_key is not None:
                conn.execute(
                    "INSERT INTO dispatch_groups (dispatch_id, group_key) VALUES (?, ?)",
                    (d.dispatch_id, group_key),
                )
                _add_members(conn, d.dispatch_id, members)
            insert_audit(conn, audit)
            conn.executemany(
                "INSERT INTO dispatch_cascade (dispatch_id, position, responder_id, timeout_s)"
                " VALUES (?,?,?,?)",
                [(d.dispatch_id, e.position, e.responder_id, e.timeout_s) for e in cascade],
            )
            _set_timers(conn, timers)
            return True

        return await self._write(run)

    async def load(self, dispatch_id: str) -> Dispatch | None:
        found = await self._all(
            f"SELECT {rows.DISPATCH_COLUMNS} FROM dispatches WHERE dispatch_id = ?",
            (dispatch_id,),
        )
        return rows.dispatch(found[0]) if found else None

    async def load_for_alert(self, alert_id: str) -> Dispatch | None:
        found = await self._all(
            f"SELECT {rows.DISPATCH_COLUMNS} FROM dispatches WHERE alert_id = ?", (alert_id,)
        )
        if not found:
            found = await self._all(
                f"SELECT {_D_COLUMNS} FROM dispatch_members m JOIN dispatches d"
                " USING (dispatch_id) WHERE m.alert_id = ?",
                (alert_id,),
            )
        return rows.dispatch(found[0]) if found else None

    async def open_group(self, group_key: str) -> Dispatch | None:
        found = await self._all(
            f"SELECT {_D_COLUMNS} FROM dispatch_groups g JOIN dispatches d USING (dispatch_id)"
            " WHERE g.group_key = ? AND d.state NOT IN ('resolved', 'cancelled')"
            " ORDER BY d.created_at DESC LIMIT 1",
            (group_key,),
        )
        return rows.dispatch(found[0]) if found else None

    async def add_members(self, dispatch_id: str, alert_ids: Sequence[str]) -> int:
        ids = list(alert_ids)
        added: int = await self._write(lambda c: _add_members(c, dispatch_id, ids))
        return added

    async def members(self, dispatch_id: str) -> list[str]:
        found = await self._all(
            "SELECT alert_id FROM dispatch_members WHERE dispatch_id = ? ORDER BY alert_id",
            (dispatch_id,),
        )
        return [r[0] for r in found]

    async def clear_member(self, alert_id: str, at: datetime) -> tuple[str, int] | None:
        def run(conn: sqlite3.Connection) -> tuple[str, int] | None:
            row = conn.execute(
                "SELECT dispatch_id FROM dispatch_members WHERE alert_id = ?", (alert_id,)
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE dispatch_members SET cleared_at = coalesce(cleared_at, ?)"
                " WHERE alert_id = ?",
                (iso(at), alert_id),
            )
            (left,) = conn.execute(
                "SELECT count(*) FROM dispatch_members WHERE dispatch_id = ?"
                " AND cleared_at IS NULL",
                (row[0],),
            ).fetchone()
            return row[0], int(left)

        result: tuple[str, int] | None = await self._write(run)
        return result

    async def apply(
        self,
        expected_version: int,
        dispatch: Dispatch,
        audit: AuditRecord,
        set_timers: Sequence[Timer],
        clear_timers: Sequence[TimerKind],
    ) -> bool:
        d = dispatch

        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE dispatches SET state = ?, updated_at = ?, responder_id = ?,"
                " cascade_step = ?, outcome = ?, version = ?"
                " WHERE dispatch_id = ? AND version = ?",
                (
                    d.state.value,
                    iso(d.updated_at),
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
            insert_audit(conn, audit)
            conn.executemany(
                "DELETE FROM dispatch_timers WHERE dispatch_id = ? AND kind = ?",
                [(d.dispatch_id, k.value) for k in clear_timers],
            )
            _set_timers(conn, set_timers)
            return True

        return await self._write(run)

    async def reroute(
        self,
        expected_version: int,
        dispatch: Dispatch,
        audit: AuditRecord,
        cascade: Sequence[CascadeEntry],
    ) -> bool:
        d = dispatch

        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE dispatches SET updated_at = ?, responder_id = ?, cascade_step = ?,"
                " version = ? WHERE dispatch_id = ? AND version = ?",
                (
                    iso(d.updated_at),
                    d.responder_id,
                    d.cascade_step,
                    d.version,
                    d.dispatch_id,
                    expected_version,
                ),
            )
            if cur.rowcount != 1:
                return False
            insert_audit(conn, audit)
            conn.execute("DELETE FROM dispatch_cascade WHERE dispatch_id = ?", (d.dispatch_id,))
            conn.executemany(
                "INSERT INTO dispatch_cascade (dispatch_id, position, responder_id, timeout_s)"
                " VALUES (?,?,?,?)",
                [(d.dispatch_id, e.position, e.responder_id, e.timeout_s) for e in cascade],
            )
            return True

        return await self._write(run)

    async def cascade(self, dispatch_id: str) -> list[CascadeEntry]:
        found = await self._all(
            "SELECT position, responder_id, timeout_s FROM dispatch_cascade"
            " WHERE dispatch_id = ? ORDER BY position",
            (dispatch_id,),
        )
        return [CascadeEntry(int(p), r, int(t)) for p, r, t in found]

    async def timers(self, dispatch_id: str) -> list[Timer]:
        found = await self._all(
            "SELECT dispatch_id, kind, due_at, step FROM dispatch_timers"
            " WHERE dispatch_id = ? ORDER BY due_at, kind",
            (dispatch_id,),
        )
        return [_timer(r) for r in found]

    async def due_timers(self, now: datetime, limit: int = 100) -> list[Timer]:
        found = await self._all(
            "SELECT t.dispatch_id, t.kind, t.due_at, t.step FROM dispatch_timers t"
            " JOIN dispatches d USING (dispatch_id)"
            " WHERE t.due_at <= ? ORDER BY d.priority, t.due_at LIMIT ?",
            (iso(now), limit),
        )
        return [_timer(r) for r in found]

    async def next_due(self) -> datetime | None:
        found = await self._all("SELECT min(due_at) FROM dispatch_timers", ())
        return rows.as_dt(found[0][0]) if found and found[0][0] is not None else None

    async def drop_timer(self, timer: Timer) -> None:
        t = timer
        await self._write(
            lambda c: c.execute(
                "DELETE FROM dispatch_timers WHERE dispatch_id = ? AND kind = ?"
                " AND due_at = ? AND step = ?",
                (t.dispatch_id, t.kind.value, iso(t.due_at), t.step),
            )
        )

    async def audit(self, dispatch_id: str) -> list[AuditRecord]:
        found = await self._all(
            f"SELECT {rows.AUDIT_COLUMNS} FROM dispatch_audit WHERE dispatch_id = ?"
            " ORDER BY audit_id",
            (dispatch_id,),
        )
        return [_audit(r) for r in found]

    async def audit_between(self, start: datetime, end: datetime) -> list[AuditRecord]:
        found = await self._all(
            "SELECT a.dispatch_id, a.at, a.from_state, a.to_state, a.actor, a.reason, a.detail"
            " FROM dispatch_audit a JOIN dispatches d USING (dispatch_id)"
            " WHERE d.created_at >= ? AND d.created_at < ? ORDER BY a.audit_id",
            (iso(start), iso(end)),
        )
        return [_audit(r) for r in found]

    async def verify_audit(self, anchor: Anchor | None = None) -> ChainReport:
        report: ChainReport = await self._run(lambda c: verify_audit(c, anchor))
        return report

    async def record_receipt(self, receipt: Receipt) -> None:
        r = receipt
        await self._write(
            lambda c: c.execute(
                "INSERT INTO notification_receipts (dispatch_id, channel, recipient, status,"
                " attempts, at, detail) VALUES (?,?,?,?,?,?,?)",
                (r.dispatch_id, r.channel, r.recipient, r.status, r.attempts, iso(r.at), r.detail),
            )
        )

    async def receipts(self, dispatch_id: str) -> list[Receipt]:
        found = await self._all(
            "SELECT dispatch_id, channel, recipient, status, attempts, at, detail"
            " FROM notification_receipts WHERE dispatch_id = ? ORDER BY receipt_id",
            (dispatch_id,),
        )
        return [Receipt(r[0], r[1], r[2], r[3], int(r[4]), rows.as_dt(r[5]), r[6]) for r in found]


_D_COLUMNS = ", ".join(f"d.{c.strip()}" for c in rows.DISPATCH_COLUMNS.split(","))


def _add_members(conn: sqlite3.Connection, dispatch_id: str, alert_ids: Sequence[str]) -> int:
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO dispatch_members (alert_id, dispatch_id) VALUES (?, ?)",
        [(a, dispatch_id) for a in alert_ids],
    )
    return conn.total_changes - before


def _set_timers(conn: sqlite3.Connection, timers: Sequence[Timer]) -> None:
    conn.executemany(
        "INSERT INTO dispatch_timers (dispatch_id, kind, due_at, step) VALUES (?,?,?,?)"
        " ON CONFLICT (dispatch_id, kind) DO UPDATE SET due_at = excluded.due_at,"
        " step = excluded.step",
        [(t.dispatch_id, t.kind.value, iso(t.due_at), t.step) for t in timers],
    )


def _timer(row: Any) -> Timer:
    return Timer(row[0], TimerKind(row[1]), rows.as_dt(row[2]), int(row[3]))


def _audit(row: Any) -> AuditRecord:
    detail = json.loads(row[6] or "{}") if isinstance(row[6], str) else (row[6] or {})
    return AuditRecord(
        dispatch_id=row[0],
        at=rows.as_dt(row[1]),
        from_state=DispatchState(row[2]) if row[2] else None,
        to_state=DispatchState(row[3]),
        actor=row[4],
        reason=row[5],
        detail=dict(detail),
    )
