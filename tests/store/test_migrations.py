"""Migrations: up from an empty database, re-run as a no-op, partitions ahead."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from telecare.gateway.store.migrations import migrations_for
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore


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


async def test_0009_carries_over_prescriptions_but_not_legacy_defaults(tmp_path: Path) -> None:
    """Before 0009 the resident columns held 1 / 'A' whether or not anyone set them: only
    a scale 2 (with its prescriber) and a non-A baseline become recorded settings."""
    path = tmp_path / "t.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    for m in migrations_for("sqlite"):
        if m.version < 9:
            conn.executescript(m.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (m.version, m.name)
            )
    conn.execute("INSERT INTO sites (site_id, kind) VALUES ('s1', 'home')")
    conn.executemany(
        "INSERT INTO residents (resident_id, site_id, spo2_scale, spo2_scale_set_by,"
        " spo2_scale_set_at, baseline_consciousness) VALUES (?, 's1', ?, ?, ?, ?)",
        [
            ("copd", 2, "dr-k", "2026-01-05T09:30:00.000000Z", "A"),
            ("chronic", 1, None, None, "C"),
            ("plain", 1, None, None, "A"),
        ],
    )
    conn.close()
    async with SqliteStore(path) as store:
        assert await store.migrate() == [m.name for m in migrations_for("sqlite") if m.version >= 9]
        copd, chronic, plain = [await store.get_resident(r) for r in ("copd", "chronic", "plain")]
        assert copd is not None
        assert (copd.spo2_scale, copd.spo2_scale_set_by) == (2, "dr-k")
        assert copd.baseline_consciousness is None
        assert chronic is not None
        assert chronic.baseline_consciousness == "C"
        assert chronic.spo2_scale is None
        assert plain is not None
        assert (plain.spo2_scale, plain.baseline_consciousness) == (
            None,
            None,
        )
        [h] = await store.clinical_history("copd")
        assert (h.setting, h.value, h.recorded_by) == ("spo2_scale", "2", "migration-0009")
        assert [h.value for h in await store.clinical_history("chronic")] == ["C"]
        assert await store.clinical_history("plain") == []


async def test_0009_carries_over_prescriptions_on_postgres(pg_dsn: str, pg_schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        conn.execute(f'SET search_path TO "{pg_schema}"')
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in migrations_for("postgres", "plain"):
            if m.version < 9:
                conn.execute(m.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (m.version, m.name),
                )
        conn.execute("INSERT INTO sites (site_id, kind) VALUES ('s1', 'home')")
        conn.execute(
            "INSERT INTO residents (resident_id, site_id, spo2_scale, spo2_scale_set_by,"
            " spo2_scale_set_at, baseline_consciousness) VALUES"
            " ('copd', 's1', 2, 'dr-k', '2026-01-05T09:30:00Z', 'C'), ('plain', 's1', 1, NULL,"
            " NULL, 'A')"
        )
    async with PostgresStore(pg_dsn, schema=pg_schema, use_timescale=False) as store:
        assert "0009_clinical_settings.sql" in await store.migrate()
        copd = await store.get_resident("copd")
        plain = await store.get_resident("plain")
        assert copd is not None
        assert (copd.spo2_scale, copd.baseline_consciousness) == (2, "C")
        assert copd.spo2_scale_set_at == datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
        assert plain is not None
        assert (plain.spo2_scale, plain.baseline_consciousness) == (None, None)
        history = await store.clinical_history("copd")
        assert [(h.setting, h.value) for h in history] == [
            ("spo2_scale", "2"),
            ("baseline_consciousness", "C"),
        ]
