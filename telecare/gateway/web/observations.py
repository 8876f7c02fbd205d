"""One path for an observation set, whichever face it came in by.

A set arrives three ways: the care-home API (``POST /api/v1/sites/{site}/residents/
{resident}/observations``, ``web/api_care_home.py``), the iPad page's own JSON
(``/tablet/api``, ``web/tablet_api.py``) and a tablet publishing over MQTT (the pipeline
handles it; ``tablet_reply.py`` sends the answer back). All three answer with the same
document, built here, by the same steps:

1. :func:`observe` hands the set to the pipeline (``Services.observations``), which
   stores its readings under the set's idempotency key (``obs.msg_id``: for the web
   faces :func:`observation_id` of the caller's ``Idempotency-Key``, so a retry stores
   nothing twice), scores NEWS2 with the resident's settings and raises what the site's
   rules call for. An MQTT set has been through that step already (the pipeline is its
   ingest).
2. :func:`outcome_of` takes the scored set: the escalation advice (the site's text for
   the band, or the advice of the alert a partial red set raised) and the dispatch the
   dispatch service opened for the most urgent alert (its intake is a queue: waited for,
   bounded; ``None`` when it is not there in time).
3. :meth:`ObservationOutcome.document` is the care-home API's ``ObservationResult``: the
   total, sub-scores, band, red flag, missing parameters, RCP monitoring frequency and
   response, advice and dispatch. Identifiers and numbers only, no names.

Error handling: a set the model or the pipeline refuses raises :class:`ObservationRefused`
(the faces answer 422, or dead-letter); storage being unavailable propagates as it is
(the faces answer 503 and the client retries with the same key). Looking up the dispatch
is best effort: a failure is logged and the answer says ``"dispatch": null``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from telecare.devices.model import Alert, Dispatch, ModelError, ObservationSet
from telecare.gateway.decode import Rejected
from telecare.gateway.logging import get_logger
from telecare.rules.engine import EngineResult
from telecare.rules.news2 import News2Result

__all__ = [
    "DISPATCH_WAIT_S",
    "FindDispatch",
    "ObservationOutcome",
    "ObservationRefused",
    "ObservationSink",
    "dispatch_document",
    "new_observation",
    "news2_document",
    "observation_id",
    "observe",
    "outcome_of",
    "wait_for_dispatch",
]

log = get_logger("telecare.web.observations")

#: How long an answer waits for the dispatch service to open the dispatch of an alert
#: the set just raised (its intake is a queue).
DISPATCH_WAIT_S: Final = 3.0

#: The dispatch opened for an alert, if any yet (``DispatchRepository.load_for_alert``).
FindDispatch = Callable[[str], Awaitable[Dispatch | None]]


class ObservationSink(Protocol):
    """Hands an observation set to the pipeline; returns once it is stored and scored
    (``Pipeline.handle_observation`` in the running gateway)."""

    def __call__(
        self,
        obs: ObservationSet,
        *,
        received_at: datetime | None = None,
        on_scored: Callable[[ObservationSet, News2Result, EngineResult], None] | None = None,
    ) -> Awaitable[News2Result | None]: ...


class ObservationRefused(Exception):
    """The set cannot be accepted as sent (an impossible value, an unknown resident);
    ``field`` names the value when one is to blame ("" otherwise)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


def observation_id(site_id: str, key: str) -> str:
    """The set's ``msg_id`` in the pipeline for a web face's ``Idempotency-Key`` (same
    site and key, same id: its readings are stored once however often it is retried)."""
    return "k" + hashlib.sha256(f"site:{site_id}\n{key}".encode()).hexdigest()[:40]


def new_observation(
    values: Mapping[str, Any],
    *,
    device_id: str,
    resident_id: str,
    site_id: str,
    taken_at: datetime,
    msg_id: str,
) -> ObservationSet:
    """The canonical set of a face's values; :class:`ObservationRefused` for a value the
    model refuses."""
    try:
        return ObservationSet(
            device_id=device_id,
            resident_id=resident_id,
            ts=taken_at.astimezone(UTC),
            msg_id=msg_id,
            site_id=site_id,
            **values,
        )
    except ModelError as exc:
        raise ObservationRefused(exc.field, exc.reason) from None


