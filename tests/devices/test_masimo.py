"""Masimo Rad-8 ASCII line codec."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.codecs import Incomplete, Malformed, masimo
from telecare.devices.codecs.oximetry import sample_readings
from telecare.devices.model import Metric
from telecare.firmware_stubs.oximeter import encode_masimo
from tests.devices.conftest import T0, check_parse_contract

FUZZ = settings(max_examples=300, deadline=None)

LINE = (
    b"02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% "
    b"SPMET=--.-% DESAT=-- PIDELTA=+-- ALARM=0000 EXC=000800\r\n"
)


def test_documented_example() -> None:
    s, used = masimo.parse(LINE)
    assert used == len(LINE)
    assert (s.spo2, s.pulse, s.perfusion_index) == (98, 97, 3.6)
    assert s.device_time == datetime(2016, 2, 22, 22, 47, 45)
    assert s.flags == {"exc:000800"}
    assert not s.finger_out
    readings = sample_readings(s, device_id="rad8", ts=T0, msg_id="m1")
    assert [(r.metric, r.value, r.unit) for r in readings] == [
        (Metric.SPO2, 98.0, "%"),
        (Metric.PULSE, 97.0, "/min"),
        (Metric.PERFUSION_INDEX, 3.6, "%"),
    ]


@pytest.mark.parametrize("exc", [0x1, 0x4, 0x8, 0x20, 0x400, 0x824])
def test_a_line_with_a_sensor_exception_is_invalid(exc: int) -> None:
    line = LINE.replace(b"EXC=000800", f"EXC={exc:06X}".encode())
    s, _ = masimo.parse(line)
    assert (s.spo2, s.pulse, s.perfusion_index) == (None, None, None)
    assert "invalid" in s.flags
    assert not s.finger_out
    assert s.missing[0].startswith("spo2: invalid: EXC=")
    assert sample_readings(s, device_id="rad8", ts=T0, msg_id="m1") == []


def test_a_limit_alarm_alone_keeps_the_values() -> None:
    s, _ = masimo.parse(LINE.replace(b"ALARM=0000", b"ALARM=0003"))
    assert (s.spo2, s.pulse) == (98, 97)
    assert s.flags == {"alarm:0003", "exc:000800"}


def test_dashes_are_no_value() -> None:
    line = LINE.replace(b"SPO2=098%", b"SPO2=---%").replace(b"BPM=097", b"BPM=---")
    line = line.replace(b"PI=03.60%", b"PI=--.--%")
    s, _ = masimo.parse(line)
    assert (s.spo2, s.pulse, s.perfusion_index) == (None, None, None)
    assert s.finger_out
    assert s.missing == ("spo2: no value (---%)", "bpm: no value (---)", "pi: no value (--.--%)")
    assert sample_readings(s, device_id="rad8", ts=T0, msg_id="m1") == []


def test_partial_line_is_incomplete() -> None:
    with pytest.raises(Incomplete):
        masimo.parse(LINE[:40])


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (LINE.replace(b"SPO2=098%", b"SPO2=1x8%"), "not a number"),
        (LINE.replace(b"SPO2=098%", b"SPO2=108%"), "out of range"),
        (LINE.replace(b"BPM=097 ", b""), "no BPM"),
        (LINE.replace(b"02/22/16", b"13/40/16"), "invalid"),
        (LINE.replace(b"ALARM=0000", b"ALARM=00G0"), "hexadecimal"),
        (LINE.replace(b"SN=", b"SN:"), "KEY=VALUE"),
        (LINE.replace(b"SN=0000056661", b"SN=\xff"), "ASCII"),
    ],
)
def test_bad_lines_are_malformed(line: bytes, reason: str) -> None:
    with pytest.raises(Malformed, match=reason) as info:
        masimo.parse(line)
    assert info.value.skip == len(line)  # the whole line is dropped


def test_decoder_resyncs_after_noise_and_partial_line() -> None:
    stream = b"\x00\xffgarbage" + LINE[30:] + LINE + b"noise" + LINE[:50] + LINE + LINE
    dec = masimo.decoder()
    out = dec.feed(stream)
    assert len(out) == 3
    assert all(s.spo2 == 98 for s in out)
    skips = dec.pop_skips()
    assert sum(s.nbytes for s in skips) == dec.skipped_bytes == len(stream) - 3 * len(LINE)
    # one record per burst of noise (consecutive skips are merged, first reason kept)
    assert [s.nbytes for s in skips] == [9 + len(LINE) - 30, 5 + 50]
    assert skips[0].reason == "noise before a Rad-8 line"
    assert skips[1].reason == "noise before a Rad-8 line"


def test_overlong_garbage_is_dropped() -> None:
    dec = masimo.decoder()
    assert dec.feed(b"x" * 2000) == []
    assert dec.pending < 2 * masimo.MAX_LINE
    assert dec.feed(b"\n" + LINE) != []


@FUZZ
@given(
    spo2=st.one_of(st.none(), st.integers(0, 100)),
    pulse=st.one_of(st.none(), st.integers(0, 300)),
    pi=st.one_of(st.none(), st.decimals(0, 20, places=2).map(float)),
    when=st.datetimes(datetime(2000, 1, 1), datetime(2068, 12, 31)).map(
        lambda d: d.replace(microsecond=0)
    ),
)
def test_round_trip(spo2: int | None, pulse: int | None, pi: float | None, when: datetime) -> None:
    s, _ = masimo.parse(encode_masimo(spo2, pulse, when=when, perfusion_index=pi))
    assert (s.spo2, s.pulse, s.perfusion_index, s.device_time) == (spo2, pulse, pi, when)


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.builds(lambda b: LINE[: len(b)] + b, st.binary())))
def test_fuzz_parse(data: bytes) -> None:
    check_parse_contract(masimo.parse, data)


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_fuzz_decoder_never_raises(chunks: list[bytes]) -> None:
    dec = masimo.decoder()
    for c in chunks:
        dec.feed(c + LINE)
    dec.pop_skips()
