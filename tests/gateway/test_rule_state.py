"""Rule state in the store (``rule_state``, migration 0016): a restart keeps open alarms
and timers; after a change only the changed rows are written; the JSON file of older
versions is read once, moved into the store and renamed."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

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
from telecare.gateway.rule_state import load_engine, write_changes
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.clock import FakeClock
from telecare.rules.config import RulesConfig
from telecare.rules.engine import RuleEngine
from telecare.rules.news2 import Observation
from tests.rules.conftest import T0

RESIDENT = Resident("res-1", "site-1")
SITE = Site("site-1", SiteKind.CARE_HOME)
NORMAL = Observation(16, 98, False, 120, 70, "A", 37.0)


def _press(at: float = 0) -> AlarmEvent:
    return AlarmEvent(
        device_id="pendant-1",
        type=EventType.PENDANT,
        phase=Phase.ALARM,
        ts=T0 + timedelta(seconds=at),
        msg_id=f"m{at}",
        resident_id="res-1",
        site_id="site-1",
    )


async def _stored(store: SqliteStore | PostgresStore) -> dict[tuple[str, str], object]:
    rows = await store.sql.fetch_all("SELECT section, key, value FROM rule_state")
    return {(s, k): json.loads(v) for s, k, v in rows}


async def test_restart_from_the_store_keeps_alarms_and_timers_and_writes_only_changes(
    store: SqliteStore | PostgresStore,
) -> None:
    clock = FakeClock(T0)
    engine = await load_engine(store, RulesConfig(), clock)
    assert list(engine.rows()) == []
    for n in range(50):
        engine.watch_device(Device(f"d{n}", "site-1", DeviceKind.PENDANT, heartbeat_interval_s=60))
    alert = engine.on_event(_press(), RESIDENT).alerts[0]
    engine.on_observation(NORMAL, RESIDENT, SITE, ts=T0)
    await write_changes(store, engine.take_changes())
    # 50 devices, the alarm, the resident's activity (a press) and NEWS2 state
    assert len(await _stored(store)) == 53

    clock.advance(30)
    engine.device_seen("d7", clock.now())
    engine.close(alert.alert_id)
    changes = engine.take_changes()
    assert set(changes) == {("device", "d7"), ("alarm", alert.alert_id)}
    await write_changes(store, changes)
    stored = await _stored(store)
    assert ("alarm", alert.alert_id) not in stored
    assert stored["device", "d7"] == {
        "interval_s": 60,
        "last_seen": clock.now().isoformat(),
        "site_id": "site-1",
        "resident_id": None,
        "alert_id": None,
    }

    again = await load_engine(store, RulesConfig(), clock)
    assert again.snapshot() == json.loads(json.dumps(engine.snapshot()))
    clock.advance(hours=12)
    assert any("observations due" in a.reason for a in again.tick().alerts)


async def test_the_old_state_file_is_moved_into_the_store_once(
    store: SqliteStore | PostgresStore, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    old = RuleEngine(RulesConfig(), clock)
    alert = old.on_event(_press(), RESIDENT).alerts[0]
    path = tmp_path / "rules-state.json"
    path.write_text(json.dumps(old.snapshot()))

    engine = await load_engine(store, RulesConfig(), clock, path)
    assert [a.alarm_id for a in engine.alarms.open_alarms] == [alert.alert_id]
    assert not path.exists()
    assert (tmp_path / "rules-state.json.migrated").exists()
    assert ("alarm", alert.alert_id) in await _stored(store)
    # From now on the store is what counts: a file that reappears is ignored.
    path.write_text(json.dumps(RuleEngine(RulesConfig(), clock).snapshot()))
    again = await load_engine(store, RulesConfig(), clock, path)
    assert [a.alarm_id for a in again.alarms.open_alarms] == [alert.alert_id]
