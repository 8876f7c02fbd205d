"""Bluetooth SIG 0x2A5E / 0x2A5F / 0x2A35 and IEEE 11073 SFLOAT."""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.devices.codecs import Malformed, ble
from telecare.devices.codecs.ble import SfloatSpecial
from telecare.devices.model import Metric
from telecare.firmware_stubs.ble_hub import encode_2a5e, encode_2a5f, encode_2a35, encode_sfloat
from tests.devices.conftest import T0

FUZZ = settings(max_examples=300, deadline=None)


# ---------------------------------------------------------------- SFLOAT


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (0x0062, 98.0),  # exponent 0, mantissa 98
        (0xF024, 3.6),  # exponent -1, mantissa 36
        (0xE16C, 3.64),  # exponent -2, mantissa 364
        (0x2001, 100.0),  # exponent 2, mantissa 1
        (0x0FFF, -1.0),  # exponent 0, mantissa -1
        (0xF7FD, 204.5),  # exponent -1, mantissa 2045 (largest valid)
        (0x0803, -2045.0),  # smallest valid mantissa
        (0x0000, 0.0),
    ],
)
def test_sfloat_known_values(raw: int, value: float) -> None:
    assert ble.decode_sfloat(raw) == value


@pytest.mark.parametrize(
    ("raw", "special"),
    [
        (0x07FF, SfloatSpecial.NAN),
        (0x0800, SfloatSpecial.NRES),
        (0x07FE, SfloatSpecial.POS_INF),
        (0x0802, SfloatSpecial.NEG_INF),
        (0x0801, SfloatSpecial.RESERVED),
        (0xF7FF, SfloatSpecial.NAN),  # special mantissa with a non-zero exponent too
    ],
)
def test_sfloat_reserved_values(raw: int, special: SfloatSpecial) -> None:
    assert ble.decode_sfloat(raw) is special
    assert encode_sfloat(special) == special.value


@pytest.mark.parametrize("special", list(SfloatSpecial))
def test_every_reserved_value_never_becomes_a_reading(special: SfloatSpecial) -> None:
    spot = ble.decode_2a5e(encode_2a5e(special, special))
    assert ble.plx_readings(spot, device_id="ox", ts=T0, msg_id="m") == []
    assert ble.missing(spot) == {"spo2": special, "pulse": special}
    bp = ble.decode_2a35(encode_2a35(special, special, special, kpa=True, pulse=special))
    assert ble.bp_readings(bp, device_id="cuff", ts=T0, msg_id="m") == []
    assert set(ble.missing(bp)) == {"systolic", "diastolic", "mean_arterial", "pulse"}


@FUZZ
@given(st.integers(0, 0xFFFF))
def test_sfloat_decode_encode_round_trip(raw: int) -> None:
    value = ble.decode_sfloat(raw)
    again = ble.decode_sfloat(encode_sfloat(value))
    if isinstance(value, SfloatSpecial):
        assert again is value
    else:
        assert isinstance(again, float)
        assert math.isclose(again, value, rel_tol=1e-9, abs_tol=1e-12)


# ---------------------------------------------------------------- 0x2A5E


def test_2a5e_known_vector() -> None:
    # flags 0; SpO2 98 (0x0062), PR 72 (0x0048), little-endian
    m = ble.decode_2a5e(bytes([0x00, 0x62, 0x00, 0x48, 0x00]))
    assert (m.spo2, m.pulse, m.timestamp, m.clock_not_set) == (98.0, 72.0, None, False)
    readings = ble.plx_readings(m, device_id="ox", ts=T0, msg_id="m", site_id="s1")
    assert [(r.metric, r.value, r.unit) for r in readings] == [
        (Metric.SPO2, 98.0, "%"),
        (Metric.PULSE, 72.0, "/min"),
    ]


def test_2a5e_all_optional_fields() -> None:
    payload = (
        bytes([0x1F, 0x61, 0x00, 0x50, 0x00])  # flags: ts, status, dev status, PAI, clock
        + bytes([0xE4, 0x07, 12, 31, 23, 59, 58])  # 2020-12-31 23:59:58
        + bytes([0x20, 0x00])  # measurement status
        + bytes([0x01, 0x02, 0x03])  # device & sensor status (24 bit)
        + bytes([0x24, 0xF0])  # PAI 3.6
    )
    m = ble.decode_2a5e(payload)
    assert m.timestamp == datetime(2020, 12, 31, 23, 59, 58)
    assert (m.measurement_status, m.device_status) == (0x0020, 0x030201)
    assert m.pulse_amplitude_index == 3.6
    assert m.clock_not_set


def test_2a5e_unknown_timestamp_is_none() -> None:
    payload = bytes([0x01, 0x61, 0x00, 0x50, 0x00, 0, 0, 0, 0, 0, 0, 0])
    assert ble.decode_2a5e(payload).timestamp is None


