"""What the gateway needs from storage, by role; ``Store`` is every role together.

Each role is a small class written once for both backends on ``store.sql``
(``gateway.store.sql``): ``writes.SqlWrites`` (the writes that may be spooled, which the
``DurableStore`` replaces, and the pipeline's direct reads), ``registry.SqlRegistry``,
``reports.SqlReports`` (reads for reports, exports and the console) and, as
``store.dispatches``, ``dispatch.SqlDispatchRepository`` (the repository ``dispatch/``
declares). ``accounts.Accounts`` (web users, sessions, API tokens) is built on
``store.sql`` by its callers; a feature's own state (``web.console_store``,
``web.tablet_store``, ``gateway.rule_state``) lives with the feature, on ``store.sql``.

The backends (``SqliteStore``, ``PostgresStore``) add opening, migrating, maintenance and
(PostgreSQL) faster batch writes. Writes are idempotent: re-delivering the same message
(same device and message id) stores nothing twice and returns ``False``/``0`` for what
was already there.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cached_property

from telecare.gateway.store.dispatch import SqlDispatchRepository
from telecare.gateway.store.registry import SqlRegistry
from telecare.gateway.store.reports import SqlReports
from telecare.gateway.store.writes import SqlWrites

__all__ = ["Store"]


class Store(SqlWrites, SqlRegistry, SqlReports):
    """Every role on ``sql``; a backend (or the durable store) provides the rest."""

    #: Dead letters older than this are deleted by ``maintain`` (``None``: kept).
    dead_letter_retention: timedelta | None = timedelta(days=30)

    @cached_property
    def dispatches(self) -> SqlDispatchRepository:
        """The dispatch repository on this store's database."""
        return SqlDispatchRepository(self.sql)

    @property
    def degraded(self) -> bool:
        """True while writes go to a local spool instead of the database (only the
        ``DurableStore`` ever is)."""
        return False

    @property
    def mode(self) -> str:
        """``"timescaledb"``, ``"postgres"`` or ``"sqlite"``: what the log reports at start."""
        raise NotImplementedError

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied (empty when up to date)."""
        raise NotImplementedError

    async def maintain(self, now: datetime | None = None) -> list[str]:
        """Daily housekeeping (partitions ahead in plain PostgreSQL, dead letters past
        their retention removed); returns what it created."""
        raise NotImplementedError

    async def prune_dead_letters(self, now: datetime | None = None) -> int:
        """Delete dead letters older than ``dead_letter_retention``; return how many."""
        if self.dead_letter_retention is None:
            return 0
        cutoff = (now or datetime.now(UTC)) - self.dead_letter_retention
        return await self.sql.execute("DELETE FROM dead_letters WHERE received_at < ?", cutoff)
