"""The TimescaleDB path on the real extension: hypertables, compression and retention
policies, the hourly continuous aggregate; the extension in a schema of its own, shared
by any number of application schemas; a schema keeps the mode it was created in; a
server with the extension's files but without the preloaded library falls back to plain
partitions and says how to fix it.

Servers: ``TELECARE_TEST_PG_DSN`` pointed at a TimescaleDB server runs the tests that need
the extension (they skip with the reason on plain PostgreSQL);
``TELECARE_TEST_PG_DSN_NOT_PRELOADED`` pointed at a server with TimescaleDB installed but
not in ``shared_preload_libraries`` runs the not-preloaded tests.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from structlog.testing import capture_logs

from telecare.devices.model import Metric
from telecare.gateway.store.errors import TimescaleRequired
from telecare.gateway.store.postgres import PostgresStore
from tests.services import drop_pg_schema
from tests.store.helpers import T0, message

_PROBE = (
    "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
    " current_setting('timescaledb.bgw_launcher_poll_time', true) IS NOT NULL"
)


def _probe(dsn: str) -> tuple[bool, bool]:
    """(extension files installed, library preloaded) on the server at ``dsn``."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(_PROBE).fetchone()
    assert row is not None
    return bool(row[0]), bool(row[1])


def _new_schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def _drop_schemas(dsn: str, names: list[str]) -> None:
    for name in names:
        drop_pg_schema(dsn, name)


def _extension_schema(dsn: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
            " WHERE e.extname = 'timescaledb'"
        ).fetchone()
    return None if row is None else str(row[0])


@pytest.fixture
def timescale_dsn(pg_dsn: str) -> str:
    installed, preloaded = _probe(pg_dsn)
    if not installed:
        pytest.skip(
            "the TimescaleDB extension is not installed on this PostgreSQL; the plain"
            " PostgreSQL mode is tested instead (point TELECARE_TEST_PG_DSN at a TimescaleDB"
            " server to run these)"
        )
    if not preloaded:
        pytest.skip(
            "TimescaleDB is installed on this PostgreSQL but not in shared_preload_libraries;"
            " the fallback is tested by the not-preloaded tests instead"
        )
    return pg_dsn


@pytest.fixture
def more_schemas(pg_dsn: str) -> Iterator[list[str]]:
    """Names of further schemas a test creates; dropped afterwards."""
    names: list[str] = []
    yield names
    _drop_schemas(pg_dsn, names)


async def _first_scheduled_run_ended(
    conn: psycopg.AsyncConnection[Any], job: int, within_s: float = 60.0
) -> None:
    """Wait until TimescaleDB's scheduler has run ``job`` once and that run has ended.

    The scheduler starts a new policy at once (a job that never ran is due now), then
    not before its schedule or retry interval. Doing the policy's work by hand while
    that first run goes on fails: two compression runs pick the same chunk and the
    second fails with "columnstore policy failure" (the chunk "is already compressed");
    a second refresh of a continuous aggregate fails "due to a concurrent refresh".
    ``last_run_status`` stays NULL while a run is under way.
    """
    deadline = time.monotonic() + within_s
    while True:
        cur = await conn.execute(
            "SELECT total_runs > 0 AND last_run_status IS NOT NULL"
            " FROM timescaledb_information.job_stats WHERE job_id = %s",
            (job,),
        )
        row = await cur.fetchone()
        if row is not None and row[0]:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"TimescaleDB's scheduler did not run job {job} within {within_s} s"
                " (timescaledb.max_background_workers?)"
            )
        await asyncio.sleep(0.05)


@pytest.mark.timescaledb
async def test_timescale_schema_and_policies(timescale_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(
        timescale_dsn,
        schema=pg_schema,
        compress_after=timedelta(days=2),
        retain_for=timedelta(days=30),
    ) as store:
        await store.migrate()
        assert store.mode == "timescaledb"
        assert store.timescale is not None
        # The extension is never in the application's schema (dropping that would drop it).
        assert store.timescale.schema != pg_schema
        assert _extension_schema(timescale_dsn) == store.timescale.schema
        await store.write_readings(message(1))
        refresh = store.timescale.qualified("refresh_continuous_aggregate")
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
            cur = await conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_schema = %s"
                " AND proc_name = 'policy_refresh_continuous_aggregate'",
                (pg_schema,),
            )
            [(refresh_job,)] = await cur.fetchall()
            await _first_scheduled_run_ended(conn, refresh_job)
            await conn.execute(f"CALL {refresh}('vitals_hourly', NULL, NULL)".encode())
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
        async with store.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT config FROM timescaledb_information.jobs WHERE hypertable_schema = %s"
                " AND hypertable_name = 'readings' AND proc_name = 'policy_compression'",
                (pg_schema,),
            )
            assert [r[0]["compress_after"] for r in await cur.fetchall()] == ["3 days"]


