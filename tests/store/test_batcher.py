"""The reading batcher: size, age and lull flushes, errors reach every producer of a
batch, a clean exit flushes what is queued, the queue is bounded, a cancelled producer
loses nothing, statistics add up."""

from __future__ import annotations

import asyncio

import pytest

from telecare.devices.model import Reading
from telecare.gateway.store.batcher import Destination, ReadingBatcher
from tests.store.helpers import message


class Sink:
    """A real (in-memory) destination that records the batches it was given."""

    def __init__(self, where: Destination = "store") -> None:
        self.batches: list[list[Reading]] = []
        self.where: Destination = where
        self.fail_next: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.writing = asyncio.Event()  # set once a write has started

    async def write(self, readings: list[Reading]) -> Destination:
        self.writing.set()
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


async def test_enqueue_refuses_a_full_queue_and_submit_waits_for_room() -> None:
    sink = Sink()
    sink.gate.clear()  # hold the first write
    async with ReadingBatcher(sink.write, max_rows=3, max_age=0.05, queue_size=2) as batcher:
        first = batcher.enqueue(message(0))  # a full batch on its own: written at once
        await sink.writing.wait()
        second, third = batcher.enqueue(message(1)), batcher.enqueue(message(2))
        assert first is not None
        assert second is not None
        assert third is not None
        assert batcher.enqueue(message(3)) is None  # full: nothing queued
        assert batcher.stats()["queue_depth"] == 2
        waiting = asyncio.create_task(batcher.submit(message(3)))
        await asyncio.sleep(0)
        assert not waiting.done()
        sink.gate.set()
        assert list(await asyncio.gather(first, second, third, waiting)) == ["store"] * 4
    rows = [r for b in sink.batches for r in b]
    assert rows == message(0) + message(1) + message(2) + message(3)


async def test_a_cancelled_producer_does_not_cancel_its_rows_or_its_batch() -> None:
    sink = Sink()
    sink.gate.clear()
    async with ReadingBatcher(sink.write, max_rows=100, max_age=0.05) as batcher:
        cancelled = asyncio.create_task(batcher.submit(message(1)))
        other = asyncio.create_task(batcher.submit(message(2)))
        await asyncio.sleep(0)  # both queued in the same batch
        cancelled.cancel()
        sink.gate.set()
        assert await other == "store"
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    assert sink.batches == [message(1) + message(2)]


async def test_a_lull_flushes_without_waiting_for_max_age() -> None:
    sink = Sink()
    async with ReadingBatcher(sink.write, max_rows=5000, max_age=3600.0) as batcher:
        async with asyncio.timeout(30):  # a guard only: without the linger: an hour
            results = await asyncio.gather(*(batcher.submit(message(i)) for i in range(5)))
    assert results == ["store"] * 5
    assert len(sink.batches) == 1


async def test_a_message_is_never_split_across_batches() -> None:
    sink = Sink()
    sink.gate.clear()
    async with ReadingBatcher(sink.write, max_rows=4, max_age=0.05) as batcher:
        tasks = [asyncio.create_task(batcher.submit(message(i))) for i in range(5)]
        await asyncio.sleep(0)
        sink.gate.set()
        await asyncio.gather(*tasks)
    # 3 rows a message: a batch takes messages until it holds max_rows (4) or more.
    assert [len(b) for b in sink.batches] == [6, 6, 3]
    assert [r for b in sink.batches for r in b] == [r for i in range(5) for r in message(i)]


async def test_an_empty_submission_is_stored_trivially() -> None:
    sink = Sink()
    async with ReadingBatcher(sink.write) as batcher:
        assert await batcher.submit([]) == "store"
    assert sink.batches == []
