"""SQLite group commit of alarm events: events written while a commit is under way go in
the next transaction together; each writer learns whether its own event was new, and only
after the transaction holding it has committed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.store.sqlite import SqliteStore
from tests.store.helpers import event


async def test_concurrent_events_are_committed_together_and_each_learns_if_new(
    tmp_path: Path,
) -> None:
    async with SqliteStore(tmp_path / "t.sqlite3") as store:
        await store.migrate()
        events = [event(i) for i in range(300)]
        # 300 writers at once, the first 20 twice: duplicates within one batch too
        results = await asyncio.gather(
            *(store.write_event(e) for e in events), *(store.write_event(e) for e in events[:20])
        )
        assert results[:300] == [True] * 300
        assert results[300:] == [False] * 20
        assert await store.count("alarm_events") == 300
        assert await store.write_event(events[0]) is False
    # a new connection sees every event: they were committed before the writers returned
    async with SqliteStore(tmp_path / "t.sqlite3") as again:
        assert await again.count("alarm_events") == 300


async def test_a_cancelled_writer_does_not_lose_the_others(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "t.sqlite3") as store:
        await store.migrate()
        first = asyncio.create_task(store.write_event(event(1)))
        second = asyncio.create_task(store.write_event(event(2)))
        await asyncio.sleep(0)
        first.cancel()
        assert await second is True
        await asyncio.gather(first, return_exceptions=True)
    async with SqliteStore(tmp_path / "t.sqlite3") as again:
        assert await again.count("alarm_events") == 2  # the cancelled caller's event too
