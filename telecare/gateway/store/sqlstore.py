"""``SqlStore``: every role of ``gateway.store.base.Store`` on one ``store.sql``.

The backends (``SqliteStore``, ``PostgresStore``) subclass it and add what only they
can do: open the database, migrate it, maintain it, and (PostgreSQL) faster batch
writes. ``DurableStore`` subclasses it too, on its backend's ``sql``, and replaces only
the writes that may be spooled.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cached_property

from telecare.gateway.store.dispatch import SqlDispatchRepository
from telecare.gateway.store.registry import SqlRegistry
from telecare.gateway.store.reports import SqlReports
from telecare.gateway.store.sql import Sql
from telecare.gateway.store.writes import SqlWrites

__all__ = ["SqlStore"]


class SqlStore(SqlWrites, SqlRegistry, SqlReports):
    sql: Sql
    #: Dead letters older than this are deleted by ``maintain`` (``None``: kept).
    dead_letter_retention: timedelta | None = timedelta(days=30)

    @cached_property
    def dispatches(self) -> SqlDispatchRepository:
        """The dispatch repository on this store's database."""
        return SqlDispatchRepository(self.sql)

    async def prune_dead_letters(self, now: datetime | None = None) -> int:
        """Delete dead letters older than ``dead_letter_retention``; return how many."""
        if self.dead_letter_retention is None:
            return 0
        cutoff = (now or datetime.now(UTC)) - self.dead_letter_retention
        return await self.sql.execute("DELETE FROM dead_letters WHERE received_at < ?", cutoff)
