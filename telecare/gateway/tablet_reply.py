"""What a care-home tablet is told about an observation set it sent, and the MQTT reply.

:func:`observation_result` is the one shape of "the NEWS2 result of a set" for every
channel a tablet uses: the MQTT reply below, and the care-home page and API
(``gateway/web``). It holds the total, sub-scores, risk band, red flag, missing
parameters, RCP monitoring frequency and clinical response, the site's escalation
advice, the alerts the set raised and the dispatch opened for the most urgent of them.
No names or addresses: identifiers and numbers only.

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
    ``"dispatch_id": null`` and names the alert, which the dispatch will carry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from telecare.devices.model import Alert, ObservationSet
from telecare.gateway.logging import get_logger
from telecare.gateway.tasks import stop_task
from telecare.rules.clock import raise_if_cancelling
from telecare.rules.engine import EngineResult
from telecare.rules.news2 import News2Result

__all__ = [
    "QUEUE_SIZE",
    "ScoredSet",
    "TabletReplies",
    "observation_result",
    "reply_topic",
]

#: Replies waiting for the broker. A tablet sends a set every few minutes at most, so
#: 256 covers a large care home through a broker restart.
QUEUE_SIZE = 256

log = get_logger("telecare.tablet_reply")

Publish = Callable[[str, bytes], Awaitable[None]]
FindDispatch = Callable[[str], Awaitable[str | None]]


def reply_topic(prefix: str, device_id: str) -> str:
    """The topic a tablet reads its results on."""
    return f"{prefix}/_gateway/tablets/{device_id}/result"


def observation_result(
    news: News2Result,
    advice: str | None,
    alerts: list[Alert],
    dispatch_id: str | None = None,
) -> dict[str, Any]:
    """The NEWS2 result of one observation set, as JSON-ready values."""
    interval = news.monitoring_interval
    urgent = sorted(alerts, key=lambda a: a.priority)
    return {
        "complete": news.complete,
        "total": news.total,
        "components": dict(news.components),
        "risk": news.risk,
        "red_flag": news.red_flag,
        "missing": list(news.missing),
        "spo2_scale": news.spo2_scale,
        "monitoring": news.monitoring,
        "monitoring_interval_s": int(interval.total_seconds()) if interval is not None else None,
        "response": news.response,
        "advice": advice,
        "alerts": [{"alert_id": a.alert_id, "priority": a.priority} for a in urgent],
        "dispatch_id": dispatch_id,
    }


@dataclass(frozen=True, slots=True)
class ScoredSet:
    """An observation set the pipeline has stored and scored."""

    obs: ObservationSet
    news: News2Result
    result: EngineResult


def encode_reply(scored: ScoredSet, dispatch_id: str | None, now: datetime) -> bytes:
    doc = {
        "v": 1,
        "msg_id": scored.obs.msg_id,
        "resident_id": scored.obs.resident_id,
        "ts": scored.obs.ts.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "scored_at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        **observation_result(scored.news, scored.result.advice, scored.result.alerts, dispatch_id),
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
            dispatch_id = await self._dispatch_of(scored.result.alerts)
            payload = encode_reply(scored, dispatch_id, datetime.now(UTC))
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

    async def _dispatch_of(self, alerts: list[Alert]) -> str | None:
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
