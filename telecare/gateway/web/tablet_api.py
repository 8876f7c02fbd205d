"""The JSON behind the care-home NEWS2 page (``web/tablet.py``): sets in, answers out.

Session + CSRF header (the page), or a care-home bearer token; one site only:

* ``POST /tablet/api/residents/{id}/sets`` with an ``Idempotency-Key`` header: store and
  score a set (any subset of the seven parameters) and its RESTORE2 soft signs, by the
  one observation path (``web/observations.py``, as the care-home API and MQTT tablets).
  The answer is its ``ObservationResult`` document (the same as the care-home API's and
  the MQTT reply's) plus the SBARD. A retry with the same key and body
  gets the same answer and stores nothing twice (``tablet_store``); the same key with
  another body is 409; while the first attempt is still running a retry gets 503 with
  ``Retry-After``.
* ``POST /tablet/api/residents/{id}/teletriage`` ``{"set_key": ...}``: raise a teletriage
  request (``web/teletriage.py``, as the care-home API: an alert, then its dispatch)
  carrying the set, its soft signs and the SBARD; once per set.

These are the page's own endpoints, kept out of the OpenAPI document (the care-home
API for other systems is ``/api/v1``, ``web/api_care_home.py``); their site isolation is
tested in ``tests/web/test_tablet.py``. See ``docs/tablet.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from telecare.devices.model import Resident
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.logging import get_logger
from telecare.gateway.store.accounts import Role, User
from telecare.gateway.web.auth import (
    Caller,
    check_site,
    site_caller,
)
from telecare.gateway.web.observations import (
    ObservationRefused,
    new_observation,
    observation_id,
    observe,
)
from telecare.gateway.web.services import Services, services
from telecare.gateway.web.tablet_sbard import SOFT_SIGNS, SbardSection, sbard, sbard_text
from telecare.gateway.web.tablet_store import TabletSet, TabletSets, tablet_sets_of
from telecare.gateway.web.teletriage import request_teletriage

__all__ = ["TREND_WINDOW", "WEB_DEVICE", "page_site", "resident_for", "router"]

log = get_logger("telecare.web.tablet")

#: The device id the page's sets are stored under (readings ``device_id``).
WEB_DEVICE: Final = "tablet-page"
#: How far back the trend (and "the previous score") goes.
TREND_WINDOW: Final = timedelta(days=7)
_KEY: Final = re.compile(r"[A-Za-z0-9._:-]{8,100}")

router = APIRouter(tags=["tablet"])


# -- who may see what ----------------------------------------------------------------------
def page_site(user: User, site: str | None) -> str:
    """The site a page shows: a care-home user's own; ARC staff name one (``?site=``)."""
    if user.role is Role.CARE_HOME and user.site_id is not None:
        return user.site_id
    if user.role in (Role.OPERATOR, Role.SUPERVISOR) and site:
        return site
    if user.role in (Role.OPERATOR, Role.SUPERVISOR):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "name a site: /tablet?site=<site id>")
    raise HTTPException(status.HTTP_403_FORBIDDEN, f"the role {user.role} has no tablet page")


async def resident_for(svc: Services, resident_id: str, may: Caller | User) -> Resident:
    """The resident, or 404 when unknown or of a site the caller may not see."""
    resident = await svc.store.get_resident(resident_id)
    if resident is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such resident")
    if isinstance(may, Caller):
        check_site(may, resident.site_id)
    elif page_site(may, resident.site_id) != resident.site_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such resident")
    return resident


# -- JSON ----------------------------------------------------------------------------------
class Observations(BaseModel):
    """The NEWS2 chart's parameters; any may be left out (then it is not a NEWS2)."""

    model_config = ConfigDict(extra="forbid")

    respiration_rate: float | None = Field(None, ge=0, le=100, description="breaths/min")
    spo2: float | None = Field(None, ge=0, le=100, description="%")
    on_oxygen: bool | None = None
    systolic_bp: float | None = Field(None, ge=20, le=300, description="mmHg")
    pulse: float | None = Field(None, ge=0, le=350, description="beats/min")
    consciousness: str | None = Field(None, pattern="^[ACVPU]$", description="ACVPU")
    temperature: float | None = Field(None, ge=25, le=45, description="degC")


class SetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    observations: Observations
    soft_signs: list[str] = Field(default_factory=list, max_length=len(SOFT_SIGNS))
    #: When the set was taken (the iPad's clock; a set sent late keeps its own time).
    taken_at: datetime | None = None

    @field_validator("soft_signs")
    @classmethod
    def _known_signs(cls, signs: list[str]) -> list[str]:
        unknown = [s for s in signs if s not in SOFT_SIGNS]
        if unknown:
            raise ValueError(f"unknown soft sign(s); use: {', '.join(SOFT_SIGNS)}")
        return sorted(set(signs))

    @field_validator("taken_at")
    @classmethod
    def _aware(cls, ts: datetime | None) -> datetime | None:
        if ts is not None and ts.tzinfo is None:
            raise ValueError("taken_at needs a timezone (Z or an offset)")
        return ts


class TeletriageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set_key: str = Field(min_length=8, max_length=100)


def _check_key(key: str | None) -> str:
    if key is None or not _KEY.fullmatch(key):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "send an Idempotency-Key header of 8-100 letters, digits or . _ : -",
        )
    return key


def _body_hash(resident_id: str, body: SetIn) -> str:
    doc = {"resident_id": resident_id, **body.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@router.post("/tablet/api/residents/{resident_id}/sets", include_in_schema=False)
async def submit_set(
    resident_id: str,
    body: SetIn,
    response: Response,
    svc: Annotated[Services, Depends(services)],
    caller: Annotated[Caller, Depends(site_caller)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Store and score one observation set with its soft signs (see the module docstring)."""
    key = _check_key(idempotency_key)
    resident = await resident_for(svc, resident_id, caller)
    sets = tablet_sets_of(svc.store)
    now = svc.clock.now()
    entry = TabletSet(
        site_id=resident.site_id,
        idem_key=key,
        body_hash=_body_hash(resident_id, body),
        resident_id=resident_id,
        observation_id=observation_id(resident.site_id, key),
        entered_by=caller.actor,
        soft_signs=body.soft_signs,
        answer=None,
        created_at=now,
        teletriage_alert_id=None,
    )
    if not await sets.reserve(entry, now):
        return await _replay(svc, sets, entry, response)
    try:
        answer = await _score(svc, resident, entry, body, now)
    except BaseException:
        await _release(sets, entry)
        raise
    await sets.answer(resident.site_id, key, answer)
    return await _answer(svc, resident, answer, key, replayed=False)


async def _release(sets: TabletSets, entry: TabletSet) -> None:
    try:
        await sets.release(entry.site_id, entry.idem_key)
    except Exception as exc:  # the stale claim is taken over on a later retry
        log.warning("tablet_release_failed", error_type=type(exc).__name__)


async def _replay(
    svc: Services, sets: TabletSets, entry: TabletSet, response: Response
) -> dict[str, Any]:
    found = await sets.get(entry.site_id, entry.idem_key)
    if found is None or found.body_hash != entry.body_hash:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "this Idempotency-Key was used for a different set; send a new set with a new key",
        )
    if found.answer is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "this set is still being stored; retry shortly",
            headers={"Retry-After": "2"},
        )
    resident = await svc.store.get_resident(entry.resident_id)
    assert resident is not None
    response.headers["Idempotent-Replayed"] = "true"
    return await _answer(svc, resident, found.answer, entry.idem_key, replayed=True)


async def _score(
    svc: Services, resident: Resident, entry: TabletSet, body: SetIn, now: datetime
) -> dict[str, Any]:
    """Hand the set to the one observation path; the stored answer (no names in it)."""
    if svc.observations is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "observations are not accepted")
    values = body.observations.model_dump(exclude_none=True)
    taken_at = body.taken_at or now
    before = await svc.store.news2_history(resident.resident_id, taken_at - TREND_WINDOW, taken_at)
    try:
        obs = new_observation(
            values,
            device_id=WEB_DEVICE,
            resident_id=resident.resident_id,
            site_id=resident.site_id,
            taken_at=taken_at,
            msg_id=entry.observation_id,
        )
        outcome = await observe(
            svc.observations, svc.dispatcher.repo.load_for_alert, obs, received_at=now
        )
    except ObservationRefused as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except Exception as exc:
        if is_storage_unavailable(exc):
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the gateway cannot store this now; it is kept on the tablet and retried",
                headers={"Retry-After": "5"},
            ) from None
        raise
    previous = before[-1] if before else None
    return {
        "taken_at": taken_at.isoformat(),
        "values": values,
        "soft_signs": entry.soft_signs,
        "result": outcome.document(),
        "previous": [previous.total, previous.risk, previous.ts.isoformat()] if previous else None,
    }


async def _answer(
    svc: Services, resident: Resident, stored: dict[str, Any], key: str, *, replayed: bool
) -> dict[str, Any]:
    """The stored answer plus the SBARD for the page (which names the resident)."""
    site = await svc.store.get_site(resident.site_id)
    sections = _sbard(resident, (site.name if site else "") or resident.site_id, stored)
    return {
        "set_key": key,
        "resident_id": resident.resident_id,
        "replayed": replayed,
        **stored,
        "sbard": [{"letter": s.letter, "heading": s.heading, "text": s.text} for s in sections],
        "sbard_text": sbard_text(sections),
    }


def _sbard(
    resident: Resident, site_name: str, stored: dict[str, Any], *, by_id: bool = False
) -> list[SbardSection]:
    previous = stored.get("previous")
    baseline = []
    if resident.baseline_consciousness is not None and resident.baseline_consciousness.value == "C":
        baseline.append("long-standing confusion (not new)")
    if resident.spo2_scale == 2:
        baseline.append("SpO2 target 88-92 % (scale 2, prescribed)")
    name = resident.resident_id if by_id else (resident.name or resident.resident_id)
    return sbard(
        name=name if not by_id else f"resident {name}",
        site_name=site_name,
        values=stored["values"],
        result=stored["result"],
        soft_signs=stored.get("soft_signs", []),
        taken_at=datetime.fromisoformat(stored["taken_at"]),
        previous=(previous[0], previous[1], datetime.fromisoformat(previous[2]))
        if previous
        else None,
        baseline=baseline,
    )


@router.post("/tablet/api/residents/{resident_id}/teletriage", include_in_schema=False)
async def teletriage(
    resident_id: str,
    body: TeletriageIn,
    svc: Annotated[Services, Depends(services)],
    caller: Annotated[Caller, Depends(site_caller)],
) -> dict[str, Any]:
    """Raise a teletriage request for a set already answered: an alert (then a dispatch)
    whose detail carries the set, its soft signs and the SBARD (resident named by id).
    Once per set: asking again returns the same alert and dispatch."""
    resident = await resident_for(svc, resident_id, caller)
    sets = tablet_sets_of(svc.store)
    found = await sets.get(resident.site_id, body.set_key)
    if found is None or found.answer is None or found.resident_id != resident_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no answered set with that key")
    stored = found.answer
    digest = hashlib.sha256(f"{resident.site_id}|{body.set_key}".encode()).hexdigest()[:20]
    alert_id = f"tt-{digest}"
    site = await svc.store.get_site(resident.site_id)
    sections = _sbard(resident, (site.name if site else "") or resident.site_id, stored, by_id=True)
    result = stored["result"]
    dispatch = await request_teletriage(
        svc,
        alert_id=alert_id,
        site_id=resident.site_id,
        resident_id=resident_id,
        requested_by=caller.actor,
        news2=result["news2"],
        advice=result.get("advice"),
        taken_at=datetime.fromisoformat(stored["taken_at"]),
        observations=stored["values"],
        soft_signs=stored.get("soft_signs", []),
        sbard=sbard_text(sections),
        source_key=f"{WEB_DEVICE}/{found.observation_id}",
    )
    await sets.note_teletriage(resident.site_id, body.set_key, alert_id)
    log.info("teletriage_requested", alert_id=alert_id, site_id=resident.site_id)
    return {"alert_id": alert_id, "dispatch_id": dispatch.dispatch_id}
