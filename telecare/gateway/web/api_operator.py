"""The operator API (``/api/v1/alarms``, ``/api/v1/dispatches``): list, filter and act.

Every action goes through the web services layer (``Services.act``, shared with the
console) to the dispatch service and its state machine, and every action
carries the ``version`` of the dispatch the operator decided on: the store applies it
only if nobody changed the dispatch since (compare-and-set). So when two operators act
on one dispatch exactly one wins; the other gets **409** with the dispatch as it is now,
who owns it (the operator who acknowledged it) and who acted last. Every audit row names
the logged-in person (their user name).

Actions (``POST /api/v1/dispatches/{id}/<action>``): ``acknowledge``, ``contact`` (the
responder the cascade proposes, or a named one), ``assign`` (a named responder),
``contact-outcome`` (answered / no_answer / declined), ``en-route``, ``arrived``,
``close`` (with an outcome code), ``injury`` (re-route to 999 first), ``handover-999``
(the ambulance service took it, with its reference), ``escalate`` (to supervisors) and
``notes`` (no state change).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from telecare.devices.model import Dispatch, DispatchState
from telecare.dispatch.errors import IllegalTransition, StaleDispatch, UnknownDispatch
from telecare.dispatch.machine import OUTCOMES, EventKind, allowed_events
from telecare.dispatch.records import AuditRecord
from telecare.gateway.store.accounts import Role, User
from telecare.gateway.store.reports import AlarmRow, DispatchFilter
from telecare.gateway.web.api_common import (
    DispatchOut,
    ErrorOut,
    cookie_scheme,
    dispatch_out,
    unprocessable,
)
from telecare.gateway.web.auth import require_roles
from telecare.gateway.web.services import Act, Services, services

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1",
    tags=["operator"],
    dependencies=[Depends(cookie_scheme)],
    responses={
        401: {"model": ErrorOut, "description": "not logged in"},
        403: {"model": ErrorOut, "description": "CSRF token missing, or not an operator"},
    },
)

Operator = Annotated[User, Depends(require_roles(Role.OPERATOR))]
Svc = Annotated[Services, Depends(services)]
DispatchId = Annotated[str, Path(max_length=64)]
Outcome = Literal[
    "assisted_at_home",
    "conveyed_to_hospital",
    "referred_gp_111",
    "no_action_needed",
    "false_alarm",
    "technical_fixed",
]
assert set(get_args(Outcome)) <= OUTCOMES
Note = Annotated[str, Field(max_length=1000, description="Why, for the audit")]


# -- models ----------------------------------------------------------------------------------
class AuditOut(BaseModel):
    at: datetime
    from_state: DispatchState | None
    to_state: DispatchState
    actor: str
    reason: str
    event: str | None


class DispatchDetail(BaseModel):
    dispatch: DispatchOut
    #: The operator who acknowledged it (owns it), if anyone has.
    owner: str | None
    #: The actions legal now (the console's buttons).
    allowed: list[str]
    audit: list[AuditOut]


class ConflictOut(BaseModel):
    """Somebody else acted first, or the action no longer applies."""

    detail: str
    current: DispatchOut
    owner: str | None
    last_actor: str | None


class AlarmOut(BaseModel):
    alert_id: str
    kind: str
    priority: int
    reason: str
    ts: datetime
    site_id: str | None
    resident_id: str | None
    device_id: str | None
    event_type: str | None
    dispatch: DispatchOut | None


class Versioned(BaseModel):
    model_config = {"extra": "forbid"}

    #: The ``version`` of the dispatch you decided on.
    version: int = Field(ge=1, le=2**31 - 1)
    note: Note = ""


class ContactIn(Versioned):
    #: Default: the responder the cascade proposes.
    responder_id: str | None = Field(default=None, min_length=1, max_length=64)
    timeout_s: int | None = Field(default=None, ge=10, le=24 * 3600)


class AssignIn(Versioned):
    responder_id: str = Field(min_length=1, max_length=64)
    timeout_s: int | None = Field(default=None, ge=10, le=24 * 3600)


class ContactOutcomeIn(Versioned):
    outcome: Literal["answered", "no_answer", "declined"]


class CloseIn(Versioned):
    outcome: Outcome


class HandoverIn(Versioned):
    #: The ambulance service's incident reference.
    reference: str = Field(min_length=1, max_length=64, pattern=r"^[\x20-\x7e]+$")


class NoteIn(BaseModel):
    model_config = {"extra": "forbid"}

    text: str = Field(min_length=1, max_length=2000, pattern=r"\S")


# -- helpers ---------------------------------------------------------------------------------
def _audit_out(r: AuditRecord) -> AuditOut:
    event = r.detail.get("event")
    return AuditOut(
        at=r.at,
        from_state=r.from_state,
        to_state=r.to_state,
        actor=r.actor,
        reason=r.reason,
        event=event if isinstance(event, str) else None,
    )


def _owner(audit: list[AuditRecord]) -> str | None:
    for r in reversed(audit):
        if r.detail.get("event") == EventKind.ACKNOWLEDGE.value:
            return r.actor
    return None


async def _load(svc: Services, dispatch_id: str) -> Dispatch:
    found = await svc.dispatcher.repo.load(dispatch_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dispatch {dispatch_id!r}")
    return found


async def _conflict(svc: Services, dispatch_id: str, why: str) -> JSONResponse:
    current = await _load(svc, dispatch_id)
    audit = await svc.dispatcher.repo.audit(dispatch_id)
    owner = _owner(audit)
    last = audit[-1].actor if audit else None
    who = f"; {owner} has it" if owner else ""
    body = ConflictOut(
        detail=f"{why} (now {current.state.value}, version {current.version}{who})",
        current=dispatch_out(current),
        owner=owner,
        last_actor=last,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_409_CONFLICT)


async def _act(svc: Services, user: User, dispatch_id: str, act: Act) -> DispatchOut | JSONResponse:
    """Apply ``act`` through the services layer if the dispatch is still at
    ``act.version``; 409 (with the dispatch as it is now) otherwise."""
    try:
        await svc.act(user, dispatch_id, act)
    except StaleDispatch:
        return await _conflict(svc, dispatch_id, "changed by someone else")
    except IllegalTransition as exc:
        return await _conflict(svc, dispatch_id, str(exc))
    except UnknownDispatch:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dispatch {dispatch_id!r}") from None
    except ValueError as exc:
        raise unprocessable("", str(exc)) from None
    # As stored now: the service may have moved on already (the next in the cascade).
    return dispatch_out(await _load(svc, dispatch_id))


_ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such dispatch"},
    409: {"model": ConflictOut, "description": "someone else acted first, or not legal now"},
}


# -- lists -----------------------------------------------------------------------------------
def _filters(
    open: Annotated[bool | None, Query(description="Only open (true) or closed (false)")] = None,
    state: Annotated[
        list[DispatchState], Query(description="Only these states (repeat the parameter)")
    ] = [],  # noqa: B006 - FastAPI copies defaults per request
    site_id: Annotated[str | None, Query(max_length=64)] = None,
    resident_id: Annotated[str | None, Query(max_length=64)] = None,
    max_priority: Annotated[
        int | None, Query(ge=1, le=5, description="Priority 1 (most urgent) up to this")
    ] = None,
    since: Annotated[
        datetime | None, Query(description="Created at or after (with a UTC offset)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DispatchFilter:
    if since is not None and since.tzinfo is None:
        raise unprocessable("since", "give a UTC offset, e.g. 2026-01-05T09:00:00Z", "query")
    return DispatchFilter(
        open=open,
        states=tuple(state),
        site_id=site_id,
        resident_id=resident_id,
        max_priority=max_priority,
        since=since,
        limit=limit,
    )


Filters = Annotated[DispatchFilter, Depends(_filters)]


@router.get("/dispatches", response_model=list[DispatchOut])
async def list_dispatches(svc: Svc, user: Operator, f: Filters) -> list[DispatchOut]:
    """Dispatches, filtered: open ones most urgent then oldest first, else newest first."""
    return [dispatch_out(d) for d in await svc.store.find_dispatches(f)]


@router.get("/alarms", response_model=list[AlarmOut])
async def list_alarms(svc: Svc, user: Operator, f: Filters) -> list[AlarmOut]:
    """Alerts raised (newest first) with their dispatch; the same filters."""
    return [_alarm_out(a) for a in await svc.store.find_alarms(f)]


def _alarm_out(a: AlarmRow) -> AlarmOut:
    return AlarmOut(
        alert_id=a.alert_id,
        kind=a.kind,
        priority=a.priority,
        reason=a.reason,
        ts=a.ts,
        site_id=a.site_id,
        resident_id=a.resident_id,
        device_id=a.device_id,
        event_type=a.event_type,
        dispatch=dispatch_out(a.dispatch) if a.dispatch else None,
    )


@router.get(
    "/dispatches/{dispatch_id}",
    response_model=DispatchDetail,
    responses={404: {"model": ErrorOut, "description": "no such dispatch"}},
)
async def get_dispatch(dispatch_id: DispatchId, svc: Svc, user: Operator) -> DispatchDetail:
    """One dispatch with its audit trail, its owner and the actions legal now."""
    d = await _load(svc, dispatch_id)
    audit = await svc.dispatcher.repo.audit(dispatch_id)
    return DispatchDetail(
        dispatch=dispatch_out(d),
        owner=_owner(audit),
        allowed=sorted(e.value for e in allowed_events(d.state)),
        audit=[_audit_out(r) for r in audit],
    )


# -- actions ---------------------------------------------------------------------------------
@router.post(
    "/dispatches/{dispatch_id}/acknowledge",
    response_model=DispatchOut,
    responses=_ACTION_RESPONSES,
)
async def acknowledge(
    dispatch_id: DispatchId, body: Versioned, svc: Svc, user: Operator
) -> DispatchOut | JSONResponse:
    """Take the alarm: you own it now (the first of two operators wins)."""
    return await _act(svc, user, dispatch_id, Act("acknowledge", body.version, body.note))


@router.post(
    "/dispatches/{dispatch_id}/contact", response_model=DispatchOut, responses=_ACTION_RESPONSES
)
async def contact(
    dispatch_id: DispatchId, body: ContactIn, svc: Svc, user: Operator
) -> DispatchOut | JSONResponse:
    """Contact the responder the cascade proposes (or ``responder_id``)."""
    act = Act(
        "contact",
        body.version,
        body.note,
        responder_id=body.responder_id,
        timeout_s=body.timeout_s,
    )
    return await _act(svc, user, dispatch_id, act)


@router.post(
    "/dispatches/{dispatch_id}/assign", response_model=DispatchOut, responses=_ACTION_RESPONSES
)
async def assign(
    dispatch_id: DispatchId, body: AssignIn, svc: Svc, user: Operator
) -> DispatchOut | JSONResponse:
    """Contact a responder you choose (in the cascade or not)."""
    if svc.dispatcher.directory.get(body.responder_id) is None:
        raise unprocessable("responder_id", "no such responder")
    contact_in = ContactIn(
        version=body.version,
        note=body.note,
        responder_id=body.responder_id,
        timeout_s=body.timeout_s,
    )
    return await contact(dispatch_id, contact_in, svc, user)


@router.post(
    "/dispatches/{dispatch_id}/contact-outcome",
    response_model=DispatchOut,
    responses=_ACTION_RESPONSES,
)
async def contact_outcome(
    dispatch_id: DispatchId, body: ContactOutcomeIn, svc: Svc, user: Operator
) -> DispatchOut | JSONResponse:
    """What the contacted responder said: answered (coming), no answer, or declined."""
    return await _act(svc, user, dispatch_id, Act(body.outcome, body.version, body.note))


@router.post(
    "/dispatches/{dispatch_id}/en-route", response_model=DispatchOut, responses=_ACTION_RESPONSES
)
async def en_route(
    dispatch_id: DispatchId, body: Versioned, svc: Svc, user: Operator
) -> DispatchOut | JSONResponse:
    """The responder is on the way."""
    return await _act(svc, user, dispatch_id, Act("en_route", body.version, body.note))


@router.post(
    "/dispatches/{dispatch_id}/arrived", response_model=DispatchOut, responses=_ACTION_RESPONSES
)
async def arrived(
    dispatch_id: DispatchId, body: Versioned, svc: Svc, user: Operator
) -> DispatchOut | JSONResponse:
    """The responder is with the resident."""
    return await _act(svc, user, dispatch_id, Act("on_scene", body.version, body.note))


@router.post(
    "/dispatches/{dispatch_id}/close", response_model=DispatchOut, responses=_ACTION_RESPONSES
)
async def close(
    dispatch_id: DispatchId, body: CloseIn, svc: Svc, user: Operator
) -> DispatchOut | JSONResponse:
    """Close with an outcome code (``false_alarm`` for a false alarm)."""
    act = Act("close", body.version, body.note, outcome=body.outcome)
    return await _act(svc, user, dispatch_id, act)


@router.post(
    "/dispatches/{dispatch_id}/injury", response_model=DispatchOut, responses=_ACTION_RESPONSES
)
async def injury(
    dispatch_id: DispatchId, body: Versioned, svc: Svc, user: Operator
) -> DispatchOut | JSONResponse:
    """The person is injured: the dispatch moves to the emergency route (999 first)."""
    return await _act(svc, user, dispatch_id, Act("injury", body.version, body.note))


@router.post(
    "/dispatches/{dispatch_id}/handover-999",
    response_model=DispatchOut,
    responses=_ACTION_RESPONSES,
)
async def handover_999(
    dispatch_id: DispatchId, body: HandoverIn, svc: Svc, user: Operator
) -> DispatchOut | JSONResponse:
    """You phoned 999 and the ambulance service took the call (give its reference)."""
    act = Act("handover", body.version, body.note, reference=body.reference)
    return await _act(svc, user, dispatch_id, act)


@router.post(
    "/dispatches/{dispatch_id}/escalate", response_model=DispatchOut, responses=_ACTION_RESPONSES
)
async def escalate(
    dispatch_id: DispatchId, body: Versioned, svc: Svc, user: Operator
) -> DispatchOut | JSONResponse:
    """Escalate to the supervisors."""
    return await _act(svc, user, dispatch_id, Act("escalate", body.version, body.note))


@router.post(
    "/dispatches/{dispatch_id}/notes",
    response_model=DispatchOut,
    status_code=status.HTTP_201_CREATED,
    responses={404: {"model": ErrorOut, "description": "no such dispatch"}},
)
async def add_note(dispatch_id: DispatchId, body: NoteIn, svc: Svc, user: Operator) -> DispatchOut:
    """Add a note to the dispatch's audit trail (no state change)."""
    try:
        return dispatch_out(await svc.act(user, dispatch_id, Act("note", note=body.text)))
    except UnknownDispatch:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dispatch {dispatch_id!r}") from None
