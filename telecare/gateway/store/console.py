"""The operator console's storage: ownership, holds and re-checks, notices, resident
notes, the viewed-audit and closures (migration 0018), plus the few read queries the
console needs that the core store does not have (a resident's recent alerts, device
health, late arrivals after an outage).

Written once for both backends on ``store.sql`` (``gateway.store.sql``): ``?``
placeholders, aware datetimes in and out, nothing dialect-specific here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Final

from telecare.gateway.store.sql import Sql, json_value

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
    "RecentAlert",
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


@dataclass(frozen=True, slots=True)
class RecentAlert:
    alert_id: str
    priority: int
    reason: str
    ts: datetime
    event_type: str | None
    state: str | None
    outcome: str | None
    source_key: str | None = None


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
class UnitEvent:
    """What an alarm unit said about one event, as received: the protocol (``source``),
    its codes, and the receiver accounts the device is mapped under (SCAIP ``cid``,
    Contact ID / SIA account), for the operator to call the unit back."""

    source: str
    zone: str | None
    code: int | None
    device_type: str | None
    location: str | None
    received_at: datetime
    #: ``(kind, account, zone)`` of each receiver account mapped to the device.
    accounts: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class LateArrival:
    """An alarm event that reached the gateway ``late_s`` after the device raised it."""

    device_id: str
    type: str
    ts: datetime
    received_at: datetime
    site_id: str | None
    resident_id: str | None

    @property
    def late_s(self) -> float:
        return (self.received_at - self.ts).total_seconds()


_TIMER_COLS: Final = "dispatch_id, kind, due_at, set_by, set_at, reason, reference"
_ALERTS: Final = (
    "SELECT a.alert_id, a.priority, a.reason, a.ts, a.event_type, d.state, d.outcome,"
    " a.source_key FROM alerts a LEFT JOIN dispatches d ON d.alert_id = a.alert_id"
)
_CLOSURE_COLS: Final = "dispatch_id, outcome, false_alarm, note, closed_by, closed_at"


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
        new = await self.sql.execute(
            "INSERT INTO console_owners (owner_key, operator, dispatch_id, since)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (owner_key) DO NOTHING",
            owner_key,
            operator,
            dispatch_id,
            now,
        )
        owner = await self.owner(owner_key)
        assert owner is not None  # just inserted or already there
        return owner, new > 0

    async def owner(self, owner_key: str) -> Owner | None:
        row = await self.sql.fetch_one(
            "SELECT owner_key, operator, dispatch_id, since FROM console_owners"
            " WHERE owner_key = ?",
            owner_key,
        )
        return None if row is None else Owner(*row)

    async def owners(self) -> list[Owner]:
        rows = await self.sql.fetch_all(
            "SELECT owner_key, operator, dispatch_id, since FROM console_owners ORDER BY since"
        )
        return [Owner(*r) for r in rows]

    async def release(self, owner_key: str, operator: str | None = None) -> bool:
        """Hand ``owner_key`` back to the queue (only if ``operator`` owns it, when given)."""
        n = await self.sql.execute(
            "DELETE FROM console_owners WHERE owner_key = ?"
            " AND operator = COALESCE(CAST(? AS TEXT), operator)",
            owner_key,
            operator,
        )
        return n > 0

    # -- timers ------------------------------------------------------------------------
    async def set_timer(self, row: TimerRow) -> None:
        await self.sql.execute(
            f"INSERT INTO console_timers ({_TIMER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (dispatch_id, kind) DO UPDATE SET due_at = excluded.due_at,"
            " set_by = excluded.set_by, set_at = excluded.set_at, reason = excluded.reason,"
            " reference = excluded.reference",
            *astuple(row),
        )

    async def clear_timer(self, dispatch_id: str, kind: str | None = None) -> int:
        return await self.sql.execute(
            "DELETE FROM console_timers WHERE dispatch_id = ?"
            " AND kind = COALESCE(CAST(? AS TEXT), kind)",
            dispatch_id,
            kind,
        )

    async def take_timer(self, row: TimerRow) -> bool:
        """Remove exactly ``row`` (same due time); ``True`` for the one caller that did."""
        n = await self.sql.execute(
            "DELETE FROM console_timers WHERE dispatch_id = ? AND kind = ? AND due_at = ?",
            row.dispatch_id,
            row.kind,
            row.due_at,
        )
        return n > 0

    async def timers(self, due_by: datetime | None = None) -> list[TimerRow]:
        """Every console timer (or those due by ``due_by``), earliest first."""
        rows = await self.sql.fetch_all(
            f"SELECT {_TIMER_COLS} FROM console_timers WHERE due_at <= ? ORDER BY due_at",
            due_by or datetime.max.replace(tzinfo=UTC),
        )
        return [TimerRow(*r) for r in rows]

    # -- notices -----------------------------------------------------------------------
    async def add_notice(self, dispatch_id: str, kind: str, text: str, now: datetime) -> int:
        row = await self.sql.fetch_one(
            "INSERT INTO console_notices (dispatch_id, kind, text, created_at)"
            " VALUES (?, ?, ?, ?) RETURNING notice_id",
            dispatch_id,
            kind,
            text,
            now,
        )
        assert row is not None
        return int(row[0])

    async def notices(self, dispatch_id: str | None = None) -> list[Notice]:
        """Unacknowledged notices (of one dispatch, or all), oldest first."""
        rows = await self.sql.fetch_all(
            "SELECT notice_id, dispatch_id, kind, text, created_at, acked_by, acked_at"
            " FROM console_notices WHERE acked_at IS NULL"
            " AND dispatch_id = COALESCE(CAST(? AS TEXT), dispatch_id) ORDER BY notice_id",
            dispatch_id,
        )
        return [Notice(*r) for r in rows]

    async def ack_notice(self, notice_id: int, operator: str, now: datetime) -> bool:
        n = await self.sql.execute(
            "UPDATE console_notices SET acked_by = ?, acked_at = ?"
            " WHERE notice_id = ? AND acked_at IS NULL",
            operator,
            now,
            notice_id,
        )
        return n > 0

    # -- resident notes and who viewed them --------------------------------------------
    async def add_note(
        self,
        resident_id: str,
        kind: str,
        text: str,
        by: str,
        now: datetime,
        expires_at: datetime | None = None,
    ) -> int:
        if kind not in NOTE_KINDS:
            raise ValueError(f"note kind {kind!r} is not one of {', '.join(NOTE_KINDS)}")
        row = await self.sql.fetch_one(
            "INSERT INTO console_notes (resident_id, kind, text, expires_at, created_by,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING note_id",
            resident_id,
            kind,
            text,
            expires_at,
            by,
            now,
        )
        assert row is not None
        return int(row[0])

    async def notes(self, resident_id: str, now: datetime) -> list[Note]:
        """The resident's notes that have not expired, by kind then age."""
        rows = await self.sql.fetch_all(
            "SELECT note_id, resident_id, kind, text, expires_at, created_by, created_at"
            " FROM console_notes WHERE resident_id = ? AND (expires_at IS NULL OR expires_at > ?)"
            " ORDER BY kind, note_id",
            resident_id,
            now,
        )
        return [Note(*r) for r in rows]

    async def record_view(
        self, resident_id: str, what: str, operator: str, now: datetime, dispatch_id: str | None
    ) -> None:
        await self.sql.execute(
            "INSERT INTO console_views (resident_id, what, operator, at, dispatch_id)"
            " VALUES (?, ?, ?, ?, ?)",
            resident_id,
            what,
            operator,
            now,
            dispatch_id,
        )

    async def views(self, resident_id: str, limit: int = 20) -> list[View]:
        rows = await self.sql.fetch_all(
            "SELECT resident_id, what, operator, at, dispatch_id FROM console_views"
            " WHERE resident_id = ? ORDER BY view_id DESC LIMIT ?",
            resident_id,
            limit,
        )
        return [View(*r) for r in rows]

    # -- closures ----------------------------------------------------------------------
    async def record_closure(self, closure: Closure) -> None:
        await self.sql.execute(
            f"INSERT INTO console_closures ({_CLOSURE_COLS}) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (dispatch_id) DO NOTHING",
            *astuple(closure),
        )

    async def closure(self, dispatch_id: str) -> Closure | None:
        row = await self.sql.fetch_one(
            f"SELECT {_CLOSURE_COLS} FROM console_closures WHERE dispatch_id = ?", dispatch_id
        )
        return None if row is None else Closure(row[0], row[1], bool(row[2]), *row[3:])

    # -- reads for the banner and the outage list --------------------------------------
    async def recent_alerts(self, resident_id: str, limit: int = 8) -> list[RecentAlert]:
        rows = await self.sql.fetch_all(
            f"{_ALERTS} WHERE a.resident_id = ? ORDER BY a.ts DESC LIMIT ?", resident_id, limit
        )
        return [RecentAlert(*r) for r in rows]

    async def who(self, resident_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Resident id -> (name, "site name, address") in one query (the queue's rows)."""
        if not resident_ids:
            return {}
        marks = ", ".join("?" * len(resident_ids))
        rows = await self.sql.fetch_all(
            "SELECT r.resident_id, r.name, s.name, s.address FROM residents r"
            f" JOIN sites s ON s.site_id = r.site_id WHERE r.resident_id IN ({marks})",
            *resident_ids,
        )
        return {r[0]: (r[1] or r[0], ", ".join(x for x in (r[2], r[3]) if x)) for r in rows}

    async def with_dispatch(self, alert_ids: Sequence[str]) -> set[str]:
        """Which of ``alert_ids`` have a dispatch (their own, or a group's they joined)."""
        if not alert_ids:
            return set()
        marks = ", ".join("?" * len(alert_ids))
        rows = await self.sql.fetch_all(
            f"SELECT alert_id FROM dispatches WHERE alert_id IN ({marks})"
            f" UNION SELECT alert_id FROM dispatch_members WHERE alert_id IN ({marks})",
            *alert_ids,
            *alert_ids,
        )
        return {r[0] for r in rows}

    async def open_alarms_of(self, resident_id: str | None, besides: str) -> list[str]:
        """Ids of the resident's other open dispatches (none without a resident)."""
        rows = await self.sql.fetch_all(
            "SELECT dispatch_id FROM dispatches WHERE resident_id = ? AND dispatch_id <> ?"
            " AND state NOT IN ('resolved', 'cancelled')",
            resident_id,
            besides,
        )
        return [r[0] for r in rows]

    async def alert(self, alert_id: str) -> RecentAlert | None:
        row = await self.sql.fetch_one(f"{_ALERTS} WHERE a.alert_id = ?", alert_id)
        return None if row is None else RecentAlert(*row)

    async def device_health(self, resident_id: str) -> list[DeviceHealth]:
        rows = await self.sql.fetch_all(
            "SELECT d.device_id, d.kind, d.location, d.heartbeat_interval_s, s.online,"
            " s.changed_at, s.last_heartbeat, s.battery,"
            " (SELECT MAX(e.received_at) FROM alarm_events e WHERE e.device_id = d.device_id)"
            " FROM devices d LEFT JOIN device_status s ON s.device_id = d.device_id"
            " WHERE d.resident_id = ? ORDER BY d.device_id",
            resident_id,
        )
        return [
            DeviceHealth(r[0], r[1], r[2], r[3], None if r[4] is None else bool(r[4]), *r[5:])
            for r in rows
        ]

    async def unit_event(self, source_key: str | None) -> UnitEvent | None:
        """The stored event an alarm came from (``source_key`` ``<device>/<msg_id>``) with
        the device's receiver accounts; ``None`` for an alert not raised by an event."""
        if not source_key or "/" not in source_key:
            return None
        device_id, msg_id = source_key.split("/", 1)
        row = await self.sql.fetch_one(
            "SELECT source, zone, code, device_type, location, received_at FROM alarm_events"
            " WHERE device_id = ? AND msg_id = ?",
            device_id,
            msg_id,
        )
        if row is None:
            return None
        accounts = await self.sql.fetch_all(
            "SELECT kind, account, zone FROM receiver_accounts WHERE device_id = ?"
            " ORDER BY kind, account, zone",
            device_id,
        )
        source, zone, code, device_type, location, received_at = row
        return UnitEvent(
            source,
            zone,
            code,
            device_type,
            location,
            received_at,
            tuple((a[0], a[1], a[2]) for a in accounts),
        )

    async def late_arrivals(
        self, since: datetime, late_s: float, limit: int = 5000
    ) -> list[LateArrival]:
        """Alarm events received since ``since`` that arrived at least ``late_s`` after
        the device raised them (the backlog an outage leaves), oldest first."""
        rows = await self.sql.fetch_all(
            "SELECT device_id, type, ts, received_at, site_id, resident_id FROM alarm_events"
            " WHERE received_at >= ? AND phase = 'alarm' ORDER BY received_at LIMIT ?",
            since,
            limit,
        )
        found = [LateArrival(*r) for r in rows]
        return [e for e in found if e.late_s >= late_s]

    async def alert_detail(self, alert_id: str) -> dict[str, object]:
        row = await self.sql.fetch_one("SELECT detail FROM alerts WHERE alert_id = ?", alert_id)
        value = json_value(row[0]) if row else {}
        return value if isinstance(value, dict) else {}