_JOBS = """
SELECT j.proc_name, j.job_id, j.config, s.total_runs, s.last_run_started_at::text,
       s.next_start::text
FROM timescaledb_information.jobs j JOIN timescaledb_information.job_stats s USING (job_id)
WHERE j.hypertable_schema = %(schema)s
   OR (j.hypertable_schema, j.hypertable_name) IN (
      SELECT materialization_hypertable_schema, materialization_hypertable_name
      FROM timescaledb_information.continuous_aggregates WHERE view_schema = %(schema)s)
"""


async def _jobs(store: PostgresStore) -> dict[str, tuple[Any, ...]]:
    """The schema's policy jobs by kind: (job id, config, runs, last start, next start)."""
    async with store.pool.connection() as conn:
        cur = await conn.execute(_JOBS, {"schema": store.schema})
        return {row[0]: tuple(row[1:]) for row in await cur.fetchall()}


@pytest.mark.timescaledb
async def test_a_restart_leaves_unchanged_policies_alone(
    timescale_dsn: str, pg_schema: str
) -> None:
    """Every gateway start migrates. Policies with the configured ages keep their jobs,
    run history and schedule (a job added again would run at once, and removing one
    cancels its run under way); a changed age replaces that policy's job only."""
    ages: dict[str, Any] = {"compress_after": timedelta(days=2), "retain_for": timedelta(days=30)}
    async with PostgresStore(timescale_dsn, schema=pg_schema, **ages) as store:
        await store.migrate()
        first = await _jobs(store)
        assert sorted(first) == [
            "policy_compression",
            "policy_refresh_continuous_aggregate",
            "policy_retention",
        ]
        async with store.pool.connection() as conn:
            for job_id, *_ in first.values():
                await _first_scheduled_run_ended(conn, job_id)
        ran = await _jobs(store)
        assert all(runs >= 1 for _, _, runs, _, _ in ran.values())
        assert await store.migrate() == []
        assert await _jobs(store) == ran
    async with PostgresStore(timescale_dsn, schema=pg_schema, **ages) as store:
        assert await store.migrate() == []  # a restart
        assert await _jobs(store) == ran
    ages["retain_for"] = timedelta(days=60)
    async with PostgresStore(timescale_dsn, schema=pg_schema, **ages) as store:
        await store.migrate()
        changed = await _jobs(store)
    assert changed["policy_retention"][0] != ran["policy_retention"][0]
    assert changed["policy_retention"][1]["drop_after"] == "60 days"
    del changed["policy_retention"], ran["policy_retention"]
    assert changed == ran


@pytest.mark.timescaledb
async def test_compressed_chunks_take_redeliveries_and_late_readings(
    timescale_dsn: str, pg_schema: str
) -> None:
    """The compression policy, run now, compresses a chunk older than ``compress_after``;
    a redelivery into it (a spool replayed after a long outage) is still stored once,
    and a late reading is still stored and read back."""
    async with PostgresStore(
        timescale_dsn, schema=pg_schema, compress_after=timedelta(days=2)
    ) as store:
        await store.migrate()
        assert store.timescale is not None
        old = [replace(r, ts=r.ts - timedelta(days=10)) for r in message(1)]
        late = [replace(r, ts=r.ts - timedelta(days=10)) for r in message(2)]
        run_job = store.timescale.qualified("run_job")
        async with store.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_schema = %s"
                " AND proc_name = 'policy_compression'",
                (pg_schema,),
            )
            [(job,)] = await cur.fetchall()
            await _first_scheduled_run_ended(conn, job)
            assert await store.write_readings(old) == 3
            await conn.execute(f"CALL {run_job}(%s)".encode(), (job,))
            cur = await conn.execute(
                "SELECT is_compressed FROM timescaledb_information.chunks"
                " WHERE hypertable_schema = %s AND hypertable_name = 'readings'",
                (pg_schema,),
            )
            assert await cur.fetchall() == [(True,)]
        assert await store.write_readings(old) == 0
        assert await store.write_readings(late) == 3
        assert await store.count("readings") == 6
        hist = await store.metric_history(
            "res1", Metric.SPO2, old[0].ts, old[0].ts + timedelta(hours=1), timedelta(hours=1)
        )
        assert [p.count for p in hist] == [2]


