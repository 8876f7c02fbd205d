"""A real database that refuses one row: a trigger on ``alarm_events`` that raises for
events in zone ``013``. What the gateway meets when a message is valid to the codec but
the store refuses it (a constraint, a bug): not "storage unavailable", so the message
must be dead-lettered, not retried for ever."""

from __future__ import annotations

import sqlite3

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
