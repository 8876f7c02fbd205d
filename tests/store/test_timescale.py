"""The TimescaleDB path: hypertables, compression and retention policies, the hourly
continuous aggregate. Skipped (with the reason) where the extension is not installed."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from devices.model import Metric
from gateway.store.postgres import PostgresStore
from tests.store.helpers import T0, message

pytestmark = pytest.mark.timescaledb


@pytest.fixture
def timescale_dsn(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn) as conn:
        cur = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        if cur.fetchone() is None:
            pytest.skip(
                "the TimescaleDB extension is not installed on this PostgreSQL; the plain"
                " PostgreSQL mode is tested instead (install timescaledb-2-postgresql-NN and"
                " add it to shared_preload_libraries to run these)"
            )
    return pg_dsn


async def test_timescale_schema_and_policies(timescale_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(
        timescale_dsn,
        schema=pg_schema,
        compress_after=timedelta(days=2),
        retain_for=timedelta(days=30),
    ) as store:
        await store.migrate()
        assert store.mode == "timescaledb"
        await store.write_readings(message(1))
        async with store.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables"
                " WHERE hypertable_schema = %s ORDER BY 1",
                (pg_schema,),
            )
            assert [r[0] for r in await cur.fetchall()] == ["news2_scores", "readings"]
            cur = await conn.execute(
                "SELECT proc_name, config FROM timescaledb_information.jobs"
                " WHERE hypertable_schema = %s AND hypertable_name = 'readings' ORDER BY 1",
                (pg_schema,),
            )
            jobs: dict[str, dict[str, str]] = dict(await cur.fetchall())
            assert jobs["policy_compression"]["compress_after"] == "2 days"
            assert jobs["policy_retention"]["drop_after"] == "30 days"
            cur = await conn.execute(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates"
                " WHERE view_schema = %s",
                (pg_schema,),
            )
            assert [r[0] for r in await cur.fetchall()] == ["vitals_hourly"]
            await conn.execute("CALL refresh_continuous_aggregate('vitals_hourly', NULL, NULL)")
            cur = await conn.execute(
                "SELECT metric, n FROM vitals_hourly WHERE resident_id = 'res1' ORDER BY 1"
            )
            assert await cur.fetchall() == [(1, 1), (2, 1), (8, 1)]
        hist = await store.metric_history(
            "res1", Metric.SPO2, T0, T0 + timedelta(hours=1), timedelta(minutes=5)
        )
        assert [p.count for p in hist] == [1]
        # Re-migrating with other ages replaces the policies instead of keeping the old.
        store.compress_after = timedelta(days=3)
        assert await store.migrate() == []