@pytest.mark.timescaledb
async def test_any_number_of_schemas_share_one_extension(
    timescale_dsn: str, pg_schema: str, more_schemas: list[str]
) -> None:
    """Three gateways (or tests, or the benchmark) in one database: each migrates its own
    hypertables; dropping one schema leaves the extension and the others working."""
    more_schemas += [_new_schema(), _new_schema()]
    schemas = [pg_schema, *more_schemas]
    stores = [PostgresStore(timescale_dsn, schema=s, max_size=2) for s in schemas]
    for i, store in enumerate(stores):
        async with store:
            await store.migrate()
            assert store.mode == "timescaledb"
            await store.write_readings(message(i))
            await store.write_readings(message(i))  # a redelivery: stored once
            assert await store.count("readings") == 3
    ext_schema = _extension_schema(timescale_dsn)
    assert ext_schema is not None
    assert ext_schema not in schemas
    _drop_schemas(timescale_dsn, [schemas[0]])
    assert _extension_schema(timescale_dsn) == ext_schema
    for i, schema in enumerate(schemas[1:], start=1):
        async with PostgresStore(timescale_dsn, schema=schema, max_size=2) as store:
            assert await store.migrate() == []
            assert store.mode == "timescaledb"
            await store.write_readings(message(10 + i))
            hist = await store.metric_history(
                "res1", Metric.PULSE, T0, T0 + timedelta(minutes=1), timedelta(minutes=1)
            )
            assert [p.count for p in hist] == [2]


