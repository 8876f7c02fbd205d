"""``readings.quality`` (migration 0015): stored and read back on both backends, through
the COPY and the de-duplicating paths, and kept by the spool (older records read as
``ok``)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from telecare.devices.model import Metric, ModelError, Reading
from telecare.gateway.store.base import Store
from telecare.gateway.store.durable import ReadingsItem, decode, encode
from tests.store.helpers import T0, registry


def _reading(i: int, quality: str = "ok") -> Reading:
    ts = T0 + timedelta(seconds=i)
    return Reading("ox1", Metric.SPO2, 95, "%", ts, f"m{i}", "res1", quality=quality)


async def test_quality_is_stored_and_read_back(store: Store) -> None:
    await registry(store)
    batch = [_reading(0), _reading(1, "invalid"), _reading(2, "demo")]
    assert await store.write_readings(batch) == 3
    assert await store.write_readings([*batch, _reading(3, "invalid")]) == 1  # duplicates
    found = await store.resident_readings("res1", T0, T0 + timedelta(minutes=1))
    assert [r.quality for r in found] == ["ok", "invalid", "demo", "invalid"]
    assert await store.sql.fetch_all("SELECT count(*) FROM readings WHERE quality = 'ok'") == [(1,)]


def test_quality_is_spooled_and_old_records_are_ok() -> None:
    item = ReadingsItem((_reading(0, "demo"),))
    assert decode(encode(item)) == item
    record = json.loads(encode(ReadingsItem((_reading(1),))))
    record["r"][0] = record["r"][0][:7]  # as spooled before 0015
    (old,) = decode(json.dumps(record).encode()).readings  # type: ignore[union-attr]
    assert old.quality == "ok"


def test_unknown_quality_is_refused() -> None:
    with pytest.raises(ModelError, match="quality"):
        _reading(0, "maybe")
