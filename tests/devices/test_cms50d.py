"""Contec CMS50D+ live stream codec."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.codecs import Incomplete, Malformed, cms50d
from telecare.devices.codecs.oximetry import OximeterSample, msg_id_for, sample_readings
from telecare.devices.model import Metric
from telecare.firmware_stubs.oximeter import encode_cms50d
from tests.devices.conftest import T0, check_parse_contract

FUZZ = settings(max_examples=300, deadline=None)


def test_known_vector() -> None:
    # sync|signal 8, pleth 64, no pulse bit 7, pulse 72, SpO2 98
    sample, used = cms50d.parse(bytes([0x88, 0x40, 0x00, 0x48, 0x62]))
    assert used == 5
    assert (sample.spo2, sample.pulse, sample.finger_out) == (98, 72, False)
    assert sample.pleth == (64,)
    assert sample.missing == ()


@pytest.mark.parametrize("pulse", [128, 150, 200, 254])
def test_pulse_above_127_uses_bit_7_from_byte_2(pulse: int) -> None:
    data = bytes([0x88, 0x40, 0x40, pulse & 0x7F, 95])
    sample, _ = cms50d.parse(data)
    assert sample.pulse == pulse  # a driver ignoring byte 2 bit 6 would say pulse - 128


def test_pulse_150_hand_checked() -> None:
    sample, _ = cms50d.parse(bytes([0x88, 0x40, 0x40, 0x16, 0x5F]))
    assert (sample.pulse, sample.spo2) == (150, 95)


def test_sentinels_are_no_value() -> None:
    sample, _ = cms50d.parse(bytes([0x80, 0x00, 0x40, 0x7F, 0x7F]))  # pulse 255, SpO2 127
    assert sample.spo2 is None
    assert sample.pulse is None
    assert sample.missing == ("spo2: no-value marker 127", "pulse: no-value marker 255")
    assert sample_readings(sample, device_id="ox1", ts=T0, msg_id="m1") == []


def test_finger_out_hides_values() -> None:
    sample, _ = cms50d.parse(bytes([0x98, 0x00, 0x00, 0x48, 0x62]))
    assert sample.finger_out
    assert sample.spo2 is None
    assert sample.pulse is None
    assert "finger_out" in sample.flags
    assert sample_readings(sample, device_id="ox1", ts=T0, msg_id="m1") == []


def test_flags() -> None:
    sample, _ = cms50d.parse(bytes([0x88, 0x00, 0x30, 0x48, 0x62]))
    assert {"searching", "sensor_error"} <= sample.flags


def test_impossible_spo2_is_malformed() -> None:
    with pytest.raises(Malformed, match="SpO2 110"):
        cms50d.parse(bytes([0x88, 0x40, 0x00, 0x48, 110]))


def test_partial_frame_is_incomplete() -> None:
    with pytest.raises(Incomplete):
        cms50d.parse(bytes([0x88, 0x40, 0x00]))


def test_cut_short_frame_skips_to_next_sync() -> None:
    with pytest.raises(Malformed) as info:
        cms50d.parse(bytes([0x88, 0x40, 0x88, 0x40, 0x00, 0x48, 0x62]))
    assert info.value.skip == 2


def test_readings_units_and_ids() -> None:
    sample, _ = cms50d.parse(bytes([0x88, 0x40, 0x40, 0x16, 0x5F]))
    msg_id = msg_id_for("cms50d", T0)
    readings = sample_readings(
        sample, device_id="ox1", ts=T0, msg_id=msg_id, resident_id="r1", site_id="s1"
    )
    assert [(r.metric, r.value, r.unit) for r in readings] == [
        (Metric.SPO2, 95.0, "%"),
        (Metric.PULSE, 150.0, "/min"),
    ]
    assert msg_id == msg_id_for("cms50d", T0)  # deterministic: re-reading does not duplicate
    assert all(r.msg_id == msg_id and r.resident_id == "r1" for r in readings)


def test_decoder_resyncs_after_noise_and_reports() -> None:
    good = [encode_cms50d(97, 80), encode_cms50d(96, 130), encode_cms50d(95, 81)]
    stream = b"\x01\x02\x7f" + good[0] + good[1][:3] + good[1] + b"\x00" + good[2]
    dec = cms50d.decoder()
    out = dec.feed(stream)
    assert [(s.spo2, s.pulse) for s in out] == [(97, 80), (96, 130), (95, 81)]
    assert dec.skipped_bytes == 3 + 3 + 1
    skips = dec.pop_skips()
    assert [s.nbytes for s in skips] == [3, 3, 1]
    assert "not a CMS50D+ sync byte" in skips[0].reason
    assert "cut short" in skips[1].reason
    assert dec.pop_skips() == []


def test_decoder_byte_by_byte_equals_whole() -> None:
    stream = b"".join(encode_cms50d(90 + i % 10, 60 + i) for i in range(30))
    whole = cms50d.decoder().feed(stream)
    dec = cms50d.decoder()
    pieces = [s for i in range(len(stream)) for s in dec.feed(stream[i : i + 1])]
    assert pieces == whole
    assert len(whole) == 30


values = st.one_of(st.none(), st.integers(1, 100))
pulses = st.one_of(st.none(), st.integers(1, 254))


@FUZZ
@given(spo2=values, pulse=pulses, finger_out=st.booleans(), pleth=st.integers(0, 127))
def test_round_trip(spo2: int | None, pulse: int | None, finger_out: bool, pleth: int) -> None:
    sample, used = cms50d.parse(encode_cms50d(spo2, pulse, finger_out=finger_out, pleth=pleth))
    assert used == 5
    assert sample.finger_out == finger_out
    assert sample.pleth == (pleth,)
    if finger_out:
        assert (sample.spo2, sample.pulse) == (None, None)
    else:
        assert (sample.spo2, sample.pulse) == (spo2, pulse)


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_parse_raises_only_codec_errors(data: bytes) -> None:
    check_parse_contract(cms50d.parse, data)


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_fuzz_decoder_never_raises(chunks: list[bytes]) -> None:
    dec = cms50d.decoder()
    out: list[OximeterSample] = []
    for chunk in chunks:
        out.extend(dec.feed(chunk))
    total = sum(len(c) for c in chunks)
    assert dec.skipped_bytes + 5 * len(out) + dec.pending == total


@FUZZ
@given(
    st.lists(st.tuples(st.integers(1, 100), st.integers(1, 254)), min_size=1, max_size=20),
    st.lists(st.binary(max_size=6).map(lambda b: bytes(x & 0x7F for x in b)), max_size=20),
)
def test_fuzz_noise_between_frames_loses_no_frame(
    frames: list[tuple[int, int]], noise: list[bytes]
) -> None:
    # noise without sync bits can never look like a frame: every real frame survives
    stream = b"".join(
        (noise[i] if i < len(noise) else b"") + encode_cms50d(s, p)
        for i, (s, p) in enumerate(frames)
    )
    out = cms50d.decoder().feed(stream)
    assert [(o.spo2, o.pulse) for o in out] == frames
