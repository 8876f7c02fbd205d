"""Read queries the web API needs and the store roles do not offer yet, written once for
both backends on the store's query API (``?`` placeholders).

- :func:`alerts_for_source`: the alerts an observation set raised (by ``source_key``,
  the unique index ``alerts_source_key``), so the API can answer with the dispatch.
- :func:`find_dispatches` / :func:`find_alarms`: the operator API's filtered lists
  (newest first, bounded by ``limit``).

Columns are named here, and rows decoded here, so a change of another module's column
lists cannot break them silently (a test runs each query on both backends).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from telecare.devices.model import Dispatch, DispatchState
from telecare.gateway.store.sql import Sql, json_value

__all__ = [
    "AlarmRow",
    "DispatchFilter",
    "alerts_for_source",
    "find_alarms",
    "find_dispatches",
    "open_by_priority",
]

_DISPATCH_COLUMNS = (
    "d.dispatch_id, d.alert_id, d.state, d.priority, d.created_at, d.updated_at, d.site_id,"
    " d.resident_id, d.responder_id, d.cascade_step, d.outcome, d.version"
)


def _dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _detail(value: Any) -> dict[str, Any]:
    loaded = json_value(value or "{}")
    return loaded if isinstance(loaded, dict) else {}


def _dispatch(row: Sequence[Any]) -> Dispatch:
    return Dispatch(
        dispatch_id=row[0],
        alert_id=row[1],
        state=DispatchState(row[2]),
        priority=int(row[3]),
        created_at=_dt(row[4]),
        updated_at=_dt(row[5]),
        site_id=row[6],
        resident_id=row[7],
        responder_id=row[8],
        cascade_step=int(row[9]),
        outcome=row[10],
        version=int(row[11]),
    )


async def alerts_for_source(sql: Sql, source_key: str) -> list[tuple[str, int, dict[str, Any]]]:
    """``(alert_id, priority, detail)`` of each alert raised by ``source_key``, most
    urgent first."""
    rows = await sql.fetch_all(
        "SELECT alert_id, priority, detail FROM alerts WHERE source_key = ?"
        " ORDER BY priority, alert_id",
        source_key,
    )
    return [(str(r[0]), int(r[1]), _detail(r[2])) for r in rows]


@dataclass(frozen=True, slots=True)
class DispatchFilter:
    """What to list; every field ``None`` means "any"."""

    open: bool | None = None
    states: tuple[DispatchState, ...] = ()
    site_id: str | None = None
    resident_id: str | None = None
    max_priority: int | None = None
    since: datetime | None = None
    limit: int = 100


_CLOSED = (DispatchState.RESOLVED.value, DispatchState.CANCELLED.value)


def _where(f: DispatchFilter, t: str, at: str) -> tuple[str, list[Any]]:
    """``f`` as SQL on table alias ``t`` (its time column ``at``); states are the
    dispatch's (``d``), and an alert without a dispatch (``d.state`` NULL) is open."""
    clauses = [f"{t}.{col} = ?" for col in ("site_id", "resident_id") if getattr(f, col)]
    params: list[Any] = [getattr(f, col) for col in ("site_id", "resident_id") if getattr(f, col)]
    if f.max_priority is not None:
        clauses.append(f"{t}.priority <= ?")
        params.append(f.max_priority)
    if f.since is not None:
        clauses.append(f"{t}.{at} >= ?")
        params.append(f.since)
    if f.open is not None:
        clauses.append(
            "(d.state IS NULL OR d.state NOT IN (?, ?))" if f.open else "d.state IN (?, ?)"
        )
        params += _CLOSED
    if f.states:
        clauses.append(f"d.state IN ({', '.join('?' for _ in f.states)})")
        params += [s.value for s in f.states]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


async def find_dispatches(sql: Sql, f: DispatchFilter) -> list[Dispatch]:
    """Dispatches matching ``f``, most urgent then oldest first when open, newest first
    otherwise."""
    where, params = _where(f, "d", "created_at")
    order = "d.priority, d.created_at" if f.open else "d.created_at DESC"
    rows = await sql.fetch_all(
        f"SELECT {_DISPATCH_COLUMNS} FROM dispatches d{where} ORDER BY {order} LIMIT ?",
        *params,
        f.limit,
    )
    return [_dispatch(r) for r in rows]


async def open_by_priority(sql: Sql) -> dict[int, tuple[int, datetime]]:
    """Open dispatches per priority: ``priority -> (count, oldest created_at)``."""
    rows = await sql.fetch_all(
        "SELECT priority, COUNT(*), MIN(created_at) FROM dispatches"
        " WHERE state NOT IN (?, ?) GROUP BY priority",
        *_CLOSED,
    )
    return {int(r[0]): (int(r[1]), _dt(r[2])) for r in rows}


@dataclass(frozen=True, slots=True)
class AlarmRow:
    """An alert (what a device or rule raised) with its dispatch, if one was opened."""

    alert_id: str
    kind: str
    priority: int
    reason: str
    ts: datetime
    site_id: str | None
    resident_id: str | None
    device_id: str | None
    event_type: str | None
    dispatch: Dispatch | None


async def find_alarms(sql: Sql, f: DispatchFilter) -> list[AlarmRow]:
    """Alerts, newest first, with their dispatch; ``f``'s state filters apply to the
    dispatch (an alert without one counts as open)."""
    where, params = _where(f, "a", "ts")
    rows = await sql.fetch_all(
        "SELECT a.alert_id, a.kind, a.priority, a.reason, a.ts, a.site_id, a.resident_id,"
        f" a.device_id, a.event_type, {_DISPATCH_COLUMNS} FROM alerts a"
        f" LEFT JOIN dispatches d ON d.alert_id = a.alert_id{where}"
        " ORDER BY a.ts DESC LIMIT ?",
        *params,
        f.limit,
    )
    return [
        AlarmRow(
            alert_id=str(r[0]),
            kind=str(r[1]),
            priority=int(r[2]),
            reason=str(r[3]),
            ts=_dt(r[4]),
            site_id=r[5],
            resident_id=r[6],
            device_id=r[7],
            event_type=r[8],
            dispatch=_dispatch(r[9:]) if r[9] is not None else None,
        )
        for r in rows
    ]
