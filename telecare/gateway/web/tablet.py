"""The care-home NEWS2 page for iPads (``/tablet``) and the JSON it talks to.

Pages (server-rendered, a little vanilla JavaScript in ``static/tablet.js``):

* ``GET /tablet`` — the site's residents, each with their latest NEWS2.
* ``GET /tablet/residents/{id}`` — the NEWS2 chart's fields with its colours, pre-filled
  from the resident's oximeter or cuff reading of the last :data:`PREFILL_WINDOW` (the
  source device and the reading's age shown), the resident's trend, the RESTORE2 soft
  signs, and after submitting: score, band, advice and the SBARD handover.

JSON (session + CSRF header, or a care-home bearer token; one site only):

* ``POST /tablet/api/residents/{id}/sets`` with an ``Idempotency-Key`` header: store and
  score a set (any subset of the seven parameters) and its soft signs. The answer is
  ``tablet_reply.observation_result`` (the same document as the MQTT reply) plus the
  SBARD. A retry with the same key and body gets the same answer and stores nothing
  twice (``tablet_store``); the same key with another body is 409; while the first
  attempt is still running a retry gets 503 with ``Retry-After``.
* ``POST /tablet/api/residents/{id}/teletriage`` ``{"set_key": ...}``: raise a teletriage
  request (an alert, then a dispatch) carrying the set, its soft signs and the SBARD;
  once per set.

The page keeps a set it could not deliver in the iPad's ``localStorage`` and retries it
with the same key until the gateway answers (``docs/tablet.md``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from telecare.devices.model import (
    Alert,
    AlertKind,
    DeviceKind,
    Dispatch,
    ModelError,
    ObservationSet,
    Resident,
)
from telecare.gateway.decode import Rejected
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.logging import get_logger
from telecare.gateway.store.accounts import Role, Session, User
from telecare.gateway.store.base import News2Record
from telecare.gateway.tablet_reply import observation_result
from telecare.gateway.web.auth import (
    Caller,
    check_site,
    current_session,
    current_user,
    render,
    site_caller,
)
from telecare.gateway.web.services import Services, services
from telecare.gateway.web.tablet_sbard import SOFT_SIGNS, SbardSection, sbard, sbard_text
from telecare.gateway.web.tablet_store import TabletSet, TabletSets, tablet_sets_of
from telecare.rules.engine import EngineResult
from telecare.rules.news2 import BANDS, News2Result

__all__ = ["PREFILL_WINDOW", "WEB_DEVICE", "router"]

log = get_logger("telecare.web.tablet")

#: A device reading this recent pre-fills the form ("the last few minutes").
PREFILL_WINDOW: Final = timedelta(minutes=10)
#: The device id the page's sets are stored under (readings ``device_id``).
WEB_DEVICE: Final = "tablet-page"
#: How far back the trend goes.
TREND_WINDOW: Final = timedelta(days=7)
_KEY: Final = re.compile(r"[A-Za-z0-9._:-]{8,100}")
_PREFILL_METRICS: Final = ("spo2", "pulse", "systolic_bp", "temperature", "respiration_rate")
_SOURCE_KINDS: Final = {
    DeviceKind.OXIMETER: "oximeter",
    DeviceKind.BP_CUFF: "blood-pressure cuff",
}
_DISPATCH_WAIT_S: Final = 2.0

router = APIRouter(tags=["tablet"])


# -- who may see what ----------------------------------------------------------------------
def _page_site(user: User, site: str | None) -> str:
    """The site a page shows: a care-home user's own; ARC staff name one (``?site=``)."""
    if user.role is Role.CARE_HOME and user.site_id is not None:
        return user.site_id
    if user.role in (Role.OPERATOR, Role.SUPERVISOR) and site:
        return site
    if user.role in (Role.OPERATOR, Role.SUPERVISOR):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "name a site: /tablet?site=<site id>")
    raise HTTPException(status.HTTP_403_FORBIDDEN, f"the role {user.role} has no tablet page")


