"""Opening dispatches with fewer round trips: what arrives together is opened together,
the store refuses a second dispatch for an alert (its own or a group's), and the timer
loop is woken only by a timer due before it would wake anyway. Both backends."""

from __future__ import annotations

from telecare.devices.model import AlertKind, DispatchState, EventType
from telecare.dispatch.service import DispatchService
from telecare.dispatch.storm import group_key_text
from telecare.gateway.store.base import Store
from telecare.rules.clock import FakeClock
from tests.dispatch.conftest import NOW, directory, eventually, make_alert, seed


async def _dispatch_count(store: Store) -> int:
    row = await store.sql.fetch_one("SELECT count(*) FROM dispatches")
    assert row is not None
    return int(row[0])


async def test_alerts_queued_together_each_get_exactly_one_dispatch(store: Store) -> None:
    await seed(store)
    alerts = [make_alert(EventType.PENDANT) for _ in range(7)]
    for alert in alerts:
        await store.write_alerts([alert])
    service = DispatchService(store.dispatches, store, FakeClock(NOW), directory=directory())
    # Queued before the intake worker runs: taken in batches of max_open, opened at once;
    # the first alert is queued twice (a re-submission racing the first): one dispatch.
    for alert in (*alerts, alerts[0]):
        await service.intake.put(alert)
    async with service:

        async def all_open() -> bool:
            found = [await store.dispatches.load_for_alert(a.alert_id) for a in alerts]
            return all(d is not None for d in found)

        await eventually(all_open)
        await eventually(lambda: _queue_empty(service))
    assert await _dispatch_count(store) == len(alerts)
    for alert in alerts:
        d = await store.dispatches.load_for_alert(alert.alert_id)
        assert d is not None
        assert d.state is DispatchState.RAISED
        assert len(await store.dispatches.audit(d.dispatch_id)) == 1


async def _queue_empty(service: DispatchService) -> bool:
    return service.intake.qsize() == 0


async def test_an_alert_of_a_group_dispatch_gets_no_dispatch_of_its_own(store: Store) -> None:
    await seed(store)
    clock = FakeClock(NOW)
    service = DispatchService(store.dispatches, store, clock, directory=directory())
    first, member = (
        make_alert(EventType.MAINS_FAIL, kind=AlertKind.TECHNICAL, priority=4, resident_id=None)
        for _ in range(2)
    )
    for alert in (first, member):
        await store.write_alerts([alert])
    key = group_key_text(("mains_fail", "north"))
    group = await service.open(first, grouped=[member], group_key=key)
    # Opened again for the member (the orphan sweep, a redelivery): the group is returned.
    again = await service.open(member)
    assert again.dispatch_id == group.dispatch_id
    assert (await service.open(first)).dispatch_id == group.dispatch_id
    assert await _dispatch_count(store) == 1
    assert len(await store.dispatches.audit(group.dispatch_id)) == 1


async def test_a_new_timer_due_before_the_next_poll_still_fires(store: Store) -> None:
    """The timer loop sleeps until ``poll_s`` (an hour here) when nothing is due; a new
    dispatch's acknowledgement timer (60 s) must wake it, or the escalation is late."""
    await seed(store)
    clock = FakeClock(NOW)
    service = DispatchService(store.dispatches, store, clock, directory=directory(), poll_s=3600.0)
    alert = make_alert(EventType.FALL)
    await store.write_alerts([alert])
    async with service:

        async def asleep() -> bool:  # until the next poll, an hour away: nothing is due
            return service._sleeping_until is not None

        await eventually(asleep)
        d = await service.open(alert)
        clock.advance(61)

        async def escalated() -> bool:
            found = await store.dispatches.load(d.dispatch_id)
            return found is not None and found.state is DispatchState.ESCALATED

        await eventually(escalated)
