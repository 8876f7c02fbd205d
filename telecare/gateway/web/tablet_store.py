"""Storage of the care-home tablet page: one row per set entered (migration 0019,
``tablet_sets``), written once for both backends on ``store.sql``.

The row is keyed by ``(site_id, idem_key)``, the tablet's Idempotency-Key, and is how a
set retried after bad Wi-Fi is stored and scored once:

1. :meth:`TabletSets.reserve` inserts the key with ``answer`` NULL; only one request
   wins it (``ON CONFLICT DO NOTHING``).
2. The winner hands the set to the pipeline (itself idempotent on the set's
   observation id) and :meth:`TabletSets.answer` keeps what it answered.
3. A retry finds the row: the same body gets the kept answer, another body is a
   conflict. A row left without an answer (the gateway stopped mid-way) may be taken
   over after :data:`STALE_AFTER`: the pipeline completes what the first attempt left.

The soft signs (RESTORE2 codes) and who entered the set are kept with it; the
teletriage alert raised from it is noted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from telecare.gateway.store.base import Store
from telecare.gateway.store.sql import Queries, json_value

__all__ = ["STALE_AFTER", "TabletSet", "TabletSets", "tablet_sets_of"]

#: A reserved key with no answer after this long is taken to be an abandoned attempt.
STALE_AFTER: Final = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class TabletSet:
    site_id: str
    idem_key: str
    body_hash: str
    resident_id: str
    observation_id: str
    entered_by: str
    soft_signs: list[str]
    answer: dict[str, Any] | None
    created_at: datetime
    teletriage_alert_id: str | None


_COLUMNS: Final = (
    "site_id, idem_key, body_hash, resident_id, observation_id, entered_by, soft_signs,"
    " answer, created_at, teletriage_alert_id"
)


def _row(row: Sequence[Any]) -> TabletSet:
    return TabletSet(
        site_id=row[0],
        idem_key=row[1],
        body_hash=row[2],
        resident_id=row[3],
        observation_id=row[4],
        entered_by=row[5],
        soft_signs=list(json_value(row[6]) or []),
        answer=json_value(row[7]) if row[7] is not None else None,
        created_at=row[8],
        teletriage_alert_id=row[9],
    )


class TabletSets:
    """The ``tablet_sets`` table (see the module docstring)."""

    def __init__(self, sql: Queries) -> None:
        self.sql = sql

    async def get(self, site_id: str, idem_key: str) -> TabletSet | None:
        row = await self.sql.fetch_one(
            f"SELECT {_COLUMNS} FROM tablet_sets WHERE site_id = ? AND idem_key = ?",
            site_id,
            idem_key,
        )
        return _row(row) if row is not None else None

    async def reserve(
        self,
        entry: TabletSet,
        now: datetime,
    ) -> bool:
        """Claim ``entry``'s key; ``False`` when another request holds it (or held it and
        answered). An unanswered claim older than :data:`STALE_AFTER` is taken over."""
        inserted = await self.sql.execute(
            "INSERT INTO tablet_sets (site_id, idem_key, body_hash, resident_id,"
            " observation_id, entered_by, soft_signs, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            entry.site_id,
            entry.idem_key,
            entry.body_hash,
            entry.resident_id,
            entry.observation_id,
            entry.entered_by,
            list(entry.soft_signs),
            now,
        )
        if inserted:
            return True
        taken = await self.sql.execute(
            "UPDATE tablet_sets SET created_at = ? WHERE site_id = ? AND idem_key = ?"
            " AND answer IS NULL AND body_hash = ? AND created_at < ?",
            now,
            entry.site_id,
            entry.idem_key,
            entry.body_hash,
            now - STALE_AFTER,
        )
        return taken == 1

    async def answer(self, site_id: str, idem_key: str, answer: dict[str, Any]) -> None:
        """Keep the answer given for a reserved key."""
        await self.sql.execute(
            "UPDATE tablet_sets SET answer = ? WHERE site_id = ? AND idem_key = ?",
            answer,
            site_id,
            idem_key,
        )

    async def release(self, site_id: str, idem_key: str) -> None:
        """Forget an unanswered key (the set was refused: the tablet may fix and resend)."""
        await self.sql.execute(
            "DELETE FROM tablet_sets WHERE site_id = ? AND idem_key = ? AND answer IS NULL",
            site_id,
            idem_key,
        )

    async def note_teletriage(self, site_id: str, idem_key: str, alert_id: str) -> bool:
        """Record the teletriage request raised from a set; ``False`` if one was already."""
        changed = await self.sql.execute(
            "UPDATE tablet_sets SET teletriage_alert_id = ? WHERE site_id = ? AND idem_key = ?"
            " AND teletriage_alert_id IS NULL",
            alert_id,
            site_id,
            idem_key,
        )
        return changed == 1

    async def recent(self, resident_id: str, limit: int = 20) -> list[TabletSet]:
        """The resident's latest answered sets, newest first."""
        rows = await self.sql.fetch_all(
            f"SELECT {_COLUMNS} FROM tablet_sets WHERE resident_id = ? AND answer IS NOT NULL"
            " ORDER BY created_at DESC LIMIT ?",
            resident_id,
            limit,
        )
        return [_row(r) for r in rows]


def tablet_sets_of(store: Store) -> TabletSets:
    """:class:`TabletSets` over a store's query API (``store.sql``)."""
    return TabletSets(store.sql)