async def _resident(svc: Services, resident_id: str, may: Caller | User) -> Resident:
    """The resident, or 404 when unknown or of a site the caller may not see."""
    resident = await svc.store.get_resident(resident_id)
    if resident is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such resident")
    if isinstance(may, Caller):
        check_site(may, resident.site_id)
    elif _page_site(may, resident.site_id) != resident.site_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such resident")
    return resident


# -- pages ---------------------------------------------------------------------------------
@router.get("/tablet", response_class=HTMLResponse, include_in_schema=False)
async def index(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    session: Annotated[Session, Depends(current_session)],
    site: str | None = None,
) -> Response:
    user = session.user
    site_id = _page_site(user, site)
    found = await svc.store.get_site(site_id)
    residents = sorted(await svc.store.list_residents(site_id), key=lambda r: r.name or "")
    now = svc.clock.now()
    latest = []
    for resident in residents:
        history = await svc.store.news2_history(resident.resident_id, now - TREND_WINDOW, now)
        latest.append((resident, history[-1] if history else None))
    return render(
        request,
        "tablet/index.html",
        {
            "site_name": (found.name if found else "") or site_id,
            "residents": latest,
            "now": now,
            "user": user,
            "csrf_token": session.csrf_token,
            "ago": _ago,
        },
    )


@router.get("/tablet/residents/{resident_id}", response_class=HTMLResponse, include_in_schema=False)
async def resident_page(
    request: Request,
    resident_id: str,
    svc: Annotated[Services, Depends(services)],
    session: Annotated[Session, Depends(current_session)],
) -> Response:
    resident = await _resident(svc, resident_id, session.user)
    site = await svc.store.get_site(resident.site_id)
    now = svc.clock.now()
    return render(
        request,
        "tablet/resident.html",
        {
            "resident": resident,
            "site_name": (site.name if site else "") or resident.site_id,
            "prefill": await _prefill(svc, resident_id, now),
            **await _trend(svc, resident_id, now),
            "soft_signs": SOFT_SIGNS,
            "bands": json.dumps(BANDS),
            "csrf_token": session.csrf_token,
            "user": session.user,
            "spo2_scale": resident.spo2_scale or 1,
            "ago": _ago,
        },
    )


@router.get(
    "/tablet/residents/{resident_id}/trend", response_class=HTMLResponse, include_in_schema=False
)
async def trend_fragment(
    request: Request,
    resident_id: str,
    svc: Annotated[Services, Depends(services)],
    user: Annotated[User, Depends(current_user)],
) -> Response:
    """The trend box alone: the page refreshes it after each answered set."""
    await _resident(svc, resident_id, user)
    return render(request, "tablet/_trend.html", await _trend(svc, resident_id, svc.clock.now()))


async def _trend(svc: Services, resident_id: str, now: datetime) -> dict[str, Any]:
    history = await svc.store.news2_history(resident_id, now - TREND_WINDOW, now + timedelta(1))
    return {"history": history, "trend": trend_svg(history, now)}


@dataclass(frozen=True, slots=True)
class Prefill:
    metric: str
    value: float
    device_id: str
    source: str
    ts: datetime
    age_s: int


async def _prefill(svc: Services, resident_id: str, now: datetime) -> dict[str, Prefill]:
    """The newest device reading of each NEWS2 metric within :data:`PREFILL_WINDOW`,
    from an oximeter or cuff (never a set typed in earlier)."""
    readings = await svc.store.resident_readings(resident_id, now - PREFILL_WINDOW, now)
    out: dict[str, Prefill] = {}
    kinds: dict[str, str | None] = {}
    for r in readings:  # oldest first: later ones replace earlier ones
        metric = r.metric.label
        if metric not in _PREFILL_METRICS:
            continue
        if r.device_id not in kinds:
            device = await svc.store.get_device(r.device_id)
            kinds[r.device_id] = _SOURCE_KINDS.get(device.kind) if device else None
        source = kinds[r.device_id]
        if source is None:
            continue
        age = int((now - r.ts).total_seconds())
        out[metric] = Prefill(metric, r.value, r.device_id, source, r.ts, max(0, age))
    return out


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min ago"
    if seconds < 36 * 3600:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"


