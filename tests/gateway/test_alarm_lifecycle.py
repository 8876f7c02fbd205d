"""Issue 10 through the real pipeline (envelope in, both store backends, the real dispatch
service): what a cancel, a restore or a carer-arrived may close (item 3), resolving
releases the fold key (item 5), device clocks (item 6), door exit latches (item 7),
motion feeds inactivity (item 15) and fold counts / restores stored on the alert
(item 16)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from itertools import count

import pytest

from telecare.devices.codecs import json_v1
from telecare.devices.model import (
    AlarmEvent,
    Alert,
    AlertKind,
    Device,
    DeviceKind,
    Dispatch,
    DispatchState,
    EventType,
    Phase,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.dispatch import DispatchService, ResponderDirectory
from telecare.gateway.decode import Rejected
from telecare.gateway.dispatching import add_store_responders, dispatch_repository
from telecare.gateway.envelope import Envelope
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import FakeClock
from telecare.rules.config import InactivityWindow, ResidentRules, RulesConfig
from telecare.rules.engine import RuleEngine
from tests.helpers import dispatch_for, eventually

TS = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PREFIX = "telecare/v1"


@dataclass
class Rig:
    store: SqliteStore | PostgresStore
    clock: FakeClock
    pipeline: Pipeline
    dispatcher: DispatchService
    _ids = count()

    async def send(self, device: str, channel: str, payload: bytes, site: str = "s1") -> None:
        env = Envelope("mqtt", f"{PREFIX}/{site}/{device}/{channel}", payload, self.clock.now())
        await self.pipeline.handle(env)

    async def event(
        self,
        device: str,
        type_: EventType,
        phase: Phase = Phase.ALARM,
        *,
        ts: datetime | None = None,
    ) -> str:
        """Send an event stamped by the device (default: the gateway's time); its msg_id."""
        msg_id = f"m{next(self._ids)}"
        when = ts or self.clock.now()
        await self.send(device, "event", json_v1.encode_event(msg_id, when, type_, phase))
        return msg_id

    async def press(self, device: str, type_: EventType = EventType.PENDANT) -> Dispatch:
        msg_id = await self.event(device, type_)
        return await dispatch_for(self.store, alarm_id_for(device, msg_id))

    async def state(self, d: Dispatch) -> DispatchState:
        found = await self.dispatcher.repo.load(d.dispatch_id)
        assert found is not None
        return found.state

    async def alerts(self) -> list[Alert]:
        return await self.store.recent_alerts(500)


def rules_config() -> RulesConfig:
    window = InactivityWindow(time(10, 0), time(12, 0))  # Europe/London = UTC in November
    return RulesConfig(
        residents={"r1": ResidentRules("r1", site_id="s1", inactivity_windows=(window,))}
    )


@pytest.fixture
async def rig(store: SqliteStore | PostgresStore) -> AsyncIterator[Rig]:
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    await store.upsert_responder(Responder("staff", ResponderKind.MOBILE_WARDEN))
    await store.upsert_resident(Resident("r1", "s1", responders=("staff",)))
    await store.upsert_resident(Resident("r2", "s1", responders=("staff",)))
    for device, kind, resident in (
        ("p1", DeviceKind.PENDANT, "r1"),
        ("smoke1", DeviceKind.SMOKE_DETECTOR, "r1"),
        ("door1", DeviceKind.DOOR_SENSOR, "r1"),
        ("pir1", DeviceKind.PIR, "r1"),
        ("unit1", DeviceKind.HUB, "r1"),
        ("bed1", DeviceKind.BED_SENSOR, "r1"),
        ("fall2", DeviceKind.FALL_DETECTOR, "r2"),
        ("lounge", DeviceKind.HUB, None),
        ("ipad", DeviceKind.TABLET, None),
        ("oxi", DeviceKind.OXIMETER, "r1"),
    ):
        await store.upsert_device(Device(device, "s1", kind, resident))
    clock = FakeClock(TS)
    directory = ResponderDirectory()
    await add_store_responders(directory, store)
    service = DispatchService(dispatch_repository(store), store, clock, directory=directory)
    async with service as dispatcher:
        engine = RuleEngine(rules_config(), clock)
        pipeline = Pipeline(store, clock, topic_prefix=PREFIX, dispatcher=dispatcher, engine=engine)
        yield Rig(store, clock, pipeline, dispatcher)


# ---------------------------------------------------------------- item 3: cancel scope


async def test_a_pendant_cancel_leaves_the_residents_smoke_alarm_open(rig: Rig) -> None:
    smoke = await rig.press("smoke1", EventType.SMOKE)
    pendant = await rig.press("p1")
    rig.clock.advance(20)
    await rig.event("p1", EventType.CANCEL)
    await eventually(lambda: rig.state(pendant), lambda s: s is DispatchState.CANCELLED)
    assert await rig.state(smoke) is DispatchState.RAISED
    # and the smoke alarm is still open in the rules: a repeat folds into it
    await rig.event("smoke1", EventType.SMOKE)
    assert rig.pipeline.counters["folded"] == 1


async def test_a_cancel_or_restore_never_closes_another_devices_alarm(rig: Rig) -> None:
    bed = await rig.press("bed1", EventType.BED_NOT_REOCCUPIED)
    fall = await rig.press("fall2", EventType.FALL)
    await rig.event("p1", EventType.CANCEL)  # nothing of p1's is open
    await rig.event("p1", EventType.BED_NOT_REOCCUPIED, Phase.RESTORE)  # not p1's alarm
    rig.clock.advance(5)
    await rig.event("bed1", EventType.BED_NOT_REOCCUPIED, Phase.RESTORE)  # its own
    await eventually(lambda: rig.state(bed), lambda s: s is DispatchState.RESOLVED)
    assert await rig.state(fall) is DispatchState.RAISED


async def test_a_communal_carer_arrived_does_not_close_another_residents_fall(
    rig: Rig,
) -> None:
    fall = await rig.press("fall2", EventType.FALL)
    await rig.event("lounge", EventType.CARER_ARRIVED)
    assert await rig.state(fall) is DispatchState.RAISED
    assert rig.pipeline.counters["cleared"] == 0


async def test_carer_arrived_closes_its_residents_wellbeing_alarm_but_not_a_life_critical_one(
    rig: Rig,
) -> None:
    pendant = await rig.press("p1")
    bed = await rig.press("bed1", EventType.BED_NOT_REOCCUPIED)
    fall = await rig.press("fall2", EventType.FALL)
    await rig.event("unit1", EventType.CARER_ARRIVED)
    await eventually(lambda: rig.state(bed), lambda s: s is DispatchState.CANCELLED)
    assert await rig.state(pendant) is DispatchState.RAISED  # an operator closes it
    assert await rig.state(fall) is DispatchState.RAISED  # another resident's


# ---------------------------------------------------------------- item 7: door exit


async def test_door_exit_stays_open_when_the_door_closes(rig: Rig) -> None:
    door = await rig.press("door1", EventType.DOOR_EXIT)
    rig.clock.advance(15)
    await rig.event("door1", EventType.DOOR_EXIT, Phase.RESTORE)
    assert rig.pipeline.counters["restored"] == 1
    assert await rig.state(door) is DispatchState.RAISED
    [alert] = [a for a in await rig.alerts() if a.alert_id == door.alert_id]
    assert alert.detail["restored_at"] == rig.clock.now().isoformat()  # item 16
    # an operator closes it
    await rig.dispatcher.acknowledge(door.dispatch_id, "op")
    await rig.dispatcher.resolve(door.dispatch_id, "op", "assisted_at_home")


# ---------------------------------------------------------------- item 5: fold release


async def test_a_press_after_the_operator_resolved_a_false_alarm_is_a_new_alert(
    rig: Rig,
) -> None:
    first = await rig.press("p1")
    await rig.dispatcher.acknowledge(first.dispatch_id, "op")
    await rig.dispatcher.resolve(first.dispatch_id, "op", "false_alarm")
    rig.clock.advance(100)  # inside the 120 s fold window of the first press
    second = await rig.press("p1")
    assert second.dispatch_id != first.dispatch_id
    assert second.state is DispatchState.RAISED
    assert rig.pipeline.counters["folded"] == 0


async def test_a_press_after_a_fold_and_the_close_of_its_alarm_is_a_new_alert(rig: Rig) -> None:
    """The pipeline remembers an alarm it found open on a fold (its later folds read no
    dispatch); the close it hears of forgets that, so the next press is a new alarm."""
    first = await rig.press("p1")
    rig.clock.advance(10)
    await rig.event("p1", EventType.PENDANT)  # folds: the open dispatch is remembered
    assert rig.pipeline.counters["folded"] == 1
    await rig.dispatcher.acknowledge(first.dispatch_id, "op")
    await rig.dispatcher.resolve(first.dispatch_id, "op", "false_alarm")
    rig.clock.advance(10)
    second = await rig.press("p1")
    assert second.dispatch_id != first.dispatch_id
    assert rig.pipeline.counters["folded"] == 1


async def test_a_press_folding_into_an_alarm_closed_behind_the_rules_back_is_new(
    rig: Rig,
) -> None:
    """Rule state from before the close (a restart from an older snapshot): the fold
    into a closed dispatch is caught and the press raised as a new alarm."""
    first = await rig.press("p1")
    rig.dispatcher.on_closed.clear()  # the rules do not hear of this close
    await rig.dispatcher.acknowledge(first.dispatch_id, "op")
    await rig.dispatcher.resolve(first.dispatch_id, "op", "false_alarm")
    rig.clock.advance(30)
    second = await rig.press("p1")
    assert second.dispatch_id != first.dispatch_id


async def test_spo2_low_fires_again_after_its_dispatch_was_resolved(rig: Rig) -> None:
    async def low(n: int) -> None:
        for _ in range(n):
            reading = json_v1.encode_readings(
                f"r{next(rig._ids)}", rig.clock.now(), [("spo2", 89, "%")]
            )
            await rig.send("oxi", "reading", reading)
            rig.clock.advance(60)

    def spo2_alerts(alerts: list[Alert]) -> list[Alert]:
        return [a for a in alerts if a.reason.startswith("SpO2 below target")]

    await low(7)  # 6 minutes below 94 %: sustained (300 s)
    [first] = spo2_alerts(await rig.alerts())
    d = await dispatch_for(rig.store, first.alert_id)
    await rig.dispatcher.acknowledge(d.dispatch_id, "op")
    await rig.dispatcher.resolve(d.dispatch_id, "op", "assisted_at_home")
    await low(7)  # still low: a new episode alerts again
    alerts = spo2_alerts(await rig.alerts())
    assert len(alerts) == 2
    await dispatch_for(rig.store, alerts[0].alert_id)


async def test_observations_due_reminds_again_after_it_was_resolved(rig: Rig) -> None:
    obs = json_v1.encode_observation(
        "o1",
        rig.clock.now(),
        "r1",
        respiration_rate=16,
        spo2=97,
        on_oxygen=False,
        systolic_bp=120,
        pulse=70,
        consciousness="A",
        temperature=37.0,
    )
    await rig.send("ipad", "observation", obs)

    def due(alerts: list[Alert]) -> list[Alert]:
        return [a for a in alerts if a.reason.startswith("NEWS2 observations due")]

    rig.clock.advance(hours=12, seconds=1)  # total 0: 12-hourly
    await rig.pipeline.tick()
    [first] = due(await rig.alerts())
    d = await dispatch_for(rig.store, first.alert_id)
    await rig.dispatcher.acknowledge(d.dispatch_id, "op")
    await rig.dispatcher.resolve(d.dispatch_id, "op", "no_action_needed")
    rig.clock.advance(hours=12, seconds=1)
    await rig.pipeline.tick()
    assert len(due(await rig.alerts())) == 2


# ---------------------------------------------------------------- item 16: fold counts


async def test_fold_count_is_stored_on_the_alert(rig: Rig) -> None:
    pendant = await rig.press("p1")
    for _ in range(2):
        rig.clock.advance(10)
        await rig.event("p1", EventType.PENDANT)
    [alert] = [a for a in await rig.alerts() if a.alert_id == pendant.alert_id]
    assert alert.detail["count"] == 3


async def test_fold_counts_of_a_receiver_batch_are_stored_on_the_alert(rig: Rig) -> None:
    # An IP receiver hands the pipeline many events at once; their notes share one write.
    pendant = await rig.press("p1")
    rig.clock.advance(10)
    now = rig.clock.now()
    presses = [
        AlarmEvent("p1", EventType.PENDANT, Phase.ALARM, now, f"b{i}", "s1", "r1", source="dc09")
        for i in range(2)
    ]
    await rig.pipeline.handle_events(presses, received_at=now)
    [alert] = [a for a in await rig.alerts() if a.alert_id == pendant.alert_id]
    assert alert.detail["count"] == 3


async def test_alarms_a_receiver_batch_raises_are_stored_presented_and_dispatched(
    rig: Rig,
) -> None:
    # Many units' first alarms in one batch: their alerts share one write, most urgent
    # first, each with the time it was presented, and each gets its dispatch.
    now = rig.clock.now()
    batch = [
        AlarmEvent("p1", EventType.PENDANT, Phase.ALARM, now, "b1", "s1", "r1", source="dc09"),
        AlarmEvent("fall2", EventType.FALL, Phase.ALARM, now, "b2", "s1", "r2", source="scaip"),
        AlarmEvent("p1", EventType.PENDANT, Phase.ALARM, now, "b3", "s1", "r1", source="dc09"),
    ]
    stored_when_told: list[int] = []  # the receiver may acknowledge once events and alerts are
    await rig.pipeline.handle_events(
        batch,
        received_at=now,
        on_stored=lambda: stored_when_told.append(rig.pipeline.counters["alerts"]),
    )
    assert stored_when_told == [2]
    alerts = {a.device_id: a for a in await rig.alerts()}
    assert set(alerts) == {"p1", "fall2"}
    assert all(a.detail["presented_at"] == now.isoformat() for a in alerts.values())
    assert alerts["p1"].detail["count"] == 2  # the third event folded into the first
    for alert in alerts.values():
        assert (await dispatch_for(rig.store, alert.alert_id)).state is DispatchState.RAISED
    assert rig.pipeline.counters["alerts"] == 2


async def test_a_refused_event_in_a_batch_does_not_lose_the_alerts_raised_before_it(
    rig: Rig,
) -> None:
    now = rig.clock.now()
    first = AlarmEvent("p1", EventType.PENDANT, Phase.ALARM, now, "x1", "s1", "r1", source="dc09")
    await rig.pipeline.handle_events([first], received_at=now)
    fall = AlarmEvent("fall2", EventType.FALL, Phase.ALARM, now, "f1", "s1", "r2", source="dc09")
    reused = dataclasses.replace(first, type=EventType.SMOKE)  # same msg_id, other content
    with pytest.raises(Rejected):
        await rig.pipeline.handle_events([fall, reused], received_at=now)
    [alert] = [a for a in await rig.alerts() if a.device_id == "fall2"]
    assert (await dispatch_for(rig.store, alert.alert_id)).state is DispatchState.RAISED


# ---------------------------------------------------------------- item 15: motion


async def test_motion_counts_as_activity_for_daily_living_inactivity(rig: Rig) -> None:
    await rig.pipeline.tick()  # 09:00: starts watching before the 10:00-12:00 window
    rig.clock.set(datetime(2026, 11, 23, 10, 30, tzinfo=UTC))
    await rig.event("pir1", EventType.MOTION)
    rig.clock.set(datetime(2026, 11, 23, 12, 1, tzinfo=UTC))
    await rig.pipeline.tick()
    assert [a for a in await rig.alerts() if a.event_type is EventType.INACTIVITY] == []
    assert await rig.store.count("alarm_events") == 1  # the motion event is stored
    # the next day, no motion: the window alerts
    rig.clock.set(datetime(2026, 11, 24, 12, 1, tzinfo=UTC))
    await rig.pipeline.tick()
    [alert] = [a for a in await rig.alerts() if a.event_type is EventType.INACTIVITY]
    assert alert.resident_id == "r1"


# ---------------------------------------------------------------- item 6: device clocks


async def test_a_pendant_a_day_fast_is_timed_by_the_gateway_and_flagged(rig: Rig) -> None:
    fast = timedelta(days=1)
    msg = await rig.event("p1", EventType.PENDANT, ts=rig.clock.now() + fast)
    first = await dispatch_for(rig.store, alarm_id_for("p1", msg))
    alerts = await rig.alerts()
    [press] = [a for a in alerts if a.alert_id == first.alert_id]
    assert press.ts == TS  # the gateway's receive time, not the device's
    [skew] = [a for a in alerts if a.event_type is EventType.CLOCK_SKEW]
    assert skew.kind is AlertKind.TECHNICAL
    assert skew.device_id == "p1"
    # the clock is fixed; a real press 200 s later is a new alarm, not folded
    rig.clock.advance(200)
    second = await rig.press("p1")
    assert second.dispatch_id != first.dispatch_id
    assert rig.pipeline.counters["folded"] == 0
    assert rig.pipeline.counters["cleared"] == 1  # the clock fault: plausible again


async def test_a_late_alarm_is_raised_with_its_true_time_and_how_late(rig: Rig) -> None:
    happened = TS - timedelta(hours=2, minutes=5)
    msg = await rig.event("fall2", EventType.FALL, ts=happened)
    d = await dispatch_for(rig.store, alarm_id_for("fall2", msg))
    [alert] = [a for a in await rig.alerts() if a.alert_id == d.alert_id]
    assert alert.ts == happened
    assert alert.detail["late_by_s"] == 7500
    assert "late by 2 h 5 min" in alert.reason
    assert [a for a in await rig.alerts() if a.event_type is EventType.CLOCK_SKEW] == []


def _high_set(msg_id: str, ts: datetime) -> bytes:
    return json_v1.encode_observation(
        msg_id,
        ts,
        "r1",
        respiration_rate=26,
        spo2=91,
        on_oxygen=True,
        systolic_bp=88,
        pulse=135,
        consciousness="V",
        temperature=34.9,
    )


async def test_a_three_day_old_set_is_stored_as_late_and_not_escalated(rig: Rig) -> None:
    taken = TS - timedelta(days=3)
    await rig.send("ipad", "observation", _high_set("old", taken))
    [score] = await rig.store.news2_history("r1", taken, taken + timedelta(seconds=1))
    assert score.total == 20  # stored with its true time
    alerts = await rig.alerts()
    assert [a for a in alerts if a.kind is AlertKind.NEWS2] == []  # no priority-1 "now"
    [late] = alerts
    assert late.priority == 3
    assert late.detail["stale"] is True
    assert late.detail["late_by_s"] == 3 * 86400
    assert "late observation set" in late.reason


async def test_a_set_dated_a_day_ahead_does_not_hold_off_observations_due(rig: Rig) -> None:
    ahead = TS + timedelta(days=1)
    await rig.send("ipad", "observation", _high_set("ahead", ahead))
    [score] = await rig.store.news2_history("r1", TS, TS + timedelta(seconds=1))
    assert score.ts == TS  # timed by the gateway
    assert next(a for a in await rig.alerts() if a.kind is AlertKind.NEWS2).ts == TS
    rig.clock.advance(minutes=16)  # high: due again after 15 minutes, not 24 h 15 min
    await rig.pipeline.tick()
    assert [a for a in await rig.alerts() if a.reason.startswith("NEWS2 observations due")]


async def test_heartbeats_from_a_clock_running_ahead_flag_a_clock_fault(rig: Rig) -> None:
    ahead = json_v1.encode_heartbeat("hb1", rig.clock.now() + timedelta(hours=3))
    await rig.send("p1", "heartbeat", ahead)
    [skew] = [a for a in await rig.alerts() if a.event_type is EventType.CLOCK_SKEW]
    assert skew.detail["ahead_s"] == 3 * 3600
    fault = await dispatch_for(rig.store, skew.alert_id)
    rig.clock.advance(30)  # within the 60 s acknowledge timer: still raised
    await rig.send("p1", "heartbeat", json_v1.encode_heartbeat("hb2", rig.clock.now()))
    await eventually(lambda: rig.state(fault), lambda s: s is DispatchState.RESOLVED)
    assert len([a for a in await rig.alerts() if a.event_type is EventType.CLOCK_SKEW]) == 1


async def test_a_stale_partial_set_with_a_red_score_is_not_escalated_as_current(
    rig: Rig,
) -> None:
    taken = TS - timedelta(days=2)
    partial = json_v1.encode_observation("red-old", taken, "r1", systolic_bp=70)
    await rig.send("ipad", "observation", partial)
    [late] = await rig.alerts()
    assert late.kind is AlertKind.TEMPORAL
    assert late.priority == 3
    assert "partial set with a red score (systolic_bp)" in late.reason
    assert late.detail["stale"] is True
