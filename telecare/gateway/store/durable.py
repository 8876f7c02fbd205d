"""``DurableStore``: the ``Store`` the gateway uses, so that nothing accepted is lost.

Wraps a real store (PostgreSQL or SQLite)::

    async with PostgresStore(dsn) as pg, DurableStore(pg, spool_dir=...) as store:
        ...

* ``write_readings`` goes through a :class:`~gateway.store.batcher.ReadingBatcher`
  (bounded queue, binary COPY batches) and returns once the rows are in the database or
  in the spool.
* ``write_event``, ``write_alert``, ``write_dead_letter``, ``create_dispatch``,
  ``write_news2`` and ``set_device_status`` go straight to the store, in their own
  transactions, never behind a batch of readings.
* When the database is unreachable (``is_unavailable``) a write goes to the local
  :class:`~gateway.store.spool.Spool` (fsync-ed) and counts as accepted (``True``).
  From then until the spool has been replayed, *every* write goes to the spool, so the
  replay keeps the original order (an alert is stored before the dispatch that refers
  to it). A replayer task probes the database with exponential backoff and jitter,
  replays the segments in order (duplicates removed by the idempotency keys), deletes
  each once applied, and switches back to direct writes.
* Reads and registry upserts are delegated unchanged (they raise when the database is
  away: there is nothing to spool for a read).

Resource handling
    Entering starts the batcher, the replayer and the daily maintenance task (a
    ``TaskGroup``). Leaving flushes the batcher (to the database or the spool), stops
    the tasks and closes the spool; records not yet replayed stay on disk and are
    replayed after the next start. The wrapped store is not closed: its owner does that.

Error handling
    ``SpoolFull`` propagates to the writer (do not acknowledge; the sender redelivers).
    Errors that are not "database unreachable" propagate unchanged. The replayer logs
    and retries what fails; a record the database rejects becomes a dead letter
    (see ``gateway.store.replay``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import structlog

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    Device,
    Dispatch,
    Metric,
    Reading,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Responder,
    Site,
)
from telecare.dispatch.audit_chain import Anchor, ChainReport
from telecare.gateway.backoff import Backoff
from telecare.gateway.store.base import (
    AlertNote,
    AuditEntry,
    DeadLetter,
    HistoryPoint,
    News2Record,
    OpenAlarm,
    Store,
    TimelineEntry,
)
from telecare.gateway.store.batcher import Destination, ReadingBatcher
from telecare.gateway.store.clinical import ClinicalChange, ClinicalRecord
from telecare.gateway.store.errors import is_unavailable
from telecare.gateway.store.registry import Blocker, Kind, RegistryChange
from telecare.gateway.store.replay import apply_records
from telecare.gateway.store.spool import Spool
from telecare.gateway.store.spool_codec import (
    DispatchItem,
    ReadingsItem,
    SpoolItem,
    StatusItem,
    encode,
)
from telecare.gateway.store.sql import Sql
from telecare.rules.clock import raise_if_cancelling

__all__ = ["DurableStore"]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


class DurableStore:
    def __init__(
        self,
        store: Store,
        *,
        spool_dir: str | os.PathLike[str],
        spool_max_bytes: int = 1024 * 1024 * 1024,
        spool_segment_bytes: int = 16 * 1024 * 1024,
        spool_alarm_ratio: float = 0.8,
        on_alert: Callable[[Alert], object] | None = None,
        batch_rows: int = 5000,
        batch_age: float = 0.2,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        maintain_every: float | None = 24 * 3600.0,
    ) -> None:
        self.store = store
        self.spool_dir = spool_dir
        self._spool_args: dict[str, Any] = {
            "max_bytes": spool_max_bytes,
            "segment_bytes": spool_segment_bytes,
            "alarm_ratio": spool_alarm_ratio,
        }
        self._on_alert = on_alert
        self._batch_rows = batch_rows
        self._batch_age = batch_age
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._maintain_every = maintain_every
        self._spool: Spool | None = None
        self._batcher: ReadingBatcher | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._children: list[asyncio.Task[None]] = []
        # Held while appending to the spool and while deciding the spool is drained, so
        # no write can slip in between "spool empty" and "back to direct writes".
        self._spool_lock = asyncio.Lock()
        self._degraded = False
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._items_spooled = 0
        self._records_replayed = 0
        self._outages = 0

    @property
    def mode(self) -> str:
        return self.store.mode

    @property
    def sql(self) -> Sql:
        """The wrapped store's query API (``gateway.store.sql``): not spooled, it raises
        while the database is away."""
        return self.store.sql

    @property
    def degraded(self) -> bool:
        """True while writes go to the spool (database away, or replay not finished)."""
        return self._degraded

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        on_alert = self._on_alert

        def alert_from_thread(alert: Alert) -> None:  # the spool calls it in a worker
            if on_alert is not None:
                loop.call_soon_threadsafe(on_alert, alert)

        self._spool = await asyncio.to_thread(
            Spool, self.spool_dir, on_alert=alert_from_thread, **self._spool_args
        )
        if self._spool.pending:
            log.warning("spool_pending_at_start", **self._spool.stats())
            self._set_degraded()
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._children.append(self._tasks.create_task(self._replayer(), name="spool-replayer"))
        if self._maintain_every:
            self._children.append(
                self._tasks.create_task(self._maintainer(), name="store-maintenance")
            )
        self._batcher = ReadingBatcher(
            self._write_batch, max_rows=self._batch_rows, max_age=self._batch_age
        )
        await self._batcher.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._batcher is not None:
                await self._batcher.__aexit__(exc_type, exc, tb)
        finally:
            for task in self._children:
                task.cancel()
            if self._tasks is not None:
                await self._tasks.__aexit__(None, None, None)
            if self._spool is not None:
                await asyncio.to_thread(self._spool.close)

    def stats(self) -> dict[str, int]:
        """Batcher, spool and outage figures, for the metrics endpoint."""
        out: dict[str, int] = {
            "degraded": int(self._degraded),
            "outages": self._outages,
            "items_spooled": self._items_spooled,
            "records_replayed": self._records_replayed,
        }
        if self._batcher is not None:
            out.update(self._batcher.stats())
        if self._spool is not None:
            out.update(self._spool.stats())
        return out

    async def wait_drained(self) -> None:
        """Return once nothing waits in the spool and writes go to the database again."""
        await self._drained.wait()

    # -- routing -----------------------------------------------------------------------
    def _set_degraded(self, exc: BaseException | None = None) -> None:
        if not self._degraded:
            self._degraded = True
            self._outages += exc is not None
            self._drained.clear()
            log.error("store_unavailable_spooling", error=repr(exc) if exc else None)
        self._wake.set()

    async def _put(
        self, item: SpoolItem | Callable[[], SpoolItem], call: Callable[[], Awaitable[_T]]
    ) -> tuple[Destination, _T | None]:
        """Write through ``call``; on an unreachable database spool ``item`` instead."""
        while True:
            raise_if_cancelling()  # a swallowed cancellation must still end the loop
            if not self._degraded:
                try:
                    return "store", await call()
                except Exception as exc:
                    raise_if_cancelling()
                    if not is_unavailable(exc):
                        raise
                    self._set_degraded(exc)
            async with self._spool_lock:
                if self._degraded:
                    spool = self._spool
                    if spool is None:
                        raise RuntimeError("DurableStore is not open; use 'async with'")
                    payload = encode(item() if callable(item) else item)
                    await asyncio.to_thread(spool.append, [payload])
                    self._items_spooled += 1
                    self._wake.set()
                    return "spool", None
            # The replayer drained the spool meanwhile: try the database again.

    async def _write_batch(self, readings: list[Reading]) -> Destination:
        where, _ = await self._put(
            lambda: ReadingsItem(tuple(readings)), lambda: self.store.write_readings(readings)
        )
        return where

    # -- replay --------------------------------------------------------------------------
    async def _replayer(self) -> None:
        """Contract: waits until degraded, then replays; retries with backoff while the
        database is away; logs and retries anything else; never returns until cancelled."""
        backoff = Backoff(initial=self._retry_initial, cap=self._retry_max)
        while True:
            raise_if_cancelling()  # a swallowed cancellation must still end the loop
            await self._wake.wait()
            try:
                await self._replay_all()
                backoff.reset()
            except Exception as exc:
                raise_if_cancelling()
                delay = backoff.next_delay()
                if is_unavailable(exc):
                    log.info("store_still_unavailable", retry_in=round(delay, 2))
                else:
                    log.exception("spool_replay_failed", retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def _replay_all(self) -> None:
        spool = self._spool
        assert spool is not None
        while True:
            raise_if_cancelling()  # a swallowed cancellation must still end the loop
            async with self._spool_lock:
                await asyncio.to_thread(spool.seal)
                segments = spool.sealed()
                if not segments:
                    if self._degraded:
                        log.info("spool_replayed_store_available", **spool.stats())
                    self._degraded = False
                    self._wake.clear()
                    self._drained.set()
                    return
            for path in segments:
                contents = await asyncio.to_thread(spool.read, path)
                await apply_records(
                    self.store, contents.records, f"spool/{path.name}", max_rows=self._batch_rows
                )
                self._records_replayed += len(contents.records)
                await asyncio.to_thread(spool.remove, path)

    async def _maintainer(self) -> None:
        """Contract: every ``maintain_every`` seconds runs ``store.maintain()``; logs
        failures (the database may be away) and tries again next time."""
        assert self._maintain_every is not None
        while True:
            raise_if_cancelling()  # a swallowed cancellation must still end the loop
            await asyncio.sleep(self._maintain_every)
            try:
                created = await self.store.maintain()
                log.info("store_maintenance_done", created=created)
            except Exception:
                raise_if_cancelling()
                log.exception("store_maintenance_failed")

    # -- writes ------------------------------------------------------------------------
    async def write_readings(self, readings: Sequence[Reading]) -> int:
        """Returns how many rows were handed to storage (stored or spooled); duplicates
        are removed by the database, so this is not "how many were new"."""
        batcher = self._batcher
        if batcher is None:
            raise RuntimeError("DurableStore is not open; use 'async with'")
        # The future directly, not ``await batcher.submit(...)``: one coroutine frame
        # less per message (measurable at thousands of messages a second).
        fut = batcher.enqueue(readings)
        await (batcher.submit(readings) if fut is None else fut)  # None: wait for room
        return len(readings)

    async def write_event(self, event: AlarmEvent) -> bool:
        where, new = await self._put(event, lambda: self.store.write_event(event))
        return where == "spool" or bool(new)

    async def stored_event_digest(self, device_id: str, msg_id: str) -> str | None:
        return await self.store.stored_event_digest(device_id, msg_id)

    async def stored_message_readings(
        self, device_id: str, msg_id: str
    ) -> set[tuple[Metric, datetime, float]]:
        return await self.store.stored_message_readings(device_id, msg_id)

    async def write_events(self, events: Sequence[AlarmEvent]) -> list[bool]:
        """One transaction while the database is there; each spooled on its own when not."""
        if not self._degraded:
            try:
                return await self.store.write_events(events)
            except Exception as exc:
                raise_if_cancelling()
                if not is_unavailable(exc):
                    raise
                self._set_degraded(exc)
        return [await self.write_event(e) for e in events]

    async def write_alert(self, alert: Alert) -> bool:
        where, new = await self._put(alert, lambda: self.store.write_alert(alert))
        return where == "spool" or bool(new)

    async def write_alerts(self, alerts: Sequence[Alert]) -> list[bool]:
        """One transaction for many alerts while the database is there; alert by alert
        (each spooled) once it is not."""
        if not self._degraded:
            try:
                return await self.store.write_alerts(alerts)
            except Exception as exc:
                raise_if_cancelling()
                if not is_unavailable(exc):
                    raise
                self._set_degraded(exc)
        return [await self.write_alert(a) for a in alerts]

    async def note_alert(
        self, alert_id: str, *, count: int | None = None, restored_at: datetime | None = None
    ) -> None:
        """Straight to the store (an annotation for the operator: the events it
        summarises are stored on their own; it raises while the database is away)."""
        await self.store.note_alert(alert_id, count=count, restored_at=restored_at)

    async def note_alerts(self, notes: Sequence[AlertNote]) -> None:
        """Like :meth:`note_alert`, many in one transaction."""
        await self.store.note_alerts(notes)

    async def write_dead_letter(self, letter: DeadLetter) -> None:
        await self._put(letter, lambda: self.store.write_dead_letter(letter))

    async def write_news2(self, score: News2Record) -> bool:
        where, new = await self._put(score, lambda: self.store.write_news2(score))
        return where == "spool" or bool(new)

    async def create_dispatch(self, dispatch: Dispatch, audit: AuditEntry) -> bool:
        where, new = await self._put(
            DispatchItem(dispatch, audit), lambda: self.store.create_dispatch(dispatch, audit)
        )
        return where == "spool" or bool(new)

    async def set_device_status(
        self,
        device_id: str,
        *,
        online: bool | None = None,
        at: datetime,
        heartbeat: bool = False,
        battery: float | None = None,
    ) -> None:
        await self._put(
            StatusItem(device_id, at, online, heartbeat, battery),
            lambda: self.store.set_device_status(
                device_id, online=online, at=at, heartbeat=heartbeat, battery=battery
            ),
        )

    # -- delegated -----------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        return await self.store.migrate()

    async def maintain(self, now: datetime | None = None) -> list[str]:
        return await self.store.maintain(now)

    async def prune_dead_letters(self, now: datetime | None = None) -> int:
        return await self.store.prune_dead_letters(now)

    async def device_credentials(self) -> list[tuple[str, str]]:
        return await self.store.device_credentials()

    async def upsert_site(self, site: Site) -> None:
        await self.store.upsert_site(site)

    async def upsert_resident(self, resident: Resident) -> None:
        await self.store.upsert_resident(resident)

    async def upsert_device(self, device: Device, secret_hash: str | None = None) -> None:
        await self.store.upsert_device(device, secret_hash)

    async def upsert_responder(self, responder: Responder) -> None:
        await self.store.upsert_responder(responder)

    async def set_device_user(self, device_id: str, user_id: int, resident_id: str) -> None:
        await self.store.set_device_user(device_id, user_id, resident_id)

    async def device_users(self, device_id: str) -> dict[int, str]:
        return await self.store.device_users(device_id)

    async def remove_entity(
        self, kind: Kind, entity_id: str, change: RegistryChange
    ) -> list[Blocker]:
        return await self.store.remove_entity(kind, entity_id, change)

    async def pair_device(
        self, device_id: str, resident_id: str | None, location: str | None, change: RegistryChange
    ) -> Device:
        return await self.store.pair_device(device_id, resident_id, location, change)

    async def site_dispatch_ids(self, site_id: str) -> set[str]:
        return await self.store.site_dispatch_ids(site_id)

    async def record_registry_change(self, change: RegistryChange) -> None:
        await self.store.record_registry_change(change)

    async def registry_changes(
        self, kind: Kind | None = None, entity_id: str | None = None
    ) -> list[RegistryChange]:
        return await self.store.registry_changes(kind, entity_id)

    async def get_site(self, site_id: str) -> Site | None:
        return await self.store.get_site(site_id)

    async def get_device(self, device_id: str) -> Device | None:
        return await self.store.get_device(device_id)

    async def get_device_secret_hash(self, device_id: str) -> str | None:
        return await self.store.get_device_secret_hash(device_id)

    async def get_resident(self, resident_id: str) -> Resident | None:
        return await self.store.get_resident(resident_id)

    async def set_clinical(self, change: ClinicalChange) -> list[ClinicalRecord]:
        return await self.store.set_clinical(change)

    async def clinical_history(self, resident_id: str) -> list[ClinicalRecord]:
        return await self.store.clinical_history(resident_id)

    async def get_responder(self, responder_id: str) -> Responder | None:
        return await self.store.get_responder(responder_id)

    async def list_devices(self) -> list[Device]:
        return await self.store.list_devices()

    async def get_dispatch(self, dispatch_id: str) -> Dispatch | None:
        return await self.store.get_dispatch(dispatch_id)

    async def open_dispatches(self) -> list[Dispatch]:
        return await self.store.open_dispatches()

    async def dispatch_audit(self, dispatch_id: str) -> list[AuditEntry]:
        return await self.store.dispatch_audit(dispatch_id)

    async def verify_audit(self, anchor: Anchor | None = None) -> ChainReport:
        return await self.store.verify_audit(anchor)

    async def upsert_receiver_account(self, mapping: ReceiverAccount) -> None:
        await self.store.upsert_receiver_account(mapping)

    async def delete_receiver_account(self, kind: ReceiverKind, account: str, zone: str) -> bool:
        return await self.store.delete_receiver_account(kind, account, zone)

    async def receiver_accounts(self, kind: ReceiverKind, account: str) -> list[ReceiverAccount]:
        return await self.store.receiver_accounts(kind, account)

    async def list_receiver_accounts(self) -> list[ReceiverAccount]:
        return await self.store.list_receiver_accounts()

    async def list_sites(self) -> list[Site]:
        return await self.store.list_sites()

    async def list_residents(self, site_id: str | None = None) -> list[Resident]:
        return await self.store.list_residents(site_id)

    async def list_responders(self) -> list[Responder]:
        return await self.store.list_responders()

    async def recent_alerts(self, limit: int = 50) -> list[Alert]:
        return await self.store.recent_alerts(limit)

    async def alerts_without_dispatch(self, limit: int = 1000) -> list[Alert]:
        return await self.store.alerts_without_dispatch(limit)

    async def latest_readings(self, resident_id: str) -> dict[str, tuple[datetime, float]]:
        return await self.store.latest_readings(resident_id)

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        return await self.store.dead_letters(limit)

    async def count(self, table: str) -> int:
        return await self.store.count(table)

    async def latest_vitals(
        self, resident_ids: Sequence[str], since: datetime | None = None
    ) -> dict[str, dict[str, tuple[datetime, float]]]:
        return await self.store.latest_vitals(resident_ids, since)

    async def metric_history(
        self,
        resident_id: str,
        metric: Metric,
        start: datetime,
        end: datetime,
        bucket: timedelta,
    ) -> list[HistoryPoint]:
        return await self.store.metric_history(resident_id, metric, start, end, bucket)

    async def news2_history(
        self, resident_id: str, start: datetime, end: datetime
    ) -> list[News2Record]:
        return await self.store.news2_history(resident_id, start, end)

    async def resident_readings(
        self, resident_id: str, start: datetime, end: datetime, limit: int = 100_000
    ) -> list[Reading]:
        return await self.store.resident_readings(resident_id, start, end, limit)

    async def open_alarms(self, now: datetime, limit: int = 200) -> list[OpenAlarm]:
        return await self.store.open_alarms(now, limit)

    async def dispatch_timeline(self, dispatch_id: str) -> list[TimelineEntry]:
        return await self.store.dispatch_timeline(dispatch_id)
