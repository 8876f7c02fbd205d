"""The alarm/dispatch lifecycle as a pure state machine: no I/O, no clock, no globals.

``transition(dispatch, event, now, actor, reason)`` returns a :class:`Step` (the new
dispatch with ``version + 1``, the audit record to append, and the effects the service
must carry out: timers to set or clear, notifications, "contact the next responder") or
raises :class:`~dispatch.errors.IllegalTransition`. Storing the step atomically (compare
and set on ``version``) is the repository's job; sending is the service's.

::

    raised ──acknowledge──> acknowledged ──contact──> responder_contacted ──accept──> accepted
      │  │                                               │         │                │
      │  └─cancel / auto_clear (only while raised)       decline   no_answer        en_route
      │                                                  v         v                │
      └─(60 s unacknowledged)─> escalated         declined / no_answer ─contact─>   on_scene
                                                   (next in cascade, or escalated)   │
                                        any open state except raised ──resolve(outcome)─> resolved

Cancel and auto-clear are only legal while the alarm is still ``raised``: once an
operator has acknowledged it, a human owns it and closes it with an outcome code. That
makes acknowledge / auto-clear / cancel racing each other resolve to exactly one winner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, NamedTuple

from telecare.devices.model import Dispatch, DispatchState
from telecare.dispatch.errors import IllegalTransition, WrongResponder
from telecare.dispatch.records import AuditRecord, Timer, TimerKind

__all__ = [
    "OUTCOMES",
    "AdvanceCascade",
    "ClearTimers",
    "Effect",
    "Event",
    "EventKind",
    "NotifyResponder",
    "NotifySupervisors",
    "SetTimer",
    "Step",
    "TimerPolicy",
    "allowed_events",
    "open_dispatch",
    "transition",
]

S = DispatchState


class EventKind(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    CONTACT = "contact"
    ACCEPT = "accept"
    DECLINE = "decline"
    NO_ANSWER = "no_answer"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    RESOLVE = "resolve"
    ESCALATE = "escalate"
    CANCEL = "cancel"
    AUTO_CLEAR = "auto_clear"


#: Outcome codes a dispatch can be resolved with (``cancelled`` is set by cancel only).
OUTCOMES: Final = frozenset(
    {
        "assisted_at_home",
        "conveyed_to_hospital",
        "referred_gp_111",
        "no_action_needed",
        "false_alarm",
        "technical_fixed",
        "auto_cleared",
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """What happened. ``responder_id`` for contact/accept/decline/no-answer/en-route/
    on-scene; ``step`` and ``timeout_s`` for contact; ``outcome`` for resolve;
    ``reference`` for an accept that is a handover to 999 (the ambulance service's
    incident reference)."""

    kind: EventKind
    responder_id: str | None = None
    step: int | None = None
    timeout_s: int | None = None
    outcome: str | None = None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class TimerPolicy:
    """Deadlines (seconds). Defaults are the TSA targets; ``attend_within_s`` only
    applies to a dispatch without a per-route deadline (``transition(attend_by=...)``,
    see :mod:`dispatch.attend`)."""

    ack_after_s: int = 60
    attend_within_s: int = 45 * 60


# -- effects -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class ClearTimers:
    kinds: tuple[TimerKind, ...]


@dataclass(frozen=True, slots=True)
class NotifyResponder:
    responder_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class NotifySupervisors:
    reason: str


@dataclass(frozen=True, slots=True)
class AdvanceCascade:
    """Contact the next responder in the cascade (or escalate when none is left)."""

    after_step: int


Effect = SetTimer | ClearTimers | NotifyResponder | NotifySupervisors | AdvanceCascade


class Step(NamedTuple):
    dispatch: Dispatch
    audit: AuditRecord
    effects: tuple[Effect, ...]


_ALL_TIMERS: Final = (TimerKind.ACK, TimerKind.STEP, TimerKind.ATTEND)

#: (state, event) -> next state. Anything absent is illegal.
_TABLE: Final[dict[tuple[DispatchState, EventKind], DispatchState]] = {
    (S.RAISED, EventKind.ACKNOWLEDGE): S.ACKNOWLEDGED,
    (S.RAISED, EventKind.CANCEL): S.CANCELLED,
    (S.RAISED, EventKind.AUTO_CLEAR): S.RESOLVED,
    (S.RAISED, EventKind.ESCALATE): S.ESCALATED,
    (S.ACKNOWLEDGED, EventKind.CONTACT): S.RESPONDER_CONTACTED,
    (S.ACKNOWLEDGED, EventKind.ESCALATE): S.ESCALATED,
    (S.RESPONDER_CONTACTED, EventKind.CONTACT): S.RESPONDER_CONTACTED,
    (S.RESPONDER_CONTACTED, EventKind.ACCEPT): S.ACCEPTED,
    (S.RESPONDER_CONTACTED, EventKind.DECLINE): S.DECLINED,
    (S.RESPONDER_CONTACTED, EventKind.NO_ANSWER): S.NO_ANSWER,
    (S.RESPONDER_CONTACTED, EventKind.ESCALATE): S.ESCALATED,
    (S.DECLINED, EventKind.CONTACT): S.RESPONDER_CONTACTED,
    (S.DECLINED, EventKind.ESCALATE): S.ESCALATED,
    (S.NO_ANSWER, EventKind.CONTACT): S.RESPONDER_CONTACTED,
    (S.NO_ANSWER, EventKind.ACCEPT): S.ACCEPTED,  # a late "yes" before the next is contacted
    (S.NO_ANSWER, EventKind.ESCALATE): S.ESCALATED,
    (S.ACCEPTED, EventKind.EN_ROUTE): S.EN_ROUTE,
    (S.ACCEPTED, EventKind.ON_SCENE): S.ON_SCENE,
    (S.ACCEPTED, EventKind.DECLINE): S.DECLINED,  # the responder withdraws
    (S.ACCEPTED, EventKind.ESCALATE): S.ESCALATED,
    (S.EN_ROUTE, EventKind.ON_SCENE): S.ON_SCENE,
    (S.EN_ROUTE, EventKind.ESCALATE): S.ESCALATED,
    (S.ESCALATED, EventKind.ACKNOWLEDGE): S.ACKNOWLEDGED,
    (S.ESCALATED, EventKind.CONTACT): S.RESPONDER_CONTACTED,
    (S.ESCALATED, EventKind.ACCEPT): S.ACCEPTED,
    (S.ESCALATED, EventKind.EN_ROUTE): S.EN_ROUTE,
    (S.ESCALATED, EventKind.ON_SCENE): S.ON_SCENE,
}
for _state in S:
    if _state.is_open and _state is not S.RAISED:
        _TABLE[(_state, EventKind.RESOLVE)] = S.RESOLVED

#: Events that must come from the responder currently contacted.
_RESPONDER_EVENTS: Final = frozenset(
    {
        EventKind.ACCEPT,
        EventKind.DECLINE,
        EventKind.NO_ANSWER,
        EventKind.EN_ROUTE,
        EventKind.ON_SCENE,
    }
)


def allowed_events(state: DispatchState) -> frozenset[EventKind]:
    """The events legal in ``state`` (for the console's buttons)."""
    return frozenset(e for (s, e) in _TABLE if s is state)


def open_dispatch(
    dispatch_id: str,
    alert_id: str,
    priority: int,
    now: datetime,
    *,
    site_id: str | None,
    resident_id: str | None,
    first_responder: str | None,
    actor: str = "system",
    reason: str = "alert raised",
    policy: TimerPolicy = TimerPolicy(),
) -> Step:
    """A new dispatch in ``raised``, its first audit record and its acknowledge deadline."""
    dispatch = Dispatch(
        dispatch_id=dispatch_id,
        alert_id=alert_id,
        state=S.RAISED,
        priority=priority,
        created_at=now,
        updated_at=now,
        site_id=site_id,
        resident_id=resident_id,
        responder_id=first_responder,
    )
    audit = AuditRecord(dispatch_id, now, None, S.RAISED, actor, reason, {"alert_id": alert_id})
    ack = Timer(dispatch_id, TimerKind.ACK, now + timedelta(seconds=policy.ack_after_s))
    return Step(dispatch, audit, (SetTimer(ack),))


def transition(
    dispatch: Dispatch,
    event: Event,
    now: datetime,
    actor: str,
    reason: str = "",
    *,
    policy: TimerPolicy = TimerPolicy(),
    attend_by: datetime | None = None,
) -> Step:
    """Apply ``event`` to ``dispatch``. Raises :class:`IllegalTransition` when not allowed.

    ``attend_by`` is the dispatch's not-on-scene deadline for its route (set as the
    ``attend`` timer on accept); without it, ``created_at + policy.attend_within_s``."""
    d, kind = dispatch, event.kind
    target = _TABLE.get((d.state, kind))
    if target is None:
        hint = "it is closed" if not d.state.is_open else ""
        if kind in (EventKind.CANCEL, EventKind.AUTO_CLEAR) and d.state.is_open:
            hint = "an operator owns it now; resolve it with an outcome code"
        raise IllegalTransition(d.dispatch_id, d.state.value, kind.value, hint)
    if kind in _RESPONDER_EVENTS and event.responder_id != d.responder_id:
        raise WrongResponder(
            d.dispatch_id,
            d.state.value,
            kind.value,
            f"waiting on {d.responder_id!r}, not {event.responder_id!r}",
        )

    changes: dict[str, object] = {"state": target, "updated_at": now, "version": d.version + 1}
    effects: list[Effect] = []
    detail: dict[str, object] = {"event": kind.value}
    if kind is EventKind.ACKNOWLEDGE:
        effects.append(ClearTimers((TimerKind.ACK,)))
    elif kind is EventKind.CONTACT:
        if event.responder_id is None or event.step is None or not event.timeout_s:
            raise ValueError("contact needs responder_id, step and a positive timeout_s")
        changes.update(responder_id=event.responder_id, cascade_step=event.step)
        due = now + timedelta(seconds=event.timeout_s)
        effects += [
            SetTimer(Timer(d.dispatch_id, TimerKind.STEP, due, event.step)),
            NotifyResponder(event.responder_id, reason or "please attend"),
        ]
        detail.update(responder_id=event.responder_id, step=event.step, due_at=due.isoformat())
    elif kind is EventKind.ACCEPT:
        due = attend_by or d.created_at + timedelta(seconds=policy.attend_within_s)
        effects += [
            ClearTimers((TimerKind.STEP,)),
            SetTimer(Timer(d.dispatch_id, TimerKind.ATTEND, due, d.cascade_step)),
        ]
        detail["attend_by"] = due.isoformat()
        if event.reference is not None:
            if not event.reference.strip():
                raise ValueError("a handover to 999 needs the ambulance service's reference")
            detail.update(handover=True, reference=event.reference)
    elif kind in (EventKind.DECLINE, EventKind.NO_ANSWER):
        effects += [
            ClearTimers((TimerKind.STEP, TimerKind.ATTEND)),
            AdvanceCascade(d.cascade_step),
        ]
    elif kind is EventKind.ON_SCENE:
        effects.append(ClearTimers((TimerKind.ATTEND,)))
    elif kind is EventKind.ESCALATE:
        effects += [ClearTimers(_ALL_TIMERS), NotifySupervisors(reason or "escalated")]
    elif kind is EventKind.RESOLVE:
        if event.outcome not in OUTCOMES:
            known = ", ".join(sorted(OUTCOMES))
            raise ValueError(f"outcome {event.outcome!r} is not one of: {known}")
        changes["outcome"] = event.outcome
    elif kind is EventKind.AUTO_CLEAR:
        changes["outcome"] = "auto_cleared"
    elif kind is EventKind.CANCEL:
        changes["outcome"] = "cancelled"
    if not target.is_open:
        effects.append(ClearTimers(_ALL_TIMERS))
    if "outcome" in changes:
        detail["outcome"] = changes["outcome"]
    if event.responder_id is not None:
        detail.setdefault("responder_id", event.responder_id)

    new = replace(d, **changes)  # type: ignore[arg-type]
    audit = AuditRecord(d.dispatch_id, now, d.state, target, actor, reason, detail)
    return Step(new, audit, tuple(effects))
