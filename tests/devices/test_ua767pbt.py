"""A&D UA-767PBT blood-pressure cuff: header + printable-hex data section whose first value
is systolic MINUS diastolic."""

from __future__ import annotations

import struct
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.codecs import Incomplete, Malformed, registry, ua767pbt
from telecare.devices.model import Metric
from telecare.firmware_stubs.bp_cuff import encode_ua767pbt
from tests.devices.conftest import T0, check_parse_contract

FUZZ = settings(max_examples=300, deadline=None)

#: A hand-built packet for 120/80 mmHg, pulse 72, MAP 93, measured 2026-01-05 09:30:15:
#: header (little-endian) then "80" "28" (120 - 80 = 40) "50" (80) "48" (72) "5D" (93).
KNOWN = (
    bytes.fromhex("02000a000000ff0200")
    + bytes.fromhex("ea070105091e0f")  # measured 2026-01-05 09:30:15
    + bytes.fromhex("ea070105091e14")  # sent 09:30:20
    + bytes(6)
    + bytes(6)
    + b"5130651010\x00\x00"
    + bytes(10)
    + b"\x64\x00\x11"
    + b"802850485D"
)


def test_known_vector_reconstructs_systolic_from_the_difference() -> None:
    assert len(KNOWN) == 70
    m, used = ua767pbt.parse(KNOWN)
    assert used == 70
    assert (m.systolic, m.diastolic, m.pulse, m.mean_arterial) == (120, 80, 72, 93)
    assert m.device_time == datetime(2026, 1, 5, 9, 30, 15)
    assert m.serial == "5130651010"
    assert m.battery == 0x64


def test_the_difference_is_never_reported_as_systolic() -> None:
    """The data section's first value is 40 (= 120 - 80): reporting it as systolic would
    read 40/80 and score NEWS2 3 for a normal blood pressure."""
    m, _ = ua767pbt.parse(KNOWN)
    assert m.systolic != 0x28
    readings = registry.get("ua767pbt").to_model(m, device_id="cuff1", ts=T0)
    by_metric = {r.metric: r.value for r in readings}
    assert by_metric[Metric.SYSTOLIC_BP] == 120.0
    assert by_metric[Metric.DIASTOLIC_BP] == 80.0
    assert 40.0 not in by_metric.values()


@given(
    diastolic=st.integers(10, 200),
    diff=st.integers(1, 100),
    pulse=st.integers(20, 250),
)
@FUZZ
def test_systolic_is_always_difference_plus_diastolic(
    diastolic: int, diff: int, pulse: int
) -> None:
    packet = encode_ua767pbt(diastolic + diff, diastolic, pulse)
    # the wire carries the difference, not systolic
    assert packet[62:64] == f"{diff:02X}".encode()
    m, used = ua767pbt.parse(packet)
    assert used == len(packet)
    assert m.systolic == diastolic + diff
    assert m.systolic != diff  # diastolic >= 10: the difference can never pass for systolic


@given(
    systolic=st.integers(40, 255),
    diastolic=st.integers(10, 150),
    pulse=st.integers(0, 255),
    mean=st.integers(0, 255),
    when=st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
        lambda d: d.replace(microsecond=0)
    ),
)
@FUZZ
def test_round_trip_through_the_stub_encoder(
    systolic: int, diastolic: int, pulse: int, mean: int, when: datetime
) -> None:
    if not 1 <= systolic - diastolic <= 255:
        return
    packet = encode_ua767pbt(systolic, diastolic, pulse, mean, measured_at=when, serial="SN42")
    m, used = ua767pbt.parse(packet)
    assert used == len(packet)
    assert (m.systolic, m.diastolic, m.pulse, m.mean_arterial) == (systolic, diastolic, pulse, mean)
    assert m.device_time == when
    assert m.serial == "SN42"


def test_invalid_measurement_flag_is_malformed_for_the_whole_packet() -> None:
    packet = encode_ua767pbt(120, 80, 72, valid=False)
    with pytest.raises(Malformed, match="invalid measurement") as info:
        ua767pbt.parse(packet)
    assert info.value.skip == len(packet)


def test_non_hex_data_section_is_malformed() -> None:
    packet = encode_ua767pbt(120, 80, 72)[:-2] + b"ZZ"
    with pytest.raises(Malformed, match="printable hex"):
        ua767pbt.parse(packet)


def test_zero_difference_is_not_a_measurement() -> None:
    with pytest.raises(Malformed, match="is 0"):
        ua767pbt.parse(encode_ua767pbt(80, 80, 72))


def test_other_ad_device_types_are_rejected() -> None:
    packet = bytearray(encode_ua767pbt(120, 80, 72))
    struct.pack_into("<H", packet, 6, 321)  # UC-321PBT scale
    with pytest.raises(Malformed, match="not a UA-767PBT"):
        ua767pbt.parse(bytes(packet))


def test_partial_packets_are_incomplete() -> None:
    packet = encode_ua767pbt(120, 80, 72)
    for n in (1, 2, 30, 59, 60, 69):
        with pytest.raises(Incomplete):
            ua767pbt.parse(packet[:n])


def test_implausible_systolic_is_rejected_by_the_model() -> None:
    m, _ = ua767pbt.parse(encode_ua767pbt(250 + 100, 250, 72, 255))
    with pytest.raises(Malformed, match="rejected"):
        registry.get("ua767pbt").to_model(m, device_id="cuff1", ts=T0)


def test_resent_packet_has_the_same_message_id() -> None:
    first, _ = ua767pbt.parse(encode_ua767pbt(120, 80, 72, sent_at=datetime(2026, 1, 5, 9, 31)))
    again, _ = ua767pbt.parse(encode_ua767pbt(120, 80, 72, sent_at=datetime(2026, 1, 5, 9, 35)))
    assert ua767pbt.msg_id_of(first) == ua767pbt.msg_id_of(again)
    assert ua767pbt.msg_id_of(first) == "ua767pbt-5130651010-20260101093000"


def test_decoder_resynchronises_after_noise() -> None:
    packets = [encode_ua767pbt(120 + i, 80, 70 + i) for i in range(3)]
    stream = b"\xff\x02\x07noise" + packets[0] + b"\x00\x01" + packets[1] + packets[2][:20]
    dec = ua767pbt.decoder()
    frames = dec.feed(stream)
    frames += dec.feed(packets[2][20:])
    assert [f.systolic for f in frames] == [120, 121, 122]
    assert dec.skipped_bytes == 10


@given(st.binary(max_size=200))
@FUZZ
def test_arbitrary_bytes_honour_the_parse_contract(data: bytes) -> None:
    check_parse_contract(ua767pbt.parse, data)
    ua767pbt.decoder().feed(data)


@given(st.binary(max_size=120), st.integers(0, 3))
@FUZZ
def test_real_packets_survive_noise_before_them(noise: bytes, k: int) -> None:
    packet = encode_ua767pbt(130, 85, 66 + k)
    dec = ua767pbt.decoder()
    frames = dec.feed(noise.replace(b"\x02", b"\x03") + packet)
    assert [f.pulse for f in frames][-1:] == [66 + k]
