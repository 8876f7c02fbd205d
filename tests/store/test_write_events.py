"""``Store.write_events``: several events in one transaction, idempotent per event, on both
backends and through the durable store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from telecare.devices.model import AlarmEvent, Alert, AlertKind, EventType, Phase
from telecare.gateway.store.durable import DurableStore
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.rows import AlertNote
from telecare.gateway.store.sqlite import SqliteStore

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _event(i: int, device: str = "d1") -> AlarmEvent:
    return AlarmEvent(
        device, EventType.PENDANT, Phase.ALARM, T0 + timedelta(seconds=i), f"m{i}", source="dc09"
    )


async def test_write_events_reports_which_were_new(
    store: PostgresStore | SqliteStore, tmp_path: Path
) -> None:
    assert await store.write_events([_event(1), _event(2)]) == [True, True]
    assert await store.write_events([_event(2), _event(3), _event(3)]) == [False, True, False]
    assert await store.write_events([]) == []
    async with DurableStore(store, spool_dir=tmp_path / "spool") as durable:
        assert await durable.write_events([_event(3), _event(4, "d2")]) == [False, True]
    assert await store.count("alarm_events") == 4


async def test_write_alerts_reports_which_were_new(store: PostgresStore | SqliteStore) -> None:
    a = [Alert(f"a{i}", AlertKind.ALARM, 1, "pendant", T0) for i in range(3)]
    assert await store.write_alerts(a[:2]) == [True, True]
    # An alert id twice in one batch is stored once: new only the first time.
    assert await store.write_alerts([a[1], a[2], a[2]]) == [False, True, False]
    assert await store.write_alerts([]) == []
    assert await store.sql.fetch_all("SELECT count(*) FROM alerts") == [(3,)]


async def test_note_alerts_patches_each_alert_detail_in_one_call(
    store: PostgresStore | SqliteStore, tmp_path: Path
) -> None:
    alerts = [
        Alert(f"a{i}", AlertKind.ALARM, 1, "pendant", T0, detail={"keep": i}) for i in range(3)
    ]
    assert await store.write_alerts(alerts) == [True, True, True]
    restored = T0 + timedelta(minutes=1)
    await store.note_alerts(
        [AlertNote("a0", count=2), AlertNote("a1", restored_at=restored), AlertNote("a2")]
    )
    async with DurableStore(store, spool_dir=tmp_path / "spool") as durable:
        await durable.note_alerts([AlertNote("a0", count=3)])
        await durable.note_alerts([])
    details = {a.alert_id: a.detail for a in await store.recent_alerts()}
    assert details == {
        "a0": {"keep": 0, "count": 3},
        "a1": {"keep": 1, "restored_at": restored.isoformat()},
        "a2": {"keep": 2},
    }


async def test_alarm_states_of_stored_alerts_only(store: PostgresStore | SqliteStore) -> None:
    assert await store.write_alerts([Alert("a0", AlertKind.ALARM, 1, "pendant", T0)]) == [True]
    assert await store.alarm_states({"a0", "nope"}) == {"a0": None}  # no dispatch yet
    assert await store.alarm_states(set()) == {}