@pytest.fixture
def scratch_database(timescale_dsn: str) -> Iterator[str]:
    """A new, empty database on the TimescaleDB server (the extension exists once per
    database, so where it lives can only be arranged in a database of the test's own)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(timescale_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(timescale_dsn)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(timescale_dsn, autocommit=True) as conn:
        # FORCE: TimescaleDB's background scheduler keeps a connection to the database.
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.mark.timescaledb
@pytest.mark.parametrize("where", ["public", "app1"])
async def test_extension_is_used_where_it_already_is(scratch_database: str, where: str) -> None:
    """Installed beforehand in ``public`` (the usual manual installation), or in an
    application's schema (what an unqualified ``CREATE EXTENSION`` of an earlier release
    did): the store uses it there, qualified, and creates no second schema for it."""
    with psycopg.connect(scratch_database, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(where)))
        conn.execute(
            sql.SQL("CREATE EXTENSION timescaledb WITH SCHEMA {}").format(sql.Identifier(where))
        )
    async with PostgresStore(scratch_database, schema="app2", max_size=2) as store:
        await store.migrate()
        assert store.mode == "timescaledb"
        assert store.timescale is not None
        assert store.timescale.schema == where
        await store.write_readings(message(1))
        hist = await store.metric_history(
            "res1", Metric.SPO2, T0, T0 + timedelta(hours=1), timedelta(minutes=5)
        )
        assert [p.count for p in hist] == [1]
    with psycopg.connect(scratch_database) as conn:
        cur = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'timescaledb'")
        assert cur.fetchone() is None


@pytest.mark.timescaledb
async def test_extension_created_in_its_own_schema(scratch_database: str) -> None:
    async with PostgresStore(
        scratch_database, schema="app", timescale_schema="ts_ext", max_size=2
    ) as store:
        with capture_logs() as logs:
            await store.migrate()
        assert store.mode == "timescaledb"
    assert _extension_schema(scratch_database) == "ts_ext"
    created = [e for e in logs if e["event"] == "timescaledb_created"]
    assert [e["schema"] for e in created] == ["ts_ext"]


@pytest.mark.timescaledb
async def test_a_plain_schema_stays_plain(timescale_dsn: str, pg_schema: str) -> None:
    """Created without TimescaleDB, a schema keeps its partitions when the store is later
    started with TimescaleDB available: no hypertable migration on a partitioned table."""
    async with PostgresStore(timescale_dsn, schema=pg_schema, use_timescale=False) as store:
        await store.migrate()
        assert store.mode == "postgres"
    async with PostgresStore(timescale_dsn, schema=pg_schema) as store:
        assert await store.migrate() == []
        assert store.mode == "postgres"
        await store.write_readings(message(1))
        assert await store.count("readings") == 3
        assert await store.maintain() == []  # partitions already there


@pytest.mark.timescaledb
async def test_a_timescale_schema_stays_timescale(timescale_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(timescale_dsn, schema=pg_schema) as store:
        await store.migrate()
        assert store.mode == "timescaledb"
    async with PostgresStore(timescale_dsn, schema=pg_schema, use_timescale=False) as store:
        assert await store.migrate() == []
        assert store.mode == "timescaledb"
        await store.write_readings(message(1))
        assert await store.count("readings") == 3


async def test_no_extension_on_the_server_means_plain(pg_dsn: str, pg_schema: str) -> None:
    installed, _ = _probe(pg_dsn)
    if installed:
        pytest.skip("TimescaleDB is installed on this server; this test needs one without it")
    async with PostgresStore(pg_dsn, schema=pg_schema) as store:
        with capture_logs() as logs:
            await store.migrate()
        assert store.mode == "postgres"
        await store.write_readings(message(1))
        assert await store.count("readings") == 3
    assert [e["event"] for e in logs if e["event"].startswith("timescaledb_")] == [
        "timescaledb_unavailable"
    ]


# --------------------------------------------------------------------- not preloaded


@pytest.fixture
def not_preloaded_dsn() -> str:
    dsn = os.environ.get("TELECARE_TEST_PG_DSN_NOT_PRELOADED")
    if not dsn:
        pytest.skip(
            "TELECARE_TEST_PG_DSN_NOT_PRELOADED is not set: point it at a PostgreSQL with"
            " TimescaleDB installed but not in shared_preload_libraries to run this"
        )
    installed, preloaded = _probe(dsn)
    if not installed or preloaded:
        pytest.fail(
            f"TELECARE_TEST_PG_DSN_NOT_PRELOADED={dsn} must have TimescaleDB installed"
            f" but not preloaded (installed {installed}, preloaded {preloaded})"
        )
    return dsn


@pytest.fixture
def np_schema(not_preloaded_dsn: str) -> Iterator[str]:
    name = _new_schema()
    yield name
    _drop_schemas(not_preloaded_dsn, [name])


async def test_not_preloaded_falls_back_to_plain_partitions(
    not_preloaded_dsn: str, np_schema: str
) -> None:
    """Detected before ``CREATE EXTENSION`` (which would end the session with FATAL), so
    the store never tries; the log line names the fix; plain partitions work."""
    async with PostgresStore(not_preloaded_dsn, schema=np_schema, max_size=1) as store:
        with capture_logs() as logs:
            applied = await store.migrate()
        assert store.mode == "postgres"
        assert "0002_readings.plain.sql" in applied
        # max_size=1: the one pooled connection survived and serves the writes.
        await store.write_readings(message(1))
        assert await store.count("readings") == 3
        hist = await store.metric_history(
            "res1", Metric.SPO2, T0, T0 + timedelta(hours=1), timedelta(minutes=5)
        )
        assert [p.count for p in hist] == [1]
    [line] = [e for e in logs if e["event"] == "timescaledb_not_preloaded"]
    assert line["log_level"] == "warning"
    assert "shared_preload_libraries" in line["fix"]
    assert line["fallback"] == "plain PostgreSQL partitions"
    assert _extension_schema(not_preloaded_dsn) is None
    with psycopg.connect(not_preloaded_dsn) as conn:
        cur = conn.execute(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent"
            " JOIN pg_namespace n ON n.oid = p.relnamespace"
            " WHERE n.nspname = %s AND p.relname = 'readings'",
            (np_schema,),
        )
        row = cur.fetchone()
        assert row is not None
        assert row[0] >= 2  # default partition and at least this month's


async def test_not_preloaded_refuses_a_timescale_schema(
    not_preloaded_dsn: str, np_schema: str
) -> None:
    """A schema whose migrations were applied with hypertables (recorded in
    ``schema_migrations``) cannot be served by plain partitions: the start fails with the
    fix instead of running plain migrations over hypertables."""
    with psycopg.connect(not_preloaded_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(np_schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.schema_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(np_schema))
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.schema_migrations (version, name)"
                " VALUES (1, '0001_core.sql'), (2, '0002_readings.timescale.sql')"
            ).format(sql.Identifier(np_schema))
        )
    async with PostgresStore(not_preloaded_dsn, schema=np_schema, max_size=1) as store:
        with pytest.raises(TimescaleRequired, match="shared_preload_libraries"):
            await store.migrate()
