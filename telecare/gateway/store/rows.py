"""Conversions between stored rows and the canonical model, shared by both backends."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    AlertKind,
    Consciousness,
    Device,
    DeviceKind,
    Dispatch,
    DispatchState,
    EventType,
    Metric,
    Reading,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.dispatch.audit_chain import ChainRow, canonical, row_hash
from telecare.gateway.store.base import (
    AuditEntry,
    DeadLetter,
    News2Record,
    OpenAlarm,
    TimelineEntry,
)
from telecare.gateway.store.clinical import ClinicalRecord, ClinicalState
from telecare.gateway.store.registry import RegistryChange

__all__ = ["as_dt", "event_digest", "iso"]


def iso(ts: datetime) -> str:
    """Sortable UTC text form used by SQLite (microsecond precision, ``Z`` suffix)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_digest(event: AlarmEvent) -> str:
    """Digest of what an event says (type, phase, zone, code), stored with its
    idempotency key ``(device_id, msg_id)``: the same key with another digest is a reuse
    of the message id with different content. The site and resident are left out: the
    gateway stamps them, a device does not send them. So is the time: a unit that sends
    none (SCAIP, a Contact ID line) is stamped with each retransmission's receive time,
    and a device whose clock is implausible is re-timed by the gateway, yet a
    retransmission is the same message."""
    e = event
    text = f"{e.type.value}|{e.phase.value}|{e.zone or ''}|{e.code or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def as_dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _opt_dt(value: Any) -> datetime | None:
    return None if value is None else as_dt(value)


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if value in (None, ""):
        return {}
    loaded = json.loads(value)
    return loaded if isinstance(loaded, dict) else {}


def site(row: Any) -> Site:
    return Site(row[0], SiteKind(row[1]), row[2], row[3], row[4])


def resident(row: Any, responders: tuple[str, ...]) -> Resident:
    return Resident(
        resident_id=row[0],
        site_id=row[1],
        name=row[2],
        nhs_number=row[3],
        spo2_scale=None if row[4] is None else int(row[4]),
        spo2_scale_set_by=row[5],
        spo2_scale_set_at=_opt_dt(row[6]),
        baseline_consciousness=Consciousness(row[7]) if row[7] else None,
        notes=row[8],
        responders=responders,
    )


#: The registry columns ``upsert_resident`` writes (never the clinical settings).
RESIDENT_COLUMNS = "resident_id, site_id, name, nhs_number, notes"
#: ``SELECT {RESIDENT_SELECT} ...`` gives the row :func:`resident` reads: the registry
#: record with its clinical settings (migration 0009) joined in.
RESIDENT_SELECT = (
    "r.resident_id, r.site_id, r.name, r.nhs_number, c.spo2_scale, c.spo2_scale_set_by, "
    "c.spo2_scale_set_at, c.baseline_consciousness, r.notes "
    "FROM residents r LEFT JOIN resident_clinical c ON c.resident_id = r.resident_id"
)
CLINICAL_HISTORY_COLUMNS = (
    "resident_id, setting, value, previous, prescribed_by, prescribed_at, recorded_by, "
    "recorded_at, reason"
)


def clinical_record(row: Any) -> ClinicalRecord:
    return ClinicalRecord(
        row[0], row[1], row[2], row[3], row[4], _opt_dt(row[5]), row[6], as_dt(row[7]), row[8]
    )


def clinical_state(row: Any | None) -> ClinicalState:
    """From ``spo2_scale, spo2_scale_set_by, spo2_scale_set_at, baseline_consciousness``."""
    if row is None:
        return ClinicalState()
    return ClinicalState(
        None if row[0] is None else int(row[0]),
        row[1],
        _opt_dt(row[2]),
        Consciousness(row[3]) if row[3] else None,
    )


