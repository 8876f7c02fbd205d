"""``DurableStore`` on both backends while the database is up (everything goes straight
through, idempotently), and its spool limits while PostgreSQL is away."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from telecare.devices.model import Alert, Dispatch, DispatchState
from telecare.dispatch.records import AuditRecord
from telecare.gateway.store.base import Store
from telecare.gateway.store.durable import DurableStore, apply_records, encode
from telecare.gateway.store.errors import SpoolFull
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.rows import DeadLetter, News2Record, StatusItem
from telecare.gateway.store.spool import SpoolState
from tests.store.helpers import T0, alert, event, message, registry
from tests.store.proxy import TcpProxy


async def test_writes_go_straight_through_when_the_database_is_up(
    store: Store, tmp_path: Path
) -> None:
    await registry(store)
    async with DurableStore(store, spool_dir=tmp_path / "spool", batch_age=0.01) as durable:
        assert durable.mode == store.mode
        await asyncio.gather(*(durable.write_readings(message(i)) for i in range(50)))
        await durable.write_readings(message(3))  # redelivery
        assert (await durable.write_events([event(1)]))[0] is True
        assert (await durable.write_events([event(1)]))[0] is False
        assert (await durable.write_alerts([alert(1)]))[0] is True
        dispatch = Dispatch("d1", "a1", DispatchState.RAISED, 1, T0, T0, "s1", "res1")
        audit = AuditRecord("d1", T0, None, DispatchState.RAISED, "gateway")
        assert await durable.dispatches.create(dispatch, audit, (), ()) is True
        assert await durable.dispatches.create(dispatch, audit, (), ()) is False
        score = News2Record("res1", T0, 3, "low", False, {"spo2": 1}, 1, "obs1")
        assert await durable.write_news2(score) is True
        assert await durable.write_news2(score) is False
        await durable.write_dead_letter(DeadLetter(T0, "mqtt", "t", "bad", b"x"))
        await durable.write_status(StatusItem("ox1", T0, True, heartbeat=True))
        stats = durable.stats()
        assert not durable.degraded
    assert stats["items_spooled"] == 0
    assert stats["rows_flushed"] == 153
    assert await store.count("readings") == 150
    assert await store.count("dead_letters") == 1
    assert await store.count("device_status") == 1
    assert (await store.dispatches.load("d1")) == dispatch
    assert stats["spool_records"] == 0


async def test_replayed_events_and_alerts_are_written_or_dead_letters(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replayed event or alert record goes through the batch write (a batch of one);
    one the database rejects becomes a dead letter and the replay carries on."""
    await registry(store)
    write_alerts = store.write_alerts

    async def reject_a2(alerts: list[Alert]) -> list[bool]:
        if any(a.alert_id == "a2" for a in alerts):
            raise ValueError("rejected")
        return await write_alerts(alerts)

    monkeypatch.setattr(store, "write_alerts", reject_a2)
    records = [encode(event(1)), encode(alert(1)), encode(alert(2)), encode(event(2))]
    await apply_records(store, records, "spool/1-4")
    assert await store.count("alarm_events") == 2
    assert await store.count("alerts") == 1
    [letter] = await store.dead_letters()
    assert (letter.source, letter.origin, letter.payload) == ("spool", "spool/1-4", records[2])
    assert "rejected" in letter.reason


async def test_full_spool_refuses_and_alarms(
    pg_dsn: str, pg_schema: str, proxied_dsn: str, pg_proxy: TcpProxy, tmp_path: Path
) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema) as direct:
        await direct.migrate()
    states: list[SpoolState] = []
    proxied = PostgresStore(proxied_dsn, schema=pg_schema, timeout=0.5)
    async with proxied:
        await pg_proxy.cut()
        async with DurableStore(
            proxied,
            spool_dir=tmp_path / "spool",
            spool_max_bytes=4000,
            on_spool_state=states.append,
            batch_age=0.005,
            retry_initial=0.05,
            maintain_every=None,
        ) as durable:

            async def fill() -> None:
                for i in range(100):
                    await durable.write_readings(message(i))

            with pytest.raises(SpoolFull):
                await fill()
            assert durable.stats()["spool_bytes"] <= 4000
            assert durable.degraded
    assert len(states) == 1  # reported once, not on every refused append
    assert states[0].near_full
    assert states[0].max_bytes == 4000
