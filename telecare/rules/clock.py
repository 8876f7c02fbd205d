"""The injected clock: real in production, fake in tests (so tests jump time, never sleep).

Every rule, timer and escalation reads time through a :class:`Clock`; no module calls
``datetime.now`` on its own for decisions.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once ``now() >= when``."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        delay = (when - self.now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)


class FakeClock:
    """A clock that only moves when a test calls :meth:`advance` or :meth:`set`.

    Coroutines blocked in :meth:`sleep_until` wake as soon as the clock reaches their
    deadline, so a test of a 45-minute escalation takes milliseconds.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        self._waiters: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        if when < self._now:
            raise ValueError("FakeClock cannot go backwards")
        self._now = when
        still: list[tuple[datetime, asyncio.Future[None]]] = []
        for deadline, fut in self._waiters:
            if fut.done():
                continue
            if deadline <= when:
                fut.set_result(None)
            else:
                still.append((deadline, fut))
        self._waiters = still

    def advance(self, seconds: float = 0, **kwargs: float) -> datetime:
        """Move forward by ``seconds`` (plus any ``timedelta`` keyword) and wake sleepers."""
        self.set(self._now + timedelta(seconds=seconds, **kwargs))
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((when, fut))
        await fut