DEVICE_COLUMNS = (
    "device_id, site_id, kind, resident_id, format, location, heartbeat_interval_s, hub_id"
)
RESPONDER_COLUMNS = "responder_id, kind, name, phone, area, skills"
ALERT_COLUMNS = (
    "alert_id, kind, priority, reason, ts, site_id, resident_id, device_id, event_type, "
    "source_key, detail"
)
DISPATCH_COLUMNS = (
    "dispatch_id, alert_id, state, priority, created_at, updated_at, site_id, resident_id, "
    "responder_id, cascade_step, outcome, version"
)
AUDIT_COLUMNS = "dispatch_id, at, from_state, to_state, actor, reason, detail"
#: The hash chain's columns (migration 0008), written after ``AUDIT_COLUMNS``.
AUDIT_CHAIN_COLUMNS = "seq, prev_hash, row_hash"
#: What ``audit verify`` reads, in ``seq`` order (see ``chain_row``).
CHAIN_ROW_COLUMNS = (
    "audit_id, seq, prev_hash, row_hash, dispatch_id, at, from_state, to_state, actor,"
    " reason, detail"
)


RECEIVER_ACCOUNT_COLUMNS = "kind, account, zone, device_id"


def receiver_account(row: Any) -> ReceiverAccount:
    return ReceiverAccount(ReceiverKind(row[0]), row[1], row[3], row[2])


RECEIVER_ACCOUNT_COLUMNS = "kind, account, zone, device_id"


def device(row: Any) -> Device:
    return Device(
        row[0], row[1], DeviceKind(row[2]), row[3], row[4], row[5], int(row[6]), hub_id=row[7]
    )


def responder(row: Any) -> Responder:
    skills = row[5]
    if isinstance(skills, str):
        skills = json.loads(skills)
    return Responder(row[0], ResponderKind(row[1]), row[2], row[3], row[4], tuple(skills))


def alert(row: Any) -> Alert:
    return Alert(
        alert_id=row[0],
        kind=AlertKind(row[1]),
        priority=int(row[2]),
        reason=row[3],
        ts=as_dt(row[4]),
        site_id=row[5],
        resident_id=row[6],
        device_id=row[7],
        event_type=EventType(row[8]) if row[8] else None,
        source_key=row[9],
        detail=_json(row[10]),
    )


def dispatch(row: Any) -> Dispatch:
    return Dispatch(
        dispatch_id=row[0],
        alert_id=row[1],
        state=DispatchState(row[2]),
        priority=int(row[3]),
        created_at=as_dt(row[4]),
        updated_at=as_dt(row[5]),
        site_id=row[6],
        resident_id=row[7],
        responder_id=row[8],
        cascade_step=int(row[9]),
        outcome=row[10],
        version=int(row[11]),
    )


def audit(row: Any) -> AuditEntry:
    return AuditEntry(
        dispatch_id=row[0],
        at=as_dt(row[1]),
        from_state=DispatchState(row[2]) if row[2] else None,
        to_state=DispatchState(row[3]),
        actor=row[4],
        reason=row[5],
        detail=_json(row[6]),
    )


def chain_row(row: Any) -> ChainRow:
    """From ``CHAIN_ROW_COLUMNS``."""
    return ChainRow(
        audit_id=int(row[0]),
        seq=int(row[1]),
        prev_hash=row[2],
        row_hash=row[3],
        dispatch_id=row[4],
        at=as_dt(row[5]),
        from_state=row[6],
        to_state=row[7],
        actor=row[8],
        reason=row[9],
        detail=_json(row[10]),
    )


def chain_link(a: AuditLike, seq: int, prev_hash: str, detail: dict[str, Any]) -> tuple[str, str]:
    """``(prev_hash, row_hash)`` for ``a`` stored as chain position ``seq``; ``detail`` is
    the detail as the database will give it back (jsonb normalises numbers)."""
    content = canonical(
        seq, a.dispatch_id, a.at, a.from_state, a.to_state, a.actor, a.reason, detail
    )
    return prev_hash, row_hash(prev_hash, content)


def state_mismatch(row: Any) -> str:
    """A problem line from ``dispatch_id, state, last audited to_state``."""
    if row[2] is None:
        return f"dispatch {row[0]} has no audit row: its rows were removed"
    return (
        f"dispatch {row[0]} is '{row[1]}' but its last audit row says '{row[2]}':"
        " audit rows were removed (or the state was changed without an audit row)"
    )


def dead_letter(row: Any) -> DeadLetter:
    return DeadLetter(
        received_at=as_dt(row[0]),
        source=row[1],
        origin=row[2],
        reason=row[3],
        payload=bytes(row[4]),
        device_id=row[5],
        payload_bytes=-1 if row[6] is None else int(row[6]),
    )


