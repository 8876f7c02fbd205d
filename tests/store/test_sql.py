"""``store.sql``: the same SQL, the same values back, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from telecare.devices.model import Metric, Reading
from telecare.gateway.store.base import Store
from telecare.gateway.store.sql import Queries, json_value

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


async def _table(store: Store) -> Queries:
    """A scratch table, its DDL in each dialect's column types."""
    sql = store.sql
    if sql.dialect.name == "sqlite":
        ddl = (
            "CREATE TABLE notes (note_id TEXT PRIMARY KEY, at TEXT NOT NULL,"
            " done INTEGER NOT NULL DEFAULT 0, body TEXT NOT NULL DEFAULT '',"
            " detail TEXT NOT NULL DEFAULT '{}', n INTEGER)"
        )
    else:
        ddl = (
            "CREATE TABLE notes (note_id text PRIMARY KEY, at timestamptz NOT NULL,"
            " done boolean NOT NULL DEFAULT false, body text NOT NULL DEFAULT '',"
            " detail jsonb NOT NULL DEFAULT '{}', n integer)"
        )
    await sql.execute(ddl)
    return sql


async def test_datetimes_round_trip_as_aware_utc(store: Store) -> None:
    sql = await _table(store)
    plus2 = timezone(timedelta(hours=2))
    await sql.execute("INSERT INTO notes (note_id, at) VALUES (?, ?)", "a", T0.astimezone(plus2))
    row = await sql.fetch_one("SELECT MIN(at), MAX(at) FROM notes WHERE at >= ?", T0)
    assert row is not None
    for value in row:
        assert value == T0
        assert isinstance(value, datetime)
        assert value.utcoffset() == timedelta(0)
    with pytest.raises(TypeError, match="naive"):
        await sql.execute(
            "INSERT INTO notes (note_id, at) VALUES (?, ?)", "b", datetime(2026, 1, 1)
        )


async def test_placeholders_literals_and_percent(store: Store) -> None:
    sql = await _table(store)
    await sql.execute("INSERT INTO notes (note_id, at, body) VALUES (?, ?, 'what? 100%')", "a", T0)
    assert await sql.fetch_all(
        "SELECT body FROM notes WHERE body LIKE '%?%' AND note_id = ?", "a"
    ) == [("what? 100%",)]
    # A parameter only tested for NULL needs a cast for PostgreSQL, and has one here.
    found = await sql.fetch_all(
        "SELECT note_id FROM notes WHERE CAST(? AS TEXT) IS NULL OR note_id = ?", None, None
    )
    assert found == [("a",)]
    assert await sql.fetch_one("SELECT note_id FROM notes WHERE note_id = ?", "zz") is None


async def test_upsert_rowcounts_and_returning(store: Store) -> None:
    sql = await _table(store)
    upsert = (
        "INSERT INTO notes (note_id, at, body) VALUES (?, ?, ?)"
        " ON CONFLICT (note_id) DO UPDATE SET body = excluded.body"
    )
    assert await sql.execute(upsert, "a", T0, "one") == 1
    assert await sql.execute(upsert, "a", T0, "two") == 1
    ignore = "INSERT INTO notes (note_id, at) VALUES (?, ?) ON CONFLICT DO NOTHING"
    assert await sql.execute(ignore, "a", T0) == 0
    assert await sql.execute_many(ignore, [("a", T0), ("b", T0), ("c", T0)]) == 2
    assert await sql.execute_many(ignore, []) == 0
    assert await sql.fetch_all(
        "INSERT INTO notes (note_id, at) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING note_id",
        "d",
        T0,
    ) == [("d",)]
    assert await sql.execute("UPDATE notes SET n = ? WHERE note_id <> ?", 7, "a") == 3
    assert await sql.fetch_all("SELECT note_id, body, n FROM notes ORDER BY note_id") == [
        ("a", "two", None),
        ("b", "", 7),
        ("c", "", 7),
        ("d", "", 7),
    ]
    assert await sql.execute("DELETE FROM notes WHERE n = ?", 7) == 3


