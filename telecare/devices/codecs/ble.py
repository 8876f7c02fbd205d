"""Bluetooth SIG health characteristics as forwarded by a BLE hub over MQTT.

Message codecs (one whole GATT value per MQTT payload, little-endian), raising
:class:`~devices.codecs.Malformed` only:

* ``decode_2a5e`` PLX Spot-Check Measurement: flags(u8), SpO2, PR, [timestamp (bit 0)],
  [measurement status u16 (bit 1)], [device & sensor status u24 (bit 2)],
  [pulse amplitude index (bit 3)]; bit 4 = device clock not set.
* ``decode_2a5f`` PLX Continuous Measurement: flags(u8), SpO2, PR (normal),
  [SpO2/PR fast (bit 0)], [SpO2/PR slow (bit 1)], [measurement status u16 (bit 2)],
  [device & sensor status u24 (bit 3)], [pulse amplitude index (bit 4)].
* ``decode_2a35`` Blood Pressure Measurement: flags(u8), systolic, diastolic, MAP,
  [timestamp (bit 1)], [pulse rate (bit 2)], [user id u8 (bit 3)],
  [measurement status u16 (bit 4)]; bit 0 = units kPa (converted to mmHg here).

Numbers are IEEE 11073-20601 SFLOAT: 4-bit signed exponent (base 10), 12-bit signed
mantissa. Mantissas 0x7FE..0x802 are the special values +INF, NaN, NRes, reserved and
-INF; we treat them as such whatever the exponent, so the valid mantissa range is
-2045..+2045. A special value is kept as an :class:`SfloatSpecial` and never becomes a
reading. Timestamps are the 7-byte Date Time (year u16, month, day, h, m, s).
Reserved flag bits are ignored; trailing bytes are accepted only when a reserved flag
bit is set (a future optional field), otherwise they are Malformed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import Enum

from telecare.devices.codecs import Malformed
from telecare.devices.model import Metric, ModelError, Reading

__all__ = [
    "KPA_TO_MMHG",
    "UNKNOWN_USER",
    "BloodPressure",
    "PlxContinuous",
    "PlxSpotCheck",
    "SfloatSpecial",
    "Value",
    "bp_readings",
    "decode_2a5e",
    "decode_2a5f",
    "decode_2a35",
    "decode_sfloat",
    "measured_at",
    "missing",
    "plx_readings",
    "unusable",
]

#: 1 kPa in mmHg (101.325 kPa = 760 mmHg).
KPA_TO_MMHG = 760.0 / 101.325


class SfloatSpecial(Enum):
    """The reserved SFLOAT values (raw 16-bit codes with exponent 0)."""

    NAN = 0x07FF
    NRES = 0x0800
    POS_INF = 0x07FE
    NEG_INF = 0x0802
    RESERVED = 0x0801


_SPECIAL_BY_MANTISSA = {s.value: s for s in SfloatSpecial}
_POW10 = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)

#: A decoded SFLOAT: a number or one of the special "no value" codes.
Value = float | SfloatSpecial


def decode_sfloat(raw: int) -> Value:
    """Decode a 16-bit SFLOAT."""
    mantissa = raw & 0x0FFF
    special = _SPECIAL_BY_MANTISSA.get(mantissa)
    if special is not None:
        return special
    exponent = raw >> 12
    if exponent >= 8:
        exponent -= 16
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    if exponent >= 0:
        return float(mantissa * _POW10[exponent])
    return mantissa / _POW10[-exponent]


class _Reader:
    def __init__(self, name: str, payload: bytes) -> None:
        self.name = name
        self.data = payload
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise Malformed(
                f"{self.name}: truncated at {what} (needs {self.pos + n} bytes, "
                f"payload has {len(self.data)})"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "little")

    def sfloat(self, what: str) -> Value:
        return decode_sfloat(self.uint(2, what))

    def timestamp(self) -> datetime | None:
        b = self.take(7, "timestamp")
        year = int.from_bytes(b[0:2], "little")
        month, day, hour, minute, second = b[2], b[3], b[4], b[5], b[6]
        if year == 0 or month == 0 or day == 0:
            return None  # "unknown" per the Date Time characteristic
        try:
            return datetime(year, month, day, hour, minute, second)
        except ValueError:
            raise Malformed(
                f"{self.name}: timestamp {year}-{month}-{day} {hour}:{minute}:{second} "
                "is not a valid date/time"
            ) from None

    def end(self, flags: int, known: int) -> None:
        if self.pos != len(self.data) and not flags & ~known & 0xFF:
            raise Malformed(
                f"{self.name}: {len(self.data) - self.pos} unexpected trailing bytes "
                f"for flags 0x{flags:02x}"
            )


@dataclass(frozen=True, slots=True)
class PlxSpotCheck:
    """0x2A5E PLX Spot-Check Measurement."""

    spo2: Value
    pulse: Value
    timestamp: datetime | None = None
    measurement_status: int | None = None
    device_status: int | None = None
    pulse_amplitude_index: Value | None = None
    clock_not_set: bool = False


@dataclass(frozen=True, slots=True)
class PlxContinuous:
    """0x2A5F PLX Continuous Measurement (normal, and optional fast/slow averages)."""

    spo2: Value
    pulse: Value
    spo2_fast: Value | None = None
    pulse_fast: Value | None = None
    spo2_slow: Value | None = None
    pulse_slow: Value | None = None
    measurement_status: int | None = None
    device_status: int | None = None
    pulse_amplitude_index: Value | None = None


@dataclass(frozen=True, slots=True)
class BloodPressure:
    """0x2A35 Blood Pressure Measurement, pressures already in mmHg."""

    systolic: Value
    diastolic: Value
    mean_arterial: Value
    #: The unit the cuff sent (``mmHg`` or ``kPa``); values here are always mmHg.
    sent_unit: str = "mmHg"
    timestamp: datetime | None = None
    pulse: Value | None = None
    user_id: int | None = None
    measurement_status: int | None = None


def _payload(name: str, payload: object) -> bytes:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise Malformed(f"{name}: payload is {type(payload).__name__}, not bytes")
    return bytes(payload)


def decode_2a5e(payload: bytes) -> PlxSpotCheck:
    """Decode a PLX Spot-Check Measurement value."""
    r = _Reader("0x2A5E", _payload("0x2A5E", payload))
    flags = r.uint(1, "flags")
    spo2 = r.sfloat("SpO2")
    pulse = r.sfloat("pulse rate")
    ts = r.timestamp() if flags & 0x01 else None
    status = r.uint(2, "measurement status") if flags & 0x02 else None
    device = r.uint(3, "device and sensor status") if flags & 0x04 else None
    pai = r.sfloat("pulse amplitude index") if flags & 0x08 else None
    r.end(flags, 0x1F)
    return PlxSpotCheck(spo2, pulse, ts, status, device, pai, bool(flags & 0x10))


def decode_2a5f(payload: bytes) -> PlxContinuous:
    """Decode a PLX Continuous Measurement value."""
    r = _Reader("0x2A5F", _payload("0x2A5F", payload))
    flags = r.uint(1, "flags")
    spo2 = r.sfloat("SpO2")
    pulse = r.sfloat("pulse rate")
    spo2_fast = pulse_fast = spo2_slow = pulse_slow = None
    if flags & 0x01:
        spo2_fast, pulse_fast = r.sfloat("SpO2 fast"), r.sfloat("pulse fast")
    if flags & 0x02:
        spo2_slow, pulse_slow = r.sfloat("SpO2 slow"), r.sfloat("pulse slow")
    status = r.uint(2, "measurement status") if flags & 0x04 else None
    device = r.uint(3, "device and sensor status") if flags & 0x08 else None
    pai = r.sfloat("pulse amplitude index") if flags & 0x10 else None
    r.end(flags, 0x1F)
    return PlxContinuous(
        spo2, pulse, spo2_fast, pulse_fast, spo2_slow, pulse_slow, status, device, pai
    )


def _kpa(value: Value) -> Value:
    if isinstance(value, SfloatSpecial):
        return value
    return round(value * KPA_TO_MMHG, 1)


def decode_2a35(payload: bytes) -> BloodPressure:
    """Decode a Blood Pressure Measurement value (kPa converted to mmHg, 0.1 precision)."""
    r = _Reader("0x2A35", _payload("0x2A35", payload))
    flags = r.uint(1, "flags")
    sys_, dia, mean = r.sfloat("systolic"), r.sfloat("diastolic"), r.sfloat("MAP")
    kpa = bool(flags & 0x01)
    if kpa:
        sys_, dia, mean = _kpa(sys_), _kpa(dia), _kpa(mean)
    ts = r.timestamp() if flags & 0x02 else None
    pulse = r.sfloat("pulse rate") if flags & 0x04 else None
    user = r.uint(1, "user id") if flags & 0x08 else None
    status = r.uint(2, "measurement status") if flags & 0x10 else None
    r.end(flags, 0x1F)
    return BloodPressure(sys_, dia, mean, "kPa" if kpa else "mmHg", ts, pulse, user, status)


#: 0x2A35 user id meaning "unknown user" (BLS 1.0).
UNKNOWN_USER = 0xFF

#: PLX Measurement Status bits that make a value unusable as a patient measurement.
_PLX_MEASUREMENT_UNUSABLE = {
    10: "data for demonstration",
    11: "data for testing",
    12: "calibration ongoing",
    13: "measurement unavailable",
    15: "invalid measurement detected",
}
#: PLX Device and Sensor Status bits that make a value unusable.
_PLX_SENSOR_UNUSABLE = {
    1: "equipment malfunction detected",
    11: "sensor unconnected to user",
    12: "unknown sensor connected",
    13: "sensor displaced",
    14: "sensor malfunctioning",
    15: "sensor disconnected",
}


def unusable(frame: PlxSpotCheck | PlxContinuous | BloodPressure) -> list[str]:
    """Why a PLX value must not be taken as a measurement of the patient (demo or test
    data, an invalid or unavailable measurement, a disconnected or faulty sensor),
    from its Measurement Status and Device and Sensor Status fields; empty if usable.
    "Data from measurement storage" is usable: it is a late value with its own time."""
    if isinstance(frame, BloodPressure):
        return []
    why: list[str] = []
    for field_value, bits in (
        (frame.measurement_status, _PLX_MEASUREMENT_UNUSABLE),
        (frame.device_status, _PLX_SENSOR_UNUSABLE),
    ):
        if field_value is not None:
            why.extend(text for bit, text in bits.items() if field_value >> bit & 1)
    return why


def measured_at(frame: PlxSpotCheck | PlxContinuous | BloodPressure) -> datetime | None:
    """When the device took the measurement (its Date Time field, read as UTC: hubs set
    their sensors' clocks in UTC), or ``None`` when it sent no usable time."""
    ts = getattr(frame, "timestamp", None)
    if ts is None or getattr(frame, "clock_not_set", False):
        return None
    result: datetime = ts.replace(tzinfo=UTC)
    return result


def missing(frame: PlxSpotCheck | PlxContinuous | BloodPressure) -> dict[str, SfloatSpecial]:
    """The fields of ``frame`` that carry a special (no-value) SFLOAT, by name."""
    return {
        f.name: value
        for f in fields(frame)
        if isinstance(value := getattr(frame, f.name), SfloatSpecial)
    }


def _readings(
    values: list[tuple[Metric, Value | None]],
    *,
    device_id: str,
    ts: datetime,
    msg_id: str,
    resident_id: str | None,
    site_id: str | None,
) -> list[Reading]:
    out: list[Reading] = []
    for metric, value in values:
        if value is None or isinstance(value, SfloatSpecial):
            continue
        try:
            out.append(
                Reading(
                    device_id=device_id,
                    metric=metric,
                    value=value,
                    unit=metric.unit,
                    ts=ts,
                    msg_id=msg_id,
                    resident_id=resident_id,
                    site_id=site_id,
                )
            )
        except ModelError as exc:
            raise Malformed(f"BLE measurement rejected: {exc}") from None
    return out


def plx_readings(
    frame: PlxSpotCheck | PlxContinuous,
    *,
    device_id: str,
    ts: datetime,
    msg_id: str,
    resident_id: str | None = None,
    site_id: str | None = None,
) -> list[Reading]:
    """SpO2 and pulse readings (the normal/spot values); specials give none."""
    return _readings(
        [(Metric.SPO2, frame.spo2), (Metric.PULSE, frame.pulse)],
        device_id=device_id,
        ts=ts,
        msg_id=msg_id,
        resident_id=resident_id,
        site_id=site_id,
    )


def bp_readings(
    frame: BloodPressure,
    *,
    device_id: str,
    ts: datetime,
    msg_id: str,
    resident_id: str | None = None,
    site_id: str | None = None,
) -> list[Reading]:
    """Systolic, diastolic, MAP and pulse readings in mm[Hg] and /min; specials give none."""
    return _readings(
        [
            (Metric.SYSTOLIC_BP, frame.systolic),
            (Metric.DIASTOLIC_BP, frame.diastolic),
            (Metric.MEAN_ARTERIAL_PRESSURE, frame.mean_arterial),
            (Metric.PULSE, frame.pulse),
        ],
        device_id=device_id,
        ts=ts,
        msg_id=msg_id,
        resident_id=resident_id,
        site_id=site_id,
    )
