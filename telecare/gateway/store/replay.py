"""Apply spooled records to a store, in order, once the database is back.

``apply_records(store, records, origin)`` decodes each record and calls the matching
write of ``SpooledWrites``. Consecutive reading batches are merged into writes of up to
``max_rows`` rows. Duplicates (a record whose write had in fact reached the database
just before the link broke, or a segment replayed twice after a crash) are removed by
the stores' idempotency keys.

Error handling
    An error meaning the database is unreachable again (``is_unavailable``) propagates:
    the caller keeps the segment and retries it later, from the start. Any other error
    for a record (a record that cannot be decoded, or that the database rejects) must
    not block the spool forever: the record is written as a dead letter (source
    ``spool``, the segment as origin, the error as reason, the record as payload) and
    replay carries on. Nothing is dropped silently.

Dead letters themselves have no idempotency key: a segment replayed twice after a
crash part-way through it can store a spooled dead letter twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from telecare.devices.model import AlarmEvent, Alert, Reading, utcnow
from telecare.gateway.store.base import DeadLetter, News2Record, SpooledWrites, StatusItem
from telecare.gateway.store.errors import is_unavailable
from telecare.gateway.store.spool_codec import ReadingsItem, SpoolItem, decode

__all__ = ["apply_records"]

log = structlog.get_logger(__name__)


async def apply_records(
    store: SpooledWrites, records: Sequence[bytes], origin: str, *, max_rows: int = 5000
) -> int:
    """Write ``records`` to ``store`` in order; return how many records were applied."""
    pending: list[tuple[bytes, ReadingsItem]] = []
    rows = 0

    async def flush_readings() -> None:
        nonlocal rows
        if not pending:
            return
        batch: list[Reading] = [r for _, item in pending for r in item.readings]
        try:
            await store.write_readings(batch)
        except Exception as exc:
            if is_unavailable(exc):
                raise
            for raw, _ in pending:
                await _reject(store, raw, origin, exc)
        pending.clear()
        rows = 0

    for raw in records:
        try:
            item = decode(raw)
        except (ValueError, KeyError, TypeError) as exc:
            await flush_readings()
            await _reject(store, raw, origin, exc)
            continue
        if isinstance(item, ReadingsItem):
            if rows + len(item.readings) > max_rows:
                await flush_readings()
            pending.append((raw, item))
            rows += len(item.readings)
            continue
        await flush_readings()
        try:
            await _apply_one(store, item)
        except Exception as exc:
            if is_unavailable(exc):
                raise
            await _reject(store, raw, origin, exc)
    await flush_readings()
    return len(records)


async def _apply_one(store: SpooledWrites, item: SpoolItem) -> None:
    if isinstance(item, AlarmEvent):
        await store.write_event(item)
    elif isinstance(item, Alert):
        await store.write_alert(item)
    elif isinstance(item, DeadLetter):
        await store.write_dead_letter(item)
    elif isinstance(item, News2Record):
        await store.write_news2(item)
    elif isinstance(item, StatusItem):
        s = item
        await store.set_device_status(
            s.device_id, online=s.online, at=s.at, heartbeat=s.heartbeat, battery=s.battery
        )
    else:  # ReadingsItem is batched by the caller
        await store.write_readings(item.readings)


async def _reject(store: SpooledWrites, raw: bytes, origin: str, exc: Exception) -> None:
    log.error("spool_record_rejected", origin=origin, error=repr(exc))
    await store.write_dead_letter(
        DeadLetter(utcnow(), "spool", origin, f"replay failed: {exc!r}"[:1000], raw)
    )
