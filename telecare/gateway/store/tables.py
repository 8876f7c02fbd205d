"""One spec per table: the columns, once, and everything derived from them.

A :class:`Table` lists its columns in order, each with its kind and how it maps to the
model's field. From that come the insert statement (``table.insert()``), the column
list for a ``SELECT`` or a PostgreSQL ``COPY`` (``table.names``, ``table.pg_types``),
the row parameters (``table.params(item)``), the model from a selected row
(``table.load(row)``) and the spool record (``table.record(item)`` /
``table.from_record(values)``, see ``gateway.store.spool_codec``).

Adding a column: add a :class:`Column` at the end of the spec (with the default that
older spool records and rows lack) and write one migration per dialect. Spool records
are positional, so columns are only ever appended: a record spooled by an older version
is one shorter and takes the new column's default.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from operator import attrgetter
from typing import Any, Generic, Literal, TypeVar

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    AlertKind,
    Device,
    DeviceKind,
    Dispatch,
    DispatchState,
    EventType,
    Metric,
    Phase,
    Reading,
    ReceiverAccount,
    ReceiverKind,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.dispatch.records import AuditRecord, Receipt, Timer, TimerKind
from telecare.gateway.store.base import DeadLetter, News2Record, RegistryChange, StatusItem
from telecare.gateway.store.clinical import ClinicalRecord
from telecare.gateway.store.sql import TextArray, json_value

__all__ = ["Column", "Table", "event_digest"]

M = TypeVar("M")
Kind = Literal["text", "int", "smallint", "float", "bool", "ts", "json", "bytes", "texts"]
_PG_TYPES = {"text": "text", "int": "int4", "smallint": "int2", "float": "float8"}
_PG_TYPES |= {"bool": "bool", "ts": "timestamptz", "json": "jsonb", "bytes": "bytea"}


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Column:
    """One column. ``attr``: the model field (default: ``name``); ``get``: its stored
    value from the item (default: the field); ``take``: the field from the stored value;
    ``db=False``: in the spool record only; ``spool=False``: derived, not spooled;
    ``default``: what a spool record from before the column existed gets."""

    name: str
    kind: Kind = "text"
    take: Callable[[Any], Any] = _same
    get: Callable[[Any], Any] | None = None
    attr: str = ""
    db: bool = True
    spool: bool = True
    default: Any = None

    @property
    def field(self) -> str:
        return self.attr or self.name

    @property
    def pg_type(self) -> str:
        return _PG_TYPES.get(self.kind, "text[]")

    def getter(self) -> Callable[[Any], Any]:
        return self.get or attrgetter(self.field)

    def loaded(self, value: Any) -> Any:
        """The model field from a database value (either dialect's form)."""
        if value is None:
            return self.default
        if self.kind == "bool":
            value = bool(value)
        elif self.kind in ("json", "texts"):
            value = json_value(value)
            value = tuple(value) if self.kind == "texts" else value
        elif self.kind == "bytes":
            value = bytes(value)
        elif self.kind == "float":
            value = float(value)
        return self.take(value)

    def encoded(self, value: Any) -> Any:
        """JSON form of a stored value (spool records)."""
        if value is None:
            return None
        if self.kind == "ts":
            return value.isoformat()
        if self.kind == "bytes":
            return base64.b64encode(value).decode("ascii")
        return list(value) if self.kind == "texts" else value

    def decoded(self, value: Any) -> Any:
        """The model field from a spool record's JSON value."""
        if value is None:
            return self.default
        if self.kind == "ts":
            value = datetime.fromisoformat(value)
        elif self.kind == "bytes":
            value = base64.b64decode(value)
        elif self.kind == "texts":
            value = tuple(value)
        return self.take(value)


@dataclass(frozen=True)
class Table(Generic[M]):
    """A table's columns and how a row becomes a model (``make(**fields)``)."""

    name: str
    columns: tuple[Column, ...]
    make: Callable[..., M]
    #: What ``insert()`` does on a conflict with a unique key.
    conflict: str = "ON CONFLICT DO NOTHING"

    @cached_property
    def stored(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.db)

    @cached_property
    def names(self) -> str:
        """The stored columns, comma-separated (``SELECT``, ``INSERT``, ``COPY``)."""
        return ", ".join(c.name for c in self.stored)

    def select(self, alias: str) -> str:
        """``names`` qualified with a table alias, for joins."""
        return ", ".join(f"{alias}.{c.name}" for c in self.stored)

    @cached_property
    def pg_types(self) -> list[str]:
        """PostgreSQL types of the stored columns (binary ``COPY``, ``unnest`` arrays)."""
        return [c.pg_type for c in self.stored]

    def insert(self, conflict: str | None = None) -> str:
        marks = ", ".join("?" for _ in self.stored)
        tail = self.conflict if conflict is None else conflict
        return f"INSERT INTO {self.name} ({self.names}) VALUES ({marks}) {tail}".rstrip()

    def upsert(self, *key: str) -> str:
        """Insert, or update every other column of the row with the same ``key``."""
        sets = ", ".join(f"{c.name} = excluded.{c.name}" for c in self.stored if c.name not in key)
        return self.insert(f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")

    @cached_property
    def _get(self) -> Callable[[Any], tuple[Any, ...]]:
        getters = [c.getter() for c in self.stored]
        if all(c.get is None for c in self.stored) and len(getters) > 1:
            return attrgetter(*(c.field for c in self.stored))  # one C call per row
        return lambda item: tuple(g(item) for g in getters)

    def params(self, item: M) -> tuple[Any, ...]:
        """The stored columns' values for ``item``, in order."""
        return self._get(item)

    def load(self, row: Sequence[Any]) -> M:
        """The model from a row selected with ``names`` (derived columns skipped)."""
        fields = {c.field: c.loaded(v) for c, v in zip(self.stored, row, strict=True) if c.spool}
        return self.make(**fields)

    @cached_property
    def spooled(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.spool)

    def record(self, item: M) -> list[Any]:
        return [c.encoded(c.getter()(item)) for c in self.spooled]

    def from_record(self, values: Sequence[Any]) -> M:
        cols = self.spooled
        if len(values) > len(cols):
            raise ValueError(f"{self.name} record has {len(values)} values, not {len(cols)}")
        values = [*values, *(c.default for c in cols[len(values) :])]
        return self.make(**{c.field: c.decoded(v) for c, v in zip(cols, values, strict=True)})


def event_digest(event: AlarmEvent) -> str:
    """Digest of what an event says (type, phase, zone, code), stored with its
    idempotency key ``(device_id, msg_id)``: the same key with another digest is a reuse
    of the message id with different content. The site and resident are left out: the
    gateway stamps them, a device does not send them. So is the time: a unit that sends
    none (SCAIP, a Contact ID line) is stamped with each retransmission's receive time,
    and a device whose clock is implausible is re-timed by the gateway, yet a
    retransmission is the same message."""
    e = event
    text = f"{e.type.value}|{e.phase.value}|{e.zone or ''}|{e.code or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _reading(metric: Metric, **fields: Any) -> Reading:
    return Reading(metric=metric, unit=metric.unit, **fields)


C = Column
READINGS = Table(
    "readings",
    (
        C("device_id"),
        C("metric", "smallint", Metric),
        C("value", "float"),
        C("ts", "ts"),
        C("msg_id"),
        C("resident_id"),
        C("site_id", db=False),
    ),
    _reading,
)
EVENTS = Table(
    "alarm_events",
    (
        C("device_id"),
        C("type", take=EventType),
        C("phase", take=Phase),
        C("ts", "ts"),
        C("msg_id"),
        C("site_id"),
        C("resident_id"),
        C("zone"),
        C("source"),
        C("code", "int"),
        C("device_type"),
        C("location"),
        C("digest", get=event_digest, spool=False),
    ),
    AlarmEvent,
)
ALERTS = Table(
    "alerts",
    (
        C("alert_id"),
        C("kind", take=AlertKind),
        C("priority", "smallint"),
        C("reason"),
        C("ts", "ts"),
        C("site_id"),
        C("resident_id"),
        C("device_id"),
        C("event_type", take=EventType),
        C("source_key"),
        C("detail", "json", take=dict),
    ),
    Alert,
)
DEAD_LETTERS = Table(
    "dead_letters",
    (
        C("received_at", "ts"),
        C("source"),
        C("origin"),
        C("reason"),
        C("payload", "bytes"),
        C("device_id"),
        C("payload_bytes", "int", take=lambda v: -1 if v is None else int(v), default=-1),
    ),
    DeadLetter,
)
NEWS2 = Table(
    "news2_scores",
    (
        C("resident_id"),
        C("ts", "ts"),
        C("total", "int"),
        C("risk"),
        C("red_flag", "bool"),
        C("components", "json", take=lambda v: {k: int(n) for k, n in v.items()}),
        C("spo2_scale", "int"),
        C("observation_id"),
        C("consciousness"),
    ),
    News2Record,
)
#: A device status change as spooled (the table's upsert is ``SqlWrites.set_device_status``).
STATUS = Table(
    "device_status",
    (C("device_id"), C("at", "ts"), C("online", "bool"), C("heartbeat", "bool"), C("battery")),
    StatusItem,
)
DISPATCHES = Table(
    "dispatches",
    (
        C("dispatch_id"),
        C("alert_id"),
        C("state", take=DispatchState),
        C("priority", "smallint"),
        C("created_at", "ts"),
        C("updated_at", "ts"),
        C("site_id"),
        C("resident_id"),
        C("responder_id"),
        C("cascade_step", "int"),
        C("outcome"),
        C("version", "int"),
    ),
    Dispatch,
)
AUDIT = Table(
    "dispatch_audit",
    (
        C("dispatch_id"),
        C("at", "ts"),
        C("from_state", take=DispatchState),
        C("to_state", take=DispatchState),
        C("actor"),
        C("reason"),
        C("detail", "json", take=dict),
    ),
    AuditRecord,
)
SITES = Table(
    "sites",
    (C("site_id"), C("kind", take=SiteKind), C("name"), C("address"), C("area")),
    Site,
)
DEVICES = Table(
    "devices",
    (
        C("device_id"),
        C("site_id"),
        C("kind", take=DeviceKind),
        C("resident_id"),
        C("format"),
        C("location"),
        C("heartbeat_interval_s", "int"),
        C("hub_id"),
    ),
    Device,
)
RESPONDERS = Table(
    "responders",
    (
        C("responder_id"),
        C("kind", take=ResponderKind),
        C("name"),
        C("phone"),
        C("area"),
        C("skills", "texts", get=lambda r: TextArray(r.skills)),
    ),
    Responder,
)
RECEIVER_ACCOUNTS = Table(
    "receiver_accounts",
    (C("kind", take=ReceiverKind), C("account"), C("zone"), C("device_id")),
    ReceiverAccount,
)
REGISTRY_AUDIT = Table(
    "registry_audit",
    (
        C("at", "ts"),
        C("actor"),
        C("action"),
        C("kind"),
        C("entity_id"),
        C("detail", "json", take=dict),
    ),
    RegistryChange,
)
CLINICAL_HISTORY = Table(
    "resident_clinical_history",
    (
        C("resident_id"),
        C("setting"),
        C("value"),
        C("previous"),
        C("prescribed_by"),
        C("prescribed_at", "ts"),
        C("recorded_by"),
        C("recorded_at", "ts"),
        C("reason"),
    ),
    ClinicalRecord,
)
RECEIPTS = Table(
    "notification_receipts",
    (
        C("dispatch_id"),
        C("channel"),
        C("recipient"),
        C("status"),
        C("attempts", "int"),
        C("at", "ts"),
        C("detail"),
    ),
    Receipt,
)
TIMERS = Table(
    "dispatch_timers",
    (C("dispatch_id"), C("kind", take=TimerKind), C("due_at", "ts"), C("step", "int")),
    Timer,
)
