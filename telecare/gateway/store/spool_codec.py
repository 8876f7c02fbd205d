"""What a spool record holds (one write the database could not take, as compact JSON),
and how records are applied to the store once the database is back.

``encode(item)`` and ``decode(payload)`` are pure and exact inverses. A record is
``{"k": kind, "v": values}`` (``"r"``: a list of them, for a batch of readings), the
values of the table spec's spooled columns in order (``gateway.store.tables``: ISO 8601
timestamps, base64 bytes); one written before a column was added is shorter and decodes
with the column's default.

``apply_records(store, records, origin)`` decodes each record and calls the matching
write of ``SqlWrites`` (``write_<kind>``), consecutive reading batches merged into
writes of up to ``max_rows`` rows. Duplicates (a write that had in fact reached the
database, a segment replayed twice after a crash) are removed by the idempotency keys;
dead letters have none, so such a replay can store a spooled dead letter twice.

Errors: "database unreachable" (``is_unavailable``) propagates: the caller keeps the
segment and retries it from the start. Any other error for a record (undecodable, or
rejected by the database) must not block the spool: the record becomes a dead letter
(source ``spool``, the segment as origin, the error as reason) and replay carries on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import structlog

from telecare.devices.model import AlarmEvent, Alert, Reading, utcnow
from telecare.gateway.store.errors import is_unavailable
from telecare.gateway.store.rows import DeadLetter, News2Record, StatusItem
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

__all__ = ["ReadingsItem", "SpoolItem", "StatusItem", "apply_records", "decode", "encode"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReadingsItem:
    readings: tuple[Reading, ...]


SpoolItem = ReadingsItem | AlarmEvent | Alert | DeadLetter | News2Record | StatusItem

#: The record kinds besides ``readings``: each is written by ``SqlWrites.write_<kind>``.
_SPECS: dict[str, Table[Any]] = {"event": EVENTS, "alert": ALERTS, "dead_letter": DEAD_LETTERS}
_SPECS |= {"news2": NEWS2, "status": STATUS}
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
) -> int:
    """Write ``records`` to ``store`` in order; return how many records were applied."""
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
        else:
            write = getattr(store, f"write_{_KIND[type(item)]}")
            await _apply(store, [raw], origin, write, item)
    await _apply(store, raws, origin, store.write_readings, rows)
    return len(records)


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
