"""What the IP alarm receivers' decode stages share: storing events for an answer.

The DC-09 and SCAIP receivers (``gateway/ingest/dc09.py``, ``gateway/ingest/scaip.py``)
only move bytes: each datagram, TCP chunk or SIP message becomes an
:class:`~telecare.gateway.envelope.Envelope` handed to the protocol's decode stage
(``gateway/decode_dc09.py``, ``gateway/decode_scaip.py``), which answers with the bytes
to send back. The stage is **request/response**: its answer to an alarm is ready only
once the alarm is stored, so the receiver's acknowledgement (DC-09 ``ACK``, SCAIP
``<mrs>`` status 0) still waits for the store.

:class:`EventWriter` is that wait. A decode stage hands it one request's events
(:meth:`EventWriter.store`) and awaits; one supervised loop takes every request queued
while its previous write ran and stores all their events with one
``Pipeline.handle_events`` (one commit for many units' alarms under load, no added delay
when quiet), and wakes each request as soon as the events and the alerts they raised are
stored (``on_stored``). The fold counts and restores the rules note on stored alerts are
annotations the pipeline writes at most once a second while batches keep coming
(``Pipeline.handle_events``); once no request has come for ``NOTES_IDLE_S`` the loop
writes what is left (``Sink.flush_notes``), and so does leaving.

Resource handling
    An async context manager: entering starts the loop (``<name>``, on the gateway's
    supervisor when given, :mod:`telecare.gateway.tasks`); leaving cancels it and every
    request still waiting (their units get no answer and resend), then writes the
    pending notes (a failure is logged by the pipeline).

Error handling
    Storage unavailable (``gateway.failures``) is raised to every request of the write
    (no acknowledgement: the units resend). Anything else from a joint write
    (``Rejected``: one request's event reuses a stored id with other content; or a
    poison event that makes processing fail) makes the writer store the requests one by
    one, so only the request at fault gets the exception; the others' events are stored
    already and go through as duplicates. The decode stage turns ``Rejected`` into a
    refusal and a poison exception into a dead letter (:meth:`Sink.poison`) and a
    refusal, so that no unit retries a frame that can never be processed. The loop
    itself only stops when cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Final, Protocol, Self

from telecare.devices.model import AlarmEvent
from telecare.gateway.envelope import Envelope
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.pipeline import NOTES_IDLE_S
from telecare.gateway.tasks import Loop, Loops, Supervisor
from telecare.rules.clock import Clock

__all__ = ["STORE_BATCH_MAX", "EventWriter", "Sink"]

#: At most this many requests' events in one write.
STORE_BATCH_MAX: Final = 256


class Sink(Protocol):
    """What a receiver's decode stage needs from the pipeline."""

    async def handle_events(
        self,
        events: Sequence[AlarmEvent],
        *,
        received_at: datetime | None = None,
        on_stored: Callable[[], None] | None = None,
    ) -> None: ...

    async def dead_letter(
        self, env: Envelope, reason: str, device_id: str | None = None
    ) -> None: ...

    async def poison(
        self, env: Envelope, stage: str, exc: BaseException, device_id: str | None = None
    ) -> None: ...

    @property
    def notes_pending(self) -> bool: ...

    async def flush_notes(self) -> None: ...


_Request = tuple[list[AlarmEvent], "asyncio.Future[None]"]


class EventWriter:
    """Stores requests' events in joint writes (see the module docstring)."""

    def __init__(
        self,
        name: str,
        sink: Sink,
        clock: Clock,
        *,
        batch_max: int = STORE_BATCH_MAX,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.name = name
        self.sink = sink
        self.clock = clock
        self.batch_max = batch_max
        #: Joint writes done (a figure for the benchmarks and metrics).
        self.writes = 0
        #: Requests waiting for the writer. Unbounded on purpose: every request is one
        #: receiver task waiting for its answer, and the receivers bound those (TCP
        #: connections, UDP workers, SCAIP's ``max_in_flight``).
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._loops = Loops(supervisor)

    async def __aenter__(self) -> Self:
        await self._loops.start(Loop(self.name, self._step))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._loops.stop()
        while not self._queue.empty():
            _, done = self._queue.get_nowait()
            done.cancel()
        if self.sink.notes_pending:
            await self.sink.flush_notes()

    async def store(self, events: list[AlarmEvent]) -> None:
        """Return once ``events`` are stored (or spooled); raise what storing raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((events, done))
        await done

    async def _step(self) -> None:
        """Store what requests have queued, many in one write (one step of the loop)."""
        queue = self._queue
        if self.sink.notes_pending and queue.empty():
            # asyncio.timeout, not wait_for: no task per step (a cancelled get leaves
            # its request in the queue).
            try:
                async with asyncio.timeout(NOTES_IDLE_S):
                    first = await queue.get()
            except TimeoutError:  # idle: write the batches' pending notes
                await self.sink.flush_notes()
                return
        else:
            first = await queue.get()
        batch = [first]
        while len(batch) < self.batch_max and not queue.empty():
            batch.append(queue.get_nowait())
        self.writes += 1
        # The receive time lets the rules check each unit's clock (a late alarm keeps
        # its true time and is shown as late).
        now = self.clock.now()
        try:
            try:
                await self.sink.handle_events(
                    [e for evs, _ in batch for e in evs],
                    received_at=now,
                    on_stored=partial(_settle, batch, None),
                )
            except Exception as exc:
                if is_storage_unavailable(exc) or len(batch) == 1:
                    _settle(batch, exc)
                    return
                for evs, done in batch:  # only the request at fault gets the exception
                    await self._one(evs, done, now)
                return
        except BaseException:
            for _, done in batch:
                done.cancel()
            raise
        _settle(batch, None)

    async def _one(
        self, events: list[AlarmEvent], done: asyncio.Future[None], now: datetime
    ) -> None:
        try:
            await self.sink.handle_events(
                events, received_at=now, on_stored=partial(_settle, [(events, done)], None)
            )
        except Exception as exc:
            _settle([(events, done)], exc)
        else:
            _settle([(events, done)], None)


def _settle(batch: list[_Request], exc: Exception | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)
