"""SQLite backend: the embedded default (``telecare demo``), WAL mode, one writer, the
shared ``Store`` plus opening, migrating and maintenance. One ``sqlite3`` connection,
used in a worker thread under a lock (``sql.SqliteSql``) so the event loop never blocks
on disk; ``synchronous=FULL`` so a committed write survives a power cut."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Self

from telecare.devices.model import Reading
from telecare.gateway.private_files import private_dir, private_file
from telecare.gateway.store.base import Store
from telecare.gateway.store.migrations import RECORD, Migration, apply_pending
from telecare.gateway.store.sql import SqliteSql, sqlite_rows
from telecare.gateway.store.tables import READINGS
from telecare.gateway.turns import WriteOrder

__all__ = ["SqliteStore"]

#: The last line of a migration that edits ``sqlite_schema`` under ``PRAGMA
#: writable_schema = ON`` (https://www.sqlite.org/lang_altertable.html, "Making Other Kinds
#: Of Table Schema Changes"): ``migrate`` then does the step SQL cannot, since the pragma
#: takes only a literal: ``PRAGMA schema_version`` = the current one + 1, read in the
#: migration's write transaction, so every connection reloads the schema; then
#: ``writable_schema`` off.
SCHEMA_EDITED = "-- sqlite: schema_version + 1, writable_schema OFF"


class SqliteStore(Store):
    sql: SqliteSql
    mode = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        dead_letter_retention: timedelta | None = timedelta(days=30),
        order: WriteOrder | None = None,
        urgent: bool = False,
    ) -> None:
        self.path = str(path)
        self.dead_letter_retention = dead_letter_retention
        #: The query API (``gateway.store.sql``); it owns the connection and its lock, and
        #: takes turns with the process's other connections to ``path`` (``order``).
        self.sql = SqliteSql(order, urgent=urgent)

    async def write_readings(self, readings: Sequence[Reading]) -> int:
        """The parameters made a column at a time (``sql.sqlite_rows``)."""
        columns = [list(map(c.getter(), readings)) for c in READINGS.written]
        return await self.sql.execute_many(READINGS.insert(), sqlite_rows(columns))

    async def __aenter__(self) -> Self:
        if self.path != ":memory:":
            # 0600 in a 0700 directory; SQLite gives the -wal and -shm files the
            # database file's mode.
            private_dir(Path(self.path).parent)
            private_file(Path(self.path))
        self.sql.open(await asyncio.to_thread(self._open))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sql.close()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def migrate(self) -> list[str]:
        def apply(m: Migration) -> Awaitable[None]:
            return self.sql.run(lambda conn: _apply(conn, m))

        return await apply_pending(self.sql, "sqlite", None, apply)

    async def maintain(self, now: datetime | None = None) -> list[str]:
        """Daily housekeeping: drop dead letters past their retention, refresh the
        planner's statistics, checkpoint the WAL."""
        await self.prune_dead_letters(now)
        await self.sql.execute("PRAGMA optimize")
        await self.sql.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return []


def _apply(conn: sqlite3.Connection, m: Migration) -> None:
    """Run migration ``m``'s SQL and record it (``RECORD``) in one write transaction,
    rolled back if either fails; a schema edit (``SCHEMA_EDITED``) gets its version bump,
    and ``writable_schema`` is off again whatever happens."""
    script, edited, rest = m.sql.partition(SCHEMA_EDITED)
    if rest.strip():
        raise RuntimeError(f"{SCHEMA_EDITED!r} must be a migration's last line")
    with conn:  # committed, or rolled back (if it began) when anything raises
        try:
            conn.executescript("BEGIN IMMEDIATE;\n" + script + "\n;")
            if edited:
                (version,) = conn.execute("PRAGMA schema_version").fetchone()
                conn.execute(f"PRAGMA schema_version = {int(version) + 1}")
        finally:
            if edited:
                conn.execute("PRAGMA writable_schema = OFF")
        conn.execute(RECORD, (m.version, m.name))
