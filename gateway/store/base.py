"""The one storage interface: two backends (PostgreSQL/TimescaleDB and SQLite) implement it.

The pipeline writes through it; the console, API and CLI read through it. Writes are
idempotent: re-delivering the same message (same device and message id) stores nothing
twice and returns ``False``/``0`` for what was already there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from devices.model import (
    AlarmEvent,
    Alert,
    Device,
    Dispatch,
    DispatchState,
    Reading,
    Resident,
    Responder,
    Site,
)

__all__ = ["AuditEntry", "DeadLetter", "Store"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input we could not accept, kept with the reason so an installer can fix the sender."""

    received_at: datetime
    source: str  # "mqtt", "serial", "api"
    origin: str  # topic, port or endpoint
    reason: str
    payload: bytes
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    dispatch_id: str
    at: datetime
    from_state: DispatchState | None
    to_state: DispatchState
    actor: str
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class Store(Protocol):
    """What the gateway needs from storage. Implementations are async context managers."""

    #: ``"timescaledb"``, ``"postgres"`` or ``"sqlite"``: what the log reports at start.
    mode: str

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied (empty when up to date)."""
        ...

    # -- registry (installer) -------------------------------------------------------
    async def upsert_site(self, site: Site) -> None: ...
    async def upsert_resident(self, resident: Resident) -> None: ...
    async def upsert_device(self, device: Device, secret_hash: str | None = None) -> None: ...
    async def upsert_responder(self, responder: Responder) -> None: ...
    async def get_site(self, site_id: str) -> Site | None: ...
    async def get_device(self, device_id: str) -> Device | None: ...
    async def get_device_secret_hash(self, device_id: str) -> str | None: ...
    async def get_resident(self, resident_id: str) -> Resident | None: ...
    async def get_responder(self, responder_id: str) -> Responder | None: ...
    async def list_devices(self) -> list[Device]: ...

    # -- ingest ---------------------------------------------------------------------
    async def write_readings(self, readings: Sequence[Reading]) -> int:
        """Store readings; return how many were new (duplicates are skipped)."""
        ...

    async def write_event(self, event: AlarmEvent) -> bool:
        """Store an alarm event; ``False`` when this (device, msg_id) was already stored."""
        ...

    async def write_alert(self, alert: Alert) -> bool: ...

    async def write_dead_letter(self, letter: DeadLetter) -> None: ...

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

    # -- queries --------------------------------------------------------------------
    async def recent_alerts(self, limit: int = 50) -> list[Alert]: ...

    async def latest_readings(self, resident_id: str) -> dict[str, tuple[datetime, float]]:
        """The latest value of each metric for a resident (metric label -> (ts, value))."""
        ...

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]: ...

    async def count(self, table: str) -> int:
        """Rows in one of the known tables (for tests, status and the CLI)."""
        ...
