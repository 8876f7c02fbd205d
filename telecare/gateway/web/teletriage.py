"""One path for a teletriage request, from the care-home API or the iPad page.

A carer asks for a clinician (nurse practitioner, GP, NHS 111) to call back about a
resident, usually with an observation set already scored (``web/observations.py``), the
RESTORE2 soft signs and the SBARD handover text. :func:`request_teletriage` turns that
into a NEWS2-kind alert in the clinical queue (``"teletriage": true, "queue":
"clinical"``), stored, and opens its dispatch at once with the person who asked as the
audit actor. Its priority is the site's priority for the set's band (3 without a score);
it is routed by the score like any NEWS2 alert (7 or more: 999 first).

Idempotent by ``alert_id`` (each face derives it from its own key): asking again returns
the dispatch already open for it. Error handling: storage errors propagate (the faces
answer 503 and the client retries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from telecare.devices.model import Alert, AlertKind, Dispatch
from telecare.gateway.web.services import Services

__all__ = ["request_teletriage"]


async def request_teletriage(
    svc: Services,
    *,
    alert_id: str,
    site_id: str,
    resident_id: str,
    requested_by: str,
    news2: Mapping[str, Any] | None,
    advice: str | None = None,
    taken_at: datetime | None = None,
    observations: Mapping[str, Any] | None = None,
    soft_signs: Sequence[str] = (),
    sbard: str = "",
    note: str = "",
    source_key: str | None = None,
) -> Dispatch:
    """Store the teletriage alert and open its dispatch (see the module docstring).
    ``news2`` is the set's ``news2`` document (``ObservationOutcome.document()``)."""
    now = svc.clock.now()
    risk = news2.get("risk") if news2 else None
    total = news2.get("total") if news2 else None
    priority = (svc.rules.site(site_id).news2_priority.get(risk) if risk else None) or 3
    detail: dict[str, Any] = {
        "teletriage": True,
        "queue": "clinical",
        "requested_by": requested_by,
        "soft_signs": list(soft_signs),
        "sbard": sbard,
        "note": note,
        "presented_at": now.isoformat(),
    }
    reason = "Teletriage request"
    if news2 is not None:
        detail.update(
            news2=total,
            risk=risk,
            red_flag=bool(news2.get("red_flag")),
            components=dict(news2.get("sub_scores") or {}),
            advice=advice,
        )
        if taken_at is not None:
            detail["observation_taken_at"] = taken_at.isoformat()
        if total is not None:
            reason += f": NEWS2 {total} ({risk})"
    if observations is not None:
        detail["observations"] = dict(observations)
    if soft_signs:
        reason += f"; soft signs: {', '.join(s.replace('_', ' ') for s in soft_signs)}"
    alert = Alert(
        alert_id=alert_id,
        kind=AlertKind.NEWS2,
        priority=min(max(priority, 1), 5),
        reason=reason[:500],
        ts=now,
        site_id=site_id,
        resident_id=resident_id,
        source_key=source_key,
        detail=detail,
    )
    await svc.store.write_alerts([alert])
    return await svc.dispatcher.open(alert, actor=requested_by)
