"""Temporal rules with a fake clock: time jumps, nothing sleeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta

from telecare.rules.clock import FakeClock
from telecare.rules.config import InactivityWindow, ResidentRules, RulesConfig
from telecare.rules.temporal import TemporalRules

# 2026-06-01 is in British Summer Time: 07:00 local is 06:00 UTC.
DAY = datetime(2026, 6, 1, 5, 0, tzinfo=UTC)
CONFIG = RulesConfig(
    residents={
        "res-1": ResidentRules(
            resident_id="res-1",
            inactivity_windows=(InactivityWindow(time(7, 0), time(10, 0)),),
        )
    }
)


def test_inactivity_window_without_activity_alerts_once_at_window_end() -> None:
    clock = FakeClock(DAY)
    rules = TemporalRules(CONFIG)
    assert rules.tick(clock.now()).alerts == []  # starts watching
    clock.set(datetime(2026, 6, 1, 8, 59, tzinfo=UTC))  # 09:59 local
    assert rules.tick(clock.now()).alerts == []
    clock.advance(60)  # 10:00 local
    alerts = rules.tick(clock.now()).alerts
    assert len(alerts) == 1
    assert alerts[0].priority == 2
    assert "07:00" in alerts[0].reason
    clock.advance(hours=1)
    assert rules.tick(clock.now()).alerts == []
    cleared = rules.activity("res-1", clock.now()).cleared
    assert [c.alarm_id for c in cleared] == [alerts[0].alert_id]


def test_activity_inside_window_prevents_alert() -> None:
    rules = TemporalRules(CONFIG)
    rules.tick(DAY)
    rules.activity("res-1", datetime(2026, 6, 1, 6, 30, tzinfo=UTC))  # 07:30 local
    assert rules.tick(datetime(2026, 6, 1, 9, 30, tzinfo=UTC)).alerts == []


def test_activity_before_window_does_not_count() -> None:
    rules = TemporalRules(CONFIG)
    rules.tick(DAY)
    rules.activity("res-1", datetime(2026, 6, 1, 5, 30, tzinfo=UTC))  # 06:30 local
    assert len(rules.tick(datetime(2026, 6, 1, 9, 30, tzinfo=UTC)).alerts) == 1


def test_window_started_before_watching_is_not_judged() -> None:
    rules = TemporalRules(CONFIG)
    rules.tick(datetime(2026, 6, 1, 7, 0, tzinfo=UTC))  # 08:00 local, mid-window
    assert rules.tick(datetime(2026, 6, 1, 9, 30, tzinfo=UTC)).alerts == []
    # next day it is judged
    assert len(rules.tick(datetime(2026, 6, 2, 9, 30, tzinfo=UTC)).alerts) == 1


def test_inactivity_state_survives_restart_mid_window() -> None:
    rules = TemporalRules(CONFIG)
    rules.tick(DAY)
    data = json.loads(json.dumps(rules.snapshot()))
    again = TemporalRules.from_snapshot(data, CONFIG)
    assert len(again.tick(datetime(2026, 6, 1, 9, 1, tzinfo=UTC)).alerts) == 1
    data = json.loads(json.dumps(again.snapshot()))
    assert (
        TemporalRules.from_snapshot(data, CONFIG)
        .tick(datetime(2026, 6, 1, 9, 2, tzinfo=UTC))
        .alerts
        == []
    )


def test_heartbeat_multiple_and_snapshot() -> None:
    clock = FakeClock(DAY)
    rules = TemporalRules()
    rules.watch_device("hub-1", 60, clock.now(), site_id="site-1")
    clock.advance(150)
    rules.device_seen("hub-1", clock.now())
    clock.advance(180)
    assert rules.tick(clock.now()).alerts == []
    restored = TemporalRules.from_snapshot(json.loads(json.dumps(rules.snapshot())))
    clock.advance(1)
    assert len(restored.tick(clock.now()).alerts) == 1
    rules.watch_device("hub-1", 0, clock.now())  # unwatch
    assert rules.tick(clock.now() + timedelta(days=1)).alerts == []


def test_news2_trend_rise_within_24h_only() -> None:
    rules = TemporalRules()
    t0 = DAY
    rules.news2_scored("res-1", t0, 1, "low")
    trend, _ = rules.news2_scored("res-1", t0 + timedelta(hours=23), 3, "low")
    assert trend.rising
    assert trend.rise == 2
    rules2 = TemporalRules()
    rules2.news2_scored("res-1", t0, 1, "low")
    trend, _ = rules2.news2_scored("res-1", t0 + timedelta(hours=25), 3, "low")
    assert not trend.rising


def test_news2_band_crossing() -> None:
    rules = TemporalRules()
    rules.news2_scored("res-1", DAY, 4, "low")
    trend, _ = rules.news2_scored("res-1", DAY + timedelta(hours=1), 5, "medium")
    assert trend.crossed
    assert not trend.rising
    trend, _ = rules.news2_scored("res-1", DAY + timedelta(hours=2), 4, "low")
    assert not trend.crossed


def test_observations_due_follows_the_last_score() -> None:
    rules = TemporalRules()
    rules.news2_scored("res-1", DAY, 5, "medium")  # hourly
    assert rules.tick(DAY + timedelta(minutes=59)).alerts == []
    due = rules.tick(DAY + timedelta(minutes=60)).alerts
    assert len(due) == 1
    assert rules.tick(DAY + timedelta(minutes=90)).alerts == []
    _, out = rules.news2_scored("res-1", DAY + timedelta(minutes=95), 0, "low")
    assert [c.alarm_id for c in out.cleared] == [due[0].alert_id]
    assert rules.tick(DAY + timedelta(hours=13, minutes=34)).alerts == []  # 12 h after 95 min
    assert len(rules.tick(DAY + timedelta(hours=13, minutes=35)).alerts) == 1


def test_spo2_alert_needs_a_sustained_period() -> None:
    rules = TemporalRules()
    out = rules.spo2_reading("res-1", 90, DAY, target=94, sustained_s=60)
    assert out.alerts == []
    rules.spo2_reading("res-1", 95, DAY + timedelta(seconds=30), target=94, sustained_s=60)
    out = rules.spo2_reading("res-1", 90, DAY + timedelta(seconds=70), target=94, sustained_s=60)
    assert out.alerts == []  # the low period restarted at 70 s
    out = rules.spo2_reading("res-1", 90, DAY + timedelta(seconds=130), target=94, sustained_s=60)
    assert len(out.alerts) == 1


def test_a_heartbeat_storm_is_raised_in_bounded_chunks_once_each() -> None:
    rules = TemporalRules()
    for i in range(250):
        rules.watch_device(f"d{i}", 60, DAY)
    later = DAY + timedelta(seconds=181)
    sizes = [len(rules.tick(later, max_alerts=100).alerts) for _ in range(4)]
    assert sizes == [100, 100, 50, 0]
    assert rules.tick(later + timedelta(hours=1)).alerts == []  # once per silence


def test_a_gateway_restart_gives_every_device_a_fresh_miss_period() -> None:
    rules = TemporalRules()
    rules.watch_device("d1", 60, DAY)
    restarted = TemporalRules.from_snapshot(json.loads(json.dumps(rules.snapshot())))
    back = DAY + timedelta(hours=1)  # the gateway was down for an hour
    restarted.watch_device("d1", 60, back)
    assert restarted.tick(back + timedelta(seconds=10)).alerts == []
    assert len(restarted.tick(back + timedelta(seconds=181)).alerts) == 1


def test_a_clock_ahead_is_flagged_once_and_cleared_by_a_plausible_time() -> None:
    rules = TemporalRules()
    ok, out = rules.clock_check("p1", DAY + timedelta(days=1), DAY)
    assert not ok
    [alert] = out.alerts
    assert alert.detail["ahead_s"] == 86400
    ok, out = rules.clock_check("p1", DAY + timedelta(days=1), DAY + timedelta(seconds=5))
    assert (ok, out.alerts) == (False, [])
    ok, out = rules.clock_check("p1", DAY - timedelta(hours=3), DAY)  # late is plausible
    assert ok
    assert [c.alarm_id for c in out.cleared] == [alert.alert_id]
