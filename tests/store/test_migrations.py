"""Migrations: up from an empty database, re-run as a no-op, partitions ahead."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg

from gateway.store.migrations import migrations_for
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore


def _names(dialect: str, mode: str | None = None) -> list[str]:
    return [m.name for m in migrations_for(dialect, mode)]


async def test_postgres_up_from_empty_and_rerun(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(pg_dsn, schema=pg_schema, use_timescale=False) as store:
        applied = await store.migrate()
        assert store.mode == "postgres"
        assert applied == _names("postgres", "plain")
        assert "0003_news2.plain.sql" in applied
        assert "0004_vitals.plain.sql" in applied
        assert await store.migrate() == []
        assert await store.count("news2_scores") == 0
    with psycopg.connect(pg_dsn) as conn:
        cur = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n"
            " ON n.oid = p.relnamespace WHERE n.nspname = %s AND p.relname = %s",
            (pg_schema, "news2_scores"),
        )
        partitions = {r[0] for r in cur.fetchall()}
    now = datetime.now(UTC)
    assert f"news2_scores_{now.year:04d}{now.month:02d}" in partitions
    assert "news2_scores_default" in partitions


async def test_postgres_maintain_creates_partitions_ahead(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(
        pg_dsn, schema=pg_schema, use_timescale=False, partitions_ahead_months=2
    ) as store:
        await store.migrate()
        created = await store.maintain(datetime(2031, 12, 15, tzinfo=UTC))
        assert created == [
            f"{t}_{m}"
            for t in ("readings", "news2_scores")
            for m in ("203111", "203112", "203201", "203202")
        ]
        assert await store.maintain(datetime(2031, 12, 15, tzinfo=UTC)) == []


async def test_sqlite_up_from_empty_and_rerun(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "t.sqlite3") as store:
        assert await store.migrate() == _names("sqlite")
        assert await store.migrate() == []
        assert await store.maintain() == []
    async with SqliteStore(tmp_path / "t.sqlite3") as store:  # reopened: still up to date
        assert await store.migrate() == []
        assert await store.count("news2_scores") == 0


def test_versions_are_unique_and_ordered() -> None:
    for dialect, mode in (("postgres", "plain"), ("postgres", "timescale"), ("sqlite", None)):
        versions = [m.version for m in migrations_for(dialect, mode)]
        assert versions == sorted(set(versions))
        assert versions[:4] == [1, 2, 3, 4]
