"""The on-disk spool: records survive reopening, damage is detected and skipped, the
bound is enforced and a technical alarm is raised as it nears full; the record codec
round-trips every kind of item."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.model import Alert, AlertKind, Metric, Reading
from telecare.gateway.store.durable import ReadingsItem, decode, encode
from telecare.gateway.store.errors import SpoolFull
from telecare.gateway.store.rows import DeadLetter, News2Record, StatusItem
from telecare.gateway.store.spool import MAGIC, Spool, SpoolState
from tests.store.helpers import T0, alert, event, message


def _all_records(spool: Spool) -> list[bytes]:
    spool.seal()
    out: list[bytes] = []
    for path in spool.sealed():
        out += spool.read(path).records
    return out


def test_records_survive_reopen_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"one", b"two"])
    spool.append([b"three"])
    assert spool.pending
    spool.close()
    again = Spool(tmp_path)
    assert again.pending
    assert _all_records(again) == [b"one", b"two", b"three"]
    # A new run never appends to an old segment.
    again.append([b"four"])
    again.seal()
    assert len(again.sealed()) == 2


def test_remove_after_replay_empties_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"x"])
    spool.seal()
    for path in spool.sealed():
        spool.remove(path)
    assert not spool.pending
    assert spool.used_bytes == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cut", [1, 5, 8, 11])
def test_torn_tail_is_skipped_not_fatal(tmp_path: Path, cut: int) -> None:
    spool = Spool(tmp_path)
    spool.append([b"first record", b"second record"])
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - cut])  # crash part-way through the last write
    reopened = Spool(tmp_path)  # must not raise
    (path,) = reopened.sealed()
    contents = reopened.read(path)
    assert contents.records == [b"first record"]
    assert contents.damage is not None
    assert "truncated" in contents.damage
    assert reopened.stats()["spool_damaged_segments"] == 1


def test_flipped_bit_is_caught_by_the_crc(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"good", b"will be damaged", b"after"])
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    second = len(MAGIC) + 8 + len(b"good") + 8
    data[second + 3] ^= 0x01
    segment.write_bytes(bytes(data))
    contents = Spool(tmp_path).read(segment)
    assert contents.records == [b"good"]
    assert contents.damage is not None
    assert "CRC" in contents.damage


def test_garbage_file_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "0000000000000001.seg").write_bytes(b"not a spool")
    spool = Spool(tmp_path)
    (path,) = spool.sealed()
    assert spool.read(path).records == []


def test_bound_and_near_full_state(tmp_path: Path) -> None:
    states: list[SpoolState] = []
    spool = Spool(tmp_path, max_bytes=1000, alarm_ratio=0.8, on_state=states.append)
    spool.append([b"x" * 600])
    assert states == []
    spool.append([b"y" * 200])  # 8 + 2*(8+...) > 800 bytes
    assert len(states) == 1
    assert states[0].near_full
    assert states[0].used_bytes == spool.used_bytes
    assert states[0].used_bytes > 0.8 * states[0].max_bytes
    spool.append([b"z"])
    assert len(states) == 1  # reported once, not on every append
    with pytest.raises(SpoolFull, match="full"):
        spool.append([b"w" * 300])
    assert _all_records(spool) == [b"x" * 600, b"y" * 200, b"z"]
    spool.seal()
    for path in spool.sealed():
        spool.remove(path)
    assert [s.near_full for s in states] == [True, False]  # and cleared again


def test_segments_rotate_by_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=110)  # magic + two 48-byte records
    for i in range(10):
        spool.append([bytes([i]) * 40])
    spool.seal()
    assert len(spool.sealed()) == 10 // 2
    assert _all_records(spool) == [bytes([i]) * 40 for i in range(10)]


ITEMS = [
    ReadingsItem(tuple(message(3))),
    event(4),
    alert(5),
    Alert("t1", AlertKind.TECHNICAL, 2, "spool", T0, detail={"nested": {"a": [1, 2]}}),
    DeadLetter(T0, "mqtt", "t/x", "bad json", b"\x00\xff{", "d9"),
    News2Record("res1", T0, 7, "high", True, {"spo2": 3, "pulse": 2}, 2, "obs1"),
    StatusItem("ox1", T0, None, True, 55.5),
]


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: type(i).__name__)
def test_codec_round_trip(item: object) -> None:
    assert decode(encode(item)) == item  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([Metric.SPO2, Metric.PULSE, Metric.TEMPERATURE]),
            st.floats(min_value=25, max_value=45),
            st.integers(min_value=0, max_value=10**9),
            st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.:-]{0,63}", fullmatch=True),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_codec_round_trips_readings(values: list[tuple[Metric, float, int, str]]) -> None:
    readings = tuple(
        Reading("d1", m, v, m.unit, T0 + timedelta(microseconds=us), msg)
        for m, v, us, msg in values
    )
    assert decode(encode(ReadingsItem(readings))) == ReadingsItem(readings)


def test_unknown_record_kind_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown spool record kind"):
        decode(b'{"k":"nope"}')
