"""One spec per table: the columns, once, and everything derived from them.

A :class:`Table` lists its columns in order, each with its kind and how it maps to the
model's field. From that come the insert and upsert statements (``table.insert()``,
``table.upsert(*key)``), the column lists for ``INSERT``, a PostgreSQL ``COPY`` and a
``SELECT`` (``table.names``, ``table.pg_types``, ``table.select(alias)``), the row
parameters (``table.params(item)``), the model from a selected row (``table.load(row)``,
``table.all``/``table.one``) and the spool record (``table.record(item)`` /
``table.from_record(values)``, see ``gateway.store.spool_codec``). The roles' specs are
here; the web tables' specs sit next to their rows (``accounts``, ``console``).

Adding a column: add a :class:`Column` at the end of the spec (with the default that
older spool records and rows lack) and write one migration per dialect. Spool records
are positional, so columns are only ever appended: a record spooled by an older version
is one shorter and takes the new column's default.
"""

# ruff: noqa: RUF005  (the specs read best as rows of columns added together)
from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from operator import attrgetter
from typing import Any, Final, Generic, Literal, TypeVar

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
from telecare.gateway.clinical import ClinicalRecord
from telecare.gateway.store.rows import DeadLetter, News2Record, RegistryChange, StatusItem
from telecare.gateway.store.sql import Queries, TextArray, json_value

__all__ = ["Column", "Table", "event_digest", "texts"]

M = TypeVar("M")
Kind = Literal["text", "int", "smallint", "float", "bool", "ts", "json", "bytes", "texts"]
_PG_TYPES = {"text": "text", "int": "int4", "smallint": "int2", "float": "float8"}
_PG_TYPES |= {"bool": "bool", "ts": "timestamptz", "json": "jsonb", "bytes": "bytea"}


_LOAD: dict[str, Callable[[Any], Any]] = {"bool": bool, "float": float, "bytes": bytes}
_LOAD |= {"json": json_value, "texts": lambda v: tuple(json_value(v))}
_ENCODE: dict[str, Callable[[Any], Any]] = {"ts": datetime.isoformat, "texts": list}
_ENCODE["bytes"] = lambda v: base64.b64encode(v).decode("ascii")
_DECODE: dict[str, Callable[[Any], Any]] = {"ts": datetime.fromisoformat, "texts": tuple}
_DECODE["bytes"] = base64.b64decode


@dataclass(frozen=True, slots=True)
class Column:
    """One column: ``kind`` (its type on both backends), ``take`` (the model's field
    from the stored value), ``get`` (the stored value from the item; default: the field
    of the same name), ``db=False`` (in the spool record only), ``spool=False``
    (derived, not a model field, not spooled), ``default`` (for a spool record from before
    the column), ``auto=True`` (made by the database: selected, never inserted)."""

    name: str
    kind: Kind = "text"
    take: Callable[[Any], Any] | None = None
    get: Callable[[Any], Any] | None = None
    db: bool = True
    spool: bool = True
    default: Any = None
    auto: bool = False

    @property
    def pg_type(self) -> str:
        return _PG_TYPES.get(self.kind, "text[]")

    def getter(self) -> Callable[[Any], Any]:
        return self.get or attrgetter(self.name)

    def loaded(self, value: Any, convert: dict[str, Callable[[Any], Any]] = _LOAD) -> Any:
        """The model's field from a database value (either dialect's form)."""
        if value is None:
            return self.default
        value = convert.get(self.kind, _same)(value)
        return value if self.take is None else self.take(value)

    def encoded(self, value: Any) -> Any:
        """JSON form of a stored value (spool records)."""
        return None if value is None else _ENCODE.get(self.kind, _same)(value)

    def decoded(self, value: Any) -> Any:
        """The model's field from a spool record's JSON value."""
        return self.loaded(value, _DECODE)


