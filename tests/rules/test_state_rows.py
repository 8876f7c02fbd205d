"""Rule state as rows: ``take_changes`` names exactly what changed, so a store that applies
the changes after every step holds the whole state (``rows``) and rebuilds the engine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from typing import Any

from telecare.devices.model import (
    Device,
    DeviceKind,
    EventType,
    Metric,
    Reading,
    Resident,
    Site,
    SiteKind,
)
from telecare.rules.clock import FakeClock
from telecare.rules.config import InactivityWindow, ResidentRules, RulesConfig
from telecare.rules.engine import RuleEngine
from telecare.rules.news2 import Observation
from tests.rules.conftest import T0, EventFactory

Rows = dict[tuple[str, str], dict[str, Any]]

RESIDENT = Resident(resident_id="res-1", site_id="site-1")
SITE = Site(site_id="site-1", kind=SiteKind.CARE_HOME)
HIGH = Observation(26, 88, True, 88, 135, "V", 39.5)
CONFIG = RulesConfig(
    residents={
        "res-1": ResidentRules(
            resident_id="res-1",
            site_id="site-1",
            inactivity_windows=(InactivityWindow(time(10, 0), time(11, 0)),),
        )
    }
)


def _apply(table: Rows, engine: RuleEngine) -> int:
    """Write ``engine``'s changes into ``table`` as a store would; how many rows."""
    changes = engine.take_changes()
    for key, row in changes.items():
        if row is None:
            table.pop(key, None)
        else:
            table[key] = json.loads(json.dumps(row))  # what a JSON column gives back
    return len(changes)


def _all(engine: RuleEngine) -> Rows:
    return {(s, k): json.loads(json.dumps(v)) for s, k, v in engine.rows()}


def _spo2(at: float, value: float) -> Reading:
    return Reading(
        device_id="ox-1",
        metric=Metric.SPO2,
        value=value,
        unit="%",
        ts=T0 + timedelta(seconds=at),
        msg_id=f"r{at}",
        resident_id="res-1",
    )


def test_applied_changes_always_equal_the_whole_state(event: EventFactory) -> None:
    clock = FakeClock(T0)
    engine = RuleEngine(CONFIG, clock)
    table: Rows = {}
    hub = Device("hub-1", "site-1", DeviceKind.HUB, heartbeat_interval_s=60)
    pendant = Device("pendant-1", "site-1", DeviceKind.PENDANT, "res-1", heartbeat_interval_s=60)

    def step() -> None:
        _apply(table, engine)
        assert table == _all(engine)

    engine.watch_device(hub)
    engine.watch_device(pendant)
    step()
    alarm = engine.on_event(event(EventType.PENDANT), RESIDENT).alerts[0]
    step()
    engine.on_event(event(EventType.PENDANT, at=10), RESIDENT)  # folded
    step()
    clock.advance(200)
    missed = engine.tick().alerts  # both devices silent for > 3 intervals
    assert {a.device_id for a in missed} == {"hub-1", "pendant-1"}
    step()
    engine.device_seen("hub-1", clock.now())  # heard again: clears
    step()
    engine.check_clock("hub-1", clock.now() + timedelta(hours=1), clock.now())  # clock ahead
    step()
    engine.check_clock("hub-1", clock.now(), clock.now())  # right again
    step()
    engine.on_observation(HIGH, RESIDENT, SITE, ts=clock.now())
    step()
    for at, value in ((300, 85), (700, 85), (900, 97)):  # low, sustained (alert), back
        engine.on_reading(_spo2(at, value), RESIDENT)
        step()
    clock.set(datetime(2026, 1, 5, 11, 30, tzinfo=UTC))  # after the inactivity window
    engine.tick()
    step()
    engine.on_activity("res-1", clock.now(), site_id="site-1")
    step()
    engine.close(alarm.alert_id)
    engine.close(missed[1].alert_id, clock.now())
    step()
    engine.watch_device(Device("hub-1", "site-1", DeviceKind.HUB))  # interval 0: unwatched
    step()
    assert ("device", "hub-1") not in table
    assert {s for s, _ in table} == {"device", "activity", "news2", "spo2"}

    again = RuleEngine.from_rows(((s, k, v) for (s, k), v in table.items()), CONFIG, clock)
    assert again.snapshot() == json.loads(json.dumps(engine.snapshot()))
    assert again.take_changes() == {}  # loaded rows are not written back


def test_a_heartbeat_changes_one_row_and_nothing_else_is_written() -> None:
    clock = FakeClock(T0)
    engine = RuleEngine(RulesConfig(), clock)
    for n in range(1000):
        engine.watch_device(Device(f"d{n}", "site-1", DeviceKind.PENDANT, heartbeat_interval_s=300))
    table: Rows = {}
    assert _apply(table, engine) == 1000
    clock.advance(5)
    engine.device_seen("d7", clock.now())
    changes = engine.take_changes()
    assert list(changes) == [("device", "d7")]
    assert changes["device", "d7"] == {
        "interval_s": 300,
        "last_seen": clock.now().isoformat(),
        "site_id": "site-1",
        "resident_id": None,
        "alert_id": None,
    }
    engine.tick()  # nobody is due: the tick changes nothing
    assert engine.take_changes() == {}


def test_restart_from_rows_keeps_open_alarms_and_timers(event: EventFactory) -> None:
    clock = FakeClock(T0)
    engine = RuleEngine(RulesConfig(), clock)
    alert = engine.on_event(event(EventType.PENDANT), RESIDENT).alerts[0]
    engine.on_observation(HIGH, RESIDENT, SITE, ts=T0)
    rows = list(engine.rows())
    again = RuleEngine.from_rows(json.loads(json.dumps(rows)), RulesConfig(), clock)
    folded = again.on_event(event(EventType.PENDANT, at=5), RESIDENT).folded
    assert folded[0].alarm_id == alert.alert_id
    clock.advance(hours=2)
    assert any("observations due" in a.reason for a in again.tick().alerts)
