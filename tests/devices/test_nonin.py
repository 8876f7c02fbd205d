"""Nonin data formats 2 (with checksums) and 8."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.codecs import Incomplete, Malformed, nonin
from telecare.firmware_stubs.oximeter import encode_nonin2, encode_nonin8
from tests.devices.conftest import check_parse_contract

FUZZ = settings(max_examples=300, deadline=None)


def frame(status: int, pleth: int, value: int) -> bytes:
    """A format-2 frame built by hand from the documented layout."""
    body = [0x01, status, pleth, value]
    return bytes([*body, sum(body) & 0xFF])


def packet(values: dict[int, int], status: int = 0x86) -> bytes:
    return b"".join(
        frame(status | (0x01 if i == 0 else 0), 100 + i, values.get(i, 0)) for i in range(25)
    )


# ---------------------------------------------------------------- format 2


def test_format2_frame_known_vector() -> None:
    # START 01, STATUS 80, PLETH 80, VALUE 48: CHK = 0x01+0x80+0x80+0x48 = 0x149 -> 0x49
    f, used = nonin.parse2(bytes([0x01, 0x80, 0x80, 0x48, 0x49]))
    assert used == 5
    assert (f.status, f.pleth, f.value, f.sync) == (0x80, 0x80, 0x48, False)


def test_format2_bad_checksum() -> None:
    with pytest.raises(Malformed, match="checksum") as info:
        nonin.parse2(bytes([0x01, 0x80, 0x80, 0x48, 0x48]))
    assert info.value.skip == 1


def test_format2_status_without_bit7() -> None:
    with pytest.raises(Malformed, match="bit 7"):
        nonin.parse2(bytes([0x01, 0x00, 0x80, 0x48, 0xC9]))


def test_format2_partial_is_incomplete() -> None:
    with pytest.raises(Incomplete):
        nonin.parse2(bytes([0x01, 0x81, 0x80]))


def test_format2_packet_known_values() -> None:
    # pulse 72: MSB frame 0, LSB frame 72; SpO2 97 in frame 3
    dec = nonin.decoder2()
    out = dec.feed(packet({0: 0, 1: 72, 2: 97}))
    assert len(out) == 1
    s = out[0]
    assert (s.spo2, s.pulse, s.finger_out) == (97, 72, False)
    assert s.pleth == tuple(range(100, 125))


def test_format2_pulse_above_255_spans_msb_and_lsb() -> None:
    # 300 = 0b10_0101100: MSB frame carries 2 (bits 8-7), LSB frame 44 (bits 6-0)
    (s,) = nonin.decoder2().feed(packet({0: 2, 1: 44, 2: 90}))
    assert s.pulse == 300


def test_format2_missing_markers() -> None:
    # pulse 511 = MSB 3, LSB 127; SpO2 127
    (s,) = nonin.decoder2().feed(packet({0: 3, 1: 127, 2: 127}))
    assert (s.spo2, s.pulse) == (None, None)
    assert s.missing == ("spo2: no-value marker 127", "pulse: no-value marker 511")


def test_format2_sensor_disconnected() -> None:
    (s,) = nonin.decoder2().feed(packet({0: 0, 1: 72, 2: 97}, status=0xC6))
    assert s.finger_out
    assert s.spo2 is None
    assert s.pulse is None


def test_format2_resync_mid_packet_and_noise() -> None:
    good = packet({0: 0, 1: 70, 2: 96})
    # join mid-packet (last 10 frames), noise, then two good packets, one corrupted frame
    broken = bytearray(good)
    broken[5 * 7 + 4] ^= 0xFF  # bad checksum in frame 8: that packet is cut short
    stream = good[-50:] + b"\xff\x00\x13" + good + bytes(broken) + good
    dec = nonin.decoder2()
    out = dec.feed(stream)
    assert [(s.spo2, s.pulse) for s in out] == [(96, 70), (96, 70)]
    reasons = [s.reason for s in dec.pop_skips()]
    assert any("waiting for SYNC" in r for r in reasons)
    assert any("checksum" in r for r in reasons)
    assert any("cut short" in r for r in reasons)
    assert dec.skipped_bytes >= 50 + 3 + 5


@FUZZ
@given(
    spo2=st.one_of(st.none(), st.integers(0, 100)),
    pulse=st.one_of(st.none(), st.integers(0, 510)),
    pleth=st.lists(st.integers(0, 255), min_size=25, max_size=25),
)
def test_format2_round_trip(spo2: int | None, pulse: int | None, pleth: list[int]) -> None:
    (s,) = nonin.decoder2().feed(encode_nonin2(spo2, pulse, pleth=pleth))
    assert (s.spo2, s.pulse, s.pleth) == (spo2, pulse, tuple(pleth))


@FUZZ
@given(st.binary(max_size=64))
def test_format2_fuzz_parse(data: bytes) -> None:
    check_parse_contract(nonin.parse2, data)


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_format2_fuzz_decoder_never_raises(chunks: list[bytes]) -> None:
    dec = nonin.decoder2()
    for c in chunks:
        dec.feed(c)
    dec.pop_skips()


@FUZZ
@given(st.lists(st.integers(0, 100), min_size=1, max_size=5), st.binary(max_size=30))
def test_format2_noise_before_packets(spo2s: list[int], noise: bytes) -> None:
    stream = noise + b"".join(encode_nonin2(s, 75) for s in spo2s)
    out = nonin.decoder2().feed(stream)
    # noise that ends in a frame prefix whose checksum happens to match across the real
    # first frame can cost at most that first packet; every later packet survives
    got = [s.spo2 for s in out]
    assert got in (spo2s, spo2s[1:])


# ---------------------------------------------------------------- format 8


def test_format8_known_vector() -> None:
    s, used = nonin.parse8(bytes([0x80, 0x48, 0x61, 0x00]))
    assert used == 4
    assert (s.spo2, s.pulse, s.finger_out, s.flags) == (97, 72, False, frozenset())


def test_format8_pulse_300_and_flags() -> None:
    # HR bits 8-7 in STATUS1 bits 1-0: 300 >> 7 = 2; artifact bit 2; low battery in STATUS2
    s, _ = nonin.parse8(bytes([0x80 | 0x04 | 0x02, 44, 90, 0x01]))
    assert s.pulse == 300
    assert s.flags == {"artifact", "low_battery"}


def test_format8_missing_markers() -> None:
    s, _ = nonin.parse8(bytes([0x83, 0x7F, 0x7F, 0x00]))
    assert (s.spo2, s.pulse) == (None, None)
    assert len(s.missing) == 2


def test_format8_resync() -> None:
    stream = b"\x12\x34" + encode_nonin8(95, 70)[:2] + encode_nonin8(96, 71)
    dec = nonin.decoder8()
    out = dec.feed(stream)
    assert [(s.spo2, s.pulse) for s in out] == [(96, 71)]
    assert dec.skipped_bytes == 4


@FUZZ
@given(
    spo2=st.one_of(st.none(), st.integers(0, 100)),
    pulse=st.one_of(st.none(), st.integers(0, 510)),
    finger_out=st.booleans(),
)
def test_format8_round_trip(spo2: int | None, pulse: int | None, finger_out: bool) -> None:
    s, _ = nonin.parse8(encode_nonin8(spo2, pulse, finger_out=finger_out))
    expected = (None, None) if finger_out else (spo2, pulse)
    assert (s.spo2, s.pulse) == expected
    assert s.finger_out == finger_out


@FUZZ
@given(st.binary(max_size=64))
def test_format8_fuzz_parse(data: bytes) -> None:
    check_parse_contract(nonin.parse8, data)


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_format8_fuzz_decoder_never_raises(chunks: list[bytes]) -> None:
    dec = nonin.decoder8()
    out = [s for c in chunks for s in dec.feed(c)]
    assert dec.skipped_bytes + 4 * len(out) + dec.pending == sum(len(c) for c in chunks)
