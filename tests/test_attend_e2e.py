"""Issue 10 item 17 (attend targets per route) end to end: device messages through a real
Mosquitto into a running gateway on a fake clock, on SQLite and on PostgreSQL; the
dispatch service's own timer loop flags late attendances, and the response-time report
shows each route against its own target.

* a wellbeing call (pendant press) is flagged at 45 min; an urgent one (a fall) is not,
  and is flagged at its 2 h urgent community response target;
* a site's shorter urgent target (``[dispatch.attend.sites.s2.urgent]``) is honoured;
* an emergency (a fall with injury) is tracked as "handed to 999 at, reference", not by
  our 45-minute responder timer.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from telecare.devices.codecs import json_v1
from telecare.devices.model import (
    Device,
    DeviceKind,
    Dispatch,
    DispatchState,
    EventType,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.dispatch.reports import build_report
from telecare.dispatch.service import DispatchService
from telecare.gateway.app import Gateway
from telecare.gateway.config import Config, DispatchSection, MqttConfig, RulesSection, StoreConfig
from telecare.gateway.store.base import Store
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import FakeClock
from tests.helpers import eventually
from tests.services import MqttServer

pytestmark = pytest.mark.mosquitto

S = DispatchState
#: Whole seconds, so stored and compared times agree on both backends.
START = datetime.now(UTC).replace(microsecond=0)

DISPATCH_FILE = """
[dispatch.attend.sites.s2.urgent]   # this area's rapid-response team works to 90 min
target_min = 90
escalate_min = 90
"""


async def _provision(store: Store) -> None:
    for site in ("s1", "s2"):
        await store.upsert_site(Site(site, SiteKind.HOME))
    for rid, kind in (
        ("kh1", ResponderKind.KEYHOLDER),
        ("kh2", ResponderKind.KEYHOLDER),
        ("amb", ResponderKind.AMBULANCE),
    ):
        await store.upsert_responder(Responder(rid, kind))
    await store.upsert_resident(Resident("r1", "s1", responders=("kh1",)))
    await store.upsert_resident(Resident("r2", "s2", responders=("kh2",)))
    await store.upsert_device(Device("p1", "s1", DeviceKind.PENDANT, "r1"))
    await store.upsert_device(Device("p2", "s2", DeviceKind.PENDANT, "r2"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def config(
    request: pytest.FixtureRequest,
    mqtt_server: MqttServer,
    topic_prefix: str,
    tmp_path: Path,
) -> Config:
    """A gateway configuration on the test's broker and prefix, for each store backend,
    with the registry provisioned before the gateway starts (as an installer would)."""
    if request.param == "sqlite":
        store = StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "gw.sqlite3"))
        backend: SqliteStore | PostgresStore = SqliteStore(store.sqlite_path)
    else:
        dsn = request.getfixturevalue("pg_dsn")
        schema = request.getfixturevalue("pg_schema")
        store = StoreConfig(backend="postgres", dsn=dsn, schema=schema)
        backend = PostgresStore(dsn, schema=schema)
    async with backend:
        await backend.migrate()
        await _provision(backend)
    path = tmp_path / "dispatch.toml"
    path.write_text(DISPATCH_FILE, encoding="utf-8")
    return Config(
        mqtt=MqttConfig(
            host=mqtt_server.host,
            port=mqtt_server.port,
            topic_prefix=topic_prefix,
            client_id=f"gw-{uuid.uuid4().hex[:8]}",
        ),
        store=store,
        rules=RulesSection(state_file=str(tmp_path / "rules-state.json")),
        dispatch=DispatchSection(file=str(path)),
    )


async def _connected(gw: Gateway) -> bool:
    return gw.mqtt.connected.is_set()


async def _press(config: Config, site: str, device: str, event: EventType, **extra: object) -> str:
    """Publish an alarm event as the device would; the alert id it becomes."""
    msg_id = f"m-{uuid.uuid4().hex[:8]}"
    payload = json_v1.encode_event(msg_id, START, event, **extra)
    async with aiomqtt.Client(config.mqtt.host, config.mqtt.port) as client:
        topic = f"{config.mqtt.topic_prefix}/{site}/{device}/event"
        await client.publish(topic, payload, qos=1)
    return alarm_id_for(device, msg_id)


async def _dispatch(gw: Gateway, alert_id: str) -> Dispatch:
    found = await eventually(lambda: gw.dispatcher.repo.load_for_alert(alert_id))
    assert found is not None
    return found


async def _state(svc: DispatchService, dispatch_id: str) -> S:
    d = await svc.repo.load(dispatch_id)
    assert d is not None
    return d.state


async def _send_keyholder(svc: DispatchService, d: Dispatch) -> None:
    """The operator answers, the keyholder accepts and sets off."""
    assert d.responder_id is not None
    await svc.acknowledge(d.dispatch_id, "op1")
    await svc.contact(d.dispatch_id, "op1")
    await svc.accept(d.dispatch_id, d.responder_id)
    await svc.en_route(d.dispatch_id, d.responder_id)


async def _escalated(svc: DispatchService, dispatch_id: str) -> str:
    """Wait for the service's own timer loop to escalate; the reason it gave."""
    await eventually(lambda: _state(svc, dispatch_id), lambda s: s is S.ESCALATED)
    return (await svc.repo.audit(dispatch_id))[-1].reason