async def test_execute_each_counts_each_row_all_or_nothing(store: Store) -> None:
    sql = await _table(store)
    ignore = "INSERT INTO notes (note_id, at) VALUES (?, ?) ON CONFLICT DO NOTHING"
    assert await sql.execute_each(ignore, [("a", T0), ("b", T0), ("a", T0)]) == [1, 1, 0]
    assert await sql.execute_each(ignore, []) == []
    async with sql.transaction() as tx:
        assert await tx.execute_each(ignore, [("b", T0), ("c", T0)]) == [0, 1]
    for run in (sql.execute_each, sql.execute_many):  # a failing row: none stored
        with pytest.raises((sqlite3.IntegrityError, psycopg.errors.NotNullViolation)):
            await run(ignore, [("d", T0), ("e", None)])
    assert await sql.fetch_all("SELECT note_id FROM notes ORDER BY note_id") == [
        ("a",),
        ("b",),
        ("c",),
    ]


async def test_transaction_commits_or_rolls_back(store: Store) -> None:
    sql = await _table(store)
    async with sql.transaction() as tx:
        await tx.execute("INSERT INTO notes (note_id, at) VALUES (?, ?)", "a", T0)
        assert await tx.fetch_one("SELECT count(*) FROM notes") == (1,)

    async def change_then_fail() -> None:
        async with sql.transaction() as tx:
            await tx.execute("INSERT INTO notes (note_id, at) VALUES (?, ?)", "b", T0)
            await tx.execute_many("UPDATE notes SET n = ? WHERE note_id = ?", [(1, "a")])
            raise LookupError("changed my mind")

    with pytest.raises(LookupError):
        await change_then_fail()
    assert await sql.fetch_all("SELECT note_id, n FROM notes") == [("a", None)]


async def test_sqlite_refuses_the_outer_api_inside_a_transaction(sqlite_store: Store) -> None:
    sql = await _table(sqlite_store)
    with pytest.raises(RuntimeError, match="use its 'tx'"):
        async with sql.transaction():
            await sql.fetch_all("SELECT 1")
    assert await sql.fetch_one("SELECT count(*) FROM notes") == (0,)


async def test_booleans_and_json(store: Store) -> None:
    sql = await _table(store)
    await sql.execute(
        "INSERT INTO notes (note_id, at, done, detail) VALUES (?, ?, ?, ?)",
        "a",
        T0,
        True,
        {"count": 1, "who": ["x"]},
    )
    merge = sql.dialect.json_merge("detail")
    assert (
        await sql.execute(f"UPDATE notes SET detail = {merge} WHERE note_id = ?", {"count": 2}, "a")
        == 1
    )
    row = await sql.fetch_one("SELECT done, detail FROM notes")
    assert row is not None
    assert bool(row[0]) is True
    assert json_value(row[1]) == {"count": 2, "who": ["x"]}


async def test_time_bucket_is_the_same_on_both(store: Store) -> None:
    sql = await _table(store)
    start = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    await sql.execute_many(
        "INSERT INTO notes (note_id, at, n) VALUES (?, ?, ?)",
        [(f"n{i}", start + timedelta(minutes=7 * i), i) for i in range(10)],
    )
    bucket = sql.dialect.time_bucket("at", timedelta(minutes=15))
    found = await sql.fetch_all(
        f"SELECT {bucket} AS b, count(*), sum(n) FROM notes GROUP BY b ORDER BY b"
    )
    assert found == [
        (start, 3, 0 + 1 + 2),
        (start + timedelta(minutes=15), 2, 3 + 4),
        (start + timedelta(minutes=30), 2, 5 + 6),
        (start + timedelta(minutes=45), 2, 7 + 8),
        (start + timedelta(minutes=60), 1, 9),
    ]
    assert all(b.utcoffset() == timedelta(0) for b, _, _ in found)
    with pytest.raises(ValueError, match="whole number"):
        sql.dialect.time_bucket("at", timedelta(milliseconds=1500))


