"""``Turns``: one telemetry step per event-loop iteration, in arrival order, while other
ready work (the alarm lane) runs in every iteration."""

from __future__ import annotations

import asyncio
import itertools

from telecare.gateway.turns import Turns


async def test_one_turn_per_iteration_in_arrival_order_while_other_work_goes_on() -> None:
    turns = Turns(per_iteration=1)
    ticks = 0
    order: list[tuple[str, int]] = []

    async def ticker() -> None:  # stands for the alarm lane: one step every iteration
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    async def telemetry(name: str) -> None:
        await turns.take()
        order.append((name, ticks))

    tick_task = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(telemetry(f"t{n}") for n in range(5)))
    finally:
        tick_task.cancel()
        await asyncio.gather(tick_task, return_exceptions=True)
    assert [name for name, _ in order] == ["t0", "t1", "t2", "t3", "t4"]
    at = [tick for _, tick in order]
    assert all(b > a for a, b in itertools.pairwise(at))  # never two in one iteration
    assert (turns.taken, turns.waited, turns.waiting) == (5, 4, 0)


async def test_at_most_per_iteration_steps_start_in_one_iteration() -> None:
    turns = Turns(per_iteration=3)
    ticks = 0
    started: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    async def telemetry() -> None:
        await turns.take()
        started.append(ticks)

    tick_task = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(telemetry() for _ in range(20)))
    finally:
        tick_task.cancel()
        await asyncio.gather(tick_task, return_exceptions=True)
    per_tick = [started.count(t) for t in set(started)]
    assert max(per_tick) <= 3
    assert len(started) == 20


async def test_a_cancelled_waiter_is_skipped() -> None:
    turns = Turns(per_iteration=1)
    first = asyncio.create_task(turns.take())
    cancelled = asyncio.create_task(turns.take())
    after = asyncio.create_task(turns.take())
    await asyncio.sleep(0)  # all three asked: the first has its turn, two wait
    assert turns.waiting == 2
    cancelled.cancel()
    await asyncio.wait_for(asyncio.gather(first, after), timeout=5)
    assert cancelled.cancelled()
    assert turns.waiting == 0