_RISK_COLOUR: Final = {
    "low": "#2e7d32",
    "low-medium": "#c77700",
    "medium": "#e65100",
    "high": "#b00020",
}


def trend_svg(
    history: list[News2Record], now: datetime, width: int = 640, height: int = 160
) -> str:
    """The resident's NEWS2 over :data:`TREND_WINDOW` as an inline SVG (band shading,
    one dot per score, coloured by band). Empty string without scores."""
    if not history:
        return ""
    start = min(h.ts for h in history)
    span = max((now - start).total_seconds(), 3600.0)
    top = 20
    pad = 24

    def x(ts: datetime) -> float:
        return pad + (width - 2 * pad) * (ts - start).total_seconds() / span

    def y(total: int) -> float:
        return height - pad - (height - 2 * pad) * min(total, top) / top

    bands = [(0, 4, "#e8f5e9"), (5, 6, "#fff3e0"), (7, top, "#ffebee")]
    parts = [
        f'<svg class="trend" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="NEWS2 trend, {len(history)} scores">'
    ]
    for lo, hi, colour in bands:
        parts.append(
            f'<rect x="{pad}" y="{y(hi + 1 if hi < top else top):.1f}" width="{width - 2 * pad}" '
            f'height="{y(lo) - y(hi + 1 if hi < top else top):.1f}" fill="{colour}"/>'
        )
    for mark in (0, 5, 7, 10, 15, 20):
        parts.append(
            f'<text x="{pad - 6}" y="{y(mark) + 4:.1f}" text-anchor="end" class="axis">'
            f"{mark}</text>"
        )
    points = " ".join(f"{x(h.ts):.1f},{y(h.total):.1f}" for h in history)
    parts.append(f'<polyline points="{points}" fill="none" stroke="#37474f" stroke-width="2"/>')
    for h in history:
        colour = _RISK_COLOUR.get(h.risk, "#37474f")
        parts.append(
            f'<circle cx="{x(h.ts):.1f}" cy="{y(h.total):.1f}" r="5" fill="{colour}">'
            f"<title>NEWS2 {h.total} ({h.risk}) {h.ts:%d %b %H:%M}</title></circle>"
        )
    parts.append(
        f'<text x="{pad}" y="{height - 4}" class="axis">{start:%d %b %H:%M}</text>'
        f'<text x="{width - pad}" y="{height - 4}" text-anchor="end" class="axis">now</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


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


def _observation_id(site_id: str, key: str) -> str:
    """The set's msg_id in the pipeline (its readings' idempotency key)."""
    return "tp-" + hashlib.sha256(f"{site_id}|{key}".encode()).hexdigest()[:24]


def _body_hash(resident_id: str, body: SetIn) -> str:
    doc = {"resident_id": resident_id, **body.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@router.post("/tablet/api/residents/{resident_id}/sets")
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
    resident = await _resident(svc, resident_id, caller)
    sets = tablet_sets_of(svc.store)
    now = svc.clock.now()
    entry = TabletSet(
        site_id=resident.site_id,
        idem_key=key,
        body_hash=_body_hash(resident_id, body),
        resident_id=resident_id,
        observation_id="tp-"
        + hashlib.sha256(f"{resident.site_id}|{key}".encode()).hexdigest()[:24],
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
    """Hand the set to the pipeline; the stored answer (no names in it)."""
    if svc.observations is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "observations are not accepted")
    values = body.observations.model_dump(exclude_none=True)
    taken_at = body.taken_at or now
    try:
        obs = ObservationSet(
            device_id=WEB_DEVICE,
            resident_id=resident.resident_id,
            ts=taken_at,
            msg_id=entry.observation_id,
            site_id=resident.site_id,
            **values,
        )
    except ModelError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    scored: list[tuple[News2Result, EngineResult]] = []
    before = await svc.store.news2_history(resident.resident_id, taken_at - TREND_WINDOW, taken_at)
    try:
        await svc.observations(
            obs, received_at=now, on_scored=lambda _o, news, res: scored.append((news, res))
        )
    except Rejected as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.reason) from None
    except Exception as exc:
        if is_storage_unavailable(exc):
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the gateway cannot store this now; it is kept on the tablet and retried",
                headers={"Retry-After": "5"},
            ) from None
        raise
    news, result = scored[0]
    dispatch = await _dispatch_of(svc, result.alerts)
    previous = before[-1] if before else None
    return {
        "taken_at": taken_at.isoformat(),
        "values": values,
        "soft_signs": entry.soft_signs,
        "result": observation_result(
            news,
            result.advice,
            site_id=resident.site_id,
            resident_id=resident.resident_id,
            taken_at=result.rule_ts or taken_at,
            dispatch=dispatch,
        ),
        "previous": [previous.total, previous.risk, previous.ts.isoformat()] if previous else None,
    }


