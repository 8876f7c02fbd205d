"""SQLite migration 0020: ``readings.quality``'s CHECK rewritten from ``IN (list)`` to ORs
by editing ``sqlite_schema`` (no table rebuild). A database made before it upgrades with
its rows, stays sound and keeps refusing a bad quality, on the migrating connection and on
one opened before; a fresh database gets the same; a failed schema edit leaves nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from telecare.gateway.store.migrations import Migration, migrations_for
from telecare.gateway.store.sqlite import SCHEMA_EDITED, SqliteStore, _apply
from tests.store.helpers import message, registry

_OR = "CHECK (quality = 'ok' OR quality = 'invalid' OR quality = 'demo')"
_INSERT = "INSERT INTO readings (ts, device_id, metric, value, msg_id, quality)"


def _at_0019(path: Path) -> sqlite3.Connection:
    """A database as a gateway made it before 0020, with three readings in it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    for m in migrations_for("sqlite"):
        if m.version <= 19:
            conn.executescript(m.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (m.version, m.name)
            )
    conn.executemany(
        _INSERT + " VALUES ('2026-11-23T10:00:00Z', 'ox1', 1, 95, ?, ?)",
        [("o1", "ok"), ("o2", "invalid"), ("o3", "demo")],
    )
    return conn


async def _check_migrated(store: SqliteStore) -> None:
    (sql,) = await store.sql.fetch_all("SELECT sql FROM sqlite_schema WHERE name = 'readings'")
    assert _OR in sql[0]
    assert "quality IN" not in sql[0]
    assert await store.sql.fetch_all("PRAGMA integrity_check") == [("ok",)]
    assert await store.sql.fetch_all("PRAGMA writable_schema") == [(0,)]
    with pytest.raises(sqlite3.IntegrityError, match="quality = 'ok' OR"):
        await store.sql.execute(_INSERT + " VALUES ('t', 'ox1', 1, 95, 'bad', 'bogus')")
    await registry(store)
    assert await store.write_readings(message(7)) == 3


async def test_database_from_before_0020_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = _at_0019(path)
    assert "quality IN ('ok', 'invalid', 'demo')" in _table_sql_of(old, "readings")
    (version,) = old.execute("PRAGMA schema_version").fetchone()
    (objects,) = old.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    async with SqliteStore(path) as store:
        assert (await store.migrate())[0] == "0020_reading_quality_check.sql"
        await _check_migrated(store)
        assert await store.sql.fetch_all(
            "SELECT msg_id, quality FROM readings WHERE msg_id LIKE 'o_' ORDER BY msg_id"
        ) == [("o1", "ok"), ("o2", "invalid"), ("o3", "demo")]
        # 0020's one bump, and one per object later migrations create (0021's triggers).
        (now,) = await store.sql.fetch_all("SELECT count(*) FROM sqlite_schema")
        later = now[0] - objects
        assert await store.sql.fetch_all("PRAGMA schema_version") == [(version + 1 + later,)]
    # A connection open across the upgrade reloads the schema (schema_version moved on).
    with pytest.raises(sqlite3.IntegrityError, match="quality = 'ok' OR"):
        old.execute(_INSERT + " VALUES ('t', 'ox1', 1, 95, 'old', 'bogus')")
    old.close()
    async with SqliteStore(path) as store:  # reopened: up to date, still sound
        assert await store.migrate() == []
        assert await store.sql.fetch_all("PRAGMA integrity_check") == [("ok",)]


async def test_fresh_database_gets_the_or_check(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "new.sqlite3") as store:
        assert "0020_reading_quality_check.sql" in await store.migrate()
        await _check_migrated(store)


def test_failed_schema_edit_rolls_back_with_writable_schema_off(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.sqlite3", isolation_level=None)
    conn.execute("CREATE TABLE t (a TEXT CHECK (a IN ('x')))")
    before = _table_sql_of(conn, "t")
    bad = "PRAGMA writable_schema = ON;\nUPDATE sqlite_schema SET sql = 'x' WHERE nope;\n"
    with pytest.raises(sqlite3.OperationalError, match="nope"):
        _apply(conn, Migration(99, "bad", bad + SCHEMA_EDITED + "\n"))
    assert not conn.in_transaction
    assert conn.execute("PRAGMA writable_schema").fetchone() == (0,)
    assert _table_sql_of(conn, "t") == before
    with pytest.raises(RuntimeError, match="last line"):
        _apply(conn, Migration(99, "bad", SCHEMA_EDITED + "\nSELECT 1;"))


def _table_sql_of(conn: sqlite3.Connection, name: str) -> str:
    (sql,) = conn.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (name,)).fetchone()
    return str(sql)
