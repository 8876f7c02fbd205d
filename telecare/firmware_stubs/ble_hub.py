"""Simulated BLE hub: the GATT values a pulse oximeter (0x2A5E spot-check, 0x2A5F
continuous) or a blood pressure cuff (0x2A35) notifies, which the hub forwards over MQTT.

Pure encoders (the MQTT publishing is wired by the gateway's simulator). Numbers are
encoded as IEEE 11073 SFLOAT; pass an :class:`SfloatSpecial` to send NaN, NRes, ±INF or
the reserved value.
"""

from __future__ import annotations

from datetime import datetime

from telecare.devices.codecs.ble import KPA_TO_MMHG, SfloatSpecial, Value

__all__ = ["encode_2a5e", "encode_2a5f", "encode_2a35", "encode_sfloat", "sfloat_bytes"]

_MAX_MANTISSA = 2045


def encode_sfloat(value: Value) -> int:
    """The 16-bit SFLOAT closest to ``value``, with the most precision that fits.

    Raises ``ValueError`` for values too large for SFLOAT or non-finite floats.
    """
    if isinstance(value, SfloatSpecial):
        return value.value
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not finite; pass an SfloatSpecial")
    for exponent in range(-8, 8):
        mantissa = round(value * 10.0**-exponent)
        if abs(mantissa) <= _MAX_MANTISSA:
            return ((exponent & 0x0F) << 12) | (mantissa & 0x0FFF)
    raise ValueError(f"{value!r} does not fit in an SFLOAT")


def sfloat_bytes(value: Value) -> bytes:
    return encode_sfloat(value).to_bytes(2, "little")


def _timestamp(ts: datetime) -> bytes:
    return ts.year.to_bytes(2, "little") + bytes((ts.month, ts.day, ts.hour, ts.minute, ts.second))


def encode_2a5e(
    spo2: Value,
    pulse: Value,
    *,
    timestamp: datetime | None = None,
    measurement_status: int | None = None,
    device_status: int | None = None,
    pulse_amplitude_index: Value | None = None,
    clock_not_set: bool = False,
) -> bytes:
    """A PLX Spot-Check Measurement value."""
    flags = 0
    body = sfloat_bytes(spo2) + sfloat_bytes(pulse)
    if timestamp is not None:
        flags |= 0x01
        body += _timestamp(timestamp)
    if measurement_status is not None:
        flags |= 0x02
        body += measurement_status.to_bytes(2, "little")
    if device_status is not None:
        flags |= 0x04
        body += device_status.to_bytes(3, "little")
    if pulse_amplitude_index is not None:
        flags |= 0x08
        body += sfloat_bytes(pulse_amplitude_index)
    if clock_not_set:
        flags |= 0x10
    return bytes((flags,)) + body


def encode_2a5f(
    spo2: Value,
    pulse: Value,
    *,
    fast: tuple[Value, Value] | None = None,
    slow: tuple[Value, Value] | None = None,
    measurement_status: int | None = None,
    device_status: int | None = None,
    pulse_amplitude_index: Value | None = None,
) -> bytes:
    """A PLX Continuous Measurement value."""
    flags = 0
    body = sfloat_bytes(spo2) + sfloat_bytes(pulse)
    if fast is not None:
        flags |= 0x01
        body += sfloat_bytes(fast[0]) + sfloat_bytes(fast[1])
    if slow is not None:
        flags |= 0x02
        body += sfloat_bytes(slow[0]) + sfloat_bytes(slow[1])
    if measurement_status is not None:
        flags |= 0x04
        body += measurement_status.to_bytes(2, "little")
    if device_status is not None:
        flags |= 0x08
        body += device_status.to_bytes(3, "little")
    if pulse_amplitude_index is not None:
        flags |= 0x10
        body += sfloat_bytes(pulse_amplitude_index)
    return bytes((flags,)) + body


def encode_2a35(
    systolic: Value,
    diastolic: Value,
    mean_arterial: Value,
    *,
    kpa: bool = False,
    timestamp: datetime | None = None,
    pulse: Value | None = None,
    user_id: int | None = None,
    measurement_status: int | None = None,
) -> bytes:
    """A Blood Pressure Measurement value. Pressures are given in mmHg; with ``kpa`` the
    cuff sends them in kPa (converted here, as a cuff set to kPa would)."""

    def pressure(v: Value) -> bytes:
        if kpa and not isinstance(v, SfloatSpecial):
            v = round(v / KPA_TO_MMHG, 2)
        return sfloat_bytes(v)

    flags = 0x01 if kpa else 0
    body = pressure(systolic) + pressure(diastolic) + pressure(mean_arterial)
    if timestamp is not None:
        flags |= 0x02
        body += _timestamp(timestamp)
    if pulse is not None:
        flags |= 0x04
        body += sfloat_bytes(pulse)
    if user_id is not None:
        flags |= 0x08
        body += bytes((user_id,))
    if measurement_status is not None:
        flags |= 0x10
        body += measurement_status.to_bytes(2, "little")
    return bytes((flags,)) + body
