"""The dispatch repository (``dispatch.repository.DispatchRepository``), written once for
both backends on ``store.sql``; every store exposes one as ``store.dispatches``.

Every write is one transaction. :meth:`apply` and :meth:`reroute` compare-and-set
``version`` (``UPDATE ... WHERE version = ?``): in PostgreSQL a concurrent updater
blocks on the row lock, then re-checks the ``WHERE`` on the committed row and matches
nothing; in SQLite the one writer (``BEGIN IMMEDIATE``) serialises them; either way
exactly one of several racing transitions commits and the others see ``False``.

Audit records are appended to one hash chain per store (``dispatch.audit_chain``):
appenders take turns (``Dialect.serialise``) until they commit, so racing transitions
still make one gapless chain; the unique ``seq`` index refuses a fork should anything
append without the lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from telecare.devices.model import Dispatch
from telecare.dispatch.audit_chain import (
    GENESIS,
    Anchor,
    ChainReport,
    ChainRow,
    ChainVerifier,
    canonical,
    row_hash,
)
from telecare.dispatch.records import AuditRecord, CascadeEntry, Receipt, Timer, TimerKind
from telecare.gateway.store.sql import Queries, Row, Sql, json_value
from telecare.gateway.store.tables import (
    AUDIT,
    DISPATCH_CASCADE,
    DISPATCHES,
    GROUPS,
    MEMBERS,
    RECEIPTS,
    TIMERS,
)

__all__ = ["OPEN", "SqlDispatchRepository", "append_audit"]

#: A dispatch not yet resolved or cancelled, on the alias ``d``: written as the partial
#: index ``dispatches_open`` is (no parameters), so that the planner can use it.
OPEN: Final = "d.state NOT IN ('resolved', 'cancelled')"
_CHAIN = f"audit_id, seq, prev_hash, row_hash, {AUDIT.names}"
_PAGE = 5000
#: A new dispatch, unless its alert already has one: its own (the unique ``alert_id``) or
#: a group dispatch it is a member of.
_NEW = (
    f"INSERT INTO dispatches ({DISPATCHES.names}) SELECT {', '.join('?' * len(DISPATCHES.written))}"
    " WHERE NOT EXISTS (SELECT 1 FROM dispatch_members WHERE alert_id = ?) ON CONFLICT DO NOTHING"
)
#: In one statement: the new record's detail as the database will give it back (jsonb
#: normalises numbers), the chain's head, and whether this transaction's insert made the
#: dispatch: it exists but has no audit row yet (a dispatch is only ever committed with
#: its first audit row, so one already there was made by someone else: a redelivery).
_HEAD = (
    "SELECT CAST(? AS {json}), h.seq, h.row_hash,"
    " CASE WHEN EXISTS (SELECT 1 FROM dispatches WHERE dispatch_id = ?)"
    " AND NOT EXISTS (SELECT 1 FROM dispatch_audit WHERE dispatch_id = ?) THEN 1 ELSE 0 END"
    " FROM (SELECT 1 AS one) x LEFT JOIN"
    " (SELECT seq, row_hash FROM dispatch_audit WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1)"
    " h ON x.one = 1"
)
#: What a move along the cascade changes (a transition also changes state and outcome).
_MOVED = ("updated_at", "responder_id", "cascade_step")


class SqlDispatchRepository:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql

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
        # Pipelined: the insert, the audit lock and the chain's head in one round trip
        # (which also tells whether the insert happened), the rest with the commit.
        async with self.sql.transaction(pipelined=True) as tx:
            await tx.send(_NEW, *DISPATCHES.params(d), d.alert_id)
            head = await _chain_head(self.sql, tx, audit)
            if not head[3]:
                return False  # refused: nothing written
            if group_key is not None:
                await tx.send(GROUPS.insert(""), d.dispatch_id, group_key)
                await tx.execute_many(MEMBERS.insert(), [(a, d.dispatch_id) for a in members])
            await _append(tx, audit, head)
            await _set_cascade(tx, d.dispatch_id, cascade)
            await _set_timers(tx, timers)
            return True

    async def load(self, dispatch_id: str) -> Dispatch | None:
        return await DISPATCHES.one(self.sql, "WHERE dispatch_id = ?", dispatch_id)

    async def load_for_alert(self, alert_id: str) -> Dispatch | None:
        member = "SELECT dispatch_id FROM dispatch_members WHERE alert_id = ?"
        tail = f"WHERE alert_id = ? OR dispatch_id = ({member}) ORDER BY alert_id = ? DESC LIMIT 1"
        return await DISPATCHES.one(self.sql, tail, alert_id, alert_id, alert_id)  # its own first

    async def open_group(self, group_key: str) -> Dispatch | None:
        group = "SELECT dispatch_id FROM dispatch_groups WHERE group_key = ?"
        tail = f"d WHERE dispatch_id IN ({group}) AND {OPEN} ORDER BY created_at DESC LIMIT 1"
        return await DISPATCHES.one(self.sql, tail, group_key)

    async def add_members(self, dispatch_id: str, alert_ids: Sequence[str]) -> int:
        return await self.sql.execute_many(MEMBERS.insert(), [(a, dispatch_id) for a in alert_ids])

    async def members(self, dispatch_id: str) -> list[str]:
        q = "SELECT alert_id FROM dispatch_members WHERE dispatch_id = ? ORDER BY alert_id"
        return [r[0] for r in await self.sql.fetch_all(q, dispatch_id)]

    async def clear_member(self, alert_id: str, at: datetime) -> tuple[str, int] | None:
        clear = "UPDATE dispatch_members SET cleared_at = coalesce(cleared_at, ?)"
        left = "SELECT count(*) FROM dispatch_members WHERE dispatch_id = ? AND cleared_at IS NULL"
        async with self.sql.transaction() as tx:
            row = await tx.fetch_one(
                f"{clear} WHERE alert_id = ? RETURNING dispatch_id", at, alert_id
            )
            if row is None:
                return None
            [(n,)] = await tx.fetch_all(left, row[0])
            return row[0], int(n)

    async def apply(
        self,
        expected_version: int,
        dispatch: Dispatch,
        audit: AuditRecord,
        set_timers: Sequence[Timer],
        clear_timers: Sequence[TimerKind],
    ) -> bool:
        d, changed = dispatch, ("state", *_MOVED, "outcome")
        async with self.sql.transaction() as tx:
            if not await _compare_and_set(tx, expected_version, d, changed):
                return False
            await append_audit(self.sql, tx, audit)
            await tx.execute_many(
                "DELETE FROM dispatch_timers WHERE dispatch_id = ? AND kind = ?",
                [(d.dispatch_id, k) for k in clear_timers],
            )
            await _set_timers(tx, set_timers)
            return True

    async def reroute(
        self,
        expected_version: int,
        dispatch: Dispatch,
        audit: AuditRecord,
        cascade: Sequence[CascadeEntry],
    ) -> bool:
        d = dispatch
        async with self.sql.transaction() as tx:
            if not await _compare_and_set(tx, expected_version, d, _MOVED):
                return False
            await append_audit(self.sql, tx, audit)
            await tx.execute("DELETE FROM dispatch_cascade WHERE dispatch_id = ?", d.dispatch_id)
            await _set_cascade(tx, d.dispatch_id, cascade)
            return True

    async def cascade(self, dispatch_id: str) -> list[CascadeEntry]:
        q = "SELECT position, responder_id, timeout_s FROM dispatch_cascade WHERE dispatch_id = ?"
        found = await self.sql.fetch_all(f"{q} ORDER BY position", dispatch_id)
        return [CascadeEntry(*r) for r in found]

    async def timers(self, dispatch_id: str) -> list[Timer]:
        tail = "WHERE dispatch_id = ? ORDER BY due_at, kind"
        return await TIMERS.all(self.sql, tail, dispatch_id)

    async def due_timers(self, now: datetime, limit: int = 100) -> list[Timer]:
        tail = "JOIN dispatches USING (dispatch_id) WHERE due_at <= ? ORDER BY priority, due_at"
        return await TIMERS.all(self.sql, f"{tail} LIMIT ?", now, limit)

    async def next_due(self) -> datetime | None:
        row = await self.sql.fetch_one("SELECT min(due_at) FROM dispatch_timers")
        return row[0] if row else None

    async def drop_timer(self, timer: Timer) -> None:
        match = " AND ".join(f"{c.name} = ?" for c in TIMERS.written)
        await self.sql.execute(f"DELETE FROM dispatch_timers WHERE {match}", *TIMERS.params(timer))

    async def audit(self, dispatch_id: str) -> list[AuditRecord]:
        return await AUDIT.all(self.sql, "WHERE dispatch_id = ? ORDER BY audit_id", dispatch_id)

    async def audit_between(self, start: datetime, end: datetime) -> list[AuditRecord]:
        tail = "JOIN dispatches USING (dispatch_id) WHERE created_at >= ? AND created_at < ?"
        return await AUDIT.all(self.sql, f"{tail} ORDER BY audit_id", start, end)

    async def verify_audit(self, anchor: Anchor | None = None) -> ChainReport:
        """Walk the chain in ``seq`` order, a page at a time, in one snapshot, and
        cross-check each dispatch's state against its last audit row."""
        verifier = ChainVerifier(anchor)
        async with self.sql.transaction() as tx:
            if snapshot := self.sql.dialect.snapshot:
                await tx.execute(snapshot)
            after = -(2**62)
            while page := await tx.fetch_all(
                f"SELECT {_CHAIN} FROM dispatch_audit WHERE seq > ? ORDER BY seq LIMIT ?",
                after,
                _PAGE,
            ):
                for r in page:  # the stored columns, the detail parsed
                    verifier.feed(ChainRow(*(*r[:-1], json_value(r[-1]))))
                after = page[-1][1]
            report = verifier.finish()
            unchained = await tx.fetch_one("SELECT count(*) FROM dispatch_audit WHERE seq IS NULL")
            report.unchained = int(unchained[0]) if unchained else 0
            states = await tx.fetch_all(
                "SELECT d.dispatch_id, d.state, (SELECT a.to_state FROM dispatch_audit a"
                " WHERE a.dispatch_id = d.dispatch_id ORDER BY a.audit_id DESC LIMIT 1)"
                " FROM dispatches d ORDER BY d.dispatch_id"
            )
        report.problems.extend(_mismatch(*r) for r in states if r[1] != r[2])
        return report

    async def record_receipt(self, receipt: Receipt) -> None:
        await RECEIPTS.add(self.sql, receipt, "")


