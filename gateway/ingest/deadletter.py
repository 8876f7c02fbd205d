"""Publish every dead letter on ``<prefix>/_gateway/deadletter`` (QoS 1, not retained).

The stored dead-letter row is the record; the topic is a live feed for installers and
monitoring (``mosquitto_sub -t 'telecare/v1/_gateway/deadletter'``). One JSON object per
dead letter::

    {"v": 1, "received_at": "2024-05-01T10:00:00Z", "source": "mqtt",
     "origin": "telecare/v1/s1/pend1/event", "device_id": "pend1",
     "reason": "malformed JSON at line 1 column 2: ...",
     "payload_bytes": 1234, "payload_b64": "...", "truncated": false}

``payload_b64`` holds at most :data:`MAX_PAYLOAD_PREVIEW` bytes of the payload.

Resource handling
    :class:`DeadLetterPublisher` is an async context manager owning one named task,
    ``deadletter-publisher``. :meth:`submit` (the pipeline's ``on_dead_letter`` hook)
    only enqueues, so a dead letter never waits for the broker and never fails the
    message that caused it. The queue holds :data:`QUEUE_SIZE` letters; when it is full
    the oldest is dropped and counted in ``dropped`` (the row is stored anyway).

Error handling
    A publish that fails (disconnected, no PUBACK in time) is retried after a short
    pause until it succeeds or the context exits; failures are logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from datetime import UTC
from types import TracebackType
from typing import Self

from gateway.logging import get_logger
from gateway.store.base import DeadLetter
from gateway.tasks import stop_task
from rules.clock import raise_if_cancelling

__all__ = ["MAX_PAYLOAD_PREVIEW", "QUEUE_SIZE", "DeadLetterPublisher", "encode_dead_letter"]

log = get_logger("telecare.ingest.deadletter")

#: Payload bytes copied into the published message (the stored row keeps all of it).
MAX_PAYLOAD_PREVIEW = 1024
#: Dead letters waiting to be published. A burst of bad input larger than this loses the
#: oldest *notifications* only; every dead letter is still stored.
QUEUE_SIZE = 256

Publish = Callable[[str, bytes], Awaitable[None]]


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """The JSON published for ``letter`` (see the module docstring)."""
    preview = letter.payload[:MAX_PAYLOAD_PREVIEW]
    doc = {
        "v": 1,
        "received_at": letter.received_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "source": letter.source,
        "origin": letter.origin,
        "device_id": letter.device_id,
        "reason": letter.reason,
        "payload_bytes": len(letter.payload),
        "payload_b64": base64.b64encode(preview).decode("ascii"),
        "truncated": len(letter.payload) > MAX_PAYLOAD_PREVIEW,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class DeadLetterPublisher:
    """Queue dead letters and publish them on ``topic`` through ``publish``."""

    def __init__(self, publish: Publish, topic: str, *, retry_s: float = 1.0) -> None:
        self._publish = publish
        self.topic = topic
        self.retry_s = retry_s
        self._queue: asyncio.Queue[DeadLetter] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None
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
        self._task = asyncio.create_task(self._run(), name="deadletter-publisher")
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
            letter = await self._queue.get()
            payload = encode_dead_letter(letter)
            while True:
                try:
                    await self._publish(self.topic, payload)
                except Exception as exc:
                    raise_if_cancelling()
                    log.warning("deadletter_publish_failed", topic=self.topic, error=repr(exc))
                    await asyncio.sleep(self.retry_s)
                    continue
                self.published += 1
                break
