"""The console's own state (migration 0018: ownership, holds and re-checks, notices,
resident notes, the viewed-audit, closures), kept with the console as the tablet's is
(``web.tablet_store``). Its reads of the gateway's data (the queue's names, a resident's
device health, the unit's own account of an event, late arrivals, the filtered lists of
dispatches and alarms) are the store's reports role (``store.reports.SqlReports``).

Written once for both backends on ``store.sql`` (``gateway.store.sql``); each table is
one spec (``gateway.store.tables``) next to its row type.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from telecare.gateway.store.sql import Sql
from telecare.gateway.store.tables import INT, Table
from telecare.gateway.store.tables import Column as C

__all__ = [
    "NOTE_KINDS",
    "PRIVATE_NOTE_KINDS",
    "Closure",
    "ConsoleStore",
    "Note",
    "Notice",
    "Owner",
    "TimerRow",
    "View",
]

#: Kinds of resident note the banner shows (``console_notes.kind``).
NOTE_KINDS: Final = ("key_safe", "medical", "risk", "language", "hearing", "note")
#: Kinds shown only on demand, each view audited.
PRIVATE_NOTE_KINDS: Final = frozenset({"key_safe", "medical"})


@dataclass(frozen=True, slots=True)
class Owner:
    owner_key: str
    operator: str
    dispatch_id: str
    since: datetime


@dataclass(frozen=True, slots=True)
class TimerRow:
    dispatch_id: str
    kind: str  # "hold" or "recheck"
    due_at: datetime
    set_by: str
    set_at: datetime
    reason: str
    reference: str | None


@dataclass(frozen=True, slots=True)
class Notice:
    notice_id: int
    dispatch_id: str
    kind: str
    text: str
    created_at: datetime
    acked_by: str | None
    acked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Note:
    note_id: int
    resident_id: str
    kind: str
    text: str
    expires_at: datetime | None
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class View:
    resident_id: str
    what: str
    operator: str
    at: datetime
    dispatch_id: str | None


@dataclass(frozen=True, slots=True)
class Closure:
    dispatch_id: str
    outcome: str
    false_alarm: bool
    note: str
    closed_by: str
    closed_at: datetime


OWNERS = Table.of("console_owners", Owner)
TIMERS = Table.of("console_timers", TimerRow)
NOTICES = Table.of("console_notices", Notice, C("notice_id", INT, auto=True))
NOTES = Table.of("console_notes", Note, C("note_id", INT, auto=True))
VIEWS = Table.of("console_views", View)
CLOSURES = Table.of("console_closures", Closure)


_MATCH: Final = "{0} = COALESCE(CAST(? AS TEXT), {0})"  # a parameter that may be "any"


class ConsoleStore:
    """The console's tables and reads, on ``store.sql``."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql

    # -- ownership ---------------------------------------------------------------------
    async def claim(
        self, owner_key: str, operator: str, dispatch_id: str, now: datetime
    ) -> tuple[Owner, bool]:
        """Make ``operator`` the owner of ``owner_key`` unless someone already is; the
        owner after the call (compare it with ``operator``) and whether it is new."""
        new = await OWNERS.add(self.sql, Owner(owner_key, operator, dispatch_id, now))
        owner = await self.owner(owner_key)
        assert owner is not None  # just inserted or already there
        return owner, new > 0

    async def owner(self, owner_key: str) -> Owner | None:
        return await OWNERS.one(self.sql, "WHERE owner_key = ?", owner_key)

    async def owners(self) -> list[Owner]:
        return await OWNERS.all(self.sql, "ORDER BY since")

    async def release(self, owner_key: str, operator: str | None = None) -> bool:
        """Hand ``owner_key`` back to the queue (only if ``operator`` owns it, when given)."""
        q = f"DELETE FROM console_owners WHERE owner_key = ? AND {_MATCH.format('operator')}"
        return await self.sql.execute(q, owner_key, operator) > 0

    # -- timers ------------------------------------------------------------------------
    async def set_timer(self, row: TimerRow) -> None:
        await TIMERS.put(self.sql, row, "dispatch_id", "kind")

    async def clear_timer(self, dispatch_id: str, kind: str | None = None) -> int:
        q = f"DELETE FROM console_timers WHERE dispatch_id = ? AND {_MATCH.format('kind')}"
        return await self.sql.execute(q, dispatch_id, kind)

    async def take_timer(self, row: TimerRow) -> bool:
        """Remove exactly ``row`` (same due time); ``True`` for the one caller that did."""
        q = "DELETE FROM console_timers WHERE dispatch_id = ? AND kind = ? AND due_at = ?"
        return await self.sql.execute(q, row.dispatch_id, row.kind, row.due_at) > 0

    async def timers(self, due_by: datetime | None = None) -> list[TimerRow]:
        """Every console timer (or those due by ``due_by``), earliest first."""
        due = due_by or datetime.max.replace(tzinfo=UTC)
        return await TIMERS.all(self.sql, "WHERE due_at <= ? ORDER BY due_at", due)

    # -- notices -----------------------------------------------------------------------
    async def add_notice(self, dispatch_id: str, kind: str, text: str, now: datetime) -> None:
        await NOTICES.add(self.sql, Notice(0, dispatch_id, kind, text, now, None, None), "")

    async def notices(self, dispatch_id: str | None = None) -> list[Notice]:
        """Unacknowledged notices (of one dispatch, or all), oldest first."""
        tail = f"WHERE acked_at IS NULL AND {_MATCH.format('dispatch_id')}"
        return await NOTICES.all(self.sql, f"{tail} ORDER BY notice_id", dispatch_id)

    async def ack_notice(self, notice_id: int, operator: str, now: datetime) -> bool:
        q = "UPDATE console_notices SET acked_by = ?, acked_at = ?"
        q += " WHERE notice_id = ? AND acked_at IS NULL"
        return await self.sql.execute(q, operator, now, notice_id) > 0

    # -- resident notes and who viewed them --------------------------------------------
    async def add_note(
        self,
        resident_id: str,
        kind: str,
        text: str,
        by: str,
        now: datetime,
        expires_at: datetime | None = None,
    ) -> None:
        if kind not in NOTE_KINDS:
            raise ValueError(f"note kind {kind!r} is not one of {', '.join(NOTE_KINDS)}")
        await NOTES.add(self.sql, Note(0, resident_id, kind, text, expires_at, by, now), "")

    async def notes(self, resident_id: str, now: datetime) -> list[Note]:
        """The resident's notes that have not expired, by kind then age."""
        tail = "WHERE resident_id = ? AND (expires_at IS NULL OR expires_at > ?)"
        return await NOTES.all(self.sql, f"{tail} ORDER BY kind, note_id", resident_id, now)

    async def record_view(
        self, resident_id: str, what: str, operator: str, now: datetime, dispatch_id: str | None
    ) -> None:
        await VIEWS.add(self.sql, View(resident_id, what, operator, now, dispatch_id), "")

    async def views(self, resident_id: str, limit: int = 20) -> list[View]:
        tail = "WHERE resident_id = ? ORDER BY view_id DESC LIMIT ?"
        return await VIEWS.all(self.sql, tail, resident_id, limit)

    # -- closures ----------------------------------------------------------------------
    async def record_closure(self, closure: Closure) -> None:
        await CLOSURES.add(self.sql, closure, "ON CONFLICT (dispatch_id) DO NOTHING")

    async def closure(self, dispatch_id: str) -> Closure | None:
        return await CLOSURES.one(self.sql, "WHERE dispatch_id = ?", dispatch_id)
