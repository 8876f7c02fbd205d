"""DispatchService against real PostgreSQL: every transition, the ack/clear/cancel race,
each escalation path on a fake clock, and a restart in the middle of a cascade."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from telecare.devices.model import Alert, DispatchState, EventType
from telecare.dispatch.errors import IllegalTransition, StaleDispatch
from telecare.dispatch.machine import Event, EventKind, transition
from telecare.dispatch.notify import Notifier
from telecare.dispatch.records import TimerKind
from telecare.dispatch.service import DispatchService
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.tables import RECEIPTS
from telecare.rules.clock import FakeClock
from tests.dispatch.conftest import (
    NOW,
    SUPERVISORS,
    MemoryTransport,
    directory,
    eventually,
    make_alert,
    seed,
)

S = DispatchState
pytestmark = pytest.mark.postgres


@pytest.fixture
def transport() -> MemoryTransport:
    return MemoryTransport()


def build(store: PostgresStore, clock: FakeClock, transport: MemoryTransport) -> DispatchService:
    repo = store.dispatches
    notifier = Notifier(
        repo, clock, transports=[transport], directory=directory(), supervisors=SUPERVISORS
    )
    return DispatchService(repo, store, clock, notifier=notifier)


@pytest.fixture
async def service(
    pg_store: PostgresStore, clock: FakeClock, transport: MemoryTransport
) -> DispatchService:
    await seed(pg_store)
    return build(pg_store, clock, transport)


async def raise_alert(store: PostgresStore, svc: DispatchService, alert: Alert) -> str:
    assert (await store.write_alerts([alert]))[0]
    return (await svc.open(alert)).dispatch_id


async def states(svc: DispatchService, dispatch_id: str) -> list[str]:
    return [a.to_state.value for a in await svc.repo.audit(dispatch_id)]


async def test_every_transition_of_a_full_attendance(
    pg_store: PostgresStore, service: DispatchService, clock: FakeClock
) -> None:
    did = await raise_alert(pg_store, service, make_alert(EventType.PENDANT))
    d = await service.repo.load(did)
    assert d is not None
    assert d.state is S.RAISED
    assert d.responder_id == "kh1"
    assert [t.kind for t in await service.repo.timers(did)] == [TimerKind.ACK]
    # keyholders -> (no warden in the area) -> firefighter -> rapid response -> 999
    assert [e.responder_id for e in await service.repo.cascade(did)] == [
        "kh1",
        "kh2",
        "ff1",
        "rr1",
        "amb",
    ]

    clock.advance(20)
    await service.acknowledge(did, "op1", "answered the call")
    assert await service.repo.timers(did) == []
    await service.contact(did, "op1")
    (step,) = await service.repo.timers(did)
    assert (step.kind, step.step, step.due_at) == (
        TimerKind.STEP,
        0,
        clock.now() + timedelta(seconds=300),
    )
    await service.accept(did, "kh1")
    (attend,) = await service.repo.timers(did)
    assert attend.kind is TimerKind.ATTEND
    await service.en_route(did, "kh1", "10 minutes away")
    await service.on_scene(did, "kh1")
    assert await service.repo.timers(did) == []
    final = await service.resolve(did, "op1", "assisted_at_home", "helped back to bed")

    assert final.state is S.RESOLVED
    assert final.outcome == "assisted_at_home"
    assert final.version == 7
    audit = await service.repo.audit(did)
    assert [a.to_state.value for a in audit] == [
        "raised",
        "acknowledged",
        "responder_contacted",
        "accepted",
        "en_route",
        "on_scene",
        "resolved",
    ]
    assert [a.actor for a in audit] == ["system", "op1", "op1", "kh1", "kh1", "kh1", "op1"]
    assert audit[1].at == audit[0].at + timedelta(seconds=20)
    assert audit[1].reason == "answered the call"
    assert audit[-1].detail["outcome"] == "assisted_at_home"
    # The same dispatch is what the store's own reader sees.
    assert (await pg_store.dispatches.load(did)) == final
    with pytest.raises(IllegalTransition, match="it is closed"):
        await service.acknowledge(did, "op2")


async def test_decline_contacts_the_next_in_the_cascade(
    pg_store: PostgresStore, service: DispatchService, transport: MemoryTransport
) -> None:
    did = await raise_alert(pg_store, service, make_alert(EventType.PENDANT))
    await service.acknowledge(did, "op1")
    await service.contact(did, "op1")
    d = await service.decline(did, "kh1", "out of town")
    assert d.state is S.DECLINED
    now = await service.repo.load(did)
    assert now is not None
    assert (now.state, now.responder_id, now.cascade_step) == (S.RESPONDER_CONTACTED, "kh2", 1)
    assert (await states(service, did))[-2:] == ["declined", "responder_contacted"]
    # A late answer from the responder who declined is refused.
    with pytest.raises(IllegalTransition):
        await service.accept(did, "kh1")


async def test_cancel_and_auto_clear_only_while_raised(
    pg_store: PostgresStore, service: DispatchService
) -> None:
    a1, a2, a3 = (make_alert(EventType.FALL) for _ in range(3))
    d1 = await raise_alert(pg_store, service, a1)
    d2 = await raise_alert(pg_store, service, a2)
    d3 = await raise_alert(pg_store, service, a3)
    cleared = await service.on_restore(a1.alert_id)
    assert cleared is not None
    assert (cleared.state, cleared.outcome) == (S.RESOLVED, "auto_cleared")
    cancelled = await service.on_cancel(a2.alert_id)
    assert cancelled is not None
    assert cancelled.state is S.CANCELLED
    await service.acknowledge(d3, "op1")
    assert await service.on_restore(a3.alert_id) is None  # the operator owns it
    assert await service.on_cancel(a3.alert_id) is None
    assert await states(service, d3) == ["raised", "acknowledged"]
    assert await service.repo.timers(d1) == []
    assert await service.repo.timers(d2) == []
    assert await service.on_restore("no-such-alert") is None


async def test_open_is_idempotent_per_alert(
    pg_store: PostgresStore, service: DispatchService
) -> None:
    alert = make_alert(EventType.PENDANT)
    did = await raise_alert(pg_store, service, alert)
    assert (await service.open(alert)).dispatch_id == did
    assert await pg_store.count("dispatches") == 1


# -- the race --------------------------------------------------------------------------------
async def test_racing_transitions_at_the_database_have_one_winner(
    pg_store: PostgresStore, service: DispatchService, clock: FakeClock
) -> None:
    """Three transactions on three pool connections, all decided on version 1."""
    for _ in range(10):
        did = await raise_alert(pg_store, service, make_alert(EventType.PENDANT))
        d = await service.repo.load(did)
        assert d is not None
        steps = [
            transition(d, Event(kind), clock.now(), actor)
            for kind, actor in (
                (EventKind.ACKNOWLEDGE, "op1"),
                (EventKind.AUTO_CLEAR, "device"),
                (EventKind.CANCEL, "device"),
            )
        ]
        results = await asyncio.gather(
            *(service.repo.apply(1, s.dispatch, s.audit, [], [TimerKind.ACK]) for s in steps)
        )
        assert sorted(results) == [False, False, True]
        winner = steps[results.index(True)].dispatch
        assert await service.repo.load(did) == winner
        audit = await service.repo.audit(did)
        assert [a.to_state for a in audit] == [S.RAISED, winner.state]


async def test_acknowledge_restore_and_cancel_race_to_exactly_one_outcome(
    pg_store: PostgresStore, service: DispatchService
) -> None:
    """Through the service, as the pipeline and the console call it, concurrently."""
    outcomes = set()
    for _ in range(15):
        alert = make_alert(EventType.PENDANT)
        did = await raise_alert(pg_store, service, alert)
        results = await asyncio.gather(
            service.acknowledge(did, "op1"),
            service.on_restore(alert.alert_id),
            service.on_cancel(alert.alert_id),
            return_exceptions=True,
        )
        acked = not isinstance(results[0], BaseException)
        if not acked:
            assert isinstance(results[0], IllegalTransition)
        done = [r for r in results[1:] if r is not None]
        assert acked + len(done) == 1, results
        audit = await service.repo.audit(did)
        assert len(audit) == 2, audit
        final = await service.repo.load(did)
        assert final is not None
        assert final.version == 2
        assert final.state is audit[-1].to_state
        outcomes.add(final.state)
    assert outcomes <= {S.ACKNOWLEDGED, S.RESOLVED, S.CANCELLED}


async def test_expected_version_turns_a_lost_race_into_stale(
    pg_store: PostgresStore, service: DispatchService
) -> None:
    did = await raise_alert(pg_store, service, make_alert(EventType.PENDANT))
    results = await asyncio.gather(
        service.acknowledge(did, "op1", expected_version=1),
        service.acknowledge(did, "op2", expected_version=1),
        service.cancel(did, "op3", expected_version=1),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, StaleDispatch) for r in results if isinstance(r, BaseException))
    assert len(await service.repo.audit(did)) == 2


# -- escalation paths ------------------------------------------------------------------------
async def test_unacknowledged_after_60s_escalates_and_alerts_supervisors(
    pg_store: PostgresStore, service: DispatchService, clock: FakeClock, transport: MemoryTransport
) -> None:
    did = await raise_alert(pg_store, service, make_alert(EventType.PENDANT))
    clock.advance(59)
    assert await service.fire_due_timers() == 0
    clock.advance(1)
    async with service:
        assert await service.fire_due_timers() <= 1
        await eventually(lambda: _state_is(service, did, S.ESCALATED))
        await service.drain_notifications()
    audit = await service.repo.audit(did)
    assert (audit[-1].actor, audit[-1].to_state) == ("timer", S.ESCALATED)
    assert "not acknowledged within 60 s" in audit[-1].reason
    assert [m.recipient for m in transport.sent] == ["supervisors"]
    (receipt,) = await RECEIPTS.all(pg_store.sql, "WHERE dispatch_id = ?", did)
    assert (receipt.status, receipt.recipient, receipt.attempts) == ("delivered", "supervisors", 1)
    # The supervisor takes it over: acknowledge from escalated.
    assert (await service.acknowledge(did, "supervisor1")).state is S.ACKNOWLEDGED


async def _state_is(service: DispatchService, did: str, state: DispatchState) -> bool:
    d = await service.repo.load(did)
    return d is not None and d.state is state


async def test_step_timeout_walks_the_cascade_then_escalates(
    pg_store: PostgresStore, service: DispatchService, clock: FakeClock, transport: MemoryTransport
) -> None:
    did = await raise_alert(pg_store, service, make_alert(EventType.PENDANT))
    await service.acknowledge(did, "op1")
    await service.contact(did, "op1")
    contacted = ["kh1"]
    for expected, after in (("kh2", 300), ("ff1", 300), ("rr1", 300), ("amb", 300)):
        clock.advance(after - 1)
        assert await service.fire_due_timers() == 0
        clock.advance(1)
        assert await service.fire_due_timers() == 1
        d = await service.repo.load(did)
        assert d is not None
        assert (d.state, d.responder_id) == (S.RESPONDER_CONTACTED, expected)
        contacted.append(expected)
    clock.advance(120)  # the ambulance step's timeout
    assert await service.fire_due_timers() == 1
    d = await service.repo.load(did)
    assert d is not None
    assert d.state is S.ESCALATED
    audit = await service.repo.audit(did)
    assert [a.to_state.value for a in audit][2:] == [
        *(["responder_contacted", "no_answer"] * 5),
        "escalated",
    ]
    assert audit[-1].reason == "cascade exhausted"
    assert [
        a.detail.get("responder_id") for a in audit if a.to_state is S.RESPONDER_CONTACTED
    ] == contacted


async def test_not_on_scene_within_the_wellbeing_45_minutes_escalates(
    pg_store: PostgresStore, service: DispatchService, clock: FakeClock
) -> None:
    did = await raise_alert(pg_store, service, make_alert(EventType.PENDANT))
    await service.acknowledge(did, "op1")
    d = await service.contact(did, "op1")
    assert d.responder_id == "kh1"  # wellbeing: the keyholder first (brief's order)
    await service.accept(did, "kh1")
    await service.en_route(did, "kh1")
    clock.advance(minutes=44, seconds=59)
    assert await service.fire_due_timers() == 0
    clock.advance(1)
    assert await service.fire_due_timers() == 1
    audit = await service.repo.audit(did)
    assert audit[-1].to_state is S.ESCALATED
    assert audit[-1].reason == "nobody on scene within 45 min (the wellbeing route's attend target)"
    # The responder still arrives: on scene from escalated, then resolved.
    await service.on_scene(did, "kh1")
    assert (await service.resolve(did, "kh1", "conveyed_to_hospital")).state is S.RESOLVED


async def test_stale_timers_do_not_fire(
    pg_store: PostgresStore, service: DispatchService, clock: FakeClock
) -> None:
    did = await raise_alert(pg_store, service, make_alert(EventType.PENDANT))
    await service.acknowledge(did, "op1")
    await service.contact(did, "op1")
    await service.accept(did, "kh1")
    await service.on_scene(did, "kh1")
    clock.advance(hours=2)
    assert await service.fire_due_timers() == 0
    assert (await service.repo.load(did)).state is S.ON_SCENE  # type: ignore[union-attr]


# -- restart ---------------------------------------------------------------------------------
async def test_restart_in_the_middle_of_a_cascade_resumes_the_timers(
    pg_dsn: str, pg_schema: str, clock: FakeClock, transport: MemoryTransport
) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema) as store:
        await store.migrate()
        await seed(store)
        alert = make_alert(EventType.PENDANT)
        assert (await store.write_alerts([alert]))[0]
        async with build(store, clock, transport) as first:
            did = (await first.open(alert)).dispatch_id
            await first.acknowledge(did, "op1")
            await first.contact(did, "op1")  # kh1, 300 s to accept
            clock.advance(120)
    # The gateway is down while kh1's step times out.
    clock.advance(200)
    async with PostgresStore(pg_dsn, schema=pg_schema) as store:
        second = build(store, clock, transport)
        async with second:
            await eventually(lambda: _responder_is(second, did, "kh2"))
            d = await second.repo.load(did)
            assert d is not None
            assert (d.state, d.cascade_step) == (S.RESPONDER_CONTACTED, 1)
            # And the new step timer runs on the new instance's loop.
            clock.advance(300)
            await eventually(lambda: _responder_is(second, did, "ff1"))
        audit = await second.repo.audit(did)
        assert [(a.actor, a.to_state.value) for a in audit][3:] == [
            ("timer", "no_answer"),
            ("system", "responder_contacted"),
            ("timer", "no_answer"),
            ("system", "responder_contacted"),
        ]


async def _responder_is(service: DispatchService, did: str, responder_id: str) -> bool:
    d = await service.repo.load(did)
    return d is not None and d.state is S.RESPONDER_CONTACTED and d.responder_id == responder_id


async def test_handed_to_999_after_an_injury_is_reported_uses_the_emergency_target(
    pg_store: PostgresStore, service: DispatchService, clock: FakeClock
) -> None:
    """A pendant press (wellbeing, keyholder first); the operator hears of an injury: the
    re-route stamps the emergency target; the handover to 999 needs the ambulance to be
    the responder contacted and a reference, and sets the emergency call-back timer."""
    did = await raise_alert(pg_store, service, make_alert(EventType.PENDANT))
    await service.acknowledge(did, "op1")
    await service.contact(did, "op1")
    with pytest.raises(IllegalTransition, match="contact the ambulance first"):
        await service.handed_to_999(did, "op1", "CAD-1")
    await service.decline(did, "kh1")  # the keyholder cannot come; kh2 is contacted next
    clock.advance(60)
    await service.report_injury(did, "op1")
    rerouted = (await service.repo.audit(did))[-1]
    assert (rerouted.detail["route"], rerouted.detail["attend"]["measure"]) == (
        "emergency",
        "handover",
    )
    await service.contact(did, "op1", "amb")
    with pytest.raises(ValueError, match="reference"):
        await service.handed_to_999(did, "op1", "")
    d = await service.handed_to_999(did, "op1", "CAD-0099")
    assert (d.state, d.responder_id) == (S.ACCEPTED, "amb")
    [attend] = [t for t in await service.repo.timers(did) if t.kind is TimerKind.ATTEND]
    assert attend.due_at == NOW + timedelta(minutes=40)  # from presentation, not from now