async def append_audit(sql: Sql, tx: Queries, record: AuditRecord) -> None:
    """Append ``record`` to the hash chain, inside the transaction ``tx``."""
    await _append(tx, record, await _chain_head(sql, tx, record))


async def _chain_head(sql: Sql, tx: Queries, record: AuditRecord) -> Row:
    """Take the chain's lock; then :data:`_HEAD` for ``record``."""
    if lock := sql.dialect.serialise("telecare-audit"):
        await tx.send(lock)
    # A new statement after the lock: under READ COMMITTED it sees the last committed row.
    head = await tx.fetch_one(
        _HEAD.format(json=sql.dialect.json_type),
        record.detail,
        record.dispatch_id,
        record.dispatch_id,
    )
    assert head is not None  # one row, whether or not the chain has one
    return head


async def _append(tx: Queries, record: AuditRecord, head: Row) -> None:
    stored, last_seq, last_hash, _ = head
    seq, prev = (int(last_seq) + 1, str(last_hash)) if last_seq is not None else (1, GENESIS)
    a, detail = record, json_value(stored)
    content = canonical(
        seq, a.dispatch_id, a.at, a.from_state, a.to_state, a.actor, a.reason, detail
    )
    await tx.send(
        f"INSERT INTO dispatch_audit ({AUDIT.names}, seq, prev_hash, row_hash)"
        f" VALUES ({', '.join('?' * (len(AUDIT.written) + 3))})",
        *AUDIT.params(a), seq, prev, row_hash(prev, content),
    )  # fmt: skip


