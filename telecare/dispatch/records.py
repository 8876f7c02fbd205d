"""Plain records the dispatch layer hands to its repository: audit rows, timers, the
resolved cascade of a dispatch and notification receipts. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from telecare.devices.model import DispatchState

__all__ = ["AuditRecord", "CascadeEntry", "Receipt", "Timer", "TimerKind"]


class TimerKind(StrEnum):
    #: Nobody acknowledged the alarm in time: escalate and alert supervisors.
    ACK = "ack"
    #: The contacted responder has not accepted within the step timeout: next in the cascade.
    STEP = "step"
    #: Nobody on scene within the attendance target: escalate.
    ATTEND = "attend"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One row of the append-only audit trail: who moved what, when and why."""

    dispatch_id: str
    at: datetime
    from_state: DispatchState | None
    to_state: DispatchState
    actor: str
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Timer:
    """A persisted deadline: at most one per (dispatch, kind). ``step`` is the cascade step
    a STEP timer belongs to, so a stale timer from an earlier step never fires."""

    dispatch_id: str
    kind: TimerKind
    due_at: datetime
    step: int = 0


@dataclass(frozen=True, slots=True)
class CascadeEntry:
    """One resolved step of a dispatch's cascade, fixed when the dispatch opens."""

    position: int
    responder_id: str
    timeout_s: int


@dataclass(frozen=True, slots=True)
class Receipt:
    """What happened to one notification: ``status`` is ``delivered`` or ``failed``."""

    dispatch_id: str
    channel: str
    recipient: str
    status: str
    attempts: int
    at: datetime
    detail: str = ""
