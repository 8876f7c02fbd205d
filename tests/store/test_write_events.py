"""``Store.write_events``: several events in one transaction, idempotent per event, on both
backends and through the durable store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from devices.model import AlarmEvent, EventType, Phase
from gateway.store.durable import DurableStore
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

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
