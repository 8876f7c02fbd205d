"""The table specs (``gateway.store.tables``) against the migrated schema of both
backends, and the spool record layout they define, pinned (records written by an older
version must still decode, so a spec's spooled columns are only ever appended)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from telecare.devices.model import AlarmEvent, EventType, Metric, Phase, Reading
from telecare.gateway.store import accounts, registry, tables
from telecare.gateway.store.base import Store
from telecare.gateway.store.durable import ReadingsItem, encode
from telecare.gateway.store.rows import DeadLetter, StatusItem
from telecare.gateway.store.tables import Table
from telecare.gateway.web import console_store as console
from tests.store.helpers import T0, event
from tests.store.helpers import registry as add_registry

SPECS = list(
    {
        id(spec): spec
        for module in (tables, registry, console, accounts)
        for spec in vars(module).values()
        if isinstance(spec, Table) and spec is not tables.STATUS  # a spool record only
    }.values()
)


def test_every_table_has_one_spec() -> None:
    names = [spec.name for spec in SPECS]
    assert len(names) >= 24
    assert len(set(names)) == len(names)


async def test_every_spec_matches_its_table(store: Store) -> None:
    for spec in SPECS:
        # Every stored column exists with the spec's name (the statement fails if not).
        assert await store.sql.fetch_all(f"SELECT {spec.select()} FROM {spec.name} LIMIT 0") == []


@pytest.mark.parametrize(
    ("item", "record"),
    [
        (
            ReadingsItem((Reading("ox1", Metric.SPO2, 97.0, "%", T0, "m1", "res1", "s1"),)),
            {"k": "readings", "r": [["ox1", 1, 97.0, T0.isoformat(), "m1", "res1", "s1", "ok"]]},
        ),
        (
            AlarmEvent("p1", EventType.PENDANT, Phase.ALARM, T0, "e1", "s1", "res1"),
            {"k": "event", "v": ["p1", "pendant", "alarm", T0.isoformat(), "e1", "s1", "res1",
                                 None, "mqtt", None, None, None]},
        ),
        (
            DeadLetter(T0, "mqtt", "t", "bad", b"\x00x"),
            {"k": "dead_letter", "v": [T0.isoformat(), "mqtt", "t", "bad", "AHg=", None, 2]},
        ),
        (
            StatusItem("ox1", T0, True, False, 0.5),
            {"k": "status", "v": ["ox1", T0.isoformat(), True, False, 0.5]},
        ),
    ],
)  # fmt: skip
def test_spool_records_keep_their_layout(item: object, record: dict[str, object]) -> None:
    assert json.loads(encode(item)) == record  # type: ignore[arg-type]


def test_a_spec_from_a_row_type_takes_kinds_from_the_fields() -> None:
    spec = tables.ALERTS
    kinds = {c.name: (c.kind, c.take) for c in spec.columns}
    assert list(kinds)[:3] == ["alert_id", "kind", "priority"]
    assert kinds["ts"] == ("ts", None)
    assert kinds["priority"] == ("smallint", None)  # given, not read off the field
    assert kinds["detail"][0] == "json"
    assert kinds["event_type"] == ("text", EventType)
    notices = console.NOTICES
    assert notices.select().startswith("notice_id, ")  # selected and loaded ...
    assert "notice_id" not in notices.names  # ... never inserted
    digest = tables.EVENTS.columns[-1]
    assert (digest.name, digest.spool) == ("digest", False)  # derived, not spooled


async def test_load_gives_every_stored_field_derived_columns_skipped(store: Store) -> None:
    await add_registry(store)
    sent = event(1).received(T0 + timedelta(minutes=5))
    await store.write_events([sent])
    # The receive time is not in a spool record but is an ``AlarmEvent`` field: loaded.
    assert await tables.EVENTS.all(store.sql) == [sent]
    assert "received_at" not in [c.name for c in tables.EVENTS.spooled]