# ---------------------------------------------------------------- 0x2A5F


def test_2a5f_known_vector_with_fast_and_pai() -> None:
    payload = bytes([0x11, 0x60, 0x00, 0x4B, 0x00, 0x5F, 0x00, 0x4D, 0x00, 0x6C, 0xE1])
    m = ble.decode_2a5f(payload)
    assert (m.spo2, m.pulse, m.spo2_fast, m.pulse_fast) == (96.0, 75.0, 95.0, 77.0)
    assert (m.spo2_slow, m.pulse_slow) == (None, None)
    assert m.pulse_amplitude_index == 3.64


def test_2a5f_layout_differs_from_2a5e() -> None:
    # flag bit 0 means SpO2PR-Fast in 0x2A5F but timestamp in 0x2A5E
    payload = encode_2a5f(96, 75, fast=(95, 77))
    assert ble.decode_2a5f(payload).spo2_fast == 95.0
    with pytest.raises(Malformed, match="timestamp"):
        ble.decode_2a5e(payload)


# ---------------------------------------------------------------- 0x2A35


def test_2a35_known_vector_mmhg() -> None:
    # flags 0x04 (pulse); 120/80 MAP 93, pulse 72
    payload = bytes([0x04, 0x78, 0x00, 0x50, 0x00, 0x5D, 0x00, 0x48, 0x00])
    m = ble.decode_2a35(payload)
    assert (m.systolic, m.diastolic, m.mean_arterial, m.pulse) == (120.0, 80.0, 93.0, 72.0)
    readings = ble.bp_readings(m, device_id="cuff", ts=T0, msg_id="m")
    assert [(r.metric, r.value, r.unit) for r in readings] == [
        (Metric.SYSTOLIC_BP, 120.0, "mm[Hg]"),
        (Metric.DIASTOLIC_BP, 80.0, "mm[Hg]"),
        (Metric.MEAN_ARTERIAL_PRESSURE, 93.0, "mm[Hg]"),
        (Metric.PULSE, 72.0, "/min"),
    ]


def test_2a35_kpa_converted_to_mmhg() -> None:
    # flags 0x01 kPa: 16.0 (0xF0A0), 10.7 (0xF06B), MAP NaN (0x07FF)
    m = ble.decode_2a35(bytes([0x01, 0xA0, 0xF0, 0x6B, 0xF0, 0xFF, 0x07]))
    assert m.sent_unit == "kPa"
    assert m.systolic == 120.0  # 16.0 kPa * 7.50062 = 120.01
    assert m.diastolic == 80.3  # 10.7 kPa * 7.50062 = 80.26
    assert m.mean_arterial is SfloatSpecial.NAN
    readings = ble.bp_readings(m, device_id="cuff", ts=T0, msg_id="m")
    assert [r.metric for r in readings] == [Metric.SYSTOLIC_BP, Metric.DIASTOLIC_BP]


def test_2a35_all_optional_fields() -> None:
    payload = encode_2a35(
        132,
        85,
        101,
        timestamp=datetime(2026, 1, 5, 9, 30, 0),
        pulse=64,
        user_id=2,
        measurement_status=0x0004,
    )
    assert payload[0] == 0x1E
    m = ble.decode_2a35(payload)
    assert (m.timestamp, m.pulse, m.user_id, m.measurement_status) == (
        datetime(2026, 1, 5, 9, 30, 0),
        64.0,
        2,
        4,
    )


def test_implausible_values_are_malformed_not_model_errors() -> None:
    m = ble.decode_2a35(encode_2a35(900, 80, 90))
    with pytest.raises(Malformed, match="impossible"):
        ble.bp_readings(m, device_id="cuff", ts=T0, msg_id="m")


@pytest.mark.parametrize(
    ("decode", "payload", "reason"),
    [
        (ble.decode_2a35, b"", "truncated at flags"),
        (ble.decode_2a35, bytes([0x00, 0x78, 0x00, 0x50]), "truncated at diastolic"),
        (ble.decode_2a35, bytes([0x02, 0x78, 0, 0x50, 0, 0x5D, 0]), "truncated at timestamp"),
        (ble.decode_2a5e, bytes([0x00, 0x62, 0x00, 0x48, 0x00, 0x99]), "trailing"),
        (ble.decode_2a5f, bytes([0x08, 0x62, 0x00, 0x48, 0x00, 1]), "device and sensor status"),
        (ble.decode_2a5e, bytes([0x01, 0x62, 0, 0x48, 0, 0xE4, 0x07, 13, 1, 0, 0, 0]), "valid"),
    ],
)
def test_malformed_payloads(decode: object, payload: bytes, reason: str) -> None:
    assert callable(decode)
    with pytest.raises(Malformed, match=reason):
        decode(payload)


