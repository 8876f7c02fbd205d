"""Routing by alarm type and NEWS2, cascade templates and overrides, on-call windows,
and the repository contract on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta

import pytest

from telecare.devices.model import AlertKind, DispatchState, EventType, Resident, ResponderKind
from telecare.dispatch.cascades import CascadeConfig, Route, StepTemplate, resolve_cascade
from telecare.dispatch.errors import CascadeConfigError
from telecare.dispatch.machine import Event, EventKind, transition
from telecare.dispatch.records import TimerKind
from telecare.dispatch.repository import DispatchRepository
from telecare.dispatch.responders import OnCall, ResponderDirectory
from telecare.dispatch.service import DispatchService
from telecare.gateway.store.base import Store
from telecare.rules.clock import FakeClock
from tests.dispatch.conftest import NOW, directory, make_alert, seed

RES1 = Resident("res1", "s1", responders=("kh1", "kh2"))


@pytest.mark.parametrize(
    ("alert", "route"),
    [
        (make_alert(None, kind=AlertKind.NEWS2, detail={"news2": 7}), Route.EMERGENCY),
        (make_alert(None, kind=AlertKind.NEWS2, detail={"news2": 5}), Route.URGENT),
        (make_alert(None, kind=AlertKind.NEWS2, priority=3, detail={"news2": 3}), Route.WELLBEING),
        (
            make_alert(None, kind=AlertKind.NEWS2, detail={"news2": 3, "red_flag": True}),
            Route.URGENT,
        ),
        (
            make_alert(None, kind=AlertKind.NEWS2, detail={"partial": True, "red_flag": True}),
            Route.URGENT,
        ),
        (make_alert(EventType.PENDANT, detail={"injury": True}), Route.EMERGENCY),
        (make_alert(EventType.FALL, detail={"injury": True}), Route.EMERGENCY),
        (make_alert(EventType.FALL), Route.URGENT),
        (make_alert(EventType.POST_FALL_INACTIVITY), Route.URGENT),
        (make_alert(EventType.SMOKE), Route.EMERGENCY),
        (make_alert(EventType.PENDANT), Route.WELLBEING),
        (make_alert(EventType.INACTIVITY, priority=2), Route.WELLBEING),
        (make_alert(EventType.MAINS_FAIL, priority=4), Route.TECHNICAL),
    ],
)
def test_routes(alert: object, route: Route) -> None:
    assert CascadeConfig().route_for(alert) == route  # type: ignore[arg-type]


def cascade_for(route: Route, config: CascadeConfig | None = None, at: datetime = NOW) -> list[str]:
    config = config or CascadeConfig()
    templates = config.templates_for(route, "s1", "res1")
    found = resolve_cascade(templates, resident=RES1, area="north", directory=directory(), at=at)
    return [e.responder_id for e in found]


def test_default_cascades() -> None:
    # The brief's order: keyholder -> warden -> firefighter / rapid response -> 999, and
    # every responder route ends in 999 (no warden in this directory).
    assert cascade_for(Route.EMERGENCY) == ["amb", "kh1", "kh2"]
    assert cascade_for(Route.URGENT) == ["kh1", "kh2", "rr1", "ff1", "amb"]
    assert cascade_for(Route.WELLBEING) == ["kh1", "kh2", "ff1", "rr1", "amb"]
    assert cascade_for(Route.TECHNICAL) == []
    for route in (Route.EMERGENCY, Route.URGENT, Route.WELLBEING):
        kinds = [t.source for t in CascadeConfig().templates_for(route, None, None)]
        assert ResponderKind.AMBULANCE in kinds
    for route in (Route.URGENT, Route.WELLBEING):
        kinds = [t.source for t in CascadeConfig().templates_for(route, None, None)]
        assert kinds[0] == "resident"
        assert kinds[-1] == ResponderKind.AMBULANCE


def test_off_call_responders_are_skipped() -> None:
    saturday_night = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
    assert cascade_for(Route.URGENT, at=saturday_night) == ["kh1", "kh2", "amb"]


def test_on_call_windows() -> None:
    overnight = OnCall.parse("fri 22:00-07:00")
    assert overnight.days == frozenset({4})
    assert overnight.start == time(22)
    assert overnight.covers(datetime(2026, 11, 27, 23, 0, tzinfo=UTC))  # Friday night
    assert overnight.covers(datetime(2026, 11, 28, 6, 0, tzinfo=UTC))  # Saturday morning
    assert not overnight.covers(datetime(2026, 11, 28, 23, 0, tzinfo=UTC))
    assert OnCall.parse("always").covers(NOW)
    summer = datetime(2026, 7, 6, 7, 30, tzinfo=UTC)  # 08:30 BST on a Monday
    assert OnCall.parse("mon 08:00-09:00").covers(summer)
    with pytest.raises(CascadeConfigError, match="'on_call' has value 'weekdays'"):
        OnCall.parse("weekdays")


def test_per_site_and_per_resident_cascades_from_config() -> None:
    config = CascadeConfig.from_mapping(
        {
            "cascades": {"wellbeing": [{"source": "mobile_warden", "timeout_s": 120}]},
            "sites": {"s1": {"wellbeing": [{"source": "firefighter", "timeout_s": 200}]}},
            "residents": {"res1": {"emergency": [{"source": "resident", "timeout_s": 60}]}},
            "rules": [{"route": "emergency", "event_types": ["pendant"]}, {"route": "wellbeing"}],
        }
    )
    assert config.route_for(make_alert(EventType.PENDANT)) is Route.EMERGENCY
    assert config.route_for(make_alert(EventType.FALL)) is Route.WELLBEING
    assert cascade_for(Route.WELLBEING, config) == ["ff1"]  # the site's default
    assert cascade_for(Route.EMERGENCY, config) == ["kh1", "kh2"]  # the resident's own
    assert config.templates_for(Route.WELLBEING, "s2", None) == (
        StepTemplate("mobile_warden", 120),
    )


def test_skills_and_bad_config() -> None:
    lifting = StepTemplate(ResponderKind.RAPID_RESPONSE, 300, skills=("lifting",))
    hoist = StepTemplate(ResponderKind.RAPID_RESPONSE, 300, skills=("hoist",))
    d = directory()
    assert [
        e.responder_id
        for e in resolve_cascade([lifting], resident=None, area="north", directory=d, at=NOW)
    ] == ["rr1"]
    assert resolve_cascade([hoist], resident=None, area="north", directory=d, at=NOW) == []
    assert resolve_cascade([lifting], resident=None, area="south", directory=d, at=NOW) == []
    with pytest.raises(CascadeConfigError, match=r"'cascade\.source' has value 'police'"):
        StepTemplate("police")
    with pytest.raises(CascadeConfigError, match="'route' has value 'urgentish'"):
        CascadeConfig.from_mapping({"cascades": {"urgentish": []}})


def test_directory_from_config() -> None:
    d = ResponderDirectory.from_mapping(
        [
            {
                "id": "ww1",
                "kind": "mobile_warden",
                "areas": ["north", "east"],
                "on_call": ["mon-fri 08:00-18:00"],
                "contacts": {"webhook": "https://app.example/hook", "email": "ww1@example.test"},
            }
        ]
    )
    (p,) = d.candidates(ResponderKind.MOBILE_WARDEN, "east", NOW)
    assert [c.channel for c in p.contacts] == ["webhook", "email"]
    assert (
        d.candidates(ResponderKind.MOBILE_WARDEN, "east", datetime(2026, 11, 29, 12, tzinfo=UTC))
        == []
    )


# -- the repository contract on both backends ------------------------------------------------
def repo_for(store: Store) -> DispatchRepository:
    return store.dispatches


async def test_repository_lifecycle_and_race_on_both_backends(store: Store) -> None:
    await seed(store)
    clock = FakeClock(NOW)
    repo = repo_for(store)
    service = DispatchService(repo, store, clock, directory=directory())
    alert = make_alert(EventType.FALL)
    await store.write_alerts([alert])
    did = (await service.open(alert)).dispatch_id
    assert [t.kind for t in await repo.timers(did)] == [TimerKind.ACK]
    assert await repo.next_due() == clock.now() + timedelta(seconds=60)
    d = await repo.load(did)
    assert d is not None
    steps = [
        transition(d, Event(k), clock.now(), "x") for k in (EventKind.ACKNOWLEDGE, EventKind.CANCEL)
    ]
    won = await asyncio.gather(
        *(repo.apply(1, s.dispatch, s.audit, [], [TimerKind.ACK]) for s in steps)
    )
    assert sorted(won) == [False, True]
    assert len(await repo.audit(did)) == 2
    assert await repo.timers(did) == []
    # The store's own readers agree with the repository's writes.
    assert [a.to_state for a in await store.dispatches.audit(did)] == [
        a.to_state for a in await repo.audit(did)
    ]
    assert await store.dispatches.load(did) == await repo.load(did)
    if (await repo.load(did)).state is DispatchState.ACKNOWLEDGED:  # type: ignore[union-attr]
        await service.contact(did, "op1")
        clock.advance(300)
        assert await service.fire_due_timers() == 1
        assert (await repo.load(did)).responder_id == "kh2"  # type: ignore[union-attr]
