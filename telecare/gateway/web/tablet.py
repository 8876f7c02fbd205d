"""The care-home NEWS2 page for iPads (``/tablet``), server-rendered with a little
vanilla JavaScript (``static/tablet.js``):

* ``GET /tablet`` — the site's residents, each with their latest NEWS2.
* ``GET /tablet/residents/{id}`` — the NEWS2 chart's fields with its colours, pre-filled
  from the resident's oximeter or cuff reading of the last :data:`PREFILL_WINDOW` (the
  source device and the reading's age shown), the resident's trend, the RESTORE2 soft
  signs, and after submitting: score, band, advice and the SBARD handover.
* ``GET /tablet/residents/{id}/trend`` — the trend box alone (redrawn after each set).

The JSON the page talks to is ``web/tablet_api.py`` (included in :data:`router`). The
page keeps a set it could not deliver in the iPad's ``localStorage`` and retries it with
the same key until the gateway answers (``docs/tablet.md``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from telecare.devices.model import DeviceKind
from telecare.gateway.store.accounts import Session, User
from telecare.gateway.store.rows import News2Record
from telecare.gateway.web import tablet_api
from telecare.gateway.web.auth import (
    current_session,
    current_user,
    render,
)
from telecare.gateway.web.services import Services, services
from telecare.gateway.web.tablet_api import TREND_WINDOW, page_site, resident_for
from telecare.gateway.web.tablet_sbard import SOFT_SIGNS, local
from telecare.rules.news2 import BANDS

__all__ = ["PREFILL_WINDOW", "router", "trend_svg"]

#: A device reading this recent pre-fills the form ("the last few minutes").
PREFILL_WINDOW: Final = timedelta(minutes=10)
_PREFILL_METRICS: Final = ("spo2", "pulse", "systolic_bp", "temperature", "respiration_rate")
_SOURCE_KINDS: Final = {
    DeviceKind.OXIMETER: "oximeter",
    DeviceKind.BP_CUFF: "blood-pressure cuff",
}

router = APIRouter(tags=["tablet"])
router.include_router(tablet_api.router)


# -- pages ---------------------------------------------------------------------------------
@router.get("/tablet", response_class=HTMLResponse, include_in_schema=False)
async def index(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    session: Annotated[Session, Depends(current_session)],
    site: str | None = None,
) -> Response:
    user = session.user
    site_id = page_site(user, site)
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
    resident = await resident_for(svc, resident_id, session.user)
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
            "local": local,
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
    await resident_for(svc, resident_id, user)
    return render(request, "tablet/_trend.html", await _trend(svc, resident_id, svc.clock.now()))


async def _trend(svc: Services, resident_id: str, now: datetime) -> dict[str, Any]:
    history = await svc.store.news2_history(resident_id, now - TREND_WINDOW, now + timedelta(1))
    return {"history": history, "trend": trend_svg(history, now), "local": local}


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
    history: list[News2Record], now: datetime, width: int = 640, height: int = 240
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
            f"<title>NEWS2 {h.total} ({h.risk}) {local(h.ts):%d %b %H:%M}</title></circle>"
        )
    parts.append(
        f'<text x="{pad}" y="{height - 4}" class="axis">{local(start):%d %b %H:%M}</text>'
        f'<text x="{width - pad}" y="{height - 4}" text-anchor="end" class="axis">now</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
