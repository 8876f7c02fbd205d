"""The care-home API (``/api/v1/sites/{site_id}/...``): observation sets in, NEWS2 out.

- ``POST .../residents/{resident_id}/observations`` with ``Idempotency-Key``: the set
  goes through the gateway's pipeline (stored, scored, alerts raised and dispatched, as
  from any device); the answer is the NEWS2 result, the site's advice and the dispatch
  it opened, if any.
- ``GET .../residents``: the site's residents with their latest vitals and NEWS2 trend.
- ``GET .../residents/{resident_id}/history``: NEWS2 scores and vitals over a period,
  downsampled to about ``points`` buckets.
- ``POST .../residents/{resident_id}/teletriage`` with ``Idempotency-Key``: a request for
  a clinician, a dispatch in the clinical queue carrying the set (and soft signs, SBARD).

Every route takes a :class:`~telecare.gateway.web.auth.Caller` (a site's API token or a
logged-in user) and refuses every other site with 404, as if it did not exist.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from telecare.devices.model import (
    Consciousness,
    Metric,
    ModelError,
    Resident,
    Site,
)
from telecare.gateway.store.rows import News2Record
from telecare.gateway.web import teletriage
from telecare.gateway.web.api_common import (
    IDEMPOTENCY_HEADER,
    DispatchOut,
    ErrorOut,
    bearer_scheme,
    cookie_scheme,
    dispatch_out,
    idempotent,
    request_hash,
    unprocessable,
)
from telecare.gateway.web.auth import Caller, check_site, site_caller
from telecare.gateway.web.observations import (
    ObservationRefused,
    new_observation,
    observation_id,
    observe,
)
from telecare.gateway.web.services import Services, services

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1/sites/{site_id}",
    tags=["care home"],
    dependencies=[Depends(bearer_scheme), Depends(cookie_scheme)],
    responses={
        401: {"model": ErrorOut, "description": "no or invalid token / session"},
        403: {"model": ErrorOut, "description": "CSRF token missing, or a role without access"},
        404: {"model": ErrorOut, "description": "no such site or resident (for this caller)"},
    },
)

#: Identifiers in paths: what the canonical model accepts (anything else is simply 404).
SiteId = Annotated[str, Path(max_length=64, description="The care home's site id.")]
ResidentId = Annotated[str, Path(max_length=64, description="The resident's id.")]
IdemKey = Annotated[
    str,
    Header(
        alias=IDEMPOTENCY_HEADER,
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="A new random key per set (a UUID); the same key on every retry of it.",
    ),
]
#: NEWS2 metrics shown as latest vitals and history (NEWS2 parameters plus diastolic).
VITALS: Final = (
    Metric.RESPIRATION_RATE,
    Metric.SPO2,
    Metric.SYSTOLIC_BP,
    Metric.DIASTOLIC_BP,
    Metric.PULSE,
    Metric.TEMPERATURE,
)


def _bounded(metric: Metric, description: str) -> Any:
    lo, hi = metric.bounds
    return Field(default=None, ge=lo, le=hi, allow_inf_nan=False, description=description)


# -- models ----------------------------------------------------------------------------------
_EXAMPLE_SET: Final[dict[str, Any]] = {
    "respiration_rate": 22,
    "spo2": 94,
    "on_oxygen": False,
    "systolic_bp": 105,
    "pulse": 96,
    "consciousness": "A",
    "temperature": 38.2,
}


class ObservationIn(BaseModel):
    """A NEWS2 chart's fields, or any subset of them (at least one)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE_SET]})

    respiration_rate: float | None = _bounded(Metric.RESPIRATION_RATE, "breaths per minute")
    spo2: float | None = _bounded(Metric.SPO2, "oxygen saturation, %")
    on_oxygen: bool | None = Field(default=None, description="receiving supplemental oxygen")
    systolic_bp: float | None = _bounded(Metric.SYSTOLIC_BP, "systolic blood pressure, mmHg")
    pulse: float | None = _bounded(Metric.PULSE, "beats per minute")
    consciousness: Consciousness | None = Field(default=None, description="ACVPU: A C V P U")
    temperature: float | None = _bounded(Metric.TEMPERATURE, "degrees Celsius")
    taken_at: datetime | None = Field(
        default=None, description="When the set was taken (with a UTC offset); default: now"
    )

    @field_validator("taken_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a UTC offset, e.g. 2026-01-05T09:00:00Z")
        return value

    @model_validator(mode="after")
    def _something(self) -> ObservationIn:
        if all(getattr(self, name) is None for name in _PARAMETERS):
            raise ValueError(f"give at least one of: {', '.join(_PARAMETERS)}")
        return self


