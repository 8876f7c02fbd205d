"""SQLite backend: the embedded default (``telecare demo``), WAL mode, one writer.

Resource handling: one ``sqlite3`` connection opened in ``__aenter__`` and closed in
``__aexit__``; every call runs in a worker thread under an ``asyncio.Lock`` so the event
loop never blocks on disk. ``synchronous=FULL`` so a committed write survives a power cut.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    Device,
    Dispatch,
    Metric,
    Reading,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Responder,
    Site,
)
from telecare.dispatch.audit_chain import GENESIS, Anchor, ChainReport, ChainVerifier
from telecare.gateway.private_files import private_dir, private_file
from telecare.gateway.store import rows
from telecare.gateway.store.base import (
    AlertNote,
    AuditEntry,
    DeadLetter,
    HistoryPoint,
    News2Record,
    OpenAlarm,
    TimelineEntry,
)
from telecare.gateway.store.clinical import ClinicalChange, ClinicalRecord, plan_clinical
from telecare.gateway.store.migrations import migrations_for
from telecare.gateway.store.registry import TABLES, Blocker, Kind, RegistryChange, blocker_queries
from telecare.gateway.store.rows import iso
from telecare.gateway.store.sql import SqliteSql

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

#: History buckets are aligned to 2000-01-01T00:00Z, as in PostgreSQL (see postgres.py).
_BUCKET_ORIGIN_EPOCH = 946684800


class SqliteStore:
    mode = "sqlite"

    def __init__(
        self, path: str | Path, *, dead_letter_retention: timedelta | None = timedelta(days=30)
    ) -> None:
        self.path = str(path)
        #: Dead letters older than this are deleted by :meth:`maintain` (``None``: kept).
        self.dead_letter_retention = dead_letter_retention
        #: The query API (``gateway.store.sql``); it owns the connection and its lock.
        self.sql = SqliteSql()

    async def __aenter__(self) -> Self:
        if self.path != ":memory:":
            # 0600 in a 0700 directory; SQLite gives the -wal and -shm files the
            # database file's mode.
            private_dir(Path(self.path).parent)
            private_file(Path(self.path))
        self.sql.open(await asyncio.to_thread(self._open))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.sql.close()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self.sql.run(fn)

    # -- migrations ------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            applied = []
            for m in migrations_for("sqlite"):
                if m.version in done:
                    continue
                conn.executescript("BEGIN IMMEDIATE;\n" + m.sql + "\n;")
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                    (m.version, m.name),
                )
                conn.execute("COMMIT")
                applied.append(m.name)
            return applied

        return await self._run(run)

    # -- registry --------------------------------------------------------------------
    async def upsert_site(self, site: Site) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO sites (site_id, kind, name, address, area) VALUES (?,?,?,?,?)"
                " ON CONFLICT (site_id) DO UPDATE SET kind=excluded.kind, name=excluded.name,"
                " address=excluded.address, area=excluded.area",
                (site.site_id, site.kind.value, site.name, site.address, site.area),
            )
        )

    async def upsert_resident(self, resident: Resident) -> None:
        r = resident  # registry fields only: clinical settings change through set_clinical

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO residents ({rows.RESIDENT_COLUMNS}) VALUES (?,?,?,?,?)"
                " ON CONFLICT (resident_id) DO UPDATE SET site_id=excluded.site_id,"
                " name=excluded.name, nhs_number=excluded.nhs_number, notes=excluded.notes",
                (r.resident_id, r.site_id, r.name, r.nhs_number, r.notes),
            )
            conn.execute("DELETE FROM resident_responders WHERE resident_id = ?", (r.resident_id,))
            conn.executemany(
                "INSERT INTO resident_responders (resident_id, position, responder_id)"
                " VALUES (?,?,?)",
                [(r.resident_id, i, rid) for i, rid in enumerate(r.responders)],
            )

        await self._run(lambda c: transaction(c, run))

    async def upsert_device(self, device: Device, secret_hash: str | None = None) -> None:
        d = device
        await self._run(
            lambda c: c.execute(
                f"INSERT INTO devices ({rows.DEVICE_COLUMNS}, secret_hash)"
                " VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (device_id) DO UPDATE SET site_id=excluded.site_id,"
                " kind=excluded.kind, resident_id=excluded.resident_id, format=excluded.format,"
                " location=excluded.location,"
                " heartbeat_interval_s=excluded.heartbeat_interval_s, hub_id=excluded.hub_id,"
                " secret_hash=COALESCE(excluded.secret_hash, devices.secret_hash)",
                (
                    d.device_id,
                    d.site_id,
                    d.kind.value,
                    d.resident_id,
                    d.format,
                    d.location,
                    d.heartbeat_interval_s,
                    d.hub_id,
                    secret_hash,
                ),
            )
        )

    async def upsert_responder(self, responder: Responder) -> None:
        r = responder
        await self._run(
            lambda c: c.execute(
                f"INSERT INTO responders ({rows.RESPONDER_COLUMNS}) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT (responder_id) DO UPDATE SET kind=excluded.kind,"
                " name=excluded.name, phone=excluded.phone, area=excluded.area,"
                " skills=excluded.skills",
                (r.responder_id, r.kind.value, r.name, r.phone, r.area, json.dumps(r.skills)),
            )
        )

    async def _one(self, sql: str, params: Sequence[Any]) -> Any:
        return await self._run(lambda c: c.execute(sql, params).fetchone())

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._run(lambda c: c.execute(sql, params).fetchall())

    async def set_device_user(self, device_id: str, user_id: int, resident_id: str) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO device_users (device_id, user_id, resident_id) VALUES (?, ?, ?)"
                " ON CONFLICT (device_id, user_id)"
                " DO UPDATE SET resident_id = excluded.resident_id",
                (device_id, user_id, resident_id),
            )
        )

    async def device_users(self, device_id: str) -> dict[int, str]:
        found = await self._all(
            "SELECT user_id, resident_id FROM device_users WHERE device_id = ?", (device_id,)
        )
        return {int(u): r for u, r in found}

    async def get_site(self, site_id: str) -> Site | None:
        row = await self._one(
            "SELECT site_id, kind, name, address, area FROM sites WHERE site_id = ?", (site_id,)
        )
        return rows.site(row) if row else None

    async def get_device(self, device_id: str) -> Device | None:
        row = await self._one(
            f"SELECT {rows.DEVICE_COLUMNS} FROM devices WHERE device_id = ?", (device_id,)
        )
        return rows.device(row) if row else None

    async def get_device_secret_hash(self, device_id: str) -> str | None:
        row = await self._one("SELECT secret_hash FROM devices WHERE device_id = ?", (device_id,))
        return row[0] if row else None

    async def device_credentials(self) -> list[tuple[str, str]]:
        found = await self._all(
            "SELECT device_id, secret_hash FROM devices WHERE secret_hash IS NOT NULL"
            " ORDER BY device_id"
        )
        return [(str(r[0]), str(r[1])) for r in found]

    async def list_devices(self) -> list[Device]:
        found = await self._all(f"SELECT {rows.DEVICE_COLUMNS} FROM devices ORDER BY device_id")
        return [rows.device(r) for r in found]

    # -- receiver accounts (DC-09, SCAIP, serial Contact ID) ------------------------------
    async def upsert_receiver_account(self, mapping: ReceiverAccount) -> None:
        m = mapping
        await self._run(
            lambda c: c.execute(
                f"INSERT INTO receiver_accounts ({rows.RECEIVER_ACCOUNT_COLUMNS})"
                " VALUES (?, ?, ?, ?) ON CONFLICT (kind, account, zone)"
                " DO UPDATE SET device_id = excluded.device_id",
                (m.kind.value, m.account, m.zone, m.device_id),
            )
        )

    async def delete_receiver_account(self, kind: ReceiverKind, account: str, zone: str) -> bool:
        cur = await self._run(
            lambda c: c.execute(
                "DELETE FROM receiver_accounts WHERE kind = ? AND account = ? AND zone = ?",
                (kind.value, account, zone),
            )
        )
        return cur.rowcount > 0

    async def receiver_accounts(self, kind: ReceiverKind, account: str) -> list[ReceiverAccount]:
        found = await self._all(
            f"SELECT {rows.RECEIVER_ACCOUNT_COLUMNS} FROM receiver_accounts"
            " WHERE kind = ? AND account = ? ORDER BY zone",
            (kind.value, account),
        )
        return [rows.receiver_account(r) for r in found]

    async def list_receiver_accounts(self) -> list[ReceiverAccount]:
        found = await self._all(
            f"SELECT {rows.RECEIVER_ACCOUNT_COLUMNS} FROM receiver_accounts"
            " ORDER BY kind, account, zone"
        )
        return [rows.receiver_account(r) for r in found]

    async def list_sites(self) -> list[Site]:
        found = await self._all(
            "SELECT site_id, kind, name, address, area FROM sites ORDER BY site_id"
        )
        return [rows.site(r) for r in found]

    async def list_responders(self) -> list[Responder]:
        found = await self._all(
            f"SELECT {rows.RESPONDER_COLUMNS} FROM responders ORDER BY responder_id"
        )
        return [rows.responder(r) for r in found]

    async def list_residents(self, site_id: str | None = None) -> list[Resident]:
        found = await self._all(
            f"SELECT {rows.RESIDENT_SELECT}"
            " WHERE ? IS NULL OR r.site_id = ? ORDER BY r.resident_id",
            (site_id, site_id),
        )
        order = await self._all(
            "SELECT resident_id, responder_id FROM resident_responders"
            " ORDER BY resident_id, position"
        )
        cascades: dict[str, list[str]] = {}
        for rid, responder_id in order:
            cascades.setdefault(rid, []).append(responder_id)
        return [rows.resident(r, tuple(cascades.get(r[0], ()))) for r in found]

    async def get_resident(self, resident_id: str) -> Resident | None:
        def run(conn: sqlite3.Connection) -> Resident | None:
            row = conn.execute(
                f"SELECT {rows.RESIDENT_SELECT} WHERE r.resident_id = ?",
                (resident_id,),
            ).fetchone()
            if row is None:
                return None
            order = conn.execute(
                "SELECT responder_id FROM resident_responders WHERE resident_id = ?"
                " ORDER BY position",
                (resident_id,),
            ).fetchall()
            return rows.resident(row, tuple(o[0] for o in order))

        return await self._run(run)

    async def set_clinical(self, change: ClinicalChange) -> list[ClinicalRecord]:
        c = change

        def run(conn: sqlite3.Connection) -> list[ClinicalRecord]:
            exists = conn.execute(
                "SELECT 1 FROM residents WHERE resident_id = ?", (c.resident_id,)
            ).fetchone()
            if exists is None:
                raise KeyError(c.resident_id)
            row = conn.execute(
                "SELECT spo2_scale, spo2_scale_set_by, spo2_scale_set_at, baseline_consciousness"
                " FROM resident_clinical WHERE resident_id = ?",
                (c.resident_id,),
            ).fetchone()
            new, records = plan_clinical(rows.clinical_state(row), c)
            conn.execute(
                "INSERT INTO resident_clinical (resident_id, spo2_scale, spo2_scale_set_by,"
                " spo2_scale_set_at, baseline_consciousness, updated_by, updated_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT (resident_id) DO UPDATE SET"
                " spo2_scale=excluded.spo2_scale, spo2_scale_set_by=excluded.spo2_scale_set_by,"
                " spo2_scale_set_at=excluded.spo2_scale_set_at,"
                " baseline_consciousness=excluded.baseline_consciousness,"
                " updated_by=excluded.updated_by, updated_at=excluded.updated_at",
                (
                    c.resident_id,
                    new.spo2_scale,
                    new.spo2_scale_set_by,
                    iso(new.spo2_scale_set_at) if new.spo2_scale_set_at else None,
                    new.baseline.value if new.baseline else None,
                    c.recorded_by,
                    iso(c.recorded_at),
                ),
            )
            conn.executemany(
                f"INSERT INTO resident_clinical_history ({rows.CLINICAL_HISTORY_COLUMNS})"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        h.resident_id,
                        h.setting,
                        h.value,
                        h.previous,
                        h.prescribed_by,
                        iso(h.prescribed_at) if h.prescribed_at else None,
                        h.recorded_by,
                        iso(h.recorded_at),
                        h.reason,
                    )
                    for h in records
                ],
            )
            return records

        return await self._run(lambda conn: transaction(conn, run))

    async def clinical_history(self, resident_id: str) -> list[ClinicalRecord]:
        found = await self._all(
            f"SELECT {rows.CLINICAL_HISTORY_COLUMNS} FROM resident_clinical_history"
            " WHERE resident_id = ? ORDER BY history_id",
            (resident_id,),
        )
        return [rows.clinical_record(r) for r in found]

    # -- registry lifecycle (remove, pair, audit) ------------------------------------
    async def remove_entity(
        self, kind: Kind, entity_id: str, change: RegistryChange
    ) -> list[Blocker]:
        table, key = TABLES[kind]

        def run(conn: sqlite3.Connection) -> list[Blocker]:
            if (
                conn.execute(f"SELECT 1 FROM {table} WHERE {key} = ?", (entity_id,)).fetchone()
                is None
            ):
                raise KeyError(entity_id)
            blockers = [
                Blocker(what, str(ref))
                for what, query in blocker_queries(kind)
                for (ref,) in conn.execute(query, (entity_id,)).fetchall()
            ]
            if blockers:
                return blockers
            conn.execute(f"DELETE FROM {table} WHERE {key} = ?", (entity_id,))
            _write_change(conn, change)
            return []

        return await self._run(lambda c: transaction(c, run))

    async def pair_device(
        self, device_id: str, resident_id: str | None, location: str | None, change: RegistryChange
    ) -> Device:
        def run(conn: sqlite3.Connection) -> Device:
            row = conn.execute(
                f"SELECT {rows.DEVICE_COLUMNS} FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
            if row is None:
                raise KeyError(device_id)
            device = rows.device(row)
            if resident_id is not None:
                found = conn.execute(
                    "SELECT site_id FROM residents WHERE resident_id = ?", (resident_id,)
                ).fetchone()
                if found is None or found[0] != device.site_id:
                    raise ValueError(
                        f"resident {resident_id!r} does not exist at site {device.site_id!r}"
                    )
            new_location = device.location if location is None else location
            conn.execute(
                "UPDATE devices SET resident_id = ?, location = ? WHERE device_id = ?",
                (resident_id, new_location, device_id),
            )
            _write_change(conn, change)
            return replace(device, resident_id=resident_id, location=new_location)

        return await self._run(lambda c: transaction(c, run))

    async def site_dispatch_ids(self, site_id: str) -> set[str]:
        found = await self._all("SELECT dispatch_id FROM dispatches WHERE site_id = ?", (site_id,))
        return {r[0] for r in found}

    async def record_registry_change(self, change: RegistryChange) -> None:
        await self._run(lambda c: transaction(c, lambda conn: _write_change(conn, change)))

    async def registry_changes(
        self, kind: Kind | None = None, entity_id: str | None = None
    ) -> list[RegistryChange]:
        found = await self._all(
            "SELECT at, actor, action, kind, entity_id, detail FROM registry_audit"
            " WHERE (? IS NULL OR kind = ?) AND (? IS NULL OR entity_id = ?) ORDER BY audit_id",
            (kind, kind, entity_id, entity_id),
        )
        return [rows.registry_change(r) for r in found]

    async def get_responder(self, responder_id: str) -> Responder | None:
        row = await self._one(
            f"SELECT {rows.RESPONDER_COLUMNS} FROM responders WHERE responder_id = ?",
            (responder_id,),
        )
        return rows.responder(row) if row else None

    # -- ingest ----------------------------------------------------------------------
    async def write_readings(self, readings: Sequence[Reading]) -> int:
        params = [
            (iso(r.ts), r.device_id, int(r.metric), r.value, r.msg_id, r.resident_id)
            for r in readings
        ]

        def run(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO readings (ts, device_id, metric, value, msg_id,"
                " resident_id) VALUES (?,?,?,?,?,?)",
                params,
            )
            return conn.total_changes - before

        return await self._run(lambda c: transaction(c, run))

    async def write_event(self, event: AlarmEvent) -> bool:
        e = event
        cur = await self._run(lambda c: c.execute(_INSERT_EVENT, _event_params(e)))
        return cur.rowcount == 1

    async def write_events(self, events: Sequence[AlarmEvent]) -> list[bool]:
        def run(conn: sqlite3.Connection) -> list[bool]:
            return [conn.execute(_INSERT_EVENT, _event_params(e)).rowcount == 1 for e in events]

        return await self._run(lambda c: transaction(c, run))

    async def write_alerts(self, alerts: Sequence[Alert]) -> list[bool]:
        def run(conn: sqlite3.Connection) -> list[bool]:
            return [
                conn.execute(
                    f"INSERT OR IGNORE INTO alerts ({rows.ALERT_COLUMNS})"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        a.alert_id,
                        a.kind.value,
                        a.priority,
                        a.reason,
                        iso(a.ts),
                        a.site_id,
                        a.resident_id,
                        a.device_id,
                        a.event_type.value if a.event_type else None,
                        a.source_key,
                        json.dumps(a.detail),
                    ),
                ).rowcount
                == 1
                for a in alerts
            ]

        result: list[bool] = await self._run(lambda c: transaction(c, run))
        return result

    async def stored_event_digest(self, device_id: str, msg_id: str) -> str | None:
        row = await self._one(
            "SELECT digest FROM alarm_events WHERE device_id = ? AND msg_id = ?",
            (device_id, msg_id),
        )
        return row[0] if row else None

    async def stored_message_readings(
        self, device_id: str, msg_id: str
    ) -> set[tuple[Metric, datetime, float]]:
        found = await self._all(
            "SELECT metric, ts, value FROM readings WHERE device_id = ? AND msg_id = ?",
            (device_id, msg_id),
        )
        return {(Metric(m), rows.as_dt(ts), float(v)) for m, ts, v in found}

    async def write_alert(self, alert: Alert) -> bool:
        a = alert
        cur = await self._run(
            lambda c: c.execute(
                f"INSERT OR IGNORE INTO alerts ({rows.ALERT_COLUMNS})"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    a.alert_id,
                    a.kind.value,
                    a.priority,
                    a.reason,
                    iso(a.ts),
                    a.site_id,
                    a.resident_id,
                    a.device_id,
                    a.event_type.value if a.event_type else None,
                    a.source_key,
                    json.dumps(a.detail),
                ),
            )
        )
        return cur.rowcount == 1

    async def note_alert(
        self, alert_id: str, *, count: int | None = None, restored_at: datetime | None = None
    ) -> None:
        note: dict[str, Any] = {}
        if count is not None:
            note["count"] = count
        if restored_at is not None:
            note["restored_at"] = restored_at.isoformat()
        if note:
            await self._run(
                lambda c: c.execute(
                    "UPDATE alerts SET detail = json_patch(detail, ?) WHERE alert_id = ?",
                    (json.dumps(note), alert_id),
                )
            )

    async def note_alerts(self, notes: Sequence[AlertNote]) -> None:
        params = [(json.dumps(p), n.alert_id) for n in notes if (p := n.patch())]
        if not params:
            return

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE alerts SET detail = json_patch(detail, ?) WHERE alert_id = ?", params
            )

        await self._run(lambda c: transaction(c, run))

    async def write_dead_letter(self, letter: DeadLetter) -> None:
        dl = letter
        await self._run(
            lambda c: c.execute(
                f"INSERT INTO dead_letters ({rows.DEAD_LETTER_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                (
                    iso(dl.received_at),
                    dl.source,
                    dl.origin,
                    dl.reason,
                    dl.payload,
                    dl.device_id,
                    dl.payload_bytes,
                ),
            )
        )

    async def set_device_status(
        self,
        device_id: str,
        *,
        online: bool | None = None,
        at: Any,
        heartbeat: bool = False,
        battery: float | None = None,
    ) -> None:
        when = iso(at)
        await self._run(
            lambda c: c.execute(
                "INSERT INTO device_status (device_id, online, changed_at, last_heartbeat,"
                " battery) SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM devices"
                " WHERE device_id = ?)"
                " ON CONFLICT (device_id) DO UPDATE SET"
                " online = COALESCE(?, device_status.online),"
                " changed_at = CASE WHEN ? IS NULL THEN device_status.changed_at ELSE ? END,"
                " last_heartbeat = COALESCE(excluded.last_heartbeat, device_status.last_heartbeat),"
                " battery = COALESCE(excluded.battery, device_status.battery)",
                (
                    device_id,
                    True if online is None else online,
                    when,
                    when if heartbeat else None,
                    battery,
                    device_id,
                    online,
                    online,
                    when,
                ),
            )
        )

    # -- dispatch --------------------------------------------------------------------
    async def create_dispatch(self, dispatch: Dispatch, audit: AuditEntry) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            if not insert_dispatch(conn, dispatch):
                return False
            insert_audit(conn, audit)
            return True

        return await self._run(lambda c: transaction(c, run))

    async def get_dispatch(self, dispatch_id: str) -> Dispatch | None:
        row = await self._one(
            f"SELECT {rows.DISPATCH_COLUMNS} FROM dispatches WHERE dispatch_id = ?",
            (dispatch_id,),
        )
        return rows.dispatch(row) if row else None

    async def open_dispatches(self) -> list[Dispatch]:
        found = await self._all(
            f"SELECT {rows.DISPATCH_COLUMNS} FROM dispatches"
            " WHERE state NOT IN ('resolved', 'cancelled') ORDER BY priority, created_at"
        )
        return [rows.dispatch(r) for r in found]

    async def dispatch_audit(self, dispatch_id: str) -> list[AuditEntry]:
        found = await self._all(
            f"SELECT {rows.AUDIT_COLUMNS} FROM dispatch_audit WHERE dispatch_id = ?"
            " ORDER BY audit_id",
            (dispatch_id,),
        )
        return [rows.audit(r) for r in found]

    async def verify_audit(self, anchor: Anchor | None = None) -> ChainReport:
        return await self._run(lambda c: verify_audit(c, anchor))

    # -- queries ---------------------------------------------------------------------
    async def recent_alerts(self, limit: int = 50) -> list[Alert]:
        found = await self._all(
            f"SELECT {rows.ALERT_COLUMNS} FROM alerts ORDER BY ts DESC LIMIT ?", (limit,)
        )
        return [rows.alert(r) for r in found]

    async def alerts_without_dispatch(self, limit: int = 1000) -> list[Alert]:
        cols = ", ".join(f"a.{c.strip()}" for c in rows.ALERT_COLUMNS.split(","))
        found = await self._all(
            f"SELECT {cols} FROM alerts a WHERE NOT EXISTS"
            " (SELECT 1 FROM dispatches d WHERE d.alert_id = a.alert_id)"
            " AND NOT EXISTS (SELECT 1 FROM dispatch_members m WHERE m.alert_id = a.alert_id)"
            " ORDER BY a.ts LIMIT ?",
            (limit,),
        )
        return [rows.alert(r) for r in found]

    async def latest_readings(self, resident_id: str) -> dict[str, tuple[Any, float]]:
        found = await self._all(
            "SELECT metric, ts, value FROM readings r WHERE resident_id = ? AND ts = ("
            " SELECT MAX(ts) FROM readings WHERE resident_id = r.resident_id"
            " AND metric = r.metric)",
            (resident_id,),
        )
        return {Metric(m).label: (rows.as_dt(ts), float(v)) for m, ts, v in found}

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        found = await self._all(
            f"SELECT {rows.DEAD_LETTER_COLUMNS} FROM dead_letters"
            " ORDER BY dead_letter_id DESC LIMIT ?",
            (limit,),
        )
        return [rows.dead_letter(r) for r in found]

    async def count(self, table: str) -> int:
        if table not in rows.COUNTABLE:
            raise ValueError(f"unknown table {table!r}")
        row = await self._one(f"SELECT count(*) FROM {table}", ())
        return int(row[0])

    async def maintain(self, now: datetime | None = None) -> list[str]:
        """Daily housekeeping: drop dead letters past their retention, refresh the
        planner's statistics, checkpoint the WAL."""
        await self.prune_dead_letters(now)
        await self._run(lambda c: c.execute("PRAGMA optimize"))
        await self._run(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        return []

    async def prune_dead_letters(self, now: datetime | None = None) -> int:
        if self.dead_letter_retention is None:
            return 0
        cutoff = iso((now or datetime.now(UTC)) - self.dead_letter_retention)
        cur = await self._run(
            lambda c: c.execute("DELETE FROM dead_letters WHERE received_at < ?", (cutoff,))
        )
        return int(cur.rowcount)

    # -- NEWS2 and console/report queries ------------------------------------------------
    async def write_news2(self, score: News2Record) -> bool:
        n = score
        cur = await self._run(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO news2_scores (ts, resident_id, observation_id, total,"
                " risk, red_flag, spo2_scale, components, consciousness)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    iso(n.ts),
                    n.resident_id,
                    n.observation_id,
                    n.total,
                    n.risk,
                    int(n.red_flag),
                    n.spo2_scale,
                    json.dumps(n.components),
                    n.consciousness,
                ),
            )
        )
        return cur.rowcount == 1

    async def latest_vitals(
        self, resident_ids: Sequence[str], since: datetime | None = None
    ) -> dict[str, dict[str, tuple[datetime, float]]]:
        lower = iso(since) if since else ""

        def run(conn: sqlite3.Connection) -> dict[str, dict[str, tuple[datetime, float]]]:
            # One LIMIT 1 probe of readings_resident per (resident, metric).
            out: dict[str, dict[str, tuple[datetime, float]]] = {}
            for rid in resident_ids:
                latest = out.setdefault(rid, {})
                for metric in Metric:
                    row = conn.execute(
                        "SELECT ts, value FROM readings WHERE resident_id = ? AND metric = ?"
                        " AND ts >= ? ORDER BY ts DESC LIMIT 1",
                        (rid, int(metric), lower),
                    ).fetchone()
                    if row is not None:
                        latest[metric.label] = (rows.as_dt(row[0]), float(row[1]))
            return out

        return await self._run(run)

    async def metric_history(
        self,
        resident_id: str,
        metric: Metric,
        start: datetime,
        end: datetime,
        bucket: timedelta,
    ) -> list[HistoryPoint]:
        width = int(bucket.total_seconds())
        if width < 1 or width != bucket.total_seconds():
            raise ValueError(f"bucket {bucket} must be a whole number of seconds (>= 1)")
        found = await self._all(
            "SELECT (CAST(strftime('%s', ts) AS INTEGER) - ?) / ? AS b, min(value), max(value),"
            " avg(value), count(*) FROM readings"
            " WHERE resident_id = ? AND metric = ? AND ts >= ? AND ts < ?"
            " GROUP BY b ORDER BY b",
            (_BUCKET_ORIGIN_EPOCH, width, resident_id, int(metric), iso(start), iso(end)),
        )
        return [
            HistoryPoint(
                datetime.fromtimestamp(_BUCKET_ORIGIN_EPOCH + b * width, UTC),
                float(lo),
                float(hi),
                float(avg),
                int(n),
            )
            for b, lo, hi, avg, n in found
        ]

    async def news2_history(
        self, resident_id: str, start: datetime, end: datetime
    ) -> list[News2Record]:
        found = await self._all(
            "SELECT resident_id, ts, total, risk, red_flag, components, spo2_scale,"
            " observation_id, consciousness FROM news2_scores"
            " WHERE resident_id = ? AND ts >= ? AND ts < ? ORDER BY ts",
            (resident_id, iso(start), iso(end)),
        )
        return [rows.news2(r) for r in found]

    async def resident_readings(
        self, resident_id: str, start: datetime, end: datetime, limit: int = 100_000
    ) -> list[Reading]:
        found = await self._all(
            "SELECT device_id, metric, value, ts, msg_id, resident_id FROM readings"
            " WHERE resident_id = ? AND ts >= ? AND ts < ?"
            " ORDER BY ts, device_id, msg_id, metric LIMIT ?",
            (resident_id, iso(start), iso(end), limit),
        )
        return [rows.reading(r) for r in found]

    async def open_alarms(self, now: datetime, limit: int = 200) -> list[OpenAlarm]:
        found = await self._all(
            f"SELECT {rows.OPEN_ALARM_COLUMNS} FROM dispatches d JOIN alerts a USING (alert_id)"
            " WHERE d.state NOT IN ('resolved', 'cancelled')"
            " ORDER BY d.priority, d.created_at LIMIT ?",
            (limit,),
        )
        return [rows.open_alarm(r, now) for r in found]

    async def dispatch_timeline(self, dispatch_id: str) -> list[TimelineEntry]:
        found = await self._all(
            "SELECT a.at, a.from_state, a.to_state, a.actor, a.reason, d.created_at"
            " FROM dispatch_audit a JOIN dispatches d USING (dispatch_id)"
            " WHERE a.dispatch_id = ? ORDER BY a.audit_id",
            (dispatch_id,),
        )
        return [
            rows.timeline((*r[:5], (rows.as_dt(r[0]) - rows.as_dt(r[5])).total_seconds()))
            for r in found
        ]