async def _dispatch_of(svc: Services, alerts: list[Alert]) -> Dispatch | None:
    """The dispatch opened for the most urgent alert (its queue is asynchronous)."""
    if not alerts:
        return None
    alert_id = min(alerts, key=lambda a: a.priority).alert_id
    return await _wait_dispatch(svc, alert_id)


async def _wait_dispatch(svc: Services, alert_id: str) -> Dispatch | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DISPATCH_WAIT_S
    while True:
        found = await svc.dispatcher.repo.load_for_alert(alert_id)
        if found is not None:
            return found
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(0.05)


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


@router.post("/tablet/api/residents/{resident_id}/teletriage")
async def teletriage(
    resident_id: str,
    body: TeletriageIn,
    svc: Annotated[Services, Depends(services)],
    caller: Annotated[Caller, Depends(site_caller)],
) -> dict[str, Any]:
    """Raise a teletriage request for a set already answered: an alert (then a dispatch)
    whose detail carries the set, its soft signs and the SBARD (resident named by id).
    Once per set: asking again returns the same alert and dispatch."""
    resident = await _resident(svc, resident_id, caller)
    sets = tablet_sets_of(svc.store)
    found = await sets.get(resident.site_id, body.set_key)
    if found is None or found.answer is None or found.resident_id != resident_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no answered set with that key")
    stored = found.answer
    digest = hashlib.sha256(f"{resident.site_id}|{body.set_key}".encode()).hexdigest()[:20]
    alert_id = f"tt-{digest}"
    site = await svc.store.get_site(resident.site_id)
    sections = _sbard(resident, (site.name if site else "") or resident.site_id, stored, by_id=True)
    news2 = stored["result"]["news2"]
    priority = 2 if news2.get("risk") in ("medium", "high") else 3
    alert = Alert(
        alert_id=alert_id,
        kind=AlertKind.NEWS2,
        priority=priority,
        reason=f"teletriage request from the care home for resident {resident_id}",
        ts=svc.clock.now(),
        site_id=resident.site_id,
        resident_id=resident_id,
        source_key=f"{WEB_DEVICE}/{found.observation_id}",
        detail={
            "teletriage": True,
            "requested_by": caller.actor,
            "news2": news2.get("total"),
            "risk": news2.get("risk"),
            "red_flag": bool(news2.get("red_flag")),
            "observations": stored["values"],
            "soft_signs": stored.get("soft_signs", []),
            "sbard": sbard_text(sections),
            "presented_at": svc.clock.now().isoformat(),
        },
    )
    await svc.store.write_alert(alert)
    await svc.dispatcher.submit(alert)
    await sets.note_teletriage(resident.site_id, body.set_key, alert_id)
    log.info("teletriage_requested", alert_id=alert_id, site_id=resident.site_id)
    dispatch = await _wait_dispatch(svc, alert_id)
    return {"alert_id": alert_id, "dispatch_id": dispatch.dispatch_id if dispatch else None}
