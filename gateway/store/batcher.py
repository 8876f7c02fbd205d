"""Batch readings for the database: a bounded queue in front of one flusher task.

``await batcher.submit(readings)`` returns only once the readings are durably stored or
spooled (whatever ``write`` does), so the MQTT ingest acknowledges a message only then.
Many producers' submissions are gathered into one write. A batch is written when it
holds ``max_rows`` rows, when its first row is ``max_age`` seconds old, or when no new
submission has arrived for ``linger`` seconds, whichever comes first. ``linger`` matters
when every producer is waiting for its acknowledgement (a lull, or an MQTT receive window
smaller than a batch): without it each batch would sit out the whole ``max_age`` although
nothing more can arrive, capping throughput at ``in-flight rows / max_age``. Under load,
submissions pile up while a batch is being written, so batches fill to ``max_rows``.

Resource handling
    ``async with ReadingBatcher(write) as b`` starts the flusher in a ``TaskGroup``.
    Leaving the block stops new submissions, flushes everything already queued, then
    stops the flusher. Nothing queued is dropped on a clean exit.

Error handling
    ``write`` decides what "durable" means (``DurableStore`` writes to the database and
    falls back to the spool). If ``write`` raises, the exception is set on every
    submission of that batch, so each producer sees it (and does not acknowledge), it is
    logged and counted in ``stats()["errors"]``, and the flusher carries on with the next
    batch. A producer cancelled while waiting does not cancel the write of its rows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Literal, Self

import structlog

from devices.model import Reading

__all__ = ["Destination", "ReadingBatcher"]

log = structlog.get_logger(__name__)

#: Where a batch went: the database, or the local spool while the database is away.
Destination = Literal["store", "spool"]

_Item = tuple[Sequence[Reading], "asyncio.Future[Destination]"]


class ReadingBatcher:
    def __init__(
        self,
        write: Callable[[list[Reading]], Awaitable[Destination]],
        *,
        max_rows: int = 5000,
        max_age: float = 0.2,
        linger: float = 0.001,
        queue_size: int | None = None,
    ) -> None:
        if max_rows < 1 or max_age <= 0 or linger <= 0:
            raise ValueError("max_rows must be >= 1, max_age and linger > 0")
        self._write = write
        self.max_rows = max_rows
        self.max_age = max_age
        self.linger = min(linger, max_age)
        # Size: a submission is one message (one to a few readings). Two batches' worth
        # lets the next batch fill while one is being written; beyond that, submit()
        # waits, and the backpressure reaches the broker through the unacknowledged
        # messages (MQTT receive maximum) instead of growing memory without bound.
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(queue_size or 2 * max_rows)
        self._group: asyncio.TaskGroup | None = None
        self._closing = False
        self._rows_flushed = 0
        self._rows_spooled = 0
        self._flushes = 0
        self._errors = 0
        self._rows_in_flight = 0

    async def __aenter__(self) -> Self:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._group.create_task(self._flusher(), name="reading-batcher-flusher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        await self._queue.put(((), asyncio.get_running_loop().create_future()))  # wake-up
        assert self._group is not None
        await self._group.__aexit__(exc_type, exc, tb)

    async def submit(self, readings: Sequence[Reading]) -> Destination:
        """Queue readings and wait until they are stored or spooled; returns where."""
        if self._closing or self._group is None:
            raise RuntimeError("ReadingBatcher is not running; use 'async with'")
        if not readings:
            return "store"
        fut: asyncio.Future[Destination] = asyncio.get_running_loop().create_future()
        if self._queue.full():
            await self._queue.put((readings, fut))  # backpressure: wait for room
        else:
            self._queue.put_nowait((readings, fut))
        # Cancelling the caller cancels only its wait: the rows stay in the batch and the
        # flusher skips resolving a cancelled future.
        return await fut

    def stats(self) -> dict[str, int]:
        return {
            "queue_depth": self._queue.qsize(),
            "queue_size": self._queue.maxsize,
            "rows_in_flight": self._rows_in_flight,
            "rows_flushed": self._rows_flushed,
            "rows_spooled": self._rows_spooled,
            "flushes": self._flushes,
            "errors": self._errors,
        }

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            rows = len(first[0])
            deadline = loop.time() + self.max_age
            while rows < self.max_rows:
                if self._queue.empty():
                    if self._closing:
                        break
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(min(remaining, self.linger)):
                            item = await self._queue.get()
                    except TimeoutError:
                        break
                else:
                    item = self._queue.get_nowait()
                batch.append(item)
                rows += len(item[0])
            await self._flush(batch)
            if self._closing and self._queue.empty():
                return

    async def _flush(self, batch: list[_Item]) -> None:
        readings = [r for rs, _ in batch for r in rs]
        if not readings:
            for _, fut in batch:
                if not fut.done():
                    fut.set_result("store")
            return
        self._rows_in_flight = len(readings)
        started = time.perf_counter()
        try:
            where = await self._write(readings)
        except Exception as exc:  # every producer of the batch sees it; we carry on
            self._errors += 1
            log.error(
                "reading_batch_failed",
                rows=len(readings),
                error=repr(exc),
                seconds=round(time.perf_counter() - started, 3),
            )
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        finally:
            self._rows_in_flight = 0
        self._flushes += 1
        if where == "store":
            self._rows_flushed += len(readings)
        else:
            self._rows_spooled += len(readings)
        for _, fut in batch:
            if not fut.done():
                fut.set_result(where)
