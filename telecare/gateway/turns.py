"""``Turns``: telemetry takes one turn per event-loop iteration, so the alarm lane is never
stuck behind a thousand telemetry steps.

Why: the gateway runs both lanes on one event loop. With 1,000 telemetry messages in
flight, one loop iteration could run 1,000 decode steps (~0.3 ms each: 300 ms) before
the alarm lane's next database reply is even looked at, and an alarm needs a dozen such
iterations to become a dispatch. With turns, each iteration starts at most one
telemetry step, whatever is waiting; everything else that is ready (the alarm lane's
steps, I/O callbacks) runs in the same iteration.

How: :meth:`Turns.take` returns at once for the first caller of an iteration; later
callers wait in arrival order, and one of them is released per iteration (a callback
that re-schedules itself with ``call_soon`` while anyone waits). A cancelled waiter is
skipped. Statistics: ``taken`` and ``waited`` (turns that had to wait) and ``waiting``.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Turns"]


class Turns:
    def __init__(self) -> None:
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._releasing = False
        self.taken = 0
        self.waited = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def take(self) -> None:
        """Return when it is this caller's turn (at once if nobody had one this iteration)."""
        self.taken += 1
        loop = asyncio.get_running_loop()
        if not self._releasing:
            self._releasing = True  # the next caller in this iteration waits
            loop.call_soon(self._release_next)
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        self.waited += 1
        await fut

    def _release_next(self) -> None:
        """Runs once per iteration while turns are taken: release one waiter."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                fut.get_loop().call_soon(self._release_next)
                return
        self._releasing = False
