"""``Turns``: while alarm work is in flight, one telemetry step per event-loop iteration,
in arrival order, while other ready work (the alarm lane) runs in every iteration; while
none is, telemetry runs free."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

from telecare.devices.codecs import json_v1
from telecare.devices.model import (
    AlarmEvent,
    Device,
    DeviceKind,
    EventType,
    Phase,
    Resident,
    Site,
    SiteKind,
)
from telecare.gateway.envelope import Envelope
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.turns import Turns
from telecare.rules.clock import FakeClock
from tests.helpers import running_pipeline

TS = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


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
        with turns.alarm():
            await asyncio.gather(*(telemetry(f"t{n}") for n in range(5)))
    finally:
        tick_task.cancel()
        await asyncio.gather(tick_task, return_exceptions=True)
    assert [name for name, _ in order] == ["t0", "t1", "t2", "t3", "t4"]
    at = [tick for _, tick in order]
    assert all(b > a for a, b in itertools.pairwise(at))  # never two in one iteration
    assert (turns.taken, turns.waited, turns.waiting) == (5, 4, 0)


async def _start_ticks(turns: Turns, steps: int) -> list[int]:
    """The event-loop iteration (a ticker's count) in which each of ``steps`` telemetry
    steps got its turn."""
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
        await asyncio.gather(*(telemetry() for _ in range(steps)))
    finally:
        tick_task.cancel()
        await asyncio.gather(tick_task, return_exceptions=True)
    return started


async def test_at_most_per_iteration_steps_start_in_one_iteration() -> None:
    turns = Turns(per_iteration=3)
    with turns.alarm():
        started = await _start_ticks(turns, 20)
    per_tick = [started.count(t) for t in set(started)]
    assert max(per_tick) <= 3
    assert len(started) == 20


async def test_a_cancelled_waiter_is_skipped() -> None:
    turns = Turns(per_iteration=1)
    with turns.alarm():
        first = asyncio.create_task(turns.take())
        cancelled = asyncio.create_task(turns.take())
        after = asyncio.create_task(turns.take())
        await asyncio.sleep(0)  # all three asked: the first has its turn, two wait
        assert turns.waiting == 2
        cancelled.cancel()
        await asyncio.wait_for(asyncio.gather(first, after), timeout=5)
    assert cancelled.cancelled()
    assert turns.waiting == 0


async def test_while_no_alarm_is_in_flight_every_turn_is_free() -> None:
    turns = Turns(per_iteration=1)
    started = await _start_ticks(turns, 20)
    assert len(set(started)) == 1  # all 20 in one iteration: nothing to give way to
    assert (turns.taken, turns.waited, turns.waiting) == (20, 0, 0)


async def test_an_announced_alarm_paces_telemetry_until_the_announcement_lapses() -> None:
    turns = Turns(per_iteration=1, announce_s=60)
    turns.announce()  # as the lane's MQTT client reads an alarm, before any step of it
    first = asyncio.create_task(turns.take())
    second = asyncio.create_task(turns.take())
    await asyncio.sleep(0)
    assert turns.waiting == 1
    await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
    assert turns.waited == 1
    turns = Turns(per_iteration=1, announce_s=0)
    turns.announce()  # lapsed at once: a message the lane never took up
    await asyncio.wait_for(asyncio.gather(*(turns.take() for _ in range(5))), timeout=5)
    assert turns.waited == 0


async def test_when_the_last_alarm_is_done_every_waiter_goes_at_once() -> None:
    turns = Turns(per_iteration=1)
    with turns.alarm():
        with turns.alarm():  # two alarms in flight: the lane nests (event in a batch)
            waiting = [asyncio.create_task(turns.take()) for _ in range(10)]
            await asyncio.sleep(0)
            assert turns.waiting == 9
        assert turns.alarms == 1
        await asyncio.sleep(0)
        assert turns.waiting == 8  # still paced: one alarm is in flight
    assert (turns.alarms, turns.waiting) == (0, 0)
    await asyncio.sleep(0)
    assert all(t.done() for t in waiting)


async def test_the_alarm_lane_holds_the_turns_while_it_handles_an_alarm(
    store: SqliteStore | PostgresStore,
) -> None:
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    await store.upsert_device(Device("hub", "s1", DeviceKind.HUB))
    await store.upsert_resident(Resident("r1", "s1"))
    await store.upsert_device(Device("p1", "s1", DeviceKind.PENDANT, "r1", hub_id="hub"))
    turns = Turns()
    held: list[int] = []
    write_events = store.write_events

    async def spy(events: Sequence[AlarmEvent]) -> list[bool]:
        held.append(turns.alarms)
        return await write_events(events)

    store.write_events = spy  # type: ignore[method-assign]
    async with running_pipeline(store, FakeClock(TS)) as telemetry:
        lane = telemetry.lane(store)
        telemetry.pace(turns)
        assert (telemetry.turns, lane.turns, lane.overtakes) == (turns, None, turns)
        press = json_v1.encode_event("m1", TS, EventType.PENDANT)
        await lane.handle(Envelope("mqtt", "telecare/v1/s1/p1/event", press, TS))
        item = {"device_id": "p1", "channel": "event", "msg_id": "m2", "ts": TS.isoformat()}
        batch = json_v1.encode_batch("b1", [{**item, "type": EventType.PENDANT.value}])
        await telemetry.handle(Envelope("mqtt", "telecare/v1/s1/hub/batch", batch, TS))
        serial = AlarmEvent("p1", EventType.PENDANT, Phase.ALARM, TS, "m3", source="serial")
        await telemetry.handle_event(serial)
    # The lane's press (held by ``handle`` and ``handle_event``), the event inside a
    # telemetry batch, handed over to the lane, and a serial line's event, which comes
    # through the telemetry pipeline (each held by ``handle_event``).
    assert held == [2, 1, 1]
    assert turns.alarms == 0
