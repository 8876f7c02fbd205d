"""Simulated A&D UA-767PBT blood-pressure cuff: the packet it sends over Bluetooth SPP
after a measurement (60-byte little-endian header, data section in printable hex with
systolic MINUS diastolic), and a stub that writes packets to a serial device path (a pty
slave) or a pty master fd.

The encoder is pure and is the reference for the codec's round-trip tests.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterable
from datetime import datetime

from telecare.devices.codecs.ua767pbt import DEVICE_TYPE, HEADER_LEN, PACKET_TYPE

__all__ = ["encode_ua767pbt", "run_bp_cuff"]


def encode_ua767pbt(
    systolic: int,
    diastolic: int,
    pulse: int,
    mean_arterial: int | None = None,
    *,
    measured_at: datetime | None = None,
    sent_at: datetime | None = None,
    serial: str = "5130651010",
    battery: int = 0x64,
    valid: bool = True,
    bluetooth_id: bytes = b"\x00\x09\x1f\x80\x07\x3a",
) -> bytes:
    """One UA-767PBT packet for a measurement of ``systolic``/``diastolic`` mmHg.

    The data section carries ``systolic - diastolic`` (as the cuff does), each field as two
    uppercase hex digits; ``mean_arterial`` defaults to ``diastolic + (sys - dia) / 3``.
    """
    diff = systolic - diastolic
    if mean_arterial is None:
        mean_arterial = diastolic + round(diff / 3)
    for name, value in (
        ("systolic - diastolic", diff),
        ("diastolic", diastolic),
        ("pulse", pulse),
        ("MAP", mean_arterial),
    ):
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{name} {value} does not fit two hex digits (0..255)")
    measured = measured_at or datetime(2026, 1, 1, 9, 30, 0)
    sent = sent_at or measured
    data = f"{0x80 if valid else 0x00:02X}{diff:02X}{diastolic:02X}{pulse:02X}{mean_arterial:02X}"
    header = bytearray(HEADER_LEN)
    struct.pack_into("<HIHB", header, 0, PACKET_TYPE, len(data), DEVICE_TYPE, 0)
    _pack_time(header, 9, measured)
    _pack_time(header, 16, sent)
    header[23:29] = bluetooth_id[:6].ljust(6, b"\x00")
    header[35:47] = serial.encode("ascii")[:12].ljust(12, b"\x00")
    header[57] = battery & 0xFF
    return bytes(header) + data.encode("ascii")


def _pack_time(buf: bytearray, offset: int, t: datetime) -> None:
    struct.pack_into("<HBBBBB", buf, offset, t.year, t.month, t.day, t.hour, t.minute, t.second)


async def run_bp_cuff(target: str | int, packets: Iterable[bytes], interval_s: float = 0.0) -> None:
    """Write ``packets`` to ``target`` (a serial device path, or an open fd) one at a time."""
    fd = os.open(target, os.O_WRONLY | os.O_NOCTTY) if isinstance(target, str) else target
    try:
        for packet in packets:
            view = memoryview(packet)
            while view:
                view = view[os.write(fd, view) :]
            await asyncio.sleep(interval_s)
    finally:
        if isinstance(target, str):
            os.close(fd)
