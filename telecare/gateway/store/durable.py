"""``DurableStore``: the ``Store`` the gateway uses, so that nothing accepted is lost,
and the spool's records (what they hold, how they are replayed).

It is the ``Store`` on its wrapped store's ``sql``, replacing only the writes that may be
spooled (``SqlWrites``' ``write_*``); reads, the registry, the dispatch repository and
``store.sql`` are not spooled and raise while the database is away::

    async with PostgresStore(dsn) as pg, DurableStore(pg, spool_dir=...) as store: ...

``write_readings`` goes through a :class:`~gateway.store.batcher.ReadingBatcher`; the
other spooled writes go straight to the store, never behind a batch of readings. When
and how writes go to the :class:`~gateway.store.spool.Spool` and are replayed (in
order, by the ``spool-replayer`` loop with ``apply_records``): docs/storage.md,
"Durability: the spool". The spool reports its state (``on_spool_state``); whether a
nearly full spool is an alert is the caller's decision.

A record (``encode``/``decode``, pure and exact inverses) is ``{"k": kind, "v": values}``
(``"r"``: a list of them, for a batch of readings), the values of the table spec's
spooled columns in order (``gateway.store.tables``: ISO 8601 timestamps, base64 bytes);
one written before a column was added is shorter and decodes with the column's default.
``apply_records`` calls the matching ``SqlWrites.write_<kind>`` for each (events and
alerts: ``write_events``/``write_alerts``, a batch of one), consecutive reading batches
merged into writes of up to ``max_rows`` rows.

Resources: entering opens the spool and starts the batcher and two supervised loops
(``gateway.tasks``, in ``supervisor`` when given, else a private one): ``spool-replayer``
and ``store-maintenance`` (``maintain()`` every ``maintain_every`` seconds), each failure
logged and retried with backoff. Leaving flushes the batcher (to the database or the
spool), stops the loops and closes the spool (what is left is replayed after the next
start). The wrapped store is its owner's to close.

Errors: ``SpoolFull`` propagates to the writer (do not acknowledge; the sender
redelivers), as do errors that are not "database unreachable" (a cancelled writer's
``CancelledError`` among them: it is never spooled). In a replay, "unreachable" again
propagates (the page is kept and retried from its start); any other error for a
record (undecodable, or rejected by the database) makes it a dead letter (source
``spool``, the page's ``spool/<first seq>-<last seq>`` as origin, the error as reason)
and the replay carries on.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self, TypeVar, cast

import structlog

from telecare.devices.model import AlarmEvent, Alert, Reading, utcnow
from telecare.gateway.backoff import Backoff
from telecare.gateway.store.base import Store
from telecare.gateway.store.batcher import Destination, ReadingBatcher
from telecare.gateway.store.errors import is_unavailable
from telecare.gateway.store.rows import DeadLetter, News2Record, StatusItem
from telecare.gateway.store.spool import Spool, SpoolState
from telecare.gateway.store.tables import (
    ALERTS,
    DEAD_LETTERS,
    EVENTS,
    NEWS2,
    READINGS,
    STATUS,
    Table,
)
from telecare.gateway.store.writes import SqlWrites
from telecare.gateway.tasks import Loop, Loops, Supervisor

__all__ = ["DurableStore", "ReadingsItem", "SpoolItem", "apply_records", "decode", "encode"]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ReadingsItem:
    readings: tuple[Reading, ...]


SpoolItem = ReadingsItem | AlarmEvent | Alert | DeadLetter | News2Record | StatusItem

#: The record kinds besides ``readings``: each is written by ``SqlWrites.write_<kind>``,
#: or (``_BATCHED``) by its batch form ``write_<kind>s``, as a batch of one.
_SPECS: dict[str, Table[Any]] = {"event": EVENTS, "alert": ALERTS, "dead_letter": DEAD_LETTERS}
_SPECS |= {"news2": NEWS2, "status": STATUS}
_BATCHED = {"event", "alert"}
_KIND: dict[Any, str] = {spec.make: kind for kind, spec in _SPECS.items()}


def encode(item: SpoolItem) -> bytes:
    """The record payload for ``item``."""
    if isinstance(item, ReadingsItem):
        body: dict[str, Any] = {"k": "readings", "r": [READINGS.record(r) for r in item.readings]}
    else:
        kind = _KIND[type(item)]
        body = {"k": kind, "v": _SPECS[kind].record(item)}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(payload: bytes) -> SpoolItem:
    """The item a record payload holds. Raises ``ValueError`` for an unknown record."""
    body = json.loads(payload)
    kind = body.get("k")
    if kind == "readings":
        return ReadingsItem(tuple(READINGS.from_record(v) for v in body["r"]))
    if kind in _SPECS:
        return cast(SpoolItem, _SPECS[kind].from_record(body["v"]))
    raise ValueError(f"unknown spool record kind {kind!r}")


async def apply_records(
    store: SqlWrites, records: Sequence[bytes], origin: str, *, max_rows: int = 5000
) -> None:
    """Write ``records`` to ``store`` in order."""
    raws: list[bytes] = []  # consecutive reading records, written together
    rows: list[Reading] = []
    for raw in records:
        try:
            item: SpoolItem | Exception = decode(raw)
        except (ValueError, KeyError, TypeError) as exc:
            item = exc
        if isinstance(item, ReadingsItem) and len(rows) + len(item.readings) <= max_rows:
            raws.append(raw)
            rows += item.readings
            continue
        await _apply(store, raws, origin, store.write_readings, rows)
        raws, rows = [], []
        if isinstance(item, ReadingsItem):
            raws, rows = [raw], list(item.readings)
        elif isinstance(item, Exception):
            await _reject(store, raw, origin, item)
        elif (kind := _KIND[type(item)]) in _BATCHED:
            await _apply(store, [raw], origin, getattr(store, f"write_{kind}s"), [item])
        else:
            await _apply(store, [raw], origin, getattr(store, f"write_{kind}"), item)
    await _apply(store, raws, origin, store.write_readings, rows)


async def _apply(
    store: SqlWrites,
    raws: list[bytes],
    origin: str,
    write: Callable[[Any], Awaitable[object]],
    arg: object,
) -> None:
    """``write(arg)``, the records ``raws``; each becomes a dead letter if the database
    rejects it (an unreachable database propagates)."""
    if not raws:
        return
    try:
        await write(arg)
    except Exception as exc:
        if is_unavailable(exc):
            raise
        for raw in raws:
            await _reject(store, raw, origin, exc)


async def _reject(store: SqlWrites, raw: bytes, origin: str, exc: Exception) -> None:
    log.error("spool_record_rejected", origin=origin, error=repr(exc))
    await store.write_dead_letter(
        DeadLetter(utcnow(), "spool", origin, f"replay failed: {exc!r}"[:1000], raw)
    )


def _any(exc: BaseException) -> bool:  # retry every failure: the spool must drain
    return True


class DurableStore(Store):
    def __init__(
        self,
        store: Store,
        *,
        spool_dir: str | os.PathLike[str],
        spool_max_bytes: int = 1024 * 1024 * 1024,
        spool_alarm_ratio: float = 0.8,
        on_spool_state: Callable[[SpoolState], object] | None = None,
        batch_rows: int = 5000,
        batch_age: float = 0.2,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        maintain_every: float | None = 24 * 3600.0,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.store, self.sql = store, store.sql
        self.dead_letter_retention = store.dead_letter_retention
        self._spool = Spool(
            spool_dir,
            max_bytes=spool_max_bytes,
            alarm_ratio=spool_alarm_ratio,
            on_state=on_spool_state,
        )
        self._batcher = ReadingBatcher(
            self._write_batch, max_rows=batch_rows, max_age=batch_age, supervisor=supervisor
        )
        self._batch_rows = batch_rows
        self._backoff = Backoff(initial=retry_initial, cap=retry_max)
        self._maintain_every = maintain_every
        self._loops = Loops(supervisor)
        # Held while appending to the spool and while deciding the spool is drained, so
        # no write can slip in between "spool empty" and "back to direct writes".
        self._spool_lock = asyncio.Lock()
        self._degraded = False
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._counts = {"outages": 0, "items_spooled": 0, "records_replayed": 0}

    @property
    def mode(self) -> str:
        return self.store.mode

    async def migrate(self) -> list[str]:
        return await self.store.migrate()

    async def maintain(self, now: datetime | None = None) -> list[str]:
        return await self.store.maintain(now)

    @property
    def degraded(self) -> bool:
        """True while writes go to the spool (database away, or replay not finished)."""
        return self._degraded

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self._spool.__aenter__()
        if self._spool.pending:
            log.warning("spool_pending_at_start", **self._spool.stats())
            self._set_degraded()
        await self._loops.start(Loop("spool-replayer", self._replay, _any, self._backoff))
        if self._maintain_every:
            await self._loops.start(Loop("store-maintenance", self._maintain_later, _any))
        await self._batcher.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._batcher.__aexit__()
        finally:
            await self._loops.stop()
            await self._spool.__aexit__()

    def stats(self) -> dict[str, int]:
        """Batcher, spool and outage figures, for the metrics endpoint."""
        out = {"degraded": int(self._degraded), **self._counts, **self._batcher.stats()}
        return out | self._spool.stats()

    async def wait_drained(self) -> None:
        """Return once nothing waits in the spool and writes go to the database again."""
        await self._drained.wait()

    # -- routing -----------------------------------------------------------------------
    def _set_degraded(self, exc: BaseException | None = None) -> None:
        if not self._degraded:
            self._degraded = True
            self._counts["outages"] += exc is not None
            self._drained.clear()
            log.error("store_unavailable_spooling", error=repr(exc) if exc else None)
        self._wake.set()

    async def _put(
        self,
        items: Sequence[SpoolItem] | Callable[[], Sequence[SpoolItem]],
        call: Callable[[], Awaitable[_T]],
    ) -> tuple[Destination, _T | None]:
        """Write through ``call``; on an unreachable database spool ``items`` instead (one
        transaction)."""
        if not self._degraded:
            try:
                return "store", await call()
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                self._set_degraded(exc)
        async with self._spool_lock:
            if self._degraded:
                payloads = [encode(i) for i in (items() if callable(items) else items)]
                await self._spool.append(payloads)
                self._counts["items_spooled"] += len(payloads)
                self._wake.set()
                return "spool", None
        return await self._put(items, call)  # the replayer drained the spool meanwhile

    async def _write_batch(self, readings: list[Reading]) -> Destination:
        store = self.store
        item = lambda: [ReadingsItem(tuple(readings))]  # noqa: E731  (made only if spooled)
        where, _ = await self._put(item, lambda: store.write_readings(readings))
        return where

    # -- the loops -----------------------------------------------------------------------
    async def _replay(self) -> None:
        """Wait until degraded, then replay the spool, oldest page first, until it is empty."""
        await self._wake.wait()
        spool = self._spool
        while await self._pending_or_drained():
            page = await spool.oldest()
            origin, records = f"spool/{page[0][0]}-{page[-1][0]}", [r for _, r in page]
            await apply_records(self.store, records, origin, max_rows=self._batch_rows)
            self._counts["records_replayed"] += len(records)
            await spool.remove_through(page[-1][0])

    async def _pending_or_drained(self) -> bool:
        """Whether records wait; none left: back to direct writes (under the lock)."""
        async with self._spool_lock:
            if self._spool.pending:
                return True
            if self._degraded:
                log.info("spool_replayed_store_available", **self._spool.stats())
            self._degraded = False
            self._wake.clear()
            self._drained.set()
            return False

    async def _maintain_later(self) -> None:
        assert self._maintain_every is not None
        await asyncio.sleep(self._maintain_every)
        log.info("store_maintenance_done", created=await self.maintain())

    # -- writes ------------------------------------------------------------------------
    async def write_readings(self, readings: Sequence[Reading]) -> int:
        """How many rows were stored or spooled (not "how many were new")."""
        batcher = self._batcher  # not running: enqueue raises RuntimeError
        fut = batcher.enqueue(readings)  # the future itself: a coroutine frame less
        await (batcher.submit(readings) if fut is None else fut)  # None: wait for room
        return len(readings)

    async def write_events(self, events: Sequence[AlarmEvent]) -> list[bool]:
        """One transaction, in the database or (while it is away) in the spool."""
        return await self._all_accepted(events, self.store.write_events)

    async def write_alerts(self, alerts: Sequence[Alert]) -> list[bool]:
        """Like :meth:`write_events`, for an alarm storm's alerts."""
        return await self._all_accepted(alerts, self.store.write_alerts)

    async def write_dead_letter(self, letter: DeadLetter) -> None:
        await self._put([letter], lambda: self.store.write_dead_letter(letter))

    async def write_news2(self, score: News2Record) -> bool:
        return await self._accepted(score, self.store.write_news2)

    async def write_status(self, status: StatusItem) -> None:
        await self._put([status], lambda: self.store.write_status(status))

    async def _accepted(self, item: SpoolItem, write: Callable[[Any], Awaitable[bool]]) -> bool:
        where, new = await self._put([item], lambda: write(item))
        return where == "spool" or bool(new)

    async def _all_accepted(
        self, items: Sequence[SpoolItem], write: Callable[[Any], Awaitable[list[bool]]]
    ) -> list[bool]:
        _, new = await self._put(items, lambda: write(items))
        return [True] * len(items) if new is None else new