async def _attend_due(svc: DispatchService, dispatch_id: str) -> datetime | None:
    return next((t.due_at for t in await svc.repo.timers(dispatch_id) if t.kind == "attend"), None)


async def test_each_route_is_flagged_late_at_its_own_target(config: Config) -> None:
    clock = FakeClock(START)
    async with Gateway(config, clock=clock) as gw:
        await eventually(lambda: _connected(gw), timeout=10)
        svc = gw.dispatcher
        wellbeing = await _dispatch(gw, await _press(config, "s1", "p1", EventType.PENDANT))
        urgent = await _dispatch(gw, await _press(config, "s1", "p1", EventType.FALL))
        local = await _dispatch(gw, await _press(config, "s2", "p2", EventType.FALL))
        for d in (wellbeing, urgent, local):
            await _send_keyholder(svc, d)
        # Each attend timer runs from presentation to its route's (and site's) target.
        assert await _attend_due(svc, wellbeing.dispatch_id) == START + timedelta(minutes=45)
        assert await _attend_due(svc, urgent.dispatch_id) == START + timedelta(hours=2)
        assert await _attend_due(svc, local.dispatch_id) == START + timedelta(minutes=90)

        clock.advance(minutes=45)
        reason = await _escalated(svc, wellbeing.dispatch_id)
        assert reason == "nobody on scene within 45 min (the wellbeing route's attend target)"
        await svc.fire_due_timers()  # whatever else is due by now has fired
        assert await _state(svc, urgent.dispatch_id) is S.EN_ROUTE  # not late at 45 min
        assert await _state(svc, local.dispatch_id) is S.EN_ROUTE

        clock.advance(minutes=40)  # 85 min: the urgent responders are still in time
        await svc.fire_due_timers()
        assert await _state(svc, local.dispatch_id) is S.EN_ROUTE
        clock.advance(minutes=5)  # 90 min: site s2's own urgent target
        reason = await _escalated(svc, local.dispatch_id)
        assert reason == "nobody on scene within 90 min (the urgent route's attend target)"
        assert await _state(svc, urgent.dispatch_id) is S.EN_ROUTE

        clock.advance(minutes=10)  # 100 min: s1's urgent responder arrives, in time
        await svc.on_scene(urgent.dispatch_id, "kh1")
        await svc.on_scene(local.dispatch_id, "kh2")
        clock.advance(minutes=20)  # 2 h: nothing left to flag
        await svc.fire_due_timers()
        assert await _state(svc, urgent.dispatch_id) is S.ON_SCENE

        (day,) = await build_report(
            svc.repo, START - timedelta(hours=1), START + timedelta(hours=23)
        )
    rows = {(r.route, r.target_min): r for r in day.routes}
    assert set(rows) == {("urgent", 90), ("urgent", 120), ("wellbeing", 45)}
    # The fall on scene after 100 min met the 2 h urgent target (a miss under one 45 min
    # target); the one at s2 after 100 min missed that site's 90 min.
    assert (rows["urgent", 120].needing, rows["urgent", 120].within_target) == (1, 1)
    assert rows["urgent", 120].pct_within_target == 100.0
    assert (rows["urgent", 90].needing, rows["urgent", 90].within_target) == (1, 0)
    # The pendant call's keyholder never arrived: a miss against 45 and 60 min.
    w = rows["wellbeing", 45]
    assert (w.needing, w.done, w.within_target, w.within_all, w.all_within_min) == (1, 0, 0, 0, 60)
    assert w.meets_goal is False


async def test_an_emergency_is_tracked_as_handed_to_999_not_by_the_attend_timer(
    config: Config,
) -> None:
    clock = FakeClock(START)
    async with Gateway(config, clock=clock) as gw:
        await eventually(lambda: _connected(gw), timeout=10)
        svc = gw.dispatcher
        alert_id = await _press(config, "s1", "p1", EventType.FALL, injury=True)
        d = await _dispatch(gw, alert_id)
        assert d.responder_id == "amb"  # injury: 999 first
        clock.advance(30)
        await svc.acknowledge(d.dispatch_id, "op1")
        await svc.contact(d.dispatch_id, "op1")
        clock.advance(90)
        await svc.handed_to_999(d.dispatch_id, "op1", "CAD-4471")
        accepted = (await svc.repo.audit(d.dispatch_id))[-1]
        assert (accepted.to_state, accepted.actor) == (S.ACCEPTED, "op1")
        assert (accepted.detail["handover"], accepted.detail["reference"]) == (True, "CAD-4471")
        # Not our 45 min responder timer: a call-back check at 40 min (the Category 2
        # 90th centile), when the crew has not been reported on scene.
        assert await _attend_due(svc, d.dispatch_id) == START + timedelta(minutes=40)
        clock.advance(minutes=43)  # 45 min after presentation; escalated at 40
        reason = await _escalated(svc, d.dispatch_id)
        assert reason == "nobody on scene within 40 min (the emergency route's attend target)"
        (day,) = await build_report(
            svc.repo, START - timedelta(hours=1), START + timedelta(hours=23)
        )
    (row,) = day.routes
    assert (row.route, row.measure, row.target_min) == ("emergency", "handover", 3)
    assert (row.needing, row.done, row.within_target) == (1, 1, 1)  # handed over at 2 min
