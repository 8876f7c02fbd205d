"""``store.sql.transaction(pipelined=True)`` (the dispatch intake's one transaction): the
same all-or-nothing as any transaction, on SQLite and PostgreSQL (pipeline mode there)."""

from __future__ import annotations

import pytest

from telecare.gateway.store.base import Store


async def _table(store: Store) -> None:
    await store.sql.execute("CREATE TABLE marks (mark_id TEXT PRIMARY KEY, n INTEGER NOT NULL)")


async def _marks(store: Store) -> list[tuple[str, int]]:
    rows = await store.sql.fetch_all("SELECT mark_id, n FROM marks ORDER BY mark_id")
    return [(str(m), int(n)) for m, n in rows]


async def test_sends_reads_and_counts_commit_together(store: Store) -> None:
    await _table(store)
    async with store.sql.transaction(pipelined=True) as tx:
        await tx.send("INSERT INTO marks (mark_id, n) VALUES (?, ?)", "a", 1)
        await tx.execute_many("INSERT INTO marks (mark_id, n) VALUES (?, ?)", [("b", 2), ("c", 3)])
        # A read sees what was sent before it, in the same transaction.
        row = await tx.fetch_one("SELECT count(*), sum(n) FROM marks")
        assert row is not None
        assert (int(row[0]), int(row[1])) == (3, 6)
        assert await tx.execute("UPDATE marks SET n = n + 10 WHERE n >= ?", 2) == 2
        await tx.send("DELETE FROM marks WHERE mark_id = ?", "a")
    assert await _marks(store) == [("b", 12), ("c", 13)]


async def _duplicate(store: Store) -> None:
    async with store.sql.transaction(pipelined=True) as tx:
        await tx.send("INSERT INTO marks (mark_id, n) VALUES (?, ?)", "a", 1)
        await tx.send("INSERT INTO marks (mark_id, n) VALUES (?, ?)", "a", 2)  # fails
        await tx.send("INSERT INTO marks (mark_id, n) VALUES (?, ?)", "b", 3)


async def _abandon(store: Store) -> None:
    async with store.sql.transaction(pipelined=True) as tx:
        await tx.send("INSERT INTO marks (mark_id, n) VALUES (?, ?)", "a", 1)
        assert await tx.fetch_one("SELECT n FROM marks WHERE mark_id = ?", "a") == (1,)
        raise RuntimeError("changed my mind")


async def test_a_failed_send_rolls_everything_back(store: Store) -> None:
    await _table(store)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await _duplicate(store)
    assert await _marks(store) == []
    # The connection went back to the pool usable: the next transaction works.
    async with store.sql.transaction(pipelined=True) as tx:
        await tx.send("INSERT INTO marks (mark_id, n) VALUES (?, ?)", "c", 4)
    assert await _marks(store) == [("c", 4)]


async def test_an_exception_in_the_body_rolls_back(store: Store) -> None:
    await _table(store)
    with pytest.raises(RuntimeError, match="changed my mind"):
        await _abandon(store)
    assert await _marks(store) == []