_PARAMETERS: Final = (
    "respiration_rate",
    "spo2",
    "on_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)


class News2Out(BaseModel):
    complete: bool
    total: int | None
    sub_scores: dict[str, int]
    risk: Literal["low", "low-medium", "medium", "high"] | None
    red_flag: bool
    missing: list[str]
    #: RCP minimum monitoring frequency, e.g. "minimum 1-hourly".
    monitoring: str | None
    monitoring_interval_s: int | None
    #: RCP clinical response for the band.
    response: str | None
    spo2_scale: int


class ObservationResult(BaseModel):
    site_id: str
    resident_id: str
    taken_at: datetime
    news2: News2Out
    #: The site's escalation advice for this score (what to do now).
    advice: str | None
    #: The dispatch this set opened (or joined), if it raised an alert.
    dispatch: DispatchOut | None


class Vital(BaseModel):
    value: float
    unit: str
    at: datetime


class ScorePoint(BaseModel):
    at: datetime
    total: int
    risk: str
    red_flag: bool


class ResidentSummary(BaseModel):
    resident_id: str
    name: str
    latest: dict[str, Vital]
    news2: ScorePoint | None
    #: The scores of the last 72 hours, oldest first (at most 20).
    trend: list[ScorePoint]
    direction: Literal["rising", "falling", "steady"] | None


class ResidentsOut(BaseModel):
    site_id: str
    residents: list[ResidentSummary]


class Bucket(BaseModel):
    at: datetime
    min: float
    max: float
    avg: float
    count: int


class HistoryOut(BaseModel):
    site_id: str
    resident_id: str
    start: datetime
    end: datetime
    bucket_s: int
    #: The highest score in each bucket.
    news2: list[ScorePoint]
    vitals: dict[str, list[Bucket]]


class TeletriageIn(BaseModel):
    """A request for a clinician (nurse practitioner, GP, NHS 111) to call back."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "observations": _EXAMPLE_SET,
                    "soft_signs": ["new confusion", "not eating or drinking"],
                    "sbard": "S: Mrs B is more confused since this morning. B: ...",
                }
            ]
        },
    )

    #: The ``Idempotency-Key`` of a set already submitted for this resident...
    observation_key: str | None = Field(default=None, min_length=1, max_length=128)
    #: ...or the set itself (submitted first, as by the observations endpoint).
    observations: ObservationIn | None = None
    #: RESTORE2 soft signs noticed (e.g. "new confusion", "not eating").
    soft_signs: list[Annotated[str, Field(min_length=1, max_length=80)]] = Field(
        default_factory=list, max_length=20
    )
    #: The SBARD handover summary the carer will read out.
    sbard: str = Field(default="", max_length=4000)
    note: str = Field(default="", max_length=1000)

    @model_validator(mode="after")
    def _one_set(self) -> TeletriageIn:
        if self.observation_key is not None and self.observations is not None:
            raise ValueError("give observation_key or observations, not both")
        return self


class TeletriageOut(BaseModel):
    site_id: str
    resident_id: str
    dispatch: DispatchOut
    news2: News2Out | None
    advice: str | None


# -- helpers ---------------------------------------------------------------------------------
async def _site(svc: Services, caller: Caller, site_id: str) -> Site:
    check_site(caller, site_id)
    try:
        site = await svc.store.get_site(site_id)
    except ModelError:
        site = None
    if site is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no site {site_id!r}")
    return site


async def _resident(svc: Services, caller: Caller, site_id: str, resident_id: str) -> Resident:
    await _site(svc, caller, site_id)
    resident = await svc.store.get_resident(resident_id)
    if resident is None or resident.site_id != site_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no resident {resident_id!r} at {site_id}")
    return resident


def _msg_id(scope: str, key: str, prefix: str = "k") -> str:
    """A model-valid id derived from the idempotency key (same key, same id)."""
    return prefix + hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()[:40]


def _device_of(caller: Caller) -> str:
    """The ``device_id`` an API-submitted set is recorded under (who sent it)."""
    if caller.token is not None:
        return f"api:{caller.token.token_id}"
    assert caller.user is not None
    return f"web:{caller.user.user_id}"


def _check_time(svc: Services, taken_at: datetime, now: datetime) -> None:
    bounds = svc.config.ingest
    if taken_at > now + timedelta(seconds=bounds.max_future_skew_s):
        raise unprocessable("taken_at", "is in the future: check the tablet's clock")
    if taken_at < now - timedelta(seconds=bounds.max_age_s):
        raise unprocessable("taken_at", "is too old to be accepted")


async def _submit(
    svc: Services,
    caller: Caller,
    site_id: str,
    resident: Resident,
    body: ObservationIn,
    key: str,
) -> ObservationResult:
    """Run one set through the one observation path; the answer the API gives for it."""
    if svc.observations is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "observations are not accepted")
    now = svc.clock.now()
    taken_at = (body.taken_at or now).astimezone(UTC)
    _check_time(svc, taken_at, now)
    values = body.model_dump(include=set(_PARAMETERS), exclude_none=True)
    try:
        obs = new_observation(
            values,
            device_id=_device_of(caller),
            resident_id=resident.resident_id,
            site_id=site_id,
            taken_at=taken_at,
            msg_id=observation_id(site_id, key),
        )
        outcome = await observe(
            svc.observations, svc.dispatcher.repo.load_for_alert, obs, received_at=now
        )
    except ObservationRefused as exc:
        raise unprocessable(exc.field, exc.reason) from None
    return ObservationResult.model_validate(outcome.document())


# -- routes ----------------------------------------------------------------------------------
@router.post(
    "/residents/{resident_id}/observations",
    response_model=ObservationResult,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": ObservationResult, "description": "a retry: the first answer again"},
        409: {"model": ErrorOut, "description": "key reused for another request, or in use"},
    },
)
async def submit_observations(
    request: Request,
    site_id: SiteId,
    resident_id: ResidentId,
    body: ObservationIn,
    key: IdemKey,
    svc: Annotated[Services, Depends(services)],
    caller: Annotated[Caller, Depends(site_caller)],
) -> Response:
    """Submit an observation set; the answer is its NEWS2, the advice and any dispatch.

    Retry with the same ``Idempotency-Key`` until an answer arrives: the set is stored
    once and every retry gets the first answer."""
    resident = await _resident(svc, caller, site_id, resident_id)
    scope = f"site:{site_id}"

    async def work() -> tuple[int, BaseModel]:
        result = await _submit(svc, caller, site_id, resident, body, key)
        return status.HTTP_201_CREATED, result

    return await idempotent(svc, scope, key, request_hash(request, body), work)


@router.get("/residents", response_model=ResidentsOut)
async def list_residents(
    site_id: SiteId,
    svc: Annotated[Services, Depends(services)],
    caller: Annotated[Caller, Depends(site_caller)],
) -> ResidentsOut:
    """The site's residents with their latest vitals (last 24 h) and NEWS2 trend."""
    await _site(svc, caller, site_id)
    now = svc.clock.now()
    residents = await svc.store.list_residents(site_id)
    vitals = await svc.store.latest_vitals(
        [r.resident_id for r in residents], since=now - timedelta(hours=24)
    )
    out = []
    for r in residents:
        history = await svc.store.news2_history(
            r.resident_id, now - timedelta(hours=72), _until(svc, now)
        )
        trend = [
            ScorePoint(at=h.ts, total=h.total, risk=h.risk, red_flag=h.red_flag) for h in history
        ][-20:]
        out.append(
            ResidentSummary(
                resident_id=r.resident_id,
                name=r.name,
                latest=_latest(vitals.get(r.resident_id, {})),
                news2=trend[-1] if trend else None,
                trend=trend,
                direction=_direction(trend),
            )
        )
    return ResidentsOut(site_id=site_id, residents=out)


def _until(svc: Services, now: datetime) -> datetime:
    """The end of a "until now" query: sets may be dated a little ahead (clock skew)."""
    return now + timedelta(seconds=svc.config.ingest.max_future_skew_s)


def _point(h: News2Record) -> ScorePoint:
    return ScorePoint(at=h.ts, total=h.total, risk=h.risk, red_flag=h.red_flag)


def _latest(values: dict[str, tuple[datetime, float]]) -> dict[str, Vital]:
    wanted = {m.label: m for m in VITALS}
    return {
        label: Vital(value=value, unit=wanted[label].unit, at=at)
        for label, (at, value) in values.items()
        if label in wanted
    }


def _direction(trend: list[ScorePoint]) -> Literal["rising", "falling", "steady"] | None:
    if len(trend) < 2:
        return None
    last, before = trend[-1].total, trend[-2].total
    return "rising" if last > before else "falling" if last < before else "steady"


@router.get("/residents/{resident_id}/history", response_model=HistoryOut)
async def resident_history(
    site_id: SiteId,
    resident_id: ResidentId,
    svc: Annotated[Services, Depends(services)],
    caller: Annotated[Caller, Depends(site_caller)],
    hours: Annotated[int, Query(ge=1, le=24 * 90, description="How far back")] = 72,
    points: Annotated[int, Query(ge=2, le=500, description="About this many buckets")] = 72,
) -> HistoryOut:
    """NEWS2 scores and vitals over the last ``hours``, downsampled to ~``points`` buckets."""
    await _resident(svc, caller, site_id, resident_id)
    end = svc.clock.now()
    start = end - timedelta(hours=hours)
    bucket_s = max(60, math.ceil(hours * 3600 / points))
    bucket = timedelta(seconds=bucket_s)
    vitals: dict[str, list[Bucket]] = {}
    for metric in VITALS:
        points_ = await svc.store.metric_history(
            resident_id, metric, start, _until(svc, end), bucket
        )
        if points_:
            vitals[metric.label] = [
                Bucket(at=p.bucket, min=p.min, max=p.max, avg=p.avg, count=p.count) for p in points_
            ]
    scores = await svc.store.news2_history(resident_id, start, _until(svc, end))
    worst: dict[int, ScorePoint] = {}
    for s in scores:
        slot = int((s.ts - start).total_seconds() // bucket_s)
        if slot not in worst or s.total > worst[slot].total:
            worst[slot] = _point(s)
    return HistoryOut(
        site_id=site_id,
        resident_id=resident_id,
        start=start,
        end=end,
        bucket_s=bucket_s,
        news2=[worst[k] for k in sorted(worst)],
        vitals=vitals,
    )


@router.post(
    "/residents/{resident_id}/teletriage",
    response_model=TeletriageOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": TeletriageOut, "description": "a retry: the first answer again"},
        409: {"model": ErrorOut, "description": "key reused for another request, or in use"},
    },
)
async def request_teletriage(
    request: Request,
    site_id: SiteId,
    resident_id: ResidentId,
    body: TeletriageIn,
    key: IdemKey,
    svc: Annotated[Services, Depends(services)],
    caller: Annotated[Caller, Depends(site_caller)],
) -> Response:
    """Ask for a clinician: a dispatch in the clinical queue with the set attached."""
    resident = await _resident(svc, caller, site_id, resident_id)
    scope = f"site:{site_id}"

    async def work() -> tuple[int, BaseModel]:
        return status.HTTP_201_CREATED, await _teletriage(
            svc, caller, site_id, resident, body, scope, key
        )

    return await idempotent(svc, scope, key, request_hash(request, body), work)


async def _attached_set(
    svc: Services,
    caller: Caller,
    site_id: str,
    resident: Resident,
    body: TeletriageIn,
    scope: str,
    key: str,
) -> ObservationResult | None:
    if body.observations is not None:
        return await _submit(svc, caller, site_id, resident, body.observations, f"tt\n{key}")
    if body.observation_key is None:
        return None
    answer = await svc.accounts.answer(scope, body.observation_key)
    if answer is None or answer.status != status.HTTP_201_CREATED:
        raise unprocessable("observation_key", "no set was submitted with this key")
    earlier = ObservationResult.model_validate_json(answer.response)
    if earlier.resident_id != resident.resident_id:
        raise unprocessable("observation_key", "that set is another resident's")
    return earlier


async def _teletriage(
    svc: Services,
    caller: Caller,
    site_id: str,
    resident: Resident,
    body: TeletriageIn,
    scope: str,
    key: str,
) -> TeletriageOut:
    attached = await _attached_set(svc, caller, site_id, resident, body, scope, key)
    news = attached.news2 if attached else None
    dispatch = await teletriage.request_teletriage(
        svc,
        alert_id=_msg_id(scope, f"teletriage\n{key}", prefix="tt-"),
        site_id=site_id,
        resident_id=resident.resident_id,
        requested_by=caller.actor,
        news2=news.model_dump(mode="json") if news is not None else None,
        advice=attached.advice if attached else None,
        taken_at=attached.taken_at if attached else None,
        soft_signs=body.soft_signs,
        sbard=body.sbard,
        note=body.note,
    )
    return TeletriageOut(
        site_id=site_id,
        resident_id=resident.resident_id,
        dispatch=dispatch_out(dispatch),
        news2=news,
        advice=attached.advice if attached else None,
    )