@dataclass(frozen=True, slots=True)
class ObservationOutcome:
    """A set stored and scored: what every face answers."""

    obs: ObservationSet
    news: News2Result
    result: EngineResult
    #: The site's escalation advice for this score (what to do now), if any.
    advice: str | None
    #: The dispatch opened for the most urgent alert the set raised, if it is open yet.
    dispatch: Dispatch | None

    @property
    def taken_at(self) -> datetime:
        """When the set counts as taken (the rules re-time a set dated ahead)."""
        return self.result.rule_ts or self.obs.ts

    def document(self) -> dict[str, Any]:
        """The care-home API's ``ObservationResult`` as JSON-ready values."""
        return {
            "site_id": self.obs.site_id,
            "resident_id": self.obs.resident_id,
            "taken_at": _iso(self.taken_at),
            "news2": news2_document(self.news),
            "advice": self.advice,
            "dispatch": dispatch_document(self.dispatch) if self.dispatch is not None else None,
        }


async def observe(
    sink: ObservationSink | None,
    find_dispatch: FindDispatch,
    obs: ObservationSet,
    *,
    received_at: datetime,
    wait_s: float = DISPATCH_WAIT_S,
) -> ObservationOutcome:
    """Store and score ``obs`` through the pipeline, then :func:`outcome_of` it (see the
    module docstring). ``sink`` ``None``: this gateway takes no sets (a 503 for a face)."""
    if sink is None:
        raise LookupError("this gateway does not accept observation sets")
    scored: list[tuple[News2Result, EngineResult]] = []
    try:
        await sink(obs, received_at=received_at, on_scored=lambda _o, n, r: scored.append((n, r)))
    except Rejected as exc:
        raise ObservationRefused("", exc.reason) from None
    if not scored:  # pragma: no cover - the pipeline scores every set it accepts
        raise RuntimeError(f"the pipeline accepted set {obs.msg_id} without scoring it")
    news, result = scored[0]
    return await outcome_of(find_dispatch, obs, news, result, wait_s=wait_s)


async def outcome_of(
    find_dispatch: FindDispatch,
    obs: ObservationSet,
    news: News2Result,
    result: EngineResult,
    *,
    wait_s: float = DISPATCH_WAIT_S,
) -> ObservationOutcome:
    """The answer for a set the pipeline has stored and scored: its advice and the
    dispatch of its most urgent alert (waited for up to ``wait_s``)."""
    dispatch = None
    if result.alerts:
        alert_id = min(result.alerts, key=_urgency).alert_id
        dispatch = await wait_for_dispatch(find_dispatch, alert_id, wait_s)
    return ObservationOutcome(obs, news, result, result.advice, dispatch)


def _urgency(alert: Alert) -> tuple[int, str]:
    return alert.priority, alert.alert_id


async def wait_for_dispatch(
    find_dispatch: FindDispatch, alert_id: str, wait_s: float = DISPATCH_WAIT_S
) -> Dispatch | None:
    """The dispatch opened for ``alert_id``, polled (10 ms doubling to 200 ms) until it
    is there or ``wait_s`` has passed; ``None`` then, or when the lookup fails."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = 0.01
    while True:
        try:
            found = await find_dispatch(alert_id)
        except Exception as exc:  # best effort: the answer goes out without it
            log.warning("dispatch_lookup_failed", alert_id=alert_id, error=type(exc).__name__)
            return None
        if found is not None or loop.time() >= deadline:
            return found
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


def news2_document(news: News2Result) -> dict[str, Any]:
    """A NEWS2 result as JSON-ready values (the care-home API's ``News2Out``)."""
    interval = news.monitoring_interval
    return {
        "complete": news.complete,
        "total": news.total,
        "sub_scores": dict(news.components),
        "risk": news.risk,
        "red_flag": news.red_flag,
        "missing": list(news.missing),
        "monitoring": news.monitoring,
        "monitoring_interval_s": int(interval.total_seconds()) if interval is not None else None,
        "response": news.response,
        "spo2_scale": news.spo2_scale,
    }


def dispatch_document(d: Dispatch) -> dict[str, Any]:
    """A dispatch as JSON-ready values (the care-home API's ``DispatchOut``)."""
    return {
        "dispatch_id": d.dispatch_id,
        "alert_id": d.alert_id,
        "state": d.state.value,
        "priority": d.priority,
        "site_id": d.site_id,
        "resident_id": d.resident_id,
        "responder_id": d.responder_id,
        "cascade_step": d.cascade_step,
        "outcome": d.outcome,
        "version": d.version,
        "created_at": _iso(d.created_at),
        "updated_at": _iso(d.updated_at),
    }


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