DEAD_LETTER_COLUMNS = "received_at, source, origin, reason, payload, device_id, payload_bytes"

#: Tables ``Store.count`` accepts (a fixed list: the name is interpolated into SQL).
COUNTABLE = frozenset(
    {
        "sites",
        "residents",
        "devices",
        "receiver_accounts",
        "responders",
        "readings",
        "alarm_events",
        "alerts",
        "dispatches",
        "dispatch_audit",
        "dead_letters",
        "device_status",
        "news2_scores",
    }
)

#: ``open_alarms``: dispatches ``d`` joined with alerts ``a``.
OPEN_ALARM_COLUMNS = (
    "d.dispatch_id, d.alert_id, d.priority, d.state, d.created_at, a.kind, a.reason,"
    " a.event_type, d.site_id, d.resident_id, d.responder_id"
)


def open_alarm(row: Any, now: datetime) -> OpenAlarm:
    created = as_dt(row[4])
    return OpenAlarm(
        dispatch_id=row[0],
        alert_id=row[1],
        priority=int(row[2]),
        state=DispatchState(row[3]),
        created_at=created,
        age_s=(now - created).total_seconds(),
        kind=row[5],
        reason=row[6],
        event_type=EventType(row[7]) if row[7] else None,
        site_id=row[8],
        resident_id=row[9],
        responder_id=row[10],
    )


def news2(row: Any) -> News2Record:
    """From ``resident_id, ts, total, risk, red_flag, components, spo2_scale,
    observation_id, consciousness``."""
    return News2Record(
        resident_id=row[0],
        ts=as_dt(row[1]),
        total=int(row[2]),
        risk=row[3],
        red_flag=bool(row[4]),
        components={k: int(v) for k, v in _json(row[5]).items()},
        spo2_scale=int(row[6]),
        observation_id=row[7],
        consciousness=row[8] if len(row) > 8 else None,
    )


def timeline(row: Any) -> TimelineEntry:
    """From ``at, from_state, to_state, actor, reason, elapsed seconds``."""
    return TimelineEntry(
        at=as_dt(row[0]),
        from_state=DispatchState(row[1]) if row[1] else None,
        to_state=DispatchState(row[2]),
        actor=row[3],
        reason=row[4],
        elapsed_s=float(row[5]),
    )


class AuditLike(Protocol):
    """An audit row as either layer spells it (``AuditEntry`` here, ``AuditRecord`` in
    ``dispatch``): the same seven columns."""

    @property
    def dispatch_id(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def from_state(self) -> DispatchState | None: ...
    @property
    def to_state(self) -> DispatchState: ...
    @property
    def actor(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def detail(self) -> dict[str, Any]: ...


def _same(ts: datetime) -> Any:
    return ts


def dispatch_params(d: Dispatch, ts: Callable[[datetime], Any] = _same) -> tuple[Any, ...]:
    """Values for ``DISPATCH_COLUMNS``; ``ts`` converts timestamps (``iso`` for SQLite)."""
    return (
        d.dispatch_id,
        d.alert_id,
        d.state.value,
        d.priority,
        ts(d.created_at),
        ts(d.updated_at),
        d.site_id,
        d.resident_id,
        d.responder_id,
        d.cascade_step,
        d.outcome,
        d.version,
    )


def audit_params(a: AuditLike, ts: Callable[[datetime], Any] = _same) -> tuple[Any, ...]:
    """Values for ``AUDIT_COLUMNS``."""
    return (
        a.dispatch_id,
        ts(a.at),
        a.from_state.value if a.from_state else None,
        a.to_state.value,
        a.actor,
        a.reason,
        json.dumps(a.detail),
    )


def reading(row: Any) -> Reading:
    """From ``device_id, metric, value, ts, msg_id, resident_id``."""
    metric = Metric(int(row[1]))
    return Reading(
        device_id=row[0],
        metric=metric,
        value=float(row[2]),
        unit=metric.unit,
        ts=as_dt(row[3]),
        msg_id=row[4],
        resident_id=row[5],
    )


def registry_change(row: Any) -> RegistryChange:
    return RegistryChange(as_dt(row[0]), row[1], row[2], row[3], row[4], _json(row[5]))
