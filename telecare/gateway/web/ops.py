"""Operations endpoints: Prometheus ``/metrics``, ``/healthz`` (process) and ``/readyz``.

``/healthz`` answers 200 whenever the process serves HTTP at all (a liveness probe).
``/readyz`` runs every readiness check in :attr:`Services.readiness` (the gateway adds
the broker, the store and the spool) and answers 503 naming the ones that fail, so a
load balancer stops sending care homes to a gateway that cannot store their sets.
Neither needs a login and neither says anything about a resident.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from telecare.gateway.store.durable import DurableStore
from telecare.gateway.web.services import Services, services

if TYPE_CHECKING:
    from telecare.gateway.app import Gateway

__all__ = ["open_alarm_metrics", "reason_class", "router", "watch_gateway"]

router = APIRouter(tags=["operations"])

#: A readiness check that takes longer than this counts as failed (the probe must answer).
CHECK_TIMEOUT_S = 2.0


class Health(BaseModel):
    status: str


class Check(BaseModel):
    name: str
    ok: bool
    detail: str


class Ready(BaseModel):
    ready: bool
    checks: list[Check]


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
async def readyz(svc: Annotated[Services, Depends(services)]) -> Response:
    """Broker, store and spool: 200 when all are fine, else 503 with each check's state."""
    checks = []
    for check in svc.readiness:
        try:
            name, ok, detail = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        except TimeoutError:
            name, ok, detail = getattr(check, "__name__", "check"), False, "timed out"
        checks.append(Check(name=name, ok=ok, detail=detail))
    ready = all(c.ok for c in checks)
    body = Ready(ready=ready, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(svc: Annotated[Services, Depends(services)]) -> Response:
    """Prometheus text exposition of :class:`~telecare.gateway.web.metrics.Metrics`."""
    await svc.metrics.refresh()
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- a running gateway's figures -------------------------------------------------------------
#: Distinct dead-letter reason labels kept; any more are counted as "other".
_MAX_REASONS = 40
_VOLATILE = re.compile(r"'[^']*'|\"[^\"]*\"|\b[0-9a-f]{8,}\b|\d+")


def reason_class(reason: str) -> str:
    """A dead-letter reason without what varies per message (ids, numbers, quoted text),
    cut at its first colon: a label with a bounded number of values."""
    head = _VOLATILE.sub("_", reason).split(":", 1)[0].strip()
    return " ".join(head.split())[:60] or "unknown"


def watch_gateway(gw: Gateway, svc: Services) -> None:
    """Register the running gateway's metrics and readiness checks on ``svc``."""
    metrics = svc.metrics
    reasons: Counter[str] = Counter()
    letters = gw.feed.subscribe(size=4096)  # drained at every scrape (bounded between them)

    def received() -> dict[str, float]:
        counters = gw.pipeline.counters
        return {
            k.removeprefix("received_"): v for k, v in counters.items() if k.startswith("received_")
        }

    metrics.ingest.source = received
    metrics.dead_letters.source = lambda: reasons

    async def refresh() -> None:
        while not letters.empty():
            activity = letters.get_nowait()
            if activity.kind == "dead_letter":
                label = reason_class(str(activity.data.get("reason", "")))
                if label not in reasons and len(reasons) >= _MAX_REASONS:
                    label = "other"
                reasons[label] += 1
        metrics.queue_depth.labels("dispatch_intake").set(gw.dispatcher.intake.qsize())
        metrics.queue_depth.labels("dead_letter_publish").set(gw.dead_letters.depth)
        if isinstance(gw.store, DurableStore):
            stats = gw.store.stats()
            metrics.spool_bytes.set(stats.get("spool_bytes", 0))
            metrics.store_degraded.set(stats.get("degraded", 0))
            metrics.queue_depth.labels("readings_batch").set(stats.get("queue_depth", 0))
        await open_alarm_metrics(svc)

    async def broker() -> tuple[str, bool, str]:
        ok = gw.mqtt.connected.is_set()
        return "broker", ok, "connected" if ok else "not connected (reconnecting)"

    async def store() -> tuple[str, bool, str]:
        try:
            await svc.store.sql.fetch_one("SELECT 1")
        except Exception as exc:
            return "store", False, f"unreachable ({type(exc).__name__})"
        return "store", True, "reachable"

    async def spool() -> tuple[str, bool, str]:
        if not isinstance(gw.store, DurableStore):
            return "spool", True, "not used"
        stats = gw.store.stats()
        used, most = stats.get("spool_bytes", 0), stats.get("spool_max_bytes", 0)
        full = bool(most) and used >= most * 0.9
        state = "spooling: database away" if stats.get("degraded") else "idle"
        return "spool", not full, f"{state}; {used} of {most} bytes"

    metrics.add_refresher(refresh)
    svc.readiness.extend([broker, store, spool])


async def open_alarm_metrics(svc: Services) -> None:
    """Open dispatches by priority, and the age of the oldest."""
    now = svc.clock.now()
    by_priority = await svc.store.open_by_priority()
    for priority in range(1, 6):
        count = by_priority.get(priority, (0, now))[0]
        svc.metrics.open_alarms.labels(str(priority)).set(count)
    oldest = min((at for _, at in by_priority.values()), default=now)
    svc.metrics.oldest_open_alarm.set(max(0.0, (now - oldest).total_seconds()))
