"""The ingest role, written once for both backends: the writes the spool may take (the
``write_*`` methods) and the pipeline's direct reads and notes.

Idempotency keys are the tables' unique indexes (``ON CONFLICT DO NOTHING``): a write
returns ``False``/``0`` for what was already stored. ``PostgresStore`` overrides the
batch writes with faster forms (binary ``COPY``, arrays) built from the same specs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from telecare.devices.model import AlarmEvent, Alert, Metric, Reading
from telecare.gateway.store.rows import AlertNote, DeadLetter, News2Record, StatusItem
from telecare.gateway.store.sql import Sql, TextArray
from telecare.gateway.store.tables import ALERTS, DEAD_LETTERS, EVENTS, NEWS2, READINGS

__all__ = ["SqlWrites"]

_STATUS = (
    "INSERT INTO device_status (device_id, online, changed_at, last_heartbeat, battery)"
    " SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM devices WHERE device_id = ?)"
    " ON CONFLICT (device_id) DO UPDATE SET online = COALESCE(?, device_status.online),"
    " changed_at = CASE WHEN CAST(? AS BOOLEAN) IS NULL THEN device_status.changed_at"
    " ELSE excluded.changed_at END,"
    " last_heartbeat = COALESCE(excluded.last_heartbeat, device_status.last_heartbeat),"
    " battery = COALESCE(excluded.battery, device_status.battery)"
)


_ALARM_STATES = (
    "SELECT a.alert_id, COALESCE(d.state, dm.state) FROM alerts a"
    " LEFT JOIN dispatches d ON d.alert_id = a.alert_id"
    " LEFT JOIN dispatch_members m ON m.alert_id = a.alert_id"
    " LEFT JOIN dispatches dm ON dm.dispatch_id = m.dispatch_id"
    " WHERE {ids}"
)


class SqlWrites:
    """The ingest role on ``self.sql``."""

    sql: Sql

    async def write_readings(self, readings: Sequence[Reading]) -> int:
        return await self.sql.execute_many(READINGS.insert(), map(READINGS.params, readings))

    async def write_events(self, events: Sequence[AlarmEvent]) -> list[bool]:
        new = await self.sql.execute_each(EVENTS.insert(), [EVENTS.params(e) for e in events])
        return [n == 1 for n in new]

    async def write_alerts(self, alerts: Sequence[Alert]) -> list[bool]:
        new = await self.sql.execute_each(ALERTS.insert(), [ALERTS.params(a) for a in alerts])
        return [n == 1 for n in new]

    async def write_dead_letter(self, letter: DeadLetter) -> None:
        await DEAD_LETTERS.add(self.sql, letter, "")

    async def write_news2(self, score: News2Record) -> bool:
        return await NEWS2.add(self.sql, score) == 1

    async def write_status(self, s: StatusItem) -> None:
        first, hb = True if s.online is None else s.online, s.at if s.heartbeat else None
        params = (s.device_id, first, s.at, hb, s.battery, s.device_id, s.online, s.online)
        await self.sql.execute(_STATUS, *params)

    async def stored_event_digest(self, device_id: str, msg_id: str) -> str | None:
        q = "SELECT digest FROM alarm_events WHERE device_id = ? AND msg_id = ?"
        row = await self.sql.fetch_one(q, device_id, msg_id)
        return row[0] if row else None

    async def stored_message_readings(
        self, device_id: str, msg_id: str
    ) -> set[tuple[Metric, datetime, float]]:
        q = "SELECT metric, ts, value FROM readings WHERE device_id = ? AND msg_id = ?"
        return {
            (Metric(m), ts, float(v)) for m, ts, v in await self.sql.fetch_all(q, device_id, msg_id)
        }

    async def note_alerts(self, notes: Sequence[AlertNote]) -> None:
        merge = self.sql.dialect.json_merge("detail")
        await self.sql.execute_many(
            f"UPDATE alerts SET detail = {merge} WHERE alert_id = ?",
            [(p, n.alert_id) for n in notes if (p := n.patch())],
        )

    async def device_online(self, device_id: str) -> bool | None:
        """The device's stored online state (``None``: none stored yet)."""
        row = await self.sql.fetch_one(
            "SELECT online FROM device_status WHERE device_id = ?", device_id
        )
        return None if row is None or row[0] is None else bool(row[0])

    async def alarm_states(self, alert_ids: Collection[str]) -> dict[str, str | None]:
        """For the pipeline's fold check, in one query for a batch: each of
        ``alert_ids`` whose alert is stored -> the state of the dispatch holding it (its
        own or the one it joined; ``None`` while none does yet). An id missing from the
        answer has no stored alert."""
        ids = self.sql.dialect.any_of("a.alert_id")
        rows = await self.sql.fetch_all(_ALARM_STATES.format(ids=ids), TextArray(alert_ids))
        return {str(r[0]): r[1] for r in rows}

    async def alerts_without_dispatch(self, limit: int = 1000) -> list[Alert]:
        return await ALERTS.all(
            self.sql,
            "WHERE NOT EXISTS (SELECT 1 FROM dispatches d WHERE d.alert_id = alerts.alert_id)"
            " AND NOT EXISTS (SELECT 1 FROM dispatch_members m WHERE m.alert_id = alerts.alert_id)"
            " ORDER BY ts LIMIT ?",
            limit,
        )
