"""The one storage interface: two backends (PostgreSQL/TimescaleDB and SQLite) implement it.

The pipeline writes through it; the console, API and CLI read through it. Writes are
idempotent: re-delivering the same message (same device and message id) stores nothing
twice and returns ``False``/``0`` for what was already there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    Device,
    Dispatch,
    DispatchState,
    EventType,
    Metric,
    Reading,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Responder,
    Site,
)
from telecare.dispatch.audit_chain import Anchor, ChainReport
from telecare.gateway.store.clinical import ClinicalChange, ClinicalRecord
from telecare.gateway.store.registry import Blocker, Kind, RegistryChange
from telecare.gateway.store.sql import Sql

__all__ = [
    "DEAD_LETTER_PREVIEW",
    "AuditEntry",
    "ClinicalChange",
    "ClinicalRecord",
    "DeadLetter",
    "HistoryPoint",
    "News2Record",
    "OpenAlarm",
    "Store",
    "TimelineEntry",
]


#: Payload bytes a dead letter keeps: enough to see what the sender got wrong, not a copy
#: of whatever a broken or hostile device sends (a 1 MB payload was once stored whole).
DEAD_LETTER_PREVIEW = 1024


@dataclass(frozen=True, slots=True)
class AlertNote:
    """What :meth:`Store.note_alerts` records on one stored alert (``None``: unchanged)."""

    alert_id: str
    count: int | None = None
    restored_at: datetime | None = None

    def patch(self) -> dict[str, Any]:
        """The keys merged into the alert's ``detail``."""
        note: dict[str, Any] = {}
        if self.count is not None:
            note["count"] = self.count
        if self.restored_at is not None:
            note["restored_at"] = self.restored_at.isoformat()
        return note


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input we could not accept, kept with the reason so an installer can fix the sender.

    ``payload`` is cut to its first :data:`DEAD_LETTER_PREVIEW` bytes at construction;
    ``payload_bytes`` is the size of the whole payload as received."""

    received_at: datetime
    source: str  # "mqtt", "serial", "api"
    origin: str  # topic, port or endpoint
    reason: str
    payload: bytes
    device_id: str | None = None
    payload_bytes: int = -1  # -1: len(payload) before it is cut

    def __post_init__(self) -> None:
        if self.payload_bytes < 0:
            object.__setattr__(self, "payload_bytes", len(self.payload))
        if len(self.payload) > DEAD_LETTER_PREVIEW:
            object.__setattr__(self, "payload", bytes(self.payload[:DEAD_LETTER_PREVIEW]))

    @property
    def truncated(self) -> bool:
        return self.payload_bytes > len(self.payload)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    dispatch_id: str
    at: datetime
    from_state: DispatchState | None
    to_state: DispatchState
    actor: str
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class News2Record:
    """One stored NEWS2 score. Idempotency key: ``(resident_id, observation_id, ts)``."""

    resident_id: str
    ts: datetime
    total: int
    risk: str  # "low", "low-medium", "medium", "high"
    red_flag: bool
    components: dict[str, int]
    spo2_scale: int
    observation_id: str
    #: The ACVPU level scored (``A C V P U``); ``None`` for scores stored before 0013.
    consciousness: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One downsampled bucket of a metric's history."""

    bucket: datetime
    min: float
    max: float
    avg: float
    count: int


@dataclass(frozen=True, slots=True)
class OpenAlarm:
    """An alert whose dispatch is still open, as the operator's queue shows it."""

    dispatch_id: str
    alert_id: str
    priority: int
    state: DispatchState
    created_at: datetime
    age_s: float
    kind: str
    reason: str
    event_type: EventType | None
    site_id: str | None
    resident_id: str | None
    responder_id: str | None


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One step of a dispatch's timeline, with seconds since the dispatch was created."""

    at: datetime
    from_state: DispatchState | None
    to_state: DispatchState
    actor: str
    reason: str
    elapsed_s: float