_INSERT_EVENT = (
    "INSERT OR IGNORE INTO alarm_events (device_id, msg_id, type, phase, ts,"
    " site_id, resident_id, zone, source, code, digest, device_type, location)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _event_params(e: AlarmEvent) -> tuple[Any, ...]:
    return (
        e.device_id,
        e.msg_id,
        e.type.value,
        e.phase.value,
        iso(e.ts),
        e.site_id,
        e.resident_id,
        e.zone,
        e.source,
        e.code,
        rows.event_digest(e),
        e.device_type,
        e.location,
    )


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction (the connection is autocommit)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def insert_dispatch(conn: sqlite3.Connection, d: Dispatch) -> bool:
    """Insert a new dispatch row; ``False`` when one exists for its id or alert."""
    cur = conn.execute(
        f"INSERT OR IGNORE INTO dispatches ({rows.DISPATCH_COLUMNS})"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        rows.dispatch_params(d, iso),
    )
    return cur.rowcount == 1


def insert_audit(conn: sqlite3.Connection, a: rows.AuditLike) -> None:
    """Append ``a`` to the hash-chained audit trail. Call inside :func:`transaction`
    (``BEGIN IMMEDIATE`` holds the one write lock, so appends are serialised)."""
    last = conn.execute(
        "SELECT seq, row_hash FROM dispatch_audit WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    seq = (last[0] if last else 0) + 1
    detail = json.loads(json.dumps(a.detail))
    prev, digest = rows.chain_link(a, seq, last[1] if last else GENESIS, detail)
    conn.execute(
        f"INSERT INTO dispatch_audit ({rows.AUDIT_COLUMNS}, {rows.AUDIT_CHAIN_COLUMNS})"
        " VALUES (?,?,?,?,?,?,?,?,?,?)",
        (*rows.audit_params(a, iso), seq, prev, digest),
    )


def verify_audit(conn: sqlite3.Connection, anchor: Anchor | None = None) -> ChainReport:
    """Walk the audit chain in one read transaction and cross-check each dispatch's
    state against its last audit row."""
    verifier = ChainVerifier(anchor)
    conn.execute("BEGIN")
    try:
        for found in conn.execute(
            f"SELECT {rows.CHAIN_ROW_COLUMNS} FROM dispatch_audit WHERE seq IS NOT NULL"
            " ORDER BY seq"
        ):
            verifier.feed(rows.chain_row(found))
        report = verifier.finish()
        (unchained,) = conn.execute(
            "SELECT count(*) FROM dispatch_audit WHERE seq IS NULL"
        ).fetchone()
        report.unchained = int(unchained)
        mismatches = conn.execute(
            "SELECT d.dispatch_id, d.state, (SELECT a.to_state FROM dispatch_audit a"
            "  WHERE a.dispatch_id = d.dispatch_id ORDER BY a.audit_id DESC LIMIT 1) AS last"
            " FROM dispatches d WHERE last IS NOT d.state ORDER BY d.dispatch_id"
        ).fetchall()
        report.problems.extend(rows.state_mismatch(r) for r in mismatches)
    finally:
        conn.execute("COMMIT")
    return report


def _write_change(conn: sqlite3.Connection, change: RegistryChange) -> None:
    conn.execute(
        "INSERT INTO registry_audit (at, actor, action, kind, entity_id, detail)"
        " VALUES (?,?,?,?,?,?)",
        (
            iso(change.at),
            change.actor,
            change.action,
            change.kind,
            change.entity_id,
            json.dumps(change.detail, sort_keys=True),
        ),
    )
