"""One spec per table: the columns, once, and everything derived from them.

A :class:`Table` lists its columns in order (``Table.of(name, Row)`` reads them off a
dataclass row type); from it come the statements (``insert``, ``upsert``, ``select``,
``add``, ``put``, ``all``, ``one``), the column lists for ``INSERT`` and a PostgreSQL
``COPY`` (``names``, ``pg_types``), the row parameters (``params``), the model from a
selected row (``load``) and the spool record (``record``/``from_record``, see
``gateway.store.durable``). A table without a row type of its own is a spec of
columns only (its rows are ``dict``s). The roles' specs are here; the web tables' specs
sit next to their rows (``accounts``, ``console``).

Adding a column: a field at the end of the row type (or a :class:`Column` at the end of
an explicit spec, with the default that older spool records lack) and one migration per
dialect. Spool records are positional, so columns are only ever appended: a record
spooled by an older version is one shorter and takes the new column's default.
"""

# ruff: noqa: RUF005  (the specs read best as rows of columns added together)
from __future__ import annotations

import base64
import dataclasses
import hashlib
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import cached_property
from operator import attrgetter
from types import NoneType, UnionType
from typing import Any, Final, Generic, Literal, TypeVar, cast

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    Device,
    Dispatch,
    Metric,
    Reading,
    ReceiverAccount,
    Responder,
    Site,
    utcnow,
)
from telecare.dispatch.records import AuditRecord, Receipt, Timer
from telecare.gateway.clinical import ClinicalRecord
from telecare.gateway.store.rows import DeadLetter, News2Record, RegistryChange, StatusItem
from telecare.gateway.store.sql import Queries, TextArray, json_value

