"""Alarm storms: 10,000 mains-fails in one second must not bury a pendant press."""

from __future__ import annotations

import pytest

from telecare.devices.model import Alert, AlertKind, EventType
from telecare.dispatch.service import DispatchService
from telecare.dispatch.storm import AlarmQueue
from telecare.gateway.store.postgres import PostgresStore
from telecare.rules.clock import FakeClock
from tests.dispatch.conftest import NOW, directory, eventually, make_alert, seed

STORM = 10_000


def mains_fail(site_id: str = "s1") -> Alert:
    return make_alert(
        EventType.MAINS_FAIL,
        kind=AlertKind.TECHNICAL,
        priority=4,
        site_id=site_id,
        resident_id=None,
    )


async def test_the_pendant_comes_out_first_and_the_storm_folds_per_area() -> None:
    queue = AlarmQueue(maxsize=100)
    for i in range(STORM):
        await queue.put(mains_fail(), "north" if i % 2 else "south")
    pendant = make_alert(EventType.PENDANT)
    await queue.put(pendant, "north")
    assert queue.qsize() == 3  # one group per area, plus the pendant
    assert (queue.accepted, queue.folded) == (STORM + 1, STORM - 2)
    first = await queue.get()
    assert first.alerts == [pendant]
    groups = [await queue.get(), await queue.get()]
    assert sorted((g.area, len(g.alerts)) for g in groups) == [("north", 5000), ("south", 5000)]
    # A new mains-fail after its group was taken starts a new group.
    await queue.put(mains_fail(), "north")
    assert queue.qsize() == 1


async def test_people_raised_alarms_are_never_folded_and_keep_arrival_order() -> None:
    queue = AlarmQueue()
    alerts = [make_alert(EventType.PENDANT) for _ in range(3)]
    fall = make_alert(EventType.FALL)
    inactivity = make_alert(EventType.INACTIVITY, priority=2)
    for a in (inactivity, *alerts, fall):
        await queue.put(a, "north")
    order = [(await queue.get()).first for _ in range(5)]
    assert order == [*alerts, fall, inactivity]


@pytest.mark.postgres
async def test_service_dispatches_the_pendant_before_the_storm(pg_store: PostgresStore) -> None:
    await seed(pg_store)
    storm = [mains_fail() for _ in range(STORM)]
    pendant = make_alert(EventType.PENDANT, ts=NOW)
    for alert in (storm[0], pendant):  # only alerts that get a dispatch need a row
        await pg_store.write_alerts([alert])
    service = DispatchService(pg_store.dispatches, pg_store, FakeClock(NOW), directory=directory())
    for alert in storm:  # the storm arrives first ...
        await service.submit(alert)
    await service.submit(pendant)  # ... the pendant press last
    async with service:

        async def both_open() -> bool:
            return await pg_store.count("dispatches") == 2

        await eventually(both_open)
    async with pg_store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT d.alert_id, a.detail FROM dispatch_audit a JOIN dispatches d"
            " USING (dispatch_id) WHERE a.from_state IS NULL ORDER BY a.audit_id"
        )
        opened = await cur.fetchall()
    assert [row[0] for row in opened] == [pendant.alert_id, storm[0].alert_id]
    group = opened[1][1]
    assert group["grouped"] == STORM
    assert group["route"] == "technical"
    assert len(group["grouped_alerts"]) == 50
