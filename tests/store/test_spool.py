"""The on-disk spool (SQLite): records survive reopening and kill -9 in order, are read
back in pages and deleted once replayed, a damaged database is moved aside (never fatal),
the bound is enforced and the state is reported as it nears full; the record codec
round-trips every kind of item."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from telecare.devices.model import Alert, AlertKind, Metric, Reading
from telecare.gateway.store import spool as spool_module
from telecare.gateway.store.durable import ReadingsItem, decode, encode
from telecare.gateway.store.errors import SpoolFull
from telecare.gateway.store.rows import DeadLetter, News2Record, StatusItem
from telecare.gateway.store.spool import Spool, SpoolState
from tests.store.helpers import T0, alert, event, message


async def _records(spool: Spool) -> list[bytes]:
    return [payload for _, payload in await spool.oldest()]


async def test_records_survive_reopen_in_order(tmp_path: Path) -> None:
    async with Spool(tmp_path) as spool:
        await spool.append([b"one", b"two"])  # one transaction
        await spool.append([b"three"])
        assert spool.pending
    async with Spool(tmp_path) as again:
        assert again.pending
        assert again.stats()["spool_records"] == 3
        assert again.used_bytes == len(b"onetwothree")
        assert await _records(again) == [b"one", b"two", b"three"]


async def test_remove_through_keeps_what_came_after_the_page(tmp_path: Path) -> None:
    async with Spool(tmp_path) as spool:
        await spool.append([b"x"])
        await spool.append([b"y"])
        page = await spool.oldest()
        await spool.append([b"later"])  # appended while the page was being replayed
        await spool.remove_through(page[-1][0])
        assert await _records(spool) == [b"later"]
        assert spool.used_bytes == len(b"later")
        (last,) = await spool.oldest()
        await spool.remove_through(last[0])
        assert not spool.pending
        assert spool.used_bytes == 0
        assert await spool.oldest() == []


async def test_pages_are_bounded_in_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "PAGE_BYTES", 100)
    async with Spool(tmp_path) as spool:
        for i in range(5):
            await spool.append([bytes([i]) * 40])
        await spool.append([b"big" * 100])
        replayed: list[list[bytes]] = []
        while page := await spool.oldest():
            replayed.append([payload for _, payload in page])
            await spool.remove_through(page[-1][0])
    # Two 40-byte records fit in 100 bytes; a record larger than a page is read alone.
    assert [len(p) for p in replayed] == [2, 2, 1, 1]
    expected = [bytes([i]) * 40 for i in range(5)] + [b"big" * 100]
    assert [r for page in replayed for r in page] == expected


@pytest.mark.parametrize("damage", ["not a database", "corrupt pages"])
async def test_a_damaged_spool_is_moved_aside_not_fatal(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "spool.db"
    if damage == "not a database":
        db.write_bytes(b"not a spool" * 1000)
    else:
        async with Spool(tmp_path) as spool:
            for i in range(200):
                await spool.append([bytes([i % 256]) * 500])
        data = bytearray(db.read_bytes())
        data[4096 : 4096 * 4] = b"\xff" * (4096 * 3)  # pages 2-4: the table's b-tree
        db.write_bytes(bytes(data))
    original = db.read_bytes()
    with capture_logs() as logs:
        spool = Spool(tmp_path)
        async with spool:  # must not raise
            assert not spool.pending
            assert spool.stats()["spool_damaged"] == 1
            await spool.append([b"after"])  # a new, empty spool works
            assert await _records(spool) == [b"after"]
    (aside,) = db.parent.glob("spool.db.damaged-*")
    assert aside.read_bytes() == original  # kept for inspection, not deleted
    (event,) = [e for e in logs if e["event"] == "spool_damaged"]
    assert event["moved_to"] == aside.name
    assert event["reason"]


def test_committed_records_survive_kill_9(tmp_path: Path) -> None:
    """Appended and committed, then the process is killed: nothing flushed by a clean
    close (the WAL is left as it was), and every record is there at the next start."""
    script = f"""
import asyncio, os, signal
from telecare.gateway.store.spool import Spool

async def main():
    spool = await Spool({str(tmp_path)!r}).__aenter__()
    for i in range(50):
        await spool.append([b"record %d" % i])
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""
    child = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert (tmp_path / "spool.db-wal").exists()  # not checkpointed: a crash, not a close

    async def reopened() -> list[bytes]:
        async with Spool(tmp_path) as spool:
            return await _records(spool)

    assert asyncio.run(reopened()) == [b"record %d" % i for i in range(50)]


async def test_bound_and_near_full_state(tmp_path: Path) -> None:
    states: list[SpoolState] = []
    async with Spool(tmp_path, max_bytes=1000, alarm_ratio=0.8, on_state=states.append) as spool:
        await spool.append([b"x" * 600])
        assert states == []
        await spool.append([b"y" * 200])  # 800 bytes: 80 %
        assert len(states) == 1
        assert states[0].near_full
        assert states[0].used_bytes == spool.used_bytes == 800
        assert states[0].max_bytes == 1000
        await spool.append([b"z"])
        assert len(states) == 1  # reported once, not on every append
        with pytest.raises(SpoolFull, match="full"):
            await spool.append([b"w" * 100, b"w" * 200])  # all or nothing
        assert await _records(spool) == [b"x" * 600, b"y" * 200, b"z"]  # nothing written
        assert spool.used_bytes == 801
        await spool.remove_through((await spool.oldest())[-1][0])
        assert [s.near_full for s in states] == [True, False]  # and cleared again


async def test_a_refused_append_reports_the_state_even_below_the_ratio(tmp_path: Path) -> None:
    states: list[SpoolState] = []
    async with Spool(tmp_path, max_bytes=1000, on_state=states.append) as spool:
        with pytest.raises(SpoolFull):
            await spool.append([b"x" * 1001])
        assert [(s.used_bytes, s.near_full) for s in states] == [(0, True)]
        assert not spool.pending


async def test_a_failing_state_callback_does_not_fail_the_append(tmp_path: Path) -> None:
    def broken(state: SpoolState) -> None:
        raise RuntimeError("callback bug")

    async with Spool(tmp_path, max_bytes=100, on_state=broken) as spool:
        await spool.append([b"x" * 90])
        assert await _records(spool) == [b"x" * 90]


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
