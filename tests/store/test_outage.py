"""The database link is cut while readings, alarm events and alerts keep arriving, then
restored: every one is stored exactly once (nothing lost, nothing twice). (Dispatches are
not spooled: the dispatch service writes them directly and retries.)

PostgreSQL sits behind a TCP proxy (tests/store/proxy.py) that breaks every connection
and refuses new ones while cut.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg

from telecare.gateway.store.durable import DurableStore
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.spool import Spool
from tests.store.helpers import alert, event, message, registry
from tests.store.proxy import TcpProxy

GUARD = 60  # seconds: a hang guard only, never a performance assertion


def _durable(store: PostgresStore, spool: Path) -> DurableStore:
    return DurableStore(
        store,
        spool_dir=spool,
        batch_rows=200,
        batch_age=0.01,
        retry_initial=0.02,
        retry_max=0.2,
        maintain_every=None,
    )


async def _spooled(directory: Path) -> int:
    """How many records wait in the spool a stopped gateway left in ``directory``."""
    async with Spool(directory) as spool:
        return spool.stats()["spool_records"]


async def _count_and_duplicates(dsn: str, schema: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'SET search_path = "{schema}"')
        out = {}
        for table in ("readings", "alarm_events", "alerts"):
            cur = await conn.execute(f"SELECT count(*) FROM {table}")
            row = await cur.fetchone()
            assert row is not None
            out[table] = row[0]
        cur = await conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM readings GROUP BY device_id, metric, msg_id"
            " HAVING count(*) > 1) d"
        )
        row = await cur.fetchone()
        assert row is not None
        out["duplicate_readings"] = row[0]
        return out


async def test_outage_loses_nothing_and_duplicates_nothing(
    pg_dsn: str, pg_schema: str, proxied_dsn: str, pg_proxy: TcpProxy, tmp_path: Path
) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema) as direct:
        await direct.migrate()
        await registry(direct)

    n_messages, n_alarms, producers = 600, 60, 8
    proxied = PostgresStore(proxied_dsn, schema=pg_schema, timeout=1.0, max_size=4)
    async with proxied, _durable(proxied, tmp_path / "spool") as store:
        await proxied.migrate()
        sent = 0
        outage_seen = False
        quarter, half = asyncio.Event(), asyncio.Event()

        async def readings_producer(k: int) -> None:
            nonlocal sent
            for i in range(k, n_messages, producers):
                await store.write_readings(message(i))
                sent += 1
                if sent >= n_messages // 4:
                    quarter.set()
                if sent >= n_messages // 2:
                    half.set()
                if i % 7 == 0:  # a redelivery: the broker sends the same message again
                    await store.write_readings(message(i))
                await asyncio.sleep(0.001)

        async def alarm_producer() -> None:
            for i in range(n_alarms):
                assert (await store.write_events([event(i)]))[0]
                assert (await store.write_alerts([alert(i)]))[0]
                if i % 5 == 0:  # redelivered alarm
                    await store.write_events([event(i)])
                await asyncio.sleep(0.005)

        async def chaos() -> None:
            nonlocal outage_seen
            await quarter.wait()
            await pg_proxy.cut()
            await half.wait()
            outage_seen = store.degraded
            await pg_proxy.restore()

        async with asyncio.timeout(GUARD):
            await asyncio.gather(
                chaos(), alarm_producer(), *(readings_producer(k) for k in range(producers))
            )
            await store.wait_drained()
        stats = store.stats()

    assert outage_seen, "the cut did not put the store into spooling"
    assert stats["items_spooled"] > 0
    assert stats["outages"] >= 1
    assert stats["degraded"] == 0
    assert stats["spool_bytes"] == 0
    counts = await _count_and_duplicates(pg_dsn, pg_schema)
    assert counts == {
        "readings": 3 * n_messages,
        "alarm_events": n_alarms,
        "alerts": n_alarms,
        "duplicate_readings": 0,
    }


async def test_spool_left_by_a_run_is_replayed_at_next_start(
    pg_dsn: str, pg_schema: str, proxied_dsn: str, pg_proxy: TcpProxy, tmp_path: Path
) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema) as direct:
        await direct.migrate()
    spool = tmp_path / "spool"
    proxied = PostgresStore(proxied_dsn, schema=pg_schema, timeout=0.5)
    async with proxied:
        await pg_proxy.cut()
        async with _durable(proxied, spool) as store:
            for i in range(20):
                await store.write_readings(message(i))
            assert (await store.write_events([event(1)]))[0]
            assert store.degraded
        # The gateway stops while the database is still away: the spool stays on disk.
        assert await _spooled(spool) > 0
        await pg_proxy.restore()
        async with _durable(proxied, spool) as store:
            assert store.degraded  # pending records found at start
            async with asyncio.timeout(GUARD):
                await store.wait_drained()
    assert await _spooled(spool) == 0
    counts = await _count_and_duplicates(pg_dsn, pg_schema)
    assert counts["readings"] == 60
    assert counts["alarm_events"] == 1