async def test_execute_many_values_read_back_as_execute_gives_them(store: Store) -> None:
    """A column of datetimes, of JSON, of an ``IntEnum``, and columns that mix types or
    hold None, through ``execute_many``."""
    sql = await _table(store)
    plus2 = timezone(timedelta(hours=2))
    rows = [
        ("a", T0, True, {"k": 1}, Metric.SPO2),
        ("b", T0.astimezone(plus2) + timedelta(seconds=1), False, {"k": [2]}, None),
        ("c", T0.replace(microsecond=0), True, {}, 3),
    ]
    insert = "INSERT INTO notes (note_id, at, done, detail, n) VALUES (?, ?, ?, ?, ?)"
    assert await sql.execute_many(insert, rows) == 3
    found = await sql.fetch_all("SELECT note_id, at, done, detail, n FROM notes ORDER BY at")
    assert [(i, at, bool(d), json_value(j), n) for i, at, d, j, n in found] == [
        ("c", T0.replace(microsecond=0), True, {}, 3),
        ("a", T0, True, {"k": 1}, int(Metric.SPO2)),
        ("b", T0 + timedelta(seconds=1), False, {"k": [2]}, None),
    ]
    assert all(r[1].utcoffset() == timedelta(0) for r in found)
    with pytest.raises(TypeError, match="naive"):
        await sql.execute_many(
            insert, [("d", T0, True, {}, 1), ("e", datetime(2026, 1, 1), True, {}, 1)]
        )
    assert await sql.fetch_one("SELECT count(*) FROM notes") == (3,)


async def test_sqlite_stores_one_sortable_text_form(sqlite_store: Store) -> None:
    sql = await _table(sqlite_store)
    at = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))  # 12:00Z, no µs
    await sql.execute("INSERT INTO notes (note_id, at) VALUES (?, ?)", "a", at)
    await sql.execute_many("INSERT INTO notes (note_id, at) VALUES (?, ?)", [("b", at), ("c", T0)])
    texts = await sql.fetch_all("SELECT note_id, 'at ' || at FROM notes ORDER BY note_id")
    assert texts == [
        ("a", "at 2026-03-01T12:00:00.000000Z"),
        ("b", "at 2026-03-01T12:00:00.000000Z"),
        ("c", "at 2026-03-01T12:00:00.123456Z"),
    ]


async def test_readings_batch_values_read_back(store: Store) -> None:
    """``write_readings`` (on SQLite its parameters made a column at a time): offsets,
    a resident or none, a flag, an empty batch."""
    plus2 = timezone(timedelta(hours=2))
    batch = [
        Reading("d1", Metric.SPO2, 96, "%", T0.astimezone(plus2), "m1", "res1"),
        Reading("d1", Metric.PULSE, 72.5, "/min", T0.replace(microsecond=0), "m1", None),
        Reading("d1", Metric.SPO2, 40, "%", T0, "m2", "res1", quality="invalid"),
    ]
    assert await store.write_readings([]) == 0
    assert await store.write_readings(batch) == 3
    assert await store.stored_message_readings("d1", "m1") == {
        (Metric.SPO2, T0, 96.0),
        (Metric.PULSE, T0.replace(microsecond=0), 72.5),
    }
    found = await store.sql.fetch_all(
        "SELECT msg_id, metric, ts, resident_id, quality FROM readings ORDER BY msg_id, metric"
    )
    assert found == [
        ("m1", int(Metric.SPO2), T0, "res1", "ok"),
        ("m1", int(Metric.PULSE), T0.replace(microsecond=0), None, "ok"),
        ("m2", int(Metric.SPO2), T0, "res1", "invalid"),
    ]
