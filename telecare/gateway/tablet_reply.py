"""The MQTT reply to a care-home tablet that publishes its observation sets.

A set published on ``<prefix>/<site>/<tablet>/observation`` is stored and scored by the
pipeline (its ingest); :meth:`TabletReplies.submit` (the pipeline's ``on_scored`` hook)
queues it, and the reply loop answers with the document every face answers with
(``web/observations.py``: :func:`~telecare.gateway.web.observations.outcome_of` then
``ObservationOutcome.document()``, the care-home API's ``ObservationResult``: total,
sub-scores, risk band, red flag, missing parameters, RCP monitoring frequency and
response, the site's escalation advice and the dispatch opened for the most urgent
alert), plus the set's ``msg_id``, when it was scored and the alerts it raised. No names
or addresses: identifiers and numbers only.

**The reply topic.** The result is published (QoS 1, not retained) on::

    <prefix>/_gateway/tablets/<tablet device id>/result

which the shipped broker ACL lets only that tablet read (``pattern read
telecare/v1/_gateway/tablets/%u/#``, ``deploy/mosquitto/telecare.acl``). The tablet
matches the reply to its set by ``msg_id``. See ``docs/protocol.md``.

Resource handling
    :class:`TabletReplies` is an async context manager running one supervised loop,
    ``tablet-replies`` (:mod:`telecare.gateway.tasks`), in the gateway's supervisor when
    given one, else a private one. :meth:`TabletReplies.submit` only enqueues and never
    blocks ingest; the queue holds :data:`QUEUE_SIZE` replies and drops (and counts) the
    oldest when full: the set itself is stored either way, and a tablet that hears
    nothing can look the score up on the care-home page.

Error handling
    A publish that fails (broker away, no PUBACK in time) is retried every ``retry_s``
    (the helper's ``loop_retry`` line names the loop; the tablet's id is logged, never the
    values) until it succeeds, a newer reply pushes it out of the queue, or the context
    exits. Looking up the dispatch is best effort: if none is found within
    ``dispatch_wait_s`` the reply says ``"dispatch": null`` and lists the alert, which the
    dispatch will carry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from telecare.devices.model import ObservationSet
from telecare.gateway.backoff import Backoff
from telecare.gateway.logging import get_logger
from telecare.gateway.tasks import Loop, Loops, Supervisor
from telecare.gateway.web.observations import FindDispatch, ObservationOutcome, outcome_of
from telecare.rules.engine import EngineResult
from telecare.rules.news2 import News2Result

__all__ = [
    "QUEUE_SIZE",
    "ScoredSet",
    "TabletReplies",
    "encode_reply",
    "reply_topic",
]

#: Replies waiting for the broker. A tablet sends a set every few minutes at most, so
#: 256 covers a large care home through a broker restart.
QUEUE_SIZE = 256

log = get_logger("telecare.tablet_reply")

Publish = Callable[[str, bytes], Awaitable[None]]


def reply_topic(prefix: str, device_id: str) -> str:
    """The topic a tablet reads its results on."""
    return f"{prefix}/_gateway/tablets/{device_id}/result"


@dataclass(frozen=True, slots=True)
class ScoredSet:
    """An observation set the pipeline has stored and scored."""

    obs: ObservationSet
    news: News2Result
    result: EngineResult


def encode_reply(outcome: ObservationOutcome, now: datetime) -> bytes:
    """The reply document: the set's ``ObservationResult`` plus its ``msg_id``, when it
    was scored and the alerts it raised."""
    doc = {
        "v": 1,
        "msg_id": outcome.obs.msg_id,
        "scored_at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        **outcome.document(),
        "alerts": [
            {"alert_id": a.alert_id, "priority": a.priority}
            for a in sorted(outcome.result.alerts, key=lambda a: a.priority)
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
        supervisor: Supervisor | None = None,
    ) -> None:
        self._publish = publish
        self.prefix = prefix
        self._find_dispatch = find_dispatch
        self.retry_s = retry_s
        self.dispatch_wait_s = dispatch_wait_s
        self._queue: asyncio.Queue[ScoredSet] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._loops = Loops(supervisor)
        #: The reply being published (kept while the broker refuses it).
        self._pending: tuple[str, bytes, str] | None = None
        self.published = 0
        self.dropped = 0

    def submit(self, obs: ObservationSet, news: News2Result, result: EngineResult) -> None:
        """Enqueue a scored set (never blocks; drops the oldest when full)."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(ScoredSet(obs, news, result))

    async def __aenter__(self) -> Self:
        retry = Backoff(initial=self.retry_s, cap=self.retry_s, jitter=False)
        await self._loops.start(
            Loop("tablet-replies", self._step, retry=self._publish_failed, backoff=retry)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._loops.stop()

    async def _step(self) -> None:
        """One reply: take the next scored set (unless one is waiting to be sent again),
        build its answer and publish it. A failed publish raises :class:`_NotSent` and
        keeps the reply for the next attempt."""
        if self._pending is None:
            scored = await self._queue.get()
            outcome = await outcome_of(
                self._find_dispatch,
                scored.obs,
                scored.news,
                scored.result,
                wait_s=self.dispatch_wait_s,
            )
            topic = reply_topic(self.prefix, scored.obs.device_id)
            self._pending = (topic, encode_reply(outcome, datetime.now(UTC)), scored.obs.device_id)
        topic, payload, device_id = self._pending
        try:
            await self._publish(topic, payload)
        except Exception as exc:
            raise _NotSent(device_id, exc) from exc
        self._pending = None
        self.published += 1

    @staticmethod
    def _publish_failed(exc: BaseException) -> bool:
        return isinstance(exc, _NotSent)


class _NotSent(Exception):
    """The broker did not take a reply (retried by the loop); names the tablet only."""

    def __init__(self, device_id: str, error: Exception) -> None:
        super().__init__(f"reply to tablet {device_id} not sent: {type(error).__name__}")