class Store(Protocol):
    """What the gateway needs from storage. Implementations are async context managers."""

    @property
    def mode(self) -> str:
        """``"timescaledb"``, ``"postgres"`` or ``"sqlite"``: what the log reports at start."""
        ...

    @property
    def sql(self) -> Sql:
        """The query API for SQL written once for both backends (``gateway.store.sql``)."""
        ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied (empty when up to date)."""
        ...

    # -- registry (installer) -------------------------------------------------------
    async def upsert_site(self, site: Site) -> None: ...
    async def upsert_resident(self, resident: Resident) -> None: ...
    async def upsert_device(self, device: Device, secret_hash: str | None = None) -> None: ...
    async def upsert_responder(self, responder: Responder) -> None: ...
    async def set_device_user(self, device_id: str, user_id: int, resident_id: str) -> None:
        """Map a multi-user device's user id (BLE 0x2A35) to a resident."""
        ...

    async def device_users(self, device_id: str) -> dict[int, str]:
        """A device's user id -> resident id map (empty: a single-user device)."""
        ...

    async def get_site(self, site_id: str) -> Site | None: ...
    async def get_device(self, device_id: str) -> Device | None: ...
    async def get_device_secret_hash(self, device_id: str) -> str | None: ...
    async def device_credentials(self) -> list[tuple[str, str]]:
        """``(device_id, secret hash)`` of every device with credentials, ids as stored
        (not validated, so one bad row cannot hide the others)."""
        ...

    async def get_resident(self, resident_id: str) -> Resident | None: ...
    async def get_responder(self, responder_id: str) -> Responder | None: ...
    async def set_clinical(self, change: ClinicalChange) -> list[ClinicalRecord]:
        """Set a resident's clinical settings and append their history in one transaction
        (the only way they change; ``KeyError`` for an unknown resident)."""
        ...

    async def clinical_history(self, resident_id: str) -> list[ClinicalRecord]:
        """Every recorded change of a resident's clinical settings, oldest first."""
        ...

    async def remove_entity(
        self, kind: Kind, entity_id: str, change: RegistryChange
    ) -> list[Blocker]:
        """Delete a site, resident, responder or device and audit it, in one transaction;
        or, while anything still references it (an open dispatch, a paired device, a
        cascade: see ``registry``), delete nothing and return what blocks it.
        ``KeyError`` when it does not exist."""
        ...

    async def pair_device(
        self, device_id: str, resident_id: str | None, location: str | None, change: RegistryChange
    ) -> Device:
        """Pair a device with a resident of its site (``None``: unpair) and optionally
        move it (``location``; ``None`` keeps it), audited, in one transaction.
        ``KeyError`` for an unknown device, ``ValueError`` for a resident not at its site."""
        ...

    async def site_dispatch_ids(self, site_id: str) -> set[str]:
        """Ids of every dispatch raised at a site (for per-site reports)."""
        ...

    async def record_registry_change(self, change: RegistryChange) -> None:
        """Append one entry to the registry audit."""
        ...

    async def registry_changes(
        self, kind: Kind | None = None, entity_id: str | None = None
    ) -> list[RegistryChange]:
        """The registry audit, oldest first, optionally of one kind and id."""
        ...

    async def list_devices(self) -> list[Device]: ...
    async def list_sites(self) -> list[Site]: ...
    async def list_residents(self, site_id: str | None = None) -> list[Resident]: ...
    async def list_responders(self) -> list[Responder]: ...

    # -- receiver accounts (DC-09, SCAIP, serial Contact ID) ------------------------------
    async def upsert_receiver_account(self, mapping: ReceiverAccount) -> None:
        """Map ``(kind, account, zone)`` to a device (replacing an earlier mapping)."""
        ...

    async def delete_receiver_account(self, kind: ReceiverKind, account: str, zone: str) -> bool:
        """Remove one mapping; ``False`` when there was none."""
        ...

    async def receiver_accounts(self, kind: ReceiverKind, account: str) -> list[ReceiverAccount]:
        """Every mapping of one account (the account-wide one has zone ``""``)."""
        ...

    async def list_receiver_accounts(self) -> list[ReceiverAccount]: ...

    # -- ingest ---------------------------------------------------------------------
    async def write_readings(self, readings: Sequence[Reading]) -> int:
        """Store readings; return how many were new (duplicates are skipped)."""
        ...

    async def write_event(self, event: AlarmEvent) -> bool:
        """Store an alarm event; ``False`` when this (device, msg_id) was already stored."""
        ...

    async def stored_event_digest(self, device_id: str, msg_id: str) -> str | None:
        """The content digest stored with event ``(device_id, msg_id)`` (``None``: no such
        event, or stored before digests were kept); see ``rows.event_digest``."""
        ...

    async def stored_message_readings(
        self, device_id: str, msg_id: str
    ) -> set[tuple[Metric, datetime, float]]:
        """``(metric, ts, value)`` of every reading stored under ``(device_id, msg_id)``:
        what an observation set with that idempotency key said before."""
        ...

    async def write_events(self, events: Sequence[AlarmEvent]) -> list[bool]:
        """Store several events in one transaction; for each, whether it was new."""
        ...

    async def write_alert(self, alert: Alert) -> bool: ...

    async def write_alerts(self, alerts: Sequence[Alert]) -> list[bool]:
        """Store many alerts in one transaction (an alarm storm); for each, whether it
        was new."""
        ...

    async def write_dead_letter(self, letter: DeadLetter) -> None: ...

    async def note_alert(
        self, alert_id: str, *, count: int | None = None, restored_at: datetime | None = None
    ) -> None:
        """Record on a stored alert what happened to it since it was raised, for the
        operator: ``detail.count`` (repeats folded into it) and ``detail.restored_at``
        (its device restored but the alarm stays open)."""
        ...

    async def note_alerts(self, notes: Sequence[AlertNote]) -> None:
        """:meth:`note_alert` for many alerts in one transaction (an IP receiver's
        batch of folded presses)."""
        ...

    async def set_device_status(
        self,
        device_id: str,
        *,
        online: bool | None = None,
        at: datetime,
        heartbeat: bool = False,
        battery: float | None = None,
    ) -> None: ...

    # -- dispatch -------------------------------------------------------------------
    async def create_dispatch(self, dispatch: Dispatch, audit: AuditEntry) -> bool:
        """Insert a dispatch and its first audit entry in one transaction.

        ``False`` when a dispatch for the same alert already exists.
        """
        ...

    async def get_dispatch(self, dispatch_id: str) -> Dispatch | None: ...

    async def open_dispatches(self) -> list[Dispatch]:
        """Open dispatches, most urgent first (priority, then age)."""
        ...

    async def dispatch_audit(self, dispatch_id: str) -> list[AuditEntry]: ...

    async def verify_audit(self, anchor: Anchor | None = None) -> ChainReport:
        """Walk the hash-chained audit trail; the report names every changed, relinked
        or missing row (``telecare audit verify``)."""
        ...

    # -- queries --------------------------------------------------------------------
    async def recent_alerts(self, limit: int = 50) -> list[Alert]: ...

    async def alerts_without_dispatch(self, limit: int = 1000) -> list[Alert]:
        """Alerts that have no dispatch yet, oldest first: what a crash may have left
        between storing an alert and opening its dispatch (the gateway re-submits them)."""
        ...

    async def latest_readings(self, resident_id: str) -> dict[str, tuple[datetime, float]]:
        """The latest value of each metric for a resident (metric label -> (ts, value))."""
        ...

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]: ...

    async def write_news2(self, score: News2Record) -> bool:
        """Store a NEWS2 score; ``False`` when this observation's score was already stored."""
        ...

    async def latest_vitals(
        self, resident_ids: Sequence[str], since: datetime | None = None
    ) -> dict[str, dict[str, tuple[datetime, float]]]:
        """Latest value of each metric for each resident (resident -> metric label ->
        (ts, value)); readings older than ``since`` are ignored. One index probe per
        (resident, metric), never a scan of the history."""
        ...

    async def metric_history(
        self,
        resident_id: str,
        metric: Metric,
        start: datetime,
        end: datetime,
        bucket: timedelta,
    ) -> list[HistoryPoint]:
        """A metric over ``[start, end)`` downsampled to ``bucket`` (aligned to
        2000-01-01T00:00Z), oldest first; empty buckets are absent."""
        ...

    async def news2_history(
        self, resident_id: str, start: datetime, end: datetime
    ) -> list[News2Record]:
        """NEWS2 scores in ``[start, end)``, oldest first."""
        ...

    async def resident_readings(
        self, resident_id: str, start: datetime, end: datetime, limit: int = 100_000
    ) -> list[Reading]:
        """A resident's stored readings in ``[start, end)``, oldest first, at most
        ``limit`` (the FHIR export reads through it)."""
        ...

    async def open_alarms(self, now: datetime, limit: int = 200) -> list[OpenAlarm]:
        """Alerts with an open dispatch: most urgent priority first, oldest first."""
        ...

    async def dispatch_timeline(self, dispatch_id: str) -> list[TimelineEntry]:
        """A dispatch's audit trail in order, each step timed from its creation."""
        ...

    async def maintain(self, now: datetime | None = None) -> list[str]:
        """Housekeeping to run daily (partitions ahead in plain PostgreSQL, dead letters
        past their retention removed); returns what it created."""
        ...

    async def prune_dead_letters(self, now: datetime | None = None) -> int:
        """Delete dead letters older than the store's retention; return how many."""
        ...

    async def count(self, table: str) -> int:
        """Rows in one of the known tables (for tests, status and the CLI)."""
        ...
