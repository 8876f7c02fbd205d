"""What a care-home tablet is told about an observation set it sent, and the MQTT reply.

:func:`observation_result` is "the NEWS2 result of a set" in the care-home API's
``ObservationResult`` shape (``web/api_care_home.py``), so a tablet gets the same
document over MQTT as over HTTP: the total, sub-scores, risk band, red flag, missing
parameters, RCP monitoring frequency and clinical response, the site's escalation
advice and the dispatch opened for the most urgent alert the set raised. No names or
addresses: identifiers and numbers only.

**The reply topic.** After a set published on ``<prefix>/<site>/<tablet>/observation`` is
stored and scored, the gateway publishes its result (QoS 1, not retained) on::

    <prefix>/_gateway/tablets/<tablet device id>/result

which the shipped broker ACL lets only that tablet read (``pattern read
telecare/v1/_gateway/tablets/%u/#``, ``deploy/mosquitto/telecare.acl``). The tablet
matches the reply to its set by ``msg_id``. See ``docs/protocol.md``.

Resource handling
    :class:`TabletReplies` is an async context manager owning one named task,
    ``tablet-replies``. :meth:`TabletReplies.submit` (the pipeline's ``on_scored`` hook)
    only enqueues and never blocks ingest; the queue holds :data:`QUEUE_SIZE` replies and
    drops (and counts) the oldest when full: the set itself is stored either way, and a
    tablet that hears nothing can look the score up on the care-home page.

Error handling
    A publish that fails (broker away, no PUBACK in time) is retried every ``retry_s``
    until it succeeds, a newer reply pushes it out of the queue, or the context exits;
    failures are logged with the tablet's id, never the values. Looking up the dispatch
    is best effort: if none is found within ``dispatch_wait_s`` the reply says
    ``"dispatch": null`` and lists the alert, which the dispatch will carry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from telecare.devices.model import Alert, Dispatch, ObservationSet
from telecare.gateway.logging import get_logger
from telecare.gateway.tasks import stop_task
from telecare.rules.clock import raise_if_cancelling
from telecare.rules.engine import EngineResult
from telecare.rules.news2 import News2Result

__all__ = [
    "QUEUE_SIZE",
    "ScoredSet",
    "TabletReplies",
    "dispatch_document",
    "news2_document",
    "observation_result",
    "reply_topic",
]

#: Replies waiting for the broker. A tablet sends a set every few minutes at most, so
#: 256 covers a large care home through a broker restart.
QUEUE_SIZE = 256

log = get_logger("telecare.tablet_reply")

Publish = Callable[[str, bytes], Awaitable[None]]
FindDispatch = Callable[[str], Awaitable[Dispatch | None]]


def reply_topic(prefix: str, device_id: str) -> str:
    """The topic a tablet reads its results on."""
    return f"{prefix}/_gateway/tablets/{device_id}/result"


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


def observation_result(
    news: News2Result,
    advice: str | None,
    *,
    site_id: str | None,
    resident_id: str,
    taken_at: datetime,
    dispatch: Dispatch | None = None,
) -> dict[str, Any]:
    """The result of one observation set, in the care-home API's ``ObservationResult``
    shape: the NEWS2 result, the site's advice and the dispatch it opened, if any."""
    return {
        "site_id": site_id,
        "resident_id": resident_id,
        "taken_at": _iso(taken_at),
        "news2": news2_document(news),
        "advice": advice,
        "dispatch": dispatch_document(dispatch) if dispatch is not None else None,
    }


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ScoredSet:
    """An observation set the pipeline has stored and scored."""

    obs: ObservationSet
    news: News2Result
    result: EngineResult


def encode_reply(scored: ScoredSet, dispatch: Dispatch | None, now: datetime) -> bytes:
    """The reply document: ``observation_result`` plus the set's ``msg_id``, when it was
    scored and the alerts it raised."""
    obs, result = scored.obs, scored.result
    doc = {
        "v": 1,
        "msg_id": obs.msg_id,
        "scored_at": _iso(now),
        **observation_result(
            scored.news,
            result.advice,
            site_id=obs.site_id,
            resident_id=obs.resident_id,
            taken_at=result.rule_ts or obs.ts,
            dispatch=dispatch,
        ),
        "alerts": [
            {"alert_id": a.alert_id, "priority": a.priority}
            for a in sorted(result.alerts, key=lambda a: a.priority)
        ],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class TabletReplies:
    """Queue scored sets and publish each result on its tablet's reply topic."""

    def __init__(
        self,
        publish: Publish,
        prefix: str,
        find_dispatch: FindDispatch,
        *,
        retry_s: float = 1.0,
        dispatch_wait_s: float = 2.0,
    ) -> None:
        self._publish = publish
        self.prefix = prefix
        self._find_dispatch = find_dispatch
        self.retry_s = retry_s
        self.dispatch_wait_s = dispatch_wait_s
        self._queue: asyncio.Queue[ScoredSet] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.dropped = 0

    def submit(self, obs: ObservationSet, news: News2Result, result: EngineResult) -> None:
        """Enqueue a scored set (never blocks; drops the oldest when full)."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(ScoredSet(obs, news, result))

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="tablet-replies")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        while True:
            raise_if_cancelling()  # a swallowed cancellation must still end the loop
            scored = await self._queue.get()
            dispatch = await self._dispatch_of(scored.result.alerts)
            payload = encode_reply(scored, dispatch, datetime.now(UTC))
            topic = reply_topic(self.prefix, scored.obs.device_id)
            while True:
                try:
                    await self._publish(topic, payload)
                except Exception as exc:
                    raise_if_cancelling()
                    log.warning(
                        "tablet_reply_failed", device_id=scored.obs.device_id, error=repr(exc)
                    )
                    await asyncio.sleep(self.retry_s)
                    continue
                self.published += 1
                break

    async def _dispatch_of(self, alerts: list[Alert]) -> Dispatch | None:
        """The dispatch opened for the most urgent alert, waiting a little for the
        dispatch service's queue; ``None`` when there is no alert or it is not open yet."""
        if not alerts:
            return None
        alert_id = min(alerts, key=lambda a: a.priority).alert_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.dispatch_wait_s
        while True:
            try:
                found = await self._find_dispatch(alert_id)
            except Exception as exc:  # best effort: the reply goes out without it
                log.warning("tablet_reply_dispatch_lookup_failed", error=repr(exc))
                return None
            if found is not None or loop.time() >= deadline:
                return found
            await asyncio.sleep(0.05)
