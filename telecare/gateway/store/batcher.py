"""Batch readings for the database: bounded batches in front of one flusher task.

``await batcher.submit(readings)`` returns only once the readings are durably stored or
spooled (whatever ``write`` does), so the MQTT ingest acknowledges a message only then.
When a batch is written (``max_rows``, ``max_age``, ``linger``) and how the queue is
bounded (``queue_size`` submissions, default ``2 * max_rows``; beyond it ``submit`` waits
for room, so the backpressure reaches the broker): docs/storage.md, "Ingest".

Resource handling: ``async with ReadingBatcher(write) as b`` starts the flusher, a
supervised loop (``gateway.tasks``; in ``supervisor`` when given, else a private one).
Leaving stops new submissions, flushes everything queued, then stops the flusher; a
submission still waiting for room then is refused with ``RuntimeError`` (never queued,
so its sender was not acknowledged).

Errors: if ``write`` raises, every submission of that batch gets the exception (its
producer does not acknowledge), it is logged and counted (``stats()["errors"]``) and the
flusher goes on. A producer cancelled while waiting does not cancel the write of its
rows. A failure of the flusher itself (a bug) stops it loudly (``LoopFailed``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Self

import structlog

from telecare.devices.model import Reading
from telecare.gateway.tasks import Loop, Loops, Supervisor

__all__ = ["Destination", "ReadingBatcher"]

log = structlog.get_logger(__name__)

#: Where a batch went: the database, or the local spool while the database is away.
Destination = Literal["store", "spool"]


@dataclass(slots=True)
class _Batch:
    """The rows of one write and one future per submission that waits for it."""

    opened: float  # loop time of the first submission
    rows: list[Reading] = field(default_factory=list)
    waiters: list[asyncio.Future[Destination]] = field(default_factory=list)


class ReadingBatcher:
    def __init__(
        self,
        write: Callable[[list[Reading]], Awaitable[Destination]],
        *,
        max_rows: int = 5000,
        max_age: float = 0.2,
        linger: float = 0.001,
        queue_size: int | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        if max_rows < 1 or max_age <= 0 or linger <= 0:
            raise ValueError("max_rows must be >= 1, max_age and linger > 0")
        self._write = write
        self.max_rows = max_rows
        self.max_age = max_age
        self.linger = min(linger, max_age)
        # Two batches' worth of messages: the next fills while one is being written.
        self.queue_size = queue_size or 2 * max_rows
        self._batches: deque[_Batch] = deque()  # oldest first; only the last one grows
        self._queued = 0  # submissions in self._batches
        self._last_submit = 0.0
        self._room = asyncio.Event()
        self._room.set()
        self._nudge = asyncio.Event()  # ends the flusher's nap early
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loops = Loops(supervisor)
        self._idle = asyncio.Event()  # closing with nothing queued, or the flusher ended
        self._closing = False
        self._counts = dict.fromkeys(("rows_flushed", "rows_spooled", "flushes", "errors"), 0)

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        await self._loops.start(Loop("reading-batcher-flusher", self._step))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        self._nudge.set()
        try:
            await self._idle.wait()
        finally:
            await self._loops.stop()
            self._room.set()  # whoever still waits for room is refused by enqueue

    async def submit(self, readings: Sequence[Reading]) -> Destination:
        """Queue readings and wait until they are stored or spooled; returns where."""
        while (fut := self.enqueue(readings)) is None:  # backpressure: wait for room
            await self._room.wait()
        # Cancelling the caller cancels only its own future: the rows stay in the batch
        # and the flusher skips resolving a cancelled future.
        return await fut

    def enqueue(self, readings: Sequence[Reading]) -> asyncio.Future[Destination] | None:
        """Queue readings without waiting (``submit`` without the wait): the future
        resolves to where they went, or fails with their batch's error. ``None`` when the
        queue is full: nothing was queued; ``await submit(...)`` waits for room."""
        loop = self._loop
        if self._closing or loop is None:
            raise RuntimeError("ReadingBatcher is not running; use 'async with'")
        if self._queued >= self.queue_size:
            self._room.clear()
            return None
        fut: asyncio.Future[Destination] = loop.create_future()
        if not readings:
            fut.set_result("store")
            return fut
        batches = self._batches
        if batches and len(batches[-1].rows) < self.max_rows:
            batch = batches[-1]
        else:
            batch = _Batch(loop.time())
            batches.append(batch)
        batch.rows += readings
        waiters = batch.waiters
        waiters.append(fut)
        self._queued += 1
        self._last_submit = loop.time()
        if len(waiters) == 1 or len(batch.rows) >= self.max_rows:
            self._nudge.set()  # first rows after an idle spell, or a full batch
        return fut

    def stats(self) -> dict[str, int]:
        return {"queue_depth": self._queued, "queue_size": self.queue_size, **self._counts}

    async def _nap(self, delay: float | None) -> None:
        """Sleep ``delay`` seconds (``None``: until nudged), or less if nudged."""
        assert self._loop is not None
        self._nudge.clear()
        # A timer rather than asyncio.timeout: its cancellation costs ~10 us a nap.
        handle = None if delay is None else self._loop.call_later(delay, self._nudge.set)
        try:
            await self._nudge.wait()
        finally:
            if handle is not None:
                handle.cancel()

    async def _step(self) -> None:
        """The flusher's step: the next batch written, or a nap until there is one."""
        assert self._loop is not None
        try:
            if not (batches := self._batches):
                if self._closing:
                    self._idle.set()
                await self._nap(None)  # until nudged (once idle and closing: until stopped)
                return
            batch = batches[0]
            while len(batch.rows) < self.max_rows and not self._closing:
                due = min(batch.opened + self.max_age, self._last_submit + self.linger)
                if (delay := due - self._loop.time()) <= 0:
                    break
                await self._nap(delay)
            batches.popleft()  # later submissions start a new batch
            self._queued -= len(batch.waiters)
            if self._queued < self.queue_size:
                self._room.set()
            await self._flush(batch)
        except BaseException:
            self._idle.set()  # cancelled or failed: nothing more will be flushed
            raise

    async def _flush(self, batch: _Batch) -> None:
        readings, counts = batch.rows, self._counts
        started = time.perf_counter()
        try:
            where = await self._write(readings)
        except Exception as exc:  # every producer of the batch sees it; we carry on
            counts["errors"] += 1
            log.error(
                "reading_batch_failed",
                rows=len(readings),
                error=repr(exc),
                seconds=round(time.perf_counter() - started, 3),
            )
            for fut in batch.waiters:
                if not fut.done():
                    fut.set_exception(exc)
            return
        counts["flushes"] += 1
        counts["rows_flushed" if where == "store" else "rows_spooled"] += len(readings)
        for fut in batch.waiters:
            if not fut.done():
                fut.set_result(where)
