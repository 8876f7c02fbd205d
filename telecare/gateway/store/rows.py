"""The rows that cross the store's boundary (besides the canonical model's): what the
pipeline writes and the reports read, the registry audit, a spooled status change."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

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
        restored = None if self.restored_at is None else self.restored_at.isoformat()
        note = {"count": self.count, "restored_at": restored}
        return {k: v for k, v in note.items() if v is not None}


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


@dataclass(frozen=True, slots=True)
class StatusItem:
    """A device status change (heartbeat, online, battery), as the spool keeps it."""

    device_id: str
    at: datetime
    online: bool | None = None  # None: unchanged
    heartbeat: bool = False
    battery: float | None = None


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
