"""The reports role, written once for both backends: read queries for reports, the FHIR
export, the CLI and the console."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from telecare.devices.model import Alert, Dispatch, DispatchState, EventType, Metric, Reading
from telecare.gateway.store.rows import (
    DeadLetter,
    HistoryPoint,
    News2Record,
    OpenAlarm,
    TimelineEntry,
)
from telecare.gateway.store.sql import Sql
from telecare.gateway.store.tables import ALERTS, DEAD_LETTERS, DISPATCHES, NEWS2, READINGS

__all__ = ["COUNTABLE", "SqlReports"]

#: Tables ``count`` accepts (a fixed list: the name is interpolated into SQL).
_TABLES = "sites residents devices receiver_accounts responders readings alarm_events alerts"
COUNTABLE = frozenset(
    f"{_TABLES} dispatches dispatch_audit dead_letters device_status news2_scores".split()
)
#: Residents per ``latest_vitals`` statement (bounds the number of parameters).
_VITALS_CHUNK = 200
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)


class SqlReports:
    """The reports role on ``self.sql``."""

    sql: Sql

    async def recent_alerts(self, limit: int = 50) -> list[Alert]:
        return await ALERTS.all(self.sql, "ORDER BY ts DESC LIMIT ?", limit)

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        return await DEAD_LETTERS.all(self.sql, "ORDER BY dead_letter_id DESC LIMIT ?", limit)

    async def open_dispatches(self) -> list[Dispatch]:
        """Open dispatches, most urgent first (priority, then age)."""
        tail = "WHERE state NOT IN ('resolved', 'cancelled') ORDER BY priority, created_at"
        return await DISPATCHES.all(self.sql, tail)

    async def site_dispatch_ids(self, site_id: str) -> set[str]:
        q = "SELECT dispatch_id FROM dispatches WHERE site_id = ?"
        return {r[0] for r in await self.sql.fetch_all(q, site_id)}

    async def latest_vitals(
        self, resident_ids: Sequence[str], since: datetime | None = None
    ) -> dict[str, dict[str, tuple[datetime, float]]]:
        # Two LIMIT 1 probes of readings_resident (resident_id, metric, ts DESC) per
        # (resident, metric): cost independent of how much history there is.
        out: dict[str, dict[str, tuple[datetime, float]]] = {rid: {} for rid in resident_ids}
        probe = (
            "(SELECT {} FROM readings WHERE resident_id = k.rid AND metric = k.m AND ts >= ?"
            " ORDER BY ts DESC LIMIT 1)"
        )
        ids = list(out)
        for i in range(0, len(ids), _VITALS_CHUNK):
            keys = [(rid, int(m)) for rid in ids[i : i + _VITALS_CHUNK] for m in Metric]
            values = ", ".join("(?, ?)" for _ in keys)
            found = await self.sql.fetch_all(
                f"WITH k (rid, m) AS (VALUES {values}) SELECT k.rid, k.m,"
                f" {probe.format('ts')}, {probe.format('value')} FROM k",
                *(v for key in keys for v in key),
                since or _EARLIEST,
                since or _EARLIEST,
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
        return [
            HistoryPoint(b, float(lo), float(hi), float(a), int(n)) for b, lo, hi, a, n in found
        ]

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

    async def open_alarms(self, now: datetime, limit: int = 200) -> list[OpenAlarm]:
        found = await self.sql.fetch_all(
            "SELECT d.dispatch_id, d.alert_id, d.priority, d.state, d.created_at, a.kind,"
            " a.reason, a.event_type, d.site_id, d.resident_id, d.responder_id"
            " FROM dispatches d JOIN alerts a ON a.alert_id = d.alert_id"
            " WHERE d.state NOT IN ('resolved', 'cancelled')"
            " ORDER BY d.priority, d.created_at LIMIT ?",
            limit,
        )
        return [
            OpenAlarm(d, a, int(p), DispatchState(st), at, (now - at).total_seconds(), kind, why,
                      EventType(e) if e else None, site, res, resp)
            for d, a, p, st, at, kind, why, e, site, res, resp in found
        ]  # fmt: skip

    async def dispatch_timeline(self, dispatch_id: str) -> list[TimelineEntry]:
        found = await self.sql.fetch_all(
            "SELECT a.at, a.from_state, a.to_state, a.actor, a.reason, d.created_at"
            " FROM dispatch_audit a JOIN dispatches d ON d.dispatch_id = a.dispatch_id"
            " WHERE a.dispatch_id = ? ORDER BY a.audit_id",
            dispatch_id,
        )
        return [
            TimelineEntry(at, DispatchState(f) if f else None, DispatchState(t), actor, reason,
                          (at - created).total_seconds())
            for at, f, t, actor, reason, created in found
        ]  # fmt: skip

    async def count(self, table: str) -> int:
        if table not in COUNTABLE:
            raise ValueError(f"unknown table {table!r}")
        [(n,)] = await self.sql.fetch_all(f"SELECT count(*) FROM {table}")
        return int(n)