async def _compare_and_set(
    tx: Queries, expected_version: int, d: Dispatch, columns: Sequence[str]
) -> bool:
    """Set ``columns`` and ``version`` from ``d`` if the row is still at ``expected_version``."""
    sets = ", ".join(f"{c} = ?" for c in (*columns, "version"))
    q = f"UPDATE dispatches SET {sets} WHERE dispatch_id = ? AND version = ?"
    values = [getattr(d, c) for c in (*columns, "version")]
    return await tx.execute(q, *values, d.dispatch_id, expected_version) == 1


async def _set_cascade(tx: Queries, dispatch_id: str, cascade: Sequence[CascadeEntry]) -> None:
    rows = [(dispatch_id, e.position, e.responder_id, e.timeout_s) for e in cascade]
    await tx.execute_many(DISPATCH_CASCADE.insert(""), rows)


async def _set_timers(tx: Queries, timers: Sequence[Timer]) -> None:
    await tx.execute_many(TIMERS.upsert("dispatch_id", "kind"), map(TIMERS.params, timers))


def _mismatch(dispatch_id: Any, state: Any, last: Any) -> str:
    if last is None:
        return f"dispatch {dispatch_id} has no audit row: its rows were removed"
    return (
        f"dispatch {dispatch_id} is '{state}' but its last audit row says '{last}':"
        " audit rows were removed (or the state was changed without an audit row)"
    )
