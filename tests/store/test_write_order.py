"""SQLite's connections in one process take turns, the alarm lane's first
(``gateway.turns.WriteOrder``): a telemetry backlog on the main connection must not starve
the lane's connection in SQLite's busy handler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.turns import WriteOrder

INSERT = "INSERT INTO t (who) VALUES (?)"


@asynccontextmanager
async def _stores(path: Path, order: WriteOrder) -> AsyncIterator[tuple[SqliteStore, SqliteStore]]:
    """The main connection and the lane's to one file, taking turns in ``order``."""
    async with (
        SqliteStore(path, order=order) as main,
        SqliteStore(path, order=order, urgent=True) as lane,
    ):
        await main.sql.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, who TEXT NOT NULL)")
        yield main, lane


async def test_the_urgent_connection_goes_before_telemetry_queued_after_it(
    tmp_path: Path,
) -> None:
    async with _stores(tmp_path / "db.sqlite3", WriteOrder()) as (main, lane):
        release = asyncio.Event()
        begun = asyncio.Event()

        async def long_telemetry_transaction() -> None:
            async with main.sql.transaction() as tx:
                await tx.execute(INSERT, "telemetry-1")
                begun.set()
                await release.wait()

        first = asyncio.create_task(long_telemetry_transaction())
        await begun.wait()
        alarm = asyncio.create_task(lane.sql.execute(INSERT, "alarm"))
        await asyncio.sleep(0)  # the alarm waits for its turn (the transaction holds it)
        second = asyncio.create_task(main.sql.execute(INSERT, "telemetry-2"))
        await asyncio.sleep(0.05)
        assert not alarm.done()
        assert not second.done()
        release.set()
        await asyncio.gather(first, alarm, second)
        rows = await main.sql.fetch_all("SELECT who FROM t ORDER BY n")
        assert [r[0] for r in rows] == ["telemetry-1", "alarm", "telemetry-2"]


async def test_a_turn_not_given_within_its_patience_is_taken_anyway(tmp_path: Path) -> None:
    """A transaction that waits on the other connection does not deadlock the two: after
    ``patience`` the waiting statement runs and SQLite decides (here: a read, which WAL
    lets run beside the open write transaction)."""
    async with _stores(tmp_path / "db.sqlite3", WriteOrder(patience=0.2)) as (main, lane):
        async with main.sql.transaction() as tx:
            await tx.execute(INSERT, "telemetry")
            row = await asyncio.wait_for(lane.sql.fetch_one("SELECT count(*) FROM t"), 5)
        assert row == (0,)
