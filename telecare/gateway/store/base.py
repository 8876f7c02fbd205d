"""What the gateway needs from storage, by role, and the rows that cross it.

Roles (each a small protocol; ``Store`` is all of them, as every store implements):

* :class:`SpooledWrites`: what may be written while the database is away (the
  ``DurableStore`` spools exactly these); :class:`Ingest` adds what the pipeline reads
  and annotates straight from the database;
* :class:`Registry`: sites, residents, devices, responders, receiver accounts;
* the dispatch repository (``dispatch.repository.DispatchRepository``), as
  ``store.dispatches``;
* :class:`Reports`: read queries for reports, exports and the console.

Writes are idempotent: re-delivering the same message (same device and message id)
stores nothing twice and returns ``False``/``0`` for what was already there. New tables
are written through ``store.sql`` (``gateway.store.sql``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    Device,
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
from telecare.dispatch.repository import DispatchRepository
from telecare.gateway.store.clinical import ClinicalChange, ClinicalRecord
from telecare.gateway.store.sql import Sql

__all__ = [
    "DEAD_LETTER_PREVIEW",
    "Blocker",
    "ClinicalChange",
    "ClinicalRecord",
    "DeadLetter",
    "HistoryPoint",
    "News2Record",
    "OpenAlarm",
    "RegistryChange",
    "StatusItem",
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
class StatusItem:
    """A device status change (heartbeat, online, battery), as the spool keeps it."""

    device_id: str
    at: datetime
    online: bool | None
    heartbeat: bool
    battery: float | None


Kind = Literal["site", "resident", "responder", "device"]


@dataclass(frozen=True, slots=True, order=True)
class Blocker:
    """One reason a removal is refused: ``what`` (``open dispatch``, ``device``, ...) and
    the id of the thing that still references the one to remove."""

    what: str
    ref: str


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """One audited registry change: who (a person), what, to which thing, and when."""

    at: datetime
    actor: str
    action: str  # "set", "remove", "pair", "unpair", "import"
    kind: Kind
    entity_id: str
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


class SpooledWrites(Protocol):
    """The writes that may be spooled while the database is away (then they return as
    if new: ``True``, or the number of rows handed over)."""

    async def write_readings(self, readings: Sequence[Reading]) -> int:
        """Store readings; return how many were new (duplicates are skipped)."""
        ...

    async def write_event(self, event: AlarmEvent) -> bool:
        """Store an alarm event; ``False`` when this (device, msg_id) was already stored."""
        ...

    async def write_events(self, events: Sequence[AlarmEvent]) -> list[bool]:
        """Store several events in one transaction; for each, whether it was new."""
        ...

    async def write_alert(self, alert: Alert) -> bool: ...

    async def write_alerts(self, alerts: Sequence[Alert]) -> list[bool]:
        """Many alerts in one transaction (an alarm storm); for each, whether it was new."""
        ...

    async def write_dead_letter(self, letter: DeadLetter) -> None: ...

    async def write_news2(self, score: News2Record) -> bool:
        """Store a NEWS2 score; ``False`` when this observation's score was already stored."""
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


class Ingest(SpooledWrites, Protocol):
    """The pipeline's storage: the spooled writes, plus reads and annotations that go
    straight to the database (they raise while it is away)."""

    async def stored_event_digest(self, device_id: str, msg_id: str) -> str | None:
        """The content digest stored with event ``(device_id, msg_id)`` (``None``: no such
        event, or stored before digests were kept); see ``tables.event_digest``."""
        ...

    async def stored_message_readings(
        self, device_id: str, msg_id: str
    ) -> set[tuple[Metric, datetime, float]]:
        """``(metric, ts, value)`` of every reading stored under ``(device_id, msg_id)``."""
        ...

    async def note_alert(
        self, alert_id: str, *, count: int | None = None, restored_at: datetime | None = None
    ) -> None:
        """:meth:`note_alerts` for one alert."""
        ...

    async def note_alerts(self, notes: Sequence[AlertNote]) -> None:
        """Record on stored alerts what happened to them since they were raised, for the
        operator (``detail.count``: repeats folded in; ``detail.restored_at``), in one
        transaction."""
        ...

    async def alerts_without_dispatch(self, limit: int = 1000) -> list[Alert]:
        """Alerts that have no dispatch yet, oldest first: what a crash may have left
        between storing an alert and opening its dispatch (the gateway re-submits them)."""
        ...


class Registry(Protocol):
    """Sites, residents, devices, responders and receiver accounts (the installer's)."""

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
    async def list_devices(self) -> list[Device]: ...
    async def list_sites(self) -> list[Site]: ...
    async def list_residents(self, site_id: str | None = None) -> list[Resident]: ...
    async def list_responders(self) -> list[Responder]: ...
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
        or, while anything still references it, delete nothing and return what blocks
        it (see ``registry``). ``KeyError`` when it does not exist."""
        ...

    async def pair_device(
        self, device_id: str, resident_id: str | None, location: str | None, change: RegistryChange
    ) -> Device:
        """Pair a device with a resident of its site (``None``: unpair) and optionally
        move it (``location``; ``None`` keeps it), audited, in one transaction.
        ``KeyError`` for an unknown device, ``ValueError`` for a resident not at its site."""
        ...

    async def record_registry_change(self, change: RegistryChange) -> None: ...
    async def registry_changes(
        self, kind: Kind | None = None, entity_id: str | None = None
    ) -> list[RegistryChange]:
        """The registry audit, oldest first, optionally of one kind and id."""
        ...

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


class Reports(Protocol):
    """Read queries for reports, exports, the CLI and the console."""

    async def recent_alerts(self, limit: int = 50) -> list[Alert]: ...
    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]: ...
    async def site_dispatch_ids(self, site_id: str) -> set[str]:
        """Ids of every dispatch raised at a site (for per-site reports)."""
        ...

    async def latest_vitals(
        self, resident_ids: Sequence[str], since: datetime | None = None
    ) -> dict[str, dict[str, tuple[datetime, float]]]:
        """Latest value of each metric for each resident (resident -> metric label ->
        (ts, value)); readings older than ``since`` are ignored. One index probe per
        (resident, metric), never a scan of the history."""
        ...

    async def metric_history(
        self, resident_id: str, metric: Metric, start: datetime, end: datetime, bucket: timedelta
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

    async def count(self, table: str) -> int:
        """Rows in one of the known tables (for tests, status and the CLI)."""
        ...


class Store(Ingest, Registry, Reports, Protocol):
    """Every role, as each store implements it. Implementations are async context
    managers."""

    @property
    def mode(self) -> str:
        """``"timescaledb"``, ``"postgres"`` or ``"sqlite"``: what the log reports at start."""
        ...

    @property
    def sql(self) -> Sql:
        """The query API for SQL written once for both backends (``gateway.store.sql``)."""
        ...

    @property
    def dispatches(self) -> DispatchRepository:
        """The dispatch repository ``dispatch/`` declares, on this store's database."""
        ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied (empty when up to date)."""
        ...

    async def maintain(self, now: datetime | None = None) -> list[str]:
        """Housekeeping to run daily (partitions ahead in plain PostgreSQL, dead letters
        past their retention removed); returns what it created."""
        ...

    async def prune_dead_letters(self, now: datetime | None = None) -> int:
        """Delete dead letters older than the store's retention; return how many."""
        ...
