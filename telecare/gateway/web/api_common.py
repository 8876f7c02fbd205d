"""Pieces both ``/api/v1`` routers share: response models, the 422 shape for errors the
model layer finds, the documented security schemes, and ``Idempotency-Key`` handling.

Idempotency (:func:`idempotent`): the first request with a key claims it (a row with
status 0) before doing anything; its answer is stored with the key and replayed, byte
for byte, to every retry with the same key and the same request (``Idempotent-Replayed:
true``). The same key with a different request is 409; a retry that arrives while the
first is still being worked on is 409 with ``Retry-After: 1`` (a claim older than
:data:`CLAIM_TIMEOUT`, left by a gateway that stopped mid-request, is taken over). A
request that fails (an exception, a 4xx) gives its key back, so a corrected retry can
use it. Keys are scoped per site and kept :data:`KEEP_ANSWERS` (pruned at most hourly,
on the way past).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Final

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel

from telecare.devices.model import Dispatch, DispatchState
from telecare.gateway.web.auth import bearer_scheme, cookie_scheme
from telecare.gateway.web.services import Services

__all__ = [
    "IDEMPOTENCY_HEADER",
    "KEEP_ANSWERS",
    "DispatchOut",
    "ErrorOut",
    "bearer_scheme",
    "body_hash",
    "cookie_scheme",
    "dispatch_out",
    "idempotent",
    "request_hash",
    "unprocessable",
]

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
KEEP_ANSWERS: Final = timedelta(days=7)
_PRUNE_EVERY: Final = timedelta(hours=1)
#: A request still unanswered after this long was lost (the gateway stopped under it).
CLAIM_TIMEOUT: Final = timedelta(minutes=1)


class ErrorOut(BaseModel):
    detail: str


class DispatchOut(BaseModel):
    dispatch_id: str
    alert_id: str
    state: DispatchState
    priority: int
    site_id: str | None
    resident_id: str | None
    responder_id: str | None
    cascade_step: int
    outcome: str | None
    #: Send it back as ``version`` with an action: the action applies only if nobody
    #: changed the dispatch since (else 409).
    version: int
    created_at: datetime
    updated_at: datetime


def dispatch_out(d: Dispatch) -> DispatchOut:
    return DispatchOut(
        dispatch_id=d.dispatch_id,
        alert_id=d.alert_id,
        state=d.state,
        priority=d.priority,
        site_id=d.site_id,
        resident_id=d.resident_id,
        responder_id=d.responder_id,
        cascade_step=d.cascade_step,
        outcome=d.outcome,
        version=d.version,
        created_at=d.created_at,
        updated_at=d.updated_at,
    )


def unprocessable(field: str, message: str, where: str = "body") -> RequestValidationError:
    """A 422 in FastAPI's own shape (one entry per field) for what the model layer refused."""
    return RequestValidationError(
        [{"loc": (where, field) if field else (where,), "msg": message, "type": "value_error"}]
    )


def request_hash(request: Request, body: BaseModel) -> str:
    """What makes two requests "the same" for a key: the path and the parsed body."""
    return body_hash(request.url.path, body)


def body_hash(path: str, body: BaseModel) -> str:
    """SHA-256 of the path and the body as parsed (so spacing and key order do not count)."""
    canonical = json.dumps(
        {"path": path, "body": body.model_dump(mode="json")},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def idempotent(
    svc: Services,
    scope: str,
    key: str,
    body_hash: str,
    work: Callable[[], Awaitable[tuple[int, BaseModel]]],
) -> Response:
    """Run ``work`` once per ``(scope, key)``; see the module docstring."""
    accounts = svc.accounts
    now = svc.clock.now()
    await accounts.prune_answers(now - KEEP_ANSWERS, now, every=_PRUNE_EVERY)
    for _ in range(3):
        if await accounts.reserve_answer(scope, key, body_hash, now):
            break
        answer = await accounts.answer(scope, key)
        if answer is None:
            continue  # the first request just gave it back: claim it
        if answer.body_hash != body_hash:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"this {IDEMPOTENCY_HEADER} was used for a different request;"
                " use a new key for a new request",
            )
        if answer.status == 0 and now - answer.created_at > CLAIM_TIMEOUT:
            await accounts.release_answer(scope, key)
            continue
        if answer.status == 0:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"a request with this {IDEMPOTENCY_HEADER} is still being processed;"
                " retry in a moment",
                headers={"Retry-After": "1"},
            )
        return Response(
            answer.response,
            status_code=answer.status,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    else:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"this {IDEMPOTENCY_HEADER} is in contention; retry in a moment",
            headers={"Retry-After": "1"},
        )
    try:
        code, model = await work()
    except BaseException:
        await accounts.release_answer(scope, key)
        raise
    text = model.model_dump_json()
    await accounts.keep_answer(scope, key, code, text)
    return Response(text, status_code=code, media_type="application/json")
