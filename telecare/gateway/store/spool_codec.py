"""What a spool record holds: one write the database could not take, as compact JSON.

``encode(item)`` and ``decode(payload)`` are pure and exact inverses (a round-trip test
checks it). A record is ``{"k": kind, "v": values}`` (``"r"``: a list of them, for a
batch of readings) with the values of the table spec's spooled columns, in order
(``gateway.store.tables``): timestamps ISO 8601 with offset, bytes base64. A record
written before a column was added is shorter and decodes with the column's default.

    kind          item                     spec
    readings      ReadingsItem(readings)   READINGS (one list per reading)
    event         AlarmEvent               EVENTS
    alert         Alert                    ALERTS
    dead_letter   DeadLetter               DEAD_LETTERS
    news2         News2Record              NEWS2
    status        StatusItem               STATUS
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from telecare.devices.model import AlarmEvent, Alert, Reading
from telecare.gateway.store.base import DeadLetter, News2Record, StatusItem
from telecare.gateway.store.tables import (
    ALERTS,
    DEAD_LETTERS,
    EVENTS,
    NEWS2,
    READINGS,
    STATUS,
    Table,
)

__all__ = ["ReadingsItem", "SpoolItem", "StatusItem", "decode", "encode"]


@dataclass(frozen=True, slots=True)
class ReadingsItem:
    readings: tuple[Reading, ...]


SpoolItem = ReadingsItem | AlarmEvent | Alert | DeadLetter | News2Record | StatusItem

_KINDS: dict[str, Table[Any]] = {
    "event": EVENTS,
    "alert": ALERTS,
    "dead_letter": DEAD_LETTERS,
    "news2": NEWS2,
    "status": STATUS,
}
_BY_TYPE = {AlarmEvent: "event", Alert: "alert", DeadLetter: "dead_letter"}
_BY_TYPE |= {News2Record: "news2", StatusItem: "status"}


def encode(item: SpoolItem) -> bytes:
    """The record payload for ``item``."""
    body: dict[str, Any]
    if isinstance(item, ReadingsItem):
        body = {"k": "readings", "r": [READINGS.record(r) for r in item.readings]}
    else:
        kind = _BY_TYPE[type(item)]
        body = {"k": kind, "v": _KINDS[kind].record(item)}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(payload: bytes) -> SpoolItem:
    """The item a record payload holds. Raises ``ValueError`` for an unknown record."""
    body = json.loads(payload)
    kind = body.get("k")
    if kind == "readings":
        return ReadingsItem(tuple(READINGS.from_record(v) for v in body["r"]))
    if kind in _KINDS:
        item: SpoolItem = _KINDS[kind].from_record(body["v"])
        return item
    raise ValueError(f"unknown spool record kind {kind!r}")
