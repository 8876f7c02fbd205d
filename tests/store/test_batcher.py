"""The reading batcher: size and age flushes, errors reach every producer of a batch,
a clean exit flushes what is queued, statistics add up."""

from __future__ import annotations

import asyncio

import pytest

from devices.model import Reading
from gateway.store.batcher import Destination, ReadingBatcher
from tests.store.helpers import message


class Sink:
    """A real (in-memory) destination that records the batches it was given."""

    def __init__(self, where: Destination = "store") -> None:
        self.batches: list[list[Reading]] = []
        self.where: Destination = where
        self.fail_next: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, readings: list[Reading]) -> Destination:
        await self.gate.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.batches.append(readings)
        return self.where


async def test_concurrent_submissions_are_gathered_up_to_max_rows() -> None:
    sink = Sink()
    sink.gate.clear()  # hold the first flush so the rest queue up behind it
    async with ReadingBatcher(sink.write, max_rows=30, max_age=0.05) as batcher:
        tasks = [asyncio.create_task(batcher.submit(message(i))) for i in range(40)]
        await asyncio.sleep(0)
        sink.gate.set()
        assert await asyncio.gather(*tasks) == ["store"] * 40
        stats = batcher.stats()
    rows = [r for b in sink.batches for r in b]
    assert sorted((r.msg_id, r.metric) for r in rows) == sorted(
        (r.msg_id, r.metric) for i in range(40) for r in message(i)
    )
    assert all(len(b) <= 30 for b in sink.batches)
    assert len(sink.batches) < 40  # gathered, not one write per message
    assert stats["rows_flushed"] == 120
    assert stats["flushes"] == len(sink.batches)
    assert stats["queue_depth"] == 0


async def test_a_lone_submission_is_flushed_by_age() -> None:
    sink = Sink()
    async with ReadingBatcher(sink.write, max_rows=5000, max_age=0.01) as batcher:
        assert await batcher.submit(message(1)) == "store"
    assert sink.batches == [message(1)]


async def test_spooled_batches_are_counted_as_spooled() -> None:
    sink = Sink(where="spool")
    async with ReadingBatcher(sink.write, max_age=0.01) as batcher:
        assert await batcher.submit(message(1)) == "spool"
        assert batcher.stats()["rows_spooled"] == 3
        assert batcher.stats()["rows_flushed"] == 0


async def test_a_failed_write_reaches_every_producer_and_the_flusher_carries_on() -> None:
    sink = Sink()
    sink.gate.clear()
    sink.fail_next = RuntimeError("disk on fire")
    async with ReadingBatcher(sink.write, max_rows=100, max_age=0.05) as batcher:
        first = [asyncio.create_task(batcher.submit(message(i))) for i in range(3)]
        await asyncio.sleep(0)
        sink.gate.set()
        results = await asyncio.gather(*first, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert await batcher.submit(message(9)) == "store"
        assert batcher.stats()["errors"] == 1
    assert sink.batches == [message(9)]


async def test_exit_flushes_everything_queued() -> None:
    sink = Sink()
    sink.gate.clear()
    async with ReadingBatcher(sink.write, max_rows=10, max_age=10.0) as batcher:
        tasks = [asyncio.create_task(batcher.submit(message(i))) for i in range(10)]
        await asyncio.sleep(0)
        sink.gate.set()
    assert all(t.done() and t.result() == "store" for t in tasks)
    assert sum(len(b) for b in sink.batches) == 30


async def test_submit_outside_the_context_is_an_error() -> None:
    batcher = ReadingBatcher(Sink().write)
    with pytest.raises(RuntimeError, match="not running"):
        await batcher.submit(message(1))


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        ReadingBatcher(Sink().write, max_rows=0)
