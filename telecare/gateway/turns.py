"""``Turns``: telemetry takes a few turns per event-loop iteration, so the alarm lane is
never stuck behind a thousand telemetry steps.

Why: the gateway runs both lanes on one event loop. With 1,000 telemetry messages in
flight, one loop iteration could run 1,000 decode steps (~0.3 ms each: 300 ms) before
the alarm lane's next database reply is even looked at, and an alarm needs a dozen such
iterations to become a dispatch. With turns, each iteration starts only a few telemetry
steps (``per_iteration``), whatever is waiting; everything else that is ready (the alarm
lane's steps, I/O callbacks) runs in the same iteration.

How: :meth:`Turns.take` returns at once for the first ``per_iteration`` callers of an
iteration; later callers wait in arrival order, and ``per_iteration`` of them are
released per iteration (a callback that re-schedules itself with ``call_soon`` while
turns are taken). A cancelled waiter is skipped. Statistics: ``taken``, ``waited``
(turns that had to wait) and ``waiting``.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Turns"]


class Turns:
    def __init__(self, per_iteration: int = 8) -> None:
        #: Telemetry steps started per iteration (a hub batch's decode is ~0.3 ms, so 8
        #: keep an iteration's telemetry work near 2-3 ms).
        self.per_iteration = per_iteration
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._budget = per_iteration
        self._scheduled = False
        self.taken = 0
        self.waited = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def take(self) -> None:
        """Return when it is this caller's turn: at once while this iteration's
        allowance lasts and nobody waits, else in arrival order in a later iteration."""
        self.taken += 1
        loop = asyncio.get_running_loop()
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._refill)
        if self._budget > 0 and not self._waiters:
            self._budget -= 1
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        self.waited += 1
        await fut

    def _refill(self) -> None:
        """Runs once per iteration while turns are taken: a new allowance, spent first on
        the waiters (their steps run in the next iteration)."""
        busy = self._budget < self.per_iteration or bool(self._waiters)
        self._budget = self.per_iteration
        while self._waiters and self._budget > 0:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._budget -= 1
        if busy:
            asyncio.get_running_loop().call_soon(self._refill)
        else:
            self._scheduled = False
