"""``Turns``: while alarm work is in flight, telemetry takes a few turns per event-loop
iteration, so the alarm lane is never stuck behind a thousand telemetry steps; while
none is, telemetry runs free.

Why: the gateway runs both lanes on one event loop. With 1,000 telemetry messages in
flight, one loop iteration could run 1,000 decode steps (~0.3 ms each: 300 ms) before
the alarm lane's next database reply is even looked at, and an alarm needs a dozen such
iterations to become a dispatch. With turns, each iteration starts only a few telemetry
steps (``per_iteration``), whatever is waiting; everything else that is ready (the alarm
lane's steps, I/O callbacks) runs in the same iteration.

Why only then: pacing has a price when there is nothing to overtake. A backlog drained
a few steps per iteration acknowledges its messages a few at a time, makes smaller
database batches and more loop iterations: SQLite hub batches cost ~14 % more CPU per
message with turns always on (docs/benchmarks.md, issue 11). So telemetry takes turns
only while the alarm lane has work: from the moment an alarm-class message arrives
(:meth:`Turns.announce`, from the lane's MQTT client as it reads the message) until
the lane has handled it (:meth:`Turns.alarm`, around the lane pipeline's ``handle``
and around the handling of events on either pipeline: the IP receivers' and the serial
line's alarms pace telemetry too, once their events reach the pipeline). An alarm that
arrives while hundreds of telemetry steps run free waits for the iteration in progress
(the steps already running finish their step); from the next iteration on, every
telemetry step starts with :meth:`Turns.take` and waits its turn, so the alarm's own
steps go first. The announcement lasts ``announce_s``: long enough for the lane to start
handling the message (a few short iterations), short enough that a message the lane
never handles (its connection dropped) paces telemetry only briefly.

How: :meth:`Turns.take` returns at once while no alarm is in flight (nobody waits
then). While one is, it returns at once for the first ``per_iteration`` callers of an
iteration; later callers wait in arrival order, and ``per_iteration`` of them are
released per iteration (a callback that re-schedules itself with ``call_soon`` while
turns are taken). When the last alarm is done, every waiter is released. A cancelled
waiter is skipped. Statistics: ``taken``, ``waited`` (turns that had to wait),
``waiting`` and ``alarms`` (alarm work in flight).

``WriteOrder`` does the same on SQLite's one write lock: the lane's connection to the
file goes before the main connection's next statement (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Turns", "WriteOrder"]


class Turns:
    def __init__(self, per_iteration: int = 8, announce_s: float = 0.1) -> None:
        #: Telemetry steps started per iteration while an alarm is in flight (a hub
        #: batch's decode is ~0.3 ms, so 8 keep an iteration's telemetry work near 2-3 ms).
        self.per_iteration = per_iteration
        #: How long an announced alarm paces telemetry before the lane takes it up.
        self.announce_s = announce_s
        #: Alarm work in flight (:meth:`alarm` blocks).
        self.alarms = 0
        self._announced_until = 0.0  # time.monotonic()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._budget = per_iteration
        self._scheduled = False
        self.taken = 0
        self.waited = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def announce(self) -> None:
        """An alarm-class message has arrived: telemetry takes turns for the next
        ``announce_s`` seconds (until the lane's :meth:`alarm` block takes over)."""
        self._announced_until = time.monotonic() + self.announce_s

    @contextmanager
    def alarm(self) -> Iterator[None]:
        """Alarm work in flight for the block: telemetry takes turns meanwhile."""
        self.alarms += 1
        try:
            yield
        finally:
            self.alarms -= 1
            if not self._pacing():
                self._release(len(self._waiters))

    def _pacing(self) -> bool:
        return self.alarms > 0 or time.monotonic() < self._announced_until

    async def take(self) -> None:
        """Return when it is this caller's turn: at once while no alarm is in flight;
        else at once while this iteration's allowance lasts and nobody waits, else in
        arrival order in a later iteration."""
        self.taken += 1
        if not self._waiters and not self._pacing():
            return
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
        the waiters (their steps run in the next iteration); all of them once no alarm
        is in flight any more."""
        busy = self._budget < self.per_iteration or bool(self._waiters)
        self._budget = self.per_iteration
        self._release(self.per_iteration if self._pacing() else len(self._waiters))
        if busy:
            asyncio.get_running_loop().call_soon(self._refill)
        else:
            self._scheduled = False

    def _release(self, n: int) -> None:
        """Let up to ``n`` waiters go (in arrival order), each spending the allowance."""
        while self._waiters and n > 0:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._budget -= 1
                n -= 1


class WriteOrder:
    """One SQLite database's turns across this process's connections to it: one statement
    or transaction at a time, an urgent connection's (the alarm lane's) first. Without it
    a telemetry backlog starves the lane in SQLite's busy handler, which retries after
    sleeps of up to 100 ms and loses the lock each time to a writer that takes it again
    at once (alarms waited seconds). A turn not given within ``patience`` seconds (a
    transaction that waits on the other connection) is taken anyway: SQLite decides."""

    def __init__(self, patience: float = 1.0) -> None:
        self.patience = patience
        self._busy = 0
        self._urgent = 0  # urgent callers waiting
        self._changed: asyncio.Future[None] | None = None

    def _free(self, urgent: bool) -> bool:
        return not self._busy and (urgent or not self._urgent)

    def _notify(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    async def _wait(self, urgent: bool) -> None:
        while not self._free(urgent):
            if self._changed is None or self._changed.done():
                self._changed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._changed)  # shared: one waiter's cancel is its own

    async def take(self, urgent: bool) -> None:
        """Wait for a turn (at once when free); :meth:`give_back` after it."""
        if not self._free(urgent):
            self._urgent += urgent
            try:
                async with asyncio.timeout(self.patience):
                    await self._wait(urgent)
            except TimeoutError:
                pass
            finally:
                self._urgent -= urgent
                self._notify()
        self._busy += 1

    def give_back(self) -> None:
        self._busy -= 1
        self._notify()
