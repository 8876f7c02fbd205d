"""A local spool on disk for what could not reach the database: one SQLite database,
``<directory>/spool.db`` (the file, its bound, how a damaged one is moved aside:
docs/storage.md, "Durability: the spool").

``async with Spool(directory) as spool``. ``append`` returns once its records are
committed, or raises :class:`~gateway.store.errors.SpoolFull` with nothing written (the
caller must not acknowledge); ``oldest`` and ``remove_through`` replay in ``seq`` order.
The spool reports its state and decides nothing more: ``on_state`` gets a
:class:`SpoolState` (on the event loop) when usage crosses ``alarm_ratio`` of
``max_bytes`` and again once it falls below ``alarm_ratio - 0.1``; whether that is an
alert is the rules' decision. The connection is used in a worker thread under one lock
(``sql.SqliteSql``), so the event loop never blocks on disk. One ``Spool`` per
directory and process.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Self

import structlog

from telecare.gateway.private_files import private_dir, private_file
from telecare.gateway.store.errors import SpoolFull
from telecare.gateway.store.sql import SqliteSql

__all__ = ["PAGE_BYTES", "Spool", "SpoolState"]

log = structlog.get_logger(__name__)

#: How much payload ``oldest`` reads at most (beyond its first record).
PAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpoolState:
    """How full the spool is, reported when it crosses its alarm ratio either way."""

    used_bytes: int
    max_bytes: int
    directory: str
    near_full: bool


class Spool:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 1024 * 1024 * 1024,
        alarm_ratio: float = 0.8,
        on_state: Callable[[SpoolState], object] | None = None,
    ) -> None:
        if not 0 < alarm_ratio <= 1:
            raise ValueError(f"alarm_ratio {alarm_ratio!r} must be in (0, 1]")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.alarm_ratio = alarm_ratio
        self._on_state = on_state
        self._sql = SqliteSql()
        self._alarmed = False
        self._damaged = 0
        # Changed only in the worker thread, with the write (a cancelled caller's too).
        self.used_bytes = self._records = 0

    async def __aenter__(self) -> Self:
        self._sql.open(await asyncio.to_thread(self._open))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sql.close()

    def _open(self) -> sqlite3.Connection:
        path = private_dir(self.directory, own=True) / "spool.db"  # personal data: 0700
        try:
            db, self._records, self.used_bytes = _connect(path)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, no access: not damage
                raise
            aside = f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{path}{suffix}").exists():
                    os.replace(f"{path}{suffix}", path.with_name(aside + suffix))
            self._damaged += 1
            log.error("spool_damaged", moved_to=aside, reason=str(exc))
            db, self._records, self.used_bytes = _connect(path)
        if old := len(list(self.directory.glob("*.seg"))):  # an earlier build's spool
            log.error("spool_old_segments_not_replayed", segments=old, fix="replay with it")
        return db

    # -- state ------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        """True while any record waits to be replayed."""
        return self._records > 0

    def stats(self) -> dict[str, int]:
        return {
            "spool_bytes": self.used_bytes,
            "spool_max_bytes": self.max_bytes,
            "spool_records": self._records,
            "spool_damaged": self._damaged,
        }

    # -- writing ----------------------------------------------------------------------
    async def append(self, payloads: Sequence[bytes]) -> None:
        """Append records in one transaction; return only once it is committed.

        Raises ``SpoolFull`` (nothing written) when they would pass ``max_bytes``.
        """
        try:
            await self._sql.run(partial(self._insert, payloads))
        except SpoolFull:
            self._report(refused=True)
            raise
        self._report()

    def _insert(self, payloads: Sequence[bytes], db: sqlite3.Connection) -> None:
        size = sum(map(len, payloads))
        if self.used_bytes + size > self.max_bytes:
            raise SpoolFull(str(self.directory), self.used_bytes, self.max_bytes, size)
        with db:
            db.executemany("INSERT INTO records (payload) VALUES (?)", [(p,) for p in payloads])
        self.used_bytes += size
        self._records += len(payloads)

    # -- reading back -----------------------------------------------------------------
    async def oldest(self) -> list[tuple[int, bytes]]:
        """The oldest records as ``(seq, payload)``, in order: the first one, and the
        next ones while their payloads add up to no more than ``PAGE_BYTES``."""
        return await self._sql.run(_page)

    async def remove_through(self, seq: int) -> None:
        """Delete the records up to ``seq``, once they have all been applied."""
        await self._sql.run(partial(self._delete, seq))
        self._report()

    def _delete(self, seq: int, db: sqlite3.Connection) -> None:
        delete = "DELETE FROM records WHERE seq <= ? RETURNING length(payload)"
        with db:
            sizes = db.execute(delete, (seq,)).fetchall()
        self.used_bytes -= sum(size for (size,) in sizes)
        self._records -= len(sizes)

    # -- alarm ------------------------------------------------------------------------
    def _report(self, *, refused: bool = False) -> None:
        """Log and report the state when usage crosses ``alarm_ratio`` (or an append was
        refused), and again when it falls back below ``alarm_ratio - 0.1``."""
        used, most = self.used_bytes, self.max_bytes
        if not self._alarmed and (refused or used >= self.alarm_ratio * most):
            log.error(
                "spool_near_full",
                used_bytes=used,
                max_bytes=most,
                percent=round(100 * used / most, 1),
                directory=str(self.directory),
            )
        elif self._alarmed and used < (self.alarm_ratio - 0.1) * most:
            log.info("spool_alarm_cleared", used_bytes=used)
        else:
            return
        self._alarmed = not self._alarmed
        if self._on_state is not None:
            try:
                self._on_state(SpoolState(used, most, str(self.directory), self._alarmed))
            except Exception:  # a failing callback must not lose the append that succeeded
                log.exception("spool_state_callback_failed")


def _connect(path: Path) -> tuple[sqlite3.Connection, int, int]:
    """Open (or create, ``0600``) the spool database; return it, its record count and
    payload bytes. Raises ``sqlite3.DatabaseError`` when it is not a sound database."""
    db = sqlite3.connect(private_file(path), check_same_thread=False)  # ``with db``: BEGIN
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # the WAL is fsync-ed at every commit
        db.execute(
            "CREATE TABLE IF NOT EXISTS records"
            " (seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL)"
        )
        (check,) = db.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        records, size = db.execute(
            "SELECT count(*), total(length(payload)) FROM records"
        ).fetchone()
    except BaseException:
        db.close()
        raise
    return db, records, int(size)


def _page(db: sqlite3.Connection) -> list[tuple[int, bytes]]:
    page: list[tuple[int, bytes]] = []
    size = 0
    cursor = db.execute("SELECT seq, payload FROM records ORDER BY seq")
    for seq, payload in cursor:
        size += len(payload)
        if page and size > PAGE_BYTES:
            break
        page.append((seq, payload))
    cursor.close()
    return page
