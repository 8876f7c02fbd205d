"""Dead letters: what is published about them, and how many one sender may cause.

**Publishing.** Every dead letter is published on ``<prefix>/_gateway/deadletter`` (QoS 1,
not retained). The stored dead-letter row (with a bounded payload preview, see
:data:`gateway.store.rows.DEAD_LETTER_PREVIEW`) is the record; the topic is a live feed for
installers and monitoring (``mosquitto_sub -t 'telecare/v1/_gateway/deadletter'``) and
carries the reason and ids, never the payload, which may hold personal data::

    {"v": 1, "received_at": "2024-05-01T10:00:00Z", "source": "mqtt",
     "origin": "telecare/v1/s1/pend1/event", "device_id": "pend1",
     "reason": "malformed JSON at line 1 column 2", "payload_bytes": 1234}

**Rate limit.** :class:`DeadLetterLimiter` gives each sender (the device, or for input
naming no known device the topic's device level or the port) a token bucket of
:data:`BURST` dead letters refilled at :data:`PER_SECOND`. Past it the sender's bad input
is *shed*: counted, not stored and not published, so a flooding device costs the store
nothing and cannot delay another device's alarm. The first shed of an episode raises one
technical alert (:func:`flood_alert`, priority 4, like a tamper); the episode ends once
the sender has been quiet long enough to refill its bucket.

Resource handling
    :class:`DeadLetterPublisher` is an async context manager running one supervised loop,
    ``deadletter-publisher`` (:mod:`telecare.gateway.tasks`). :meth:`submit` (the
    pipeline's ``on_dead_letter`` hook) only enqueues, so a dead letter never waits for
    the broker and never fails the message that caused it. The queue holds
    :data:`QUEUE_SIZE` letters; when it is full the oldest is dropped and counted in
    ``dropped`` (the row is stored anyway).

Error handling
    A publish that fails (disconnected, no PUBACK in time: any exception from the
    publisher) is retried every ``retry_s`` seconds until it succeeds or the context
    exits; failures are logged (``loop_retry``).
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Self

from telecare.devices.model import Alert, AlertKind, Device
from telecare.gateway.backoff import Backoff
from telecare.gateway.logging import get_logger, scrub_reason
from telecare.gateway.store.rows import DeadLetter
from telecare.gateway.tasks import Loop, Loops, Supervisor, retry_until_done
from telecare.rules.alarms import alarm_id_for

__all__ = [
    "BURST",
    "FLOOD_PRIORITY",
    "PER_SECOND",
    "QUEUE_SIZE",
    "DeadLetterLimiter",
    "DeadLetterPublisher",
    "Verdict",
    "encode_dead_letter",
    "flood_alert",
    "sender_key",
]

log = get_logger("telecare.ingest.deadletter")

#: Dead letters waiting to be published. A burst of bad input larger than this loses the
#: oldest *notifications* only; every dead letter is still stored.
QUEUE_SIZE = 256
#: Dead letters one sender may cause back to back before the rest are shed: a broken
#: firmware's retries fit; a flood does not.
BURST = 30
#: Sustained dead letters per second per sender (one every two seconds).
PER_SECOND = 0.5
#: Senders tracked at once; the least recently heard is forgotten first.
MAX_SENDERS = 10_000
#: Priority of the technical alert raised when a sender starts flooding (as a tamper).
FLOOD_PRIORITY = 4

Publish = Callable[[str, bytes], Awaitable[None]]


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """The JSON published for ``letter`` (see the module docstring): no payload."""
    doc = {
        "v": 1,
        "received_at": letter.received_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "source": letter.source,
        "origin": letter.origin,
        "device_id": letter.device_id,
        "reason": scrub_reason(letter.reason),
        "payload_bytes": letter.payload_bytes,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- rate limit


class Verdict(enum.Enum):
    ADMIT = "admit"  # store and publish it
    SHED = "shed"  # count it only
    FLOOD_STARTED = "flood_started"  # count it, and raise the flood alert


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    flooding: bool = False
    shed: int = 0
    since: float = 0.0


def sender_key(source: str, origin: str, device_id: str | None, topic_prefix: str) -> str:
    """Who a dead letter is charged to: the device when known; for MQTT input naming no
    known device the topic's device level (the broker ACL pins it to the sender's user);
    otherwise the source and origin (a serial port, an endpoint)."""
    if device_id:
        return device_id
    prefix = topic_prefix.rstrip("/") + "/"
    if source == "mqtt" and origin.startswith(prefix):
        levels = origin[len(prefix) :].split("/")
        if len(levels) >= 2:
            return levels[1]
    return f"{source}:{origin}"


class DeadLetterLimiter:
    """Token bucket per sender (see the module docstring). Not thread-safe; the pipeline
    calls it from the event loop. ``now`` is in seconds on any monotonic scale."""

    def __init__(
        self, *, burst: int = BURST, per_second: float = PER_SECOND, max_senders: int = MAX_SENDERS
    ) -> None:
        if burst < 1 or per_second <= 0:
            raise ValueError("burst must be >= 1 and per_second > 0")
        self.burst = burst
        self.per_second = per_second
        self.max_senders = max_senders
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.shed_total = 0
        self.floods = 0

    def admit(self, key: str, now: float) -> Verdict:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            elapsed = max(0.0, now - bucket.at)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.per_second)
            bucket.at = now
        self._buckets[key] = bucket
        if len(self._buckets) > self.max_senders:
            self._buckets.popitem(last=False)
        if bucket.flooding and bucket.tokens >= self.burst:
            log.warning(
                "dead_letter_flood_ended",
                sender=key,
                shed=bucket.shed,
                seconds=round(now - bucket.since, 1),
            )
            bucket.flooding, bucket.shed = False, 0
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Verdict.ADMIT
        bucket.shed += 1
        self.shed_total += 1
        if bucket.flooding:
            return Verdict.SHED
        bucket.flooding, bucket.since = True, now
        self.floods += 1
        return Verdict.FLOOD_STARTED

    def shed(self, key: str) -> int:
        """Dead letters shed from ``key`` in its current episode (0 when not flooding)."""
        bucket = self._buckets.get(key)
        return bucket.shed if bucket is not None else 0

    def stats(self) -> dict[str, int]:
        flooding = sum(1 for b in self._buckets.values() if b.flooding)
        return {"dead_letters_shed": self.shed_total, "floods": self.floods, "flooding": flooding}


def flood_alert(key: str, device: Device | None, at: datetime, reason: str) -> Alert:
    """The technical alert for a sender that started flooding at ``at``: one per episode
    (the id is derived from the sender and the start time)."""
    started = at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return Alert(
        alert_id=alarm_id_for(key, f"dead-letter-flood/{started}"),
        kind=AlertKind.TECHNICAL,
        priority=FLOOD_PRIORITY,
        reason=(
            f"device {key} floods the gateway with input it rejects; past its allowance "
            f"the dead letters are counted, not stored. Last reason: {scrub_reason(reason)[:200]}"
        ),
        ts=at,
        site_id=device.site_id if device is not None else None,
        resident_id=device.resident_id if device is not None else None,
        device_id=device.device_id if device is not None else None,
        source_key=f"{key}/dead-letter-flood/{started}",
        detail={"sender": key, "started": started},
    )


class DeadLetterPublisher:
    """Queue dead letters and publish them on ``topic`` through ``publish``."""

    def __init__(
        self,
        publish: Publish,
        topic: str,
        *,
        retry_s: float = 1.0,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._publish = publish
        self.topic = topic
        self.retry_s = retry_s
        self._queue: asyncio.Queue[DeadLetter] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._loops = Loops(supervisor)
        self.published = 0
        self.dropped = 0

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def submit(self, letter: DeadLetter) -> None:
        """Enqueue ``letter`` (never blocks; drops the oldest when full)."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(letter)

    async def __aenter__(self) -> Self:
        await self._loops.start(Loop("deadletter-publisher", self._step))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._loops.stop()

    async def _step(self) -> None:
        """Publish the next dead letter, retrying until the broker has it."""
        letter = await self._queue.get()
        payload = encode_dead_letter(letter)
        await retry_until_done(
            Loop(
                "deadletter-publish",
                partial(self._publish, self.topic, payload),
                retry=_any_publish_failure,
                backoff=Backoff(initial=self.retry_s, cap=self.retry_s, jitter=False),
            )
        )
        self.published += 1


def _any_publish_failure(exc: BaseException) -> bool:
    """A dead letter's publish is retried whatever failed: the row is stored already,
    and nothing about one letter can make publishing it fail for good."""
    return True
