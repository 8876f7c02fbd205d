"""The rule engine: the contract the gateway pipeline relies on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from telecare.devices.model import (
    AlertKind,
    Consciousness,
    Device,
    DeviceKind,
    EventType,
    Metric,
    Phase,
    Reading,
    Resident,
    Site,
    SiteKind,
)
from telecare.rules.clock import FakeClock
from telecare.rules.config import RulesConfig
from telecare.rules.engine import RuleEngine
from telecare.rules.news2 import News2ValueError, Observation
from tests.rules.conftest import T0, EventFactory

RESIDENT = Resident(resident_id="res-1", site_id="site-1", name="Private Person")
SITE = Site(site_id="site-1", kind=SiteKind.CARE_HOME)
NORMAL = Observation(16, 98, False, 120, 70, "A", 37.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def engine(clock: FakeClock) -> RuleEngine:
    return RuleEngine(RulesConfig(), clock)


def test_pendant_press_gives_one_priority_1_alarm(engine: RuleEngine, event: EventFactory) -> None:
    result = engine.on_event(event(EventType.PENDANT), RESIDENT)
    assert len(result.alerts) == 1
    alert = result.alerts[0]
    assert (alert.kind, alert.priority, alert.event_type) == (
        AlertKind.ALARM,
        1,
        EventType.PENDANT,
    )
    assert alert.resident_id == "res-1"
    assert "Private Person" not in alert.reason


def test_repeat_press_folds_and_cancel_clears(engine: RuleEngine, event: EventFactory) -> None:
    alert = engine.on_event(event(EventType.PENDANT), RESIDENT).alerts[0]
    again = engine.on_event(event(EventType.PENDANT, at=15), RESIDENT)
    assert again.alerts == []
    assert [(f.alarm_id, f.count) for f in again.folded] == [(alert.alert_id, 2)]
    closed = engine.on_event(event(EventType.CANCEL, at=60), RESIDENT)
    assert [c.alarm_id for c in closed.cleared] == [alert.alert_id]


def test_same_event_twice_gives_same_alert_id(event: EventFactory) -> None:
    a = RuleEngine().on_event(event(EventType.FALL, msg_id="f1")).alerts[0]
    b = RuleEngine().on_event(event(EventType.FALL, msg_id="f1")).alerts[0]
    assert a.alert_id == b.alert_id


def test_technical_event_and_restore(engine: RuleEngine, event: EventFactory) -> None:
    alert = engine.on_event(event(EventType.MAINS_FAIL, device="hub-1")).alerts[0]
    assert (alert.kind, alert.priority) == (AlertKind.TECHNICAL, 4)
    out = engine.on_event(event(EventType.MAINS_FAIL, Phase.RESTORE, at=9, device="hub-1"))
    assert [c.alarm_id for c in out.cleared] == [alert.alert_id]


def test_restore_of_pendant_is_reported_not_cleared(
    engine: RuleEngine, event: EventFactory
) -> None:
    alert = engine.on_event(event(EventType.PENDANT)).alerts[0]
    out = engine.on_event(event(EventType.PENDANT, Phase.RESTORE, at=2))
    assert out.cleared == []
    assert out.restored == [alert.alert_id]


def test_observation_scores_and_raises_by_band(engine: RuleEngine) -> None:
    news, result = engine.on_observation(NORMAL, RESIDENT, SITE, ts=T0)
    assert news.total == 0
    assert result.alerts == []
    assert result.advice
    assert "12 hours" in result.advice
    worst = Observation(8, 91, True, 90, 131, "U", 35.0)
    news, result = engine.on_observation(worst, RESIDENT, SITE, ts=T0 + timedelta(hours=1))
    assert news.total == 20
    assert [(a.kind, a.priority) for a in result.alerts] == [(AlertKind.NEWS2, 1)]
    assert result.advice == "Emergency: call 999."
    assert "up from low risk" in result.alerts[0].reason


def test_rising_by_two_within_low_band_raises_trend_alert(engine: RuleEngine) -> None:
    engine.on_observation(NORMAL, RESIDENT, SITE, ts=T0)
    obs = Observation(22, 98, False, 120, 70, "A", 37.0)  # RR 22 -> 2, still low
    news, result = engine.on_observation(obs, RESIDENT, SITE, ts=T0 + timedelta(hours=3))
    assert news.risk == "low"
    assert [(a.kind, a.priority) for a in result.alerts] == [(AlertKind.TEMPORAL, 3)]
    assert "rose by 2" in result.alerts[0].reason


def test_incomplete_set_without_a_red_score_gives_no_alert(engine: RuleEngine) -> None:
    news, result = engine.on_observation(Observation(respiration_rate=22), RESIDENT, SITE)
    assert not news.complete
    assert result.alerts == []


def test_incomplete_set_with_a_red_score_escalates_without_a_total(engine: RuleEngine) -> None:
    news, result = engine.on_observation(Observation(respiration_rate=30), RESIDENT, SITE)
    assert not news.complete
    assert news.total is None
    [alert] = result.alerts
    assert (alert.kind, alert.priority) == (AlertKind.NEWS2, 2)
    assert "news2" not in alert.detail
    assert "total" not in alert.detail
    assert alert.detail["red_parameters"] == ["respiration_rate"]
    assert "spo2" in alert.detail["missing"]
    assert "missing" in alert.reason


def test_pulse_zero_with_an_alert_resident_is_refused(engine: RuleEngine) -> None:
    with pytest.raises(News2ValueError, match="physiologically impossible"):
        engine.on_observation(Observation(16, 97, False, 120, 0, "A", 37.0), RESIDENT)
    with pytest.raises(News2ValueError, match="respiration_rate"):
        engine.on_observation(Observation(0, 97, False, 120, 70, "A", 37.0), RESIDENT)
    news, _ = engine.on_observation(Observation(16, 97, False, 120, 0, "U", 37.0), RESIDENT)
    assert news.red_flag  # no pulse in an unresponsive resident is real, and red


def test_impossible_value_raises(engine: RuleEngine) -> None:
    with pytest.raises(News2ValueError):
        engine.on_observation(Observation(16, 101, False, 120, 70, "A", 37.0), RESIDENT)


def test_resident_scale_2_is_used_and_reading_scale_ignored(engine: RuleEngine) -> None:
    copd = Resident(
        resident_id="res-2",
        site_id="site-1",
        spo2_scale=2,
        spo2_scale_set_by="clinician-7",
        spo2_scale_set_at=datetime(2025, 12, 1, tzinfo=UTC),
    )
    obs = Observation(16, 89, False, 120, 70, "A", 37.0)
    assert engine.on_observation(obs, copd, ts=T0)[0].total == 0
    assert engine.on_observation(obs, RESIDENT, ts=T0)[0].total == 3


def test_chronic_confusion_baseline_is_not_new_confusion(engine: RuleEngine) -> None:
    baseline_c = Resident(
        resident_id="res-3", site_id="site-1", baseline_consciousness=Consciousness.CONFUSION
    )
    obs = Observation(16, 98, False, 120, 70, "C", 37.0)
    assert engine.on_observation(obs, baseline_c, ts=T0)[0].total == 0
    assert engine.on_observation(obs, RESIDENT, ts=T0)[0].total == 3
    voice = Observation(16, 98, False, 120, 70, "V", 37.0)
    assert engine.on_observation(voice, baseline_c, ts=T0)[0].total == 3


def test_missed_heartbeat_then_heard_again(
    engine: RuleEngine, clock: FakeClock, event: EventFactory
) -> None:
    hub = Device(device_id="hub-1", site_id="site-1", kind=DeviceKind.HUB, heartbeat_interval_s=600)
    engine.watch_device(hub)
    clock.advance(1800)
    assert engine.tick().alerts == []  # exactly 3 intervals: not yet
    clock.advance(1)
    alerts = engine.tick().alerts
    assert [(a.kind, a.event_type) for a in alerts] == [
        (AlertKind.TECHNICAL, EventType.HEARTBEAT_MISSED)
    ]
    assert engine.tick().alerts == []  # raised once
    beat = event(EventType.PERIODIC_TEST, at=1900, device="hub-1")
    result = engine.on_event(beat)
    assert result.alerts == []
    assert [c.alarm_id for c in result.cleared] == [alerts[0].alert_id]


def test_sustained_low_spo2_from_readings(engine: RuleEngine) -> None:
    def reading(at: int, value: float) -> Reading:
        return Reading(
            device_id="ox-1",
            metric=Metric.SPO2,
            value=value,
            unit="%",
            ts=T0 + timedelta(seconds=at),
            msg_id=f"r{at}",
            resident_id="res-1",
        )

    assert engine.on_reading(reading(0, 91)).alerts == []
    assert engine.on_reading(reading(299, 90)).alerts == []
    alert = engine.on_reading(reading(300, 90)).alerts[0]
    assert alert.kind is AlertKind.TEMPORAL
    assert engine.on_reading(reading(310, 95)).cleared[0].alarm_id == alert.alert_id


def test_snapshot_restore_keeps_open_alarms_and_timers(
    engine: RuleEngine, clock: FakeClock, event: EventFactory
) -> None:
    alert = engine.on_event(event(EventType.PENDANT), RESIDENT).alerts[0]
    engine.on_observation(NORMAL, RESIDENT, SITE, ts=T0)
    data = json.loads(json.dumps(engine.snapshot()))
    again = RuleEngine.restore(data, RulesConfig(), clock)
    folded = again.on_event(event(EventType.PENDANT, at=5), RESIDENT).folded
    assert folded[0].alarm_id == alert.alert_id
    clock.advance(hours=12)
    due = again.tick().alerts
    assert len(due) == 1
    assert "observations due" in due[0].reason


def test_close_lets_the_rule_fire_again(engine: RuleEngine, event: EventFactory) -> None:
    alert = engine.on_event(event(EventType.FLOOD, device="fl-1")).alerts[0]
    assert engine.close(alert.alert_id).cleared[0].alarm_id == alert.alert_id
    assert engine.close(alert.alert_id).cleared == []
    assert len(engine.on_event(event(EventType.FLOOD, at=1, device="fl-1")).alerts) == 1
