"""The console's role: its tables (migration 0018: ownership, holds and re-checks,
notices, resident notes, the viewed-audit, closures) and the read queries only the
operator console needs (the queue's names, a resident's device health, the unit's own
account of an event, late arrivals after an outage). The filtered lists of dispatches and
alarms the console shares with the operator API are the reports role's
(``reports.SqlReports.find_dispatches``, ``find_alarms``).

Written once for both backends on ``store.sql`` (``gateway.store.sql``); each table is
one spec (``gateway.store.tables``) next to its row type. Join rows are decoded here, by
position, so a test that runs each query on both backends catches a changed column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Final

from telecare.devices.model import AlarmEvent, ReceiverAccount
from telecare.gateway.store.sql import Sql, TextArray
from telecare.gateway.store.tables import EVENTS, INT, RECEIVER_ACCOUNTS, Table
from telecare.gateway.store.tables import Column as C

__all__ = [
    "NOTE_KINDS",
    "PRIVATE_NOTE_KINDS",
    "Closure",
    "ConsoleStore",
    "DeviceHealth",
    "LateArrival",
    "Note",
    "Notice",
    "Owner",
    "TimerRow",
    "UnitEvent",
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


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    device_id: str
    kind: str
    location: str
    heartbeat_interval_s: int
    online: bool | None
    changed_at: datetime | None
    last_heartbeat: datetime | None
    battery: float | None
    #: When the gateway last received an alarm event from it (any alarm proves it alive).
    last_event: datetime | None = None


@dataclass(frozen=True, slots=True)
class UnitEvent(AlarmEvent):
    """What an alarm unit said about one event, as received (the protocol ``source``, its
    codes), with the receiver accounts the device is mapped under (SCAIP ``cid``, Contact
    ID / SIA account), for the operator to call the unit back."""

    accounts: tuple[ReceiverAccount, ...] = ()


@dataclass(frozen=True, slots=True)
class LateArrival(AlarmEvent):
    """An alarm event that reached the gateway ``late_s`` after the device raised it."""

    @property
    def late_s(self) -> float:
        assert self.received_at is not None  # stored: the pipeline stamped it
        return (self.received_at - self.ts).total_seconds()


#: The columns of ``alarm_events`` (its one spec, ``EVENTS``) an ``AlarmEvent`` has, the
#: receive time included (which ``EVENTS.load`` leaves out: not in a spool record).
_EVENT_COLUMNS = [c for c in EVENTS.stored if c.name in {f.name for f in fields(AlarmEvent)}]
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

    # -- reads for the queue, the banner and the outage list ----------------------------
    async def who(self, resident_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Resident id -> (name, "site name, address") in one query (the queue's rows)."""
        rows = await self.sql.fetch_all(
            "SELECT r.resident_id, r.name, s.name, s.address FROM residents r JOIN sites s"
            f" ON s.site_id = r.site_id WHERE {self.sql.dialect.any_of('r.resident_id')}",
            TextArray(resident_ids),
        )
        return {r[0]: (r[1] or r[0], ", ".join(x for x in (r[2], r[3]) if x)) for r in rows}

    async def device_health(self, resident_id: str) -> list[DeviceHealth]:
        rows = await self.sql.fetch_all(
            "SELECT d.device_id, d.kind, d.location, d.heartbeat_interval_s, s.online,"
            " s.changed_at, s.last_heartbeat, s.battery,"
            " (SELECT MAX(e.received_at) FROM alarm_events e WHERE e.device_id = d.device_id)"
            " FROM devices d LEFT JOIN device_status s ON s.device_id = d.device_id"
            " WHERE d.resident_id = ? ORDER BY d.device_id",
            resident_id,
        )
        return [DeviceHealth(*(*r[:4], None if r[4] is None else bool(r[4]), *r[5:])) for r in rows]

    async def unit_event(self, source_key: str | None) -> UnitEvent | None:
        """The stored event an alarm came from (``source_key`` ``<device>/<msg_id>``) with
        the device's receiver accounts; ``None`` for an alert not raised by an event."""
        if not source_key or "/" not in source_key:
            return None
        device_id, msg_id = source_key.split("/", 1)
        found = await self._events("WHERE device_id = ? AND msg_id = ?", device_id, msg_id)
        if not found:
            return None
        tail = "WHERE device_id = ? ORDER BY kind, account, zone"
        accounts = await RECEIVER_ACCOUNTS.all(self.sql, tail, device_id)
        return UnitEvent(**found[0], accounts=tuple(accounts))

    async def late_arrivals(
        self, since: datetime, late_s: float, limit: int = 5000
    ) -> list[LateArrival]:
        """Alarm events received since ``since`` that arrived at least ``late_s`` after
        the device raised them (the backlog an outage leaves), oldest first."""
        tail = "WHERE received_at >= ? AND phase = 'alarm' ORDER BY received_at LIMIT ?"
        events = [LateArrival(**e) for e in await self._events(tail, since, limit)]
        return [e for e in events if e.late_s >= late_s]

    async def _events(self, tail: str, *params: object) -> list[dict[str, Any]]:
        q = f"SELECT {', '.join(c.name for c in _EVENT_COLUMNS)} FROM alarm_events {tail}"
        rows = await self.sql.fetch_all(q, *params)
        return [{c.name: c.loaded(v) for c, v in zip(_EVENT_COLUMNS, r, strict=True)} for r in rows]
