"""The reports role, written once for both backends: read queries for reports, the FHIR
export, the CLI, the console and the operator API (filtered lists of dispatches and of
alarms, one query each: :class:`DispatchFilter`; the console's queue names, a resident's
device health, the unit's own account of an event, late arrivals after an outage)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    Dispatch,
    DispatchState,
    Metric,
    Reading,
    ReceiverAccount,
)
from telecare.gateway.store.dispatch import OPEN
from telecare.gateway.store.rows import DeadLetter, HistoryPoint, News2Record
from telecare.gateway.store.sql import Sql, TextArray
from telecare.gateway.store.tables import (
    ALERTS,
    DEAD_LETTERS,
    DISPATCHES,
    EVENTS,
    NEWS2,
    READINGS,
    RECEIVER_ACCOUNTS,
    Table,
)

__all__ = [
    "COUNTABLE",
    "AlarmRow",
    "DeviceHealth",
    "DispatchFilter",
    "LateArrival",
    "SqlReports",
    "UnitEvent",
]

#: Tables ``count`` accepts (a fixed list: the name is interpolated into SQL).
_TABLES = "sites residents devices receiver_accounts responders readings alarm_events alerts"
COUNTABLE = frozenset(
    f"{_TABLES} dispatches dispatch_audit dead_letters device_status news2_scores".split()
)
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class DispatchFilter:
    """What :meth:`SqlReports.find_dispatches` and ``find_alarms`` list; every field
    ``None`` (or empty) means "any" (``limit`` ``None``: every match)."""

    open: bool | None = None
    states: tuple[DispatchState, ...] = ()
    site_id: str | None = None
    resident_id: str | None = None
    max_priority: int | None = None
    since: datetime | None = None
    limit: int | None = 100


@dataclass(frozen=True, slots=True)
class AlarmRow(Alert):
    """An alert (what a device or rule raised) with its dispatch, if one was opened."""

    dispatch: Dispatch | None = None

    @property
    def state(self) -> DispatchState | None:
        return self.dispatch.state if self.dispatch else None

    @property
    def outcome(self) -> str | None:
        return self.dispatch.outcome if self.dispatch else None


_ALARM_ROWS = Table.of("alerts", AlarmRow, skip=("dispatch",))


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


#: ``alarm_events`` (its one spec, ``EVENTS``) loaded as these event types.
_UNIT_EVENTS = Table(EVENTS.name, EVENTS.columns, UnitEvent)
_LATE_ARRIVALS = Table(EVENTS.name, EVENTS.columns, LateArrival)
_ALARMS: Final = (
    f"SELECT {_ALARM_ROWS.select('a')}, {DISPATCHES.select('d')} FROM alerts a"
    " LEFT JOIN dispatches d ON d.alert_id = a.alert_id"
)


class SqlReports:
    """The reports role on ``self.sql``."""

    sql: Sql

    async def recent_alerts(self, limit: int = 50) -> list[Alert]:
        return await ALERTS.all(self.sql, "ORDER BY ts DESC LIMIT ?", limit)

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        return await DEAD_LETTERS.all(self.sql, "ORDER BY dead_letter_id DESC LIMIT ?", limit)

    async def find_dispatches(self, f: DispatchFilter) -> list[Dispatch]:
        """Dispatches matching ``f``, most urgent then oldest first when open, newest
        first otherwise."""
        order = "d.priority, d.created_at" if f.open else "d.created_at DESC"
        tail, params = _tail(f, "d", "created_at", order)
        return await DISPATCHES.all(self.sql, f"d{tail}", *params)

    async def find_alarms(self, f: DispatchFilter) -> list[AlarmRow]:
        """Alerts, newest first, with their dispatch; ``f``'s state filters apply to the
        dispatch (an alert without one counts as open)."""
        tail, params = _tail(f, "a", "ts", "a.ts DESC")
        return await self._alarms(tail, *params)

    async def alert(self, alert_id: str) -> AlarmRow | None:
        return next(iter(await self._alarms(" WHERE a.alert_id = ?", alert_id)), None)

    async def _alarms(self, tail: str, *params: object) -> list[AlarmRow]:
        rows = await self.sql.fetch_all(f"{_ALARMS}{tail}", *params)
        n = len(_ALARM_ROWS.stored)  # the alert's columns, then the dispatch's (or NULLs)
        return [
            replace(_ALARM_ROWS.load(r[:n]), dispatch=DISPATCHES.load(r[n:]) if r[n] else None)
            for r in rows
        ]

    async def open_by_priority(self) -> dict[int, tuple[int, datetime]]:
        """Open dispatches per priority: ``priority -> (count, oldest created_at)``."""
        q = f"SELECT priority, COUNT(*), MIN(created_at) FROM dispatches d WHERE {OPEN}"
        rows = await self.sql.fetch_all(f"{q} GROUP BY priority")
        return {int(r[0]): (int(r[1]), r[2]) for r in rows}

    async def latest_vitals(
        self, resident_ids: Sequence[str], since: datetime | None = None
    ) -> dict[str, dict[str, tuple[datetime, float]]]:
        # Two LIMIT 1 probes of readings_resident (resident_id, metric, ts DESC) per
        # (resident, metric): cost independent of how much history there is.
        out: dict[str, dict[str, tuple[datetime, float]]] = {rid: {} for rid in resident_ids}
        probe = (
            "(SELECT {} FROM readings WHERE resident_id = r.resident_id AND metric = m.m"
            " AND ts >= ? ORDER BY ts DESC LIMIT 1)"
        )
        metrics = ", ".join(f"({int(m)})" for m in Metric)
        found = await self.sql.fetch_all(
            f"WITH m (m) AS (VALUES {metrics}) SELECT r.resident_id, m.m, {probe.format('ts')},"
            f" {probe.format('value')} FROM residents r CROSS JOIN m"
            f" WHERE {self.sql.dialect.any_of('r.resident_id')}",
            since or _EARLIEST,
            since or _EARLIEST,
            TextArray(out),
        )
        for rid, metric, ts, value in found:
            if ts is not None:
                out[rid][Metric(int(metric)).label] = (ts, float(value))
        return out

    async def metric_history(
        self, resident_id: str, metric: Metric, start: datetime, end: datetime, bucket: timedelta
    ) -> list[HistoryPoint]:
        b = self.sql.dialect.time_bucket("ts", bucket)
        q = f"SELECT {b} AS b, min(value), max(value), avg(value), count(*) FROM readings"
        q += " WHERE resident_id = ? AND metric = ? AND ts >= ? AND ts < ? GROUP BY b ORDER BY b"
        found = await self.sql.fetch_all(q, resident_id, int(metric), start, end)
        return [HistoryPoint(*r) for r in found]  # double precision / REAL: floats on both

    async def news2_history(
        self, resident_id: str, start: datetime, end: datetime
    ) -> list[News2Record]:
        tail = "WHERE resident_id = ? AND ts >= ? AND ts < ? ORDER BY ts"
        return await NEWS2.all(self.sql, tail, resident_id, start, end)

    async def resident_readings(
        self, resident_id: str, start: datetime, end: datetime, limit: int = 100_000
    ) -> list[Reading]:
        tail = (
            "WHERE resident_id = ? AND ts >= ? AND ts < ?"
            " ORDER BY ts, device_id, msg_id, metric LIMIT ?"
        )
        return await READINGS.all(self.sql, tail, resident_id, start, end, limit)

    async def open_alarms(self, limit: int = 200) -> list[AlarmRow]:
        """Alerts whose dispatch is open (the operator's queue), the most urgent and then
        the oldest dispatch first."""
        return await self._alarms(f" WHERE {OPEN} ORDER BY d.priority, d.created_at LIMIT ?", limit)

    async def count(self, table: str) -> int:
        if table not in COUNTABLE:
            raise ValueError(f"unknown table {table!r}")
        [(n,)] = await self.sql.fetch_all(f"SELECT count(*) FROM {table}")
        return int(n)

    # -- the console's reads: the queue's names, device health, the unit, late arrivals --
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
        tail = "WHERE device_id = ? AND msg_id = ?"
        found = await _UNIT_EVENTS.one(self.sql, tail, device_id, msg_id)
        if found is None:
            return None
        tail = "WHERE device_id = ? ORDER BY kind, account, zone"
        accounts = await RECEIVER_ACCOUNTS.all(self.sql, tail, device_id)
        return replace(found, accounts=tuple(accounts))

    async def late_arrivals(
        self, since: datetime, late_s: float, limit: int = 5000
    ) -> list[LateArrival]:
        """Alarm events received since ``since`` that arrived at least ``late_s`` after
        the device raised them (the backlog an outage leaves), oldest first."""
        tail = "WHERE received_at >= ? AND phase = 'alarm' ORDER BY received_at LIMIT ?"
        events = await _LATE_ARRIVALS.all(self.sql, tail, since, limit)
        return [e for e in events if e.late_s >= late_s]


def _tail(f: DispatchFilter, t: str, at: str, order: str) -> tuple[str, list[Any]]:
    """``f`` as SQL on table alias ``t`` (time column ``at``), sorted by ``order``; states
    are the dispatch's (``d``), and an alert without one (``d.state`` NULL) is open."""
    given = [(f"{t}.{c} = ?", getattr(f, c) or None) for c in ("site_id", "resident_id")]
    given += [(f"{t}.priority <= ?", f.max_priority), (f"{t}.{at} >= ?", f.since)]
    clauses = [clause for clause, value in given if value is not None]
    params: list[Any] = [value for _, value in given if value is not None]
    if f.open is not None:
        clauses.append(f"(d.state IS NULL OR {OPEN})" if f.open else f"NOT ({OPEN})")
    if f.states:
        clauses.append(f"d.state IN ({', '.join('?' for _ in f.states)})")
        params += [s.value for s in f.states]
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    limit = "" if f.limit is None else f" LIMIT {int(f.limit)}"
    return f"{where} ORDER BY {order}{limit}", params