__all__ = ["Column", "Table", "event_digest", "plain"]

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
    of the same name), ``db=False`` (in the spool record only), ``spool=False`` (not in
    the spool record: derived, or stamped by the write), ``default`` (for a spool record
    from before the column), ``auto=True`` (selected, never written: made by the
    database, or another table's, joined in)."""

    name: str
    kind: Kind = "text"
    take: Callable[[Any], Any] | None = None
    get: Callable[[Any], Any] | None = None
    db: bool = True
    spool: bool = True
    default: Any = None
    auto: bool = False

    def getter(self) -> Callable[[Any], Any]:
        return self.get or attrgetter(self.name)

    def loaded(self, value: Any, convert: dict[str, Callable[[Any], Any]] = _LOAD) -> Any:
        """The model's field from a database value (either dialect's form), or with
        ``convert=_DECODE`` from a spool record's JSON value."""
        if value is None:
            return self.default
        value = convert.get(self.kind, _same)(value)
        return value if self.take is None else self.take(value)

    def encoded(self, value: Any) -> Any:
        """JSON form of a stored value (spool records)."""
        return None if value is None else _ENCODE.get(self.kind, _same)(value)


def _same(value: Any) -> Any:
    return value


_KINDS: dict[Any, Kind] = {str: "text", int: "int", float: "float", bool: "bool"}
_KINDS |= {datetime: "ts", dict: "json", bytes: "bytes", tuple: "texts", Literal: "text"}


def _column(name: str, hint: Any) -> Column:
    """The column for a field of type ``hint`` (``X | None`` as ``X``; an enum is stored
    as its value and taken back as the enum)."""
    t = (
        next(a for a in typing.get_args(hint) if a is not NoneType)
        if type(hint) is UnionType
        else hint
    )
    if isinstance(t, type) and issubclass(t, Enum):
        return Column(name, "smallint" if issubclass(t, int) else "text", take=t)
    return Column(name, _KINDS[typing.get_origin(t) or t])


@dataclass(frozen=True)
class Table(Generic[M]):
    """A table's columns and how a row becomes a model (``make(**fields)``)."""

    name: str
    columns: tuple[Column, ...]
    make: Callable[..., M]

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
        return [_PG_TYPES.get(c.kind, "text[]") for c in self.written]

    def insert(self, tail: str | None = None) -> str:
        """``INSERT`` of the written columns; ``tail`` (default: ``ON CONFLICT DO
        NOTHING``) may also be a ``RETURNING``."""
        marks = ", ".join("?" for _ in self.written)
        tail = "ON CONFLICT DO NOTHING" if tail is None else tail
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
    def params(self) -> Callable[[M], tuple[Any, ...]]:
        """``params(item)``: the written columns' values for ``item``, in order (the
        getter itself, no Python call around it: COPY calls it per row)."""
        getters = [c.getter() for c in self.written]
        if all(c.get is None for c in self.written) and len(getters) > 1:
            return attrgetter(*(c.name for c in self.written))  # one C call per row
        return lambda item: tuple(g(item) for g in getters)

    @classmethod
    def of(cls, name: str, row: type[M], *special: Column, skip: Sequence[str] = ()) -> Table[M]:
        """The spec of the dataclass ``row``: a column per field (but ``skip``), in order,
        its kind from the field's type; ``special`` replace the column of their name, or
        follow the fields (a column that is not a field: derived, or made by the database)."""
        hints, named = typing.get_type_hints(row), {c.name: c for c in special}
        columns = [
            named.pop(f.name) if f.name in named else _column(f.name, hints[f.name])
            for f in dataclasses.fields(row)  # type: ignore[arg-type]
            if f.name not in skip
        ]
        return cls(name, (*columns, *named.values()), row)

    def load(self, row: Sequence[Any]) -> M:
        """The model from a row selected with ``select()`` (derived columns skipped)."""
        stored = zip(self.stored, row, strict=True)
        return self.make(**{c.name: c.loaded(v) for c, v in stored if c.name in self._fields})

    @cached_property
    def _fields(self) -> frozenset[str]:
        """The stored columns ``load`` gives ``make``: the fields of a dataclass row type
        (a column that is none, such as a digest, is derived), else every one."""
        names = {c.name for c in self.stored}
        if dataclasses.is_dataclass(self.make):
            names &= {f.name for f in dataclasses.fields(self.make)}
        return frozenset(names)

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
        return self.make(
            **{c.name: c.loaded(v, _DECODE) for c, v in zip(cols, values, strict=True)}
        )


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


def plain(name: str, columns: str) -> Table[dict[str, Any]]:
    """The spec of a table whose rows are no model's (loaded as ``dict``); ``columns``:
    ``"name name:kind ..."``, in order (the kind ``text`` when not given)."""
    return Table(name, tuple(Column(*cast(Any, c.split(":"))) for c in columns.split()), dict)


C = Column
TS: Final = "ts"
INT: Final = "int"
SMALL: Final = "smallint"
READINGS = Table(
    "readings",
    (C("device_id"), C("metric", SMALL, Metric), C("value", "float"), C("ts", TS))
    + (C("msg_id"), C("resident_id"), C("site_id", db=False), C("quality", default="ok")),
    _reading,
)
EVENTS = Table.of(
    "alarm_events",
    AlarmEvent,
    # The pipeline's receive time (none: the write's). Not in the spool record (a replayed
    # event has the replay's time, as with the column's old database default).
    C("received_at", TS, get=lambda e: e.received_at or utcnow(), spool=False),
    C("digest", get=event_digest, spool=False),
    skip=("injury",),
)
ALERTS = Table.of("alerts", Alert, C("priority", SMALL))
DEAD_LETTERS = Table.of("dead_letters", DeadLetter, C("payload_bytes", INT, default=-1))
NEWS2 = Table.of(
    "news2_scores",
    News2Record,
    C("components", "json", lambda v: {k: int(n) for k, n in v.items()}),
)
#: A device status change: a spool record, not a table (``device_status`` keeps the
#: latest state per device: ``SqlWrites.write_status``).
STATUS = Table.of("status_change", StatusItem)
DISPATCHES = Table.of("dispatches", Dispatch, C("priority", SMALL))
AUDIT = Table.of("dispatch_audit", AuditRecord)
SITES = Table.of("sites", Site)
DEVICES = Table.of("devices", Device)
RESPONDERS = Table.of(
    "responders", Responder, C("skills", "texts", get=lambda r: TextArray(r.skills))
)
RECEIVER_ACCOUNTS = Table.of("receiver_accounts", ReceiverAccount)
REGISTRY_AUDIT = Table.of("registry_audit", RegistryChange)
CLINICAL_HISTORY = Table.of("resident_clinical_history", ClinicalRecord)
RECEIPTS = Table.of("notification_receipts", Receipt)
TIMERS = Table.of("dispatch_timers", Timer)
# Tables whose rows are no model's: their statements, their values given as they are.
DEVICE_USERS = plain("device_users", "device_id user_id:int resident_id")
CASCADES = plain("resident_responders", "resident_id position:int responder_id")
CLINICAL = plain(
    "resident_clinical",
    "resident_id spo2_scale:int spo2_scale_set_by spo2_scale_set_at:ts baseline_consciousness"
    " updated_by updated_at:ts",
)
GROUPS = plain("dispatch_groups", "dispatch_id group_key")
MEMBERS = plain("dispatch_members", "alert_id dispatch_id")
DISPATCH_CASCADE = plain("dispatch_cascade", "dispatch_id position:int responder_id timeout_s:int")
