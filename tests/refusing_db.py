"""A real database that refuses writes, by trigger: one row (``refuse_zone``: events in
zone ``013``), or every insert into a table for a while (``inserts_refused``). What the
gateway meets when a message is valid to the codec but the store refuses it (a
constraint, a bug): not "storage unavailable", so the message must be dead-lettered, not
retried for ever; or a write that fails after the rules ran."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore

REFUSED_ZONE = "013"

_SQLITE = f"""
CREATE TRIGGER refuse_zone BEFORE INSERT ON alarm_events WHEN NEW.zone = '{REFUSED_ZONE}'
BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END;
"""

_POSTGRES = f"""
CREATE FUNCTION refuse_zone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.zone = '{REFUSED_ZONE}' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_zone BEFORE INSERT ON alarm_events
    FOR EACH ROW EXECUTE FUNCTION refuse_zone();
"""


def refuse_zone(store: SqliteStore | PostgresStore) -> str:
    """Install the trigger in ``store``'s database; return the exception class name the
    store will raise for a refused row."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.executescript(_SQLITE)
        return "IntegrityError"
    with psycopg.connect(
        store.dsn, autocommit=True, options=f"-c search_path={store.schema}"
    ) as conn:
        conn.execute(_POSTGRES.encode())
    return "RaiseException"


@asynccontextmanager
async def inserts_refused(store: SqliteStore | PostgresStore, table: str) -> AsyncIterator[None]:
    """Every insert into ``table`` fails in the database while inside."""
    sql, name = store.sql, f"refuse_{table}"
    if sql.dialect.name == "sqlite":
        await sql.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table}"
            f" BEGIN SELECT RAISE(ABORT, '{table} write refused (test)'); END"
        )
    else:
        await sql.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN RAISE EXCEPTION '{table} write refused (test)'; END $$"
        )
        await sql.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()"
        )
    try:
        yield
    finally:
        if sql.dialect.name == "sqlite":
            await sql.execute(f"DROP TRIGGER {name}")
        else:
            await sql.execute(f"DROP TRIGGER {name} ON {table}")
            await sql.execute(f"DROP FUNCTION {name}()")
