"""Operations endpoints: Prometheus ``/metrics``, ``/healthz`` (process) and ``/readyz``.

``/healthz`` answers 200 whenever the process serves HTTP at all (a liveness probe).
``/readyz`` runs every readiness check in :attr:`Services.readiness` (the gateway adds
the broker, the store and the spool) and answers 503 naming the ones that fail, so a
load balancer stops sending care homes to a gateway that cannot store their sets.
Neither needs a login and neither says anything about a resident.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from telecare.gateway.web.services import Services, services

__all__ = ["router"]

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
