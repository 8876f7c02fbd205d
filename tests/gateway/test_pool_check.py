"""PostgreSQL pool checks: a connection given back a moment ago is handed out again without
a check's round trip (counted by ``python -m bench fleet``: empty queries per heartbeat),
and one idle for longer is checked, so a connection the server dropped meanwhile is
replaced instead of failing the next statement."""

from __future__ import annotations

import asyncio

import psycopg

from telecare.gateway.store.postgres import PostgresStore


async def test_an_idle_connection_killed_by_the_server_is_replaced(
    pg_dsn: str, pg_schema: str
) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema, min_size=1, max_size=1) as store:
        await store.migrate()
        row = await store.sql.fetch_one("SELECT pg_backend_pid()")
        assert row is not None
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        await asyncio.sleep(1.1)  # idle past the freshness window: checked on checkout
        again = await store.sql.fetch_one("SELECT pg_backend_pid()")
        assert again is not None
        assert again[0] != row[0]