def _same(value: Any) -> Any:
    return value


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
        """The columns in the database, as selected and loaded."""
        return tuple(c for c in self.columns if c.db)

    @cached_property
    def written(self) -> tuple[Column, ...]:
        """The stored columns a write gives (not those the database makes)."""
        return tuple(c for c in self.stored if not c.auto)

    @cached_property
    def names(self) -> str:
        """The written columns, comma-separated (``INSERT``, ``COPY``)."""
        return ", ".join(c.name for c in self.written)

    def select(self, alias: str = "") -> str:
        """The stored columns for a ``SELECT``, qualified with ``alias`` if given."""
        return ", ".join(f"{alias}{'.' if alias else ''}{c.name}" for c in self.stored)

    @cached_property
    def pg_types(self) -> list[str]:
        """PostgreSQL types of the written columns (binary ``COPY``, ``unnest`` arrays)."""
        return [c.pg_type for c in self.written]

    def insert(self, tail: str | None = None) -> str:
        """``INSERT`` of the written columns; ``tail`` (default: the table's conflict
        clause) may also be a ``RETURNING``."""
        marks = ", ".join("?" for _ in self.written)
        tail = self.conflict if tail is None else tail
        return f"INSERT INTO {self.name} ({self.names}) VALUES ({marks}) {tail}".rstrip()

    def upsert(self, *key: str) -> str:
        """Insert, or update every other column of the row with the same ``key``."""
        sets = ", ".join(f"{c.name} = excluded.{c.name}" for c in self.written if c.name not in key)
        return self.insert(f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")

    async def add(self, q: Queries, item: M, tail: str | None = None) -> int:
        """Run ``insert(tail)`` for ``item``; how many rows it inserted."""
        return await q.execute(self.insert(tail), *self.params(item))

    async def put(self, q: Queries, item: M, *key: str) -> None:
        """Run ``upsert(*key)`` for ``item``."""
        await q.execute(self.upsert(*key), *self.params(item))

    @cached_property
    def _get(self) -> Callable[[Any], tuple[Any, ...]]:
        getters = [c.getter() for c in self.written]
        if all(c.get is None for c in self.written) and len(getters) > 1:
            return attrgetter(*(c.name for c in self.written))  # one C call per row
        return lambda item: tuple(g(item) for g in getters)

    def params(self, item: M) -> tuple[Any, ...]:
        """The written columns' values for ``item``, in order."""
        return self._get(item)

    def load(self, row: Sequence[Any]) -> M:
        """The model from a row selected with ``select()`` (derived columns skipped)."""
        fields = {c.name: c.loaded(v) for c, v in zip(self.stored, row, strict=True) if c.spool}
        return self.make(**fields)

    async def all(self, q: Queries, tail: str = "", *params: object) -> list[M]:
        """``SELECT select() FROM table {tail}``, as models (``tail``: WHERE, ORDER BY ...)."""
        return [self.load(r) for r in await q.fetch_all(self._select(tail), *params)]

    async def one(self, q: Queries, tail: str, *params: object) -> M | None:
        """The first model ``all`` would give, or ``None``."""
        row = await q.fetch_one(self._select(tail), *params)
        return None if row is None else self.load(row)

    def _select(self, tail: str) -> str:
        return f"SELECT {self.select()} FROM {self.name} {tail}".rstrip()

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
        return self.make(**{c.name: c.decoded(v) for c, v in zip(cols, values, strict=True)})


def event_digest(event: AlarmEvent) -> str:
    """Digest of what an event says (type, phase, zone, code), stored with its key
    ``(device_id, msg_id)``: the same key with another digest reuses the message id for
    other content. Not the site and resident (the gateway stamps them) nor the time (a
    unit that sends none is stamped at each retransmission; an implausible clock is
    re-timed by the gateway), yet a retransmission is the same message."""
    text = f"{event.type.value}|{event.phase.value}|{event.zone or ''}|{event.code or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _reading(metric: Metric, **fields: Any) -> Reading:
    return Reading(metric=metric, unit=metric.unit, **fields)


def texts(*names: str) -> tuple[Column, ...]:
    """Text columns named ``names``, in order."""
    return tuple(Column(n) for n in names)


C = Column
TS: Final = "ts"
INT: Final = "int"
SMALL: Final = "smallint"
FLOAT: Final = "float"
JSON: Final = "json"
READINGS = Table(
    "readings",
    (C("device_id"), C("metric", SMALL, Metric), C("value", FLOAT), C("ts", TS))
    + (C("msg_id"), C("resident_id"), C("site_id", db=False), C("quality", default="ok")),
    _reading,
)
EVENTS = Table(
    "alarm_events",
    (C("device_id"), C("type", take=EventType), C("phase", take=Phase), C("ts", TS))
    + texts("msg_id", "site_id", "resident_id", "zone", "source")
    + (C("code", INT), *texts("device_type", "location"))
    + (C("digest", get=event_digest, spool=False),),
    AlarmEvent,
)
ALERTS = Table(
    "alerts",
    (C("alert_id"), C("kind", take=AlertKind), C("priority", SMALL), C("reason"), C("ts", TS))
    + texts("site_id", "resident_id", "device_id")
    + (C("event_type", take=EventType), C("source_key"), C("detail", JSON, dict)),
    Alert,
)
DEAD_LETTERS = Table(
    "dead_letters",
    (C("received_at", TS), *texts("source", "origin", "reason"), C("payload", "bytes"))
    + (C("device_id"), C("payload_bytes", INT, default=-1)),
    DeadLetter,
)
NEWS2 = Table(
    "news2_scores",
    (C("resident_id"), C("ts", TS), C("total", INT), C("risk"), C("red_flag", "bool"))
    + (C("components", JSON, lambda v: {k: int(n) for k, n in v.items()}),)
    + (C("spo2_scale", INT), C("observation_id"), C("consciousness")),
    News2Record,
)
#: A device status change as spooled (the table's upsert is ``SqlWrites.set_device_status``).
STATUS = Table(
    "device_status",
    (C("device_id"), C("at", TS), C("online", "bool"), C("heartbeat", "bool"), C("battery")),
    StatusItem,
)
DISPATCHES = Table(
    "dispatches",
    (C("dispatch_id"), C("alert_id"), C("state", take=DispatchState), C("priority", SMALL))
    + (C("created_at", TS), C("updated_at", TS), *texts("site_id", "resident_id"))
    + (C("responder_id"), C("cascade_step", INT), C("outcome"), C("version", INT)),
    Dispatch,
)
AUDIT = Table(
    "dispatch_audit",
    (C("dispatch_id"), C("at", TS), C("from_state", take=DispatchState))
    + (C("to_state", take=DispatchState), C("actor"), C("reason"), C("detail", JSON, dict)),
    AuditRecord,
)
SITES = Table(
    "sites", (C("site_id"), C("kind", take=SiteKind), *texts("name", "address", "area")), Site
)
DEVICES = Table(
    "devices",
    (C("device_id"), C("site_id"), C("kind", take=DeviceKind))
    + texts("resident_id", "format", "location")
    + (C("heartbeat_interval_s", INT), C("hub_id")),
    Device,
)
RESPONDERS = Table(
    "responders",
    (C("responder_id"), C("kind", take=ResponderKind), *texts("name", "phone", "area"))
    + (C("skills", "texts", get=lambda r: TextArray(r.skills)),),
    Responder,
)
RECEIVER_ACCOUNTS = Table(
    "receiver_accounts",
    (C("kind", take=ReceiverKind), *texts("account", "zone", "device_id")),
    ReceiverAccount,
)
REGISTRY_AUDIT = Table(
    "registry_audit",
    (C("at", TS), *texts("actor", "action", "kind", "entity_id"), C("detail", JSON, dict)),
    RegistryChange,
)
CLINICAL_HISTORY = Table(
    "resident_clinical_history",
    texts("resident_id", "setting", "value", "previous", "prescribed_by")
    + (C("prescribed_at", TS), C("recorded_by"), C("recorded_at", TS), C("reason")),
    ClinicalRecord,
)
RECEIPTS = Table(
    "notification_receipts",
    texts("dispatch_id", "channel", "recipient", "status")
    + (C("attempts", INT), C("at", TS), C("detail")),
    Receipt,
)
TIMERS = Table(
    "dispatch_timers",
    (C("dispatch_id"), C("kind", take=TimerKind), C("due_at", TS), C("step", INT)),
    Timer,
)