def test_trailing_bytes_allowed_with_reserved_flag() -> None:
    m = ble.decode_2a5e(bytes([0x80, 0x62, 0x00, 0x48, 0x00, 0x99, 0x99]))
    assert m.spo2 == 98.0


# ---------------------------------------------------------------- round trips and fuzz

numbers = st.decimals(min_value=0, max_value=204, places=1).map(float)
maybe = st.one_of(st.none(), numbers)
specials = st.sampled_from(list(SfloatSpecial))
values = st.one_of(numbers, specials)
stamps = st.one_of(
    st.none(),
    st.datetimes(datetime(1582, 1, 1), datetime(9999, 12, 31)).map(
        lambda d: d.replace(microsecond=0)
    ),
)


@FUZZ
@given(
    spo2=values,
    pulse=values,
    ts=stamps,
    status=st.one_of(st.none(), st.integers(0, 0xFFFF)),
    device=st.one_of(st.none(), st.integers(0, 0xFFFFFF)),
    pai=st.one_of(st.none(), values),
    clock=st.booleans(),
)
def test_2a5e_round_trip(
    spo2: ble.Value,
    pulse: ble.Value,
    ts: datetime | None,
    status: int | None,
    device: int | None,
    pai: ble.Value | None,
    clock: bool,
) -> None:
    payload = encode_2a5e(
        spo2,
        pulse,
        timestamp=ts,
        measurement_status=status,
        device_status=device,
        pulse_amplitude_index=pai,
        clock_not_set=clock,
    )
    assert ble.decode_2a5e(payload) == ble.PlxSpotCheck(spo2, pulse, ts, status, device, pai, clock)


@FUZZ
@given(
    normal=st.tuples(values, values),
    fast=st.one_of(st.none(), st.tuples(values, values)),
    slow=st.one_of(st.none(), st.tuples(values, values)),
    status=st.one_of(st.none(), st.integers(0, 0xFFFF)),
    device=st.one_of(st.none(), st.integers(0, 0xFFFFFF)),
    pai=st.one_of(st.none(), values),
)
def test_2a5f_round_trip(
    normal: tuple[ble.Value, ble.Value],
    fast: tuple[ble.Value, ble.Value] | None,
    slow: tuple[ble.Value, ble.Value] | None,
    status: int | None,
    device: int | None,
    pai: ble.Value | None,
) -> None:
    payload = encode_2a5f(
        *normal,
        fast=fast,
        slow=slow,
        measurement_status=status,
        device_status=device,
        pulse_amplitude_index=pai,
    )
    m = ble.decode_2a5f(payload)
    assert (m.spo2, m.pulse) == normal
    assert (m.spo2_fast, m.pulse_fast) == (fast or (None, None))
    assert (m.spo2_slow, m.pulse_slow) == (slow or (None, None))
    assert (m.measurement_status, m.device_status, m.pulse_amplitude_index) == (
        status,
        device,
        pai,
    )


@FUZZ
@given(
    bp=st.tuples(values, values, values),
    kpa=st.booleans(),
    ts=stamps,
    pulse=st.one_of(st.none(), values),
    user=st.one_of(st.none(), st.integers(0, 255)),
)
def test_2a35_round_trip(
    bp: tuple[ble.Value, ble.Value, ble.Value],
    kpa: bool,
    ts: datetime | None,
    pulse: ble.Value | None,
    user: int | None,
) -> None:
    m = ble.decode_2a35(encode_2a35(*bp, kpa=kpa, timestamp=ts, pulse=pulse, user_id=user))
    for got, sent in zip((m.systolic, m.diastolic, m.mean_arterial), bp, strict=True):
        if isinstance(sent, SfloatSpecial):
            assert got is sent
        else:
            assert isinstance(got, float)
            # in kPa, SFLOAT resolution is 0.01 kPa up to 20.45 kPa and 0.1 kPa above
            # (0.75 mmHg), then the decoder rounds to 0.1 mmHg
            assert abs(got - sent) <= (0.05 * 7.50062 + 0.05 + 1e-9 if kpa else 1e-9)
    assert (m.timestamp, m.pulse, m.user_id) == (ts, pulse, user)


@FUZZ
@given(st.binary(max_size=40))
def test_fuzz_decoders_raise_only_malformed(payload: bytes) -> None:
    for decode in (ble.decode_2a5e, ble.decode_2a5f, ble.decode_2a35):
        try:
            frame = decode(payload)
        except Malformed:
            continue
        try:
            if isinstance(frame, ble.BloodPressure):
                ble.bp_readings(frame, device_id="d", ts=T0, msg_id="m")
            else:
                ble.plx_readings(frame, device_id="d", ts=T0, msg_id="m")
        except Malformed:
            pass


def test_non_bytes_payload_is_malformed() -> None:
    with pytest.raises(Malformed, match="not bytes"):
        ble.decode_2a35("0078" * 4)  # type: ignore[arg-type]
