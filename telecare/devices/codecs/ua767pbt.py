"""A&D UA-767PBT blood-pressure monitor (Bluetooth SPP, non-Continua firmware).

The cuff sends one packet per measurement over a Bluetooth serial port (an ``rfcomm``
tty): a 60-byte binary header, then a data section in **printable hex** (ASCII). Integers
in the header are little-endian::

    offset  size  field
    0       2     packet type, always 2
    2       4     packet length: bytes after the 60-byte header (10 for blood pressure)
    6       2     device type: 767 (0x02FF) for a UA-767PBT
    8       1     flag
    9       2+5   measurement time: year, month, day, hour, minute, second (device clock)
    16      2+5   transmission time, same layout
    23      6     Bluetooth id of the cuff
    29      6     Bluetooth id of the access point (zeros)
    35      12    serial number (ASCII)
    47      10    reserved
    57      1     battery status
    58      1     reserved
    59      1     firmware / hardware revision

    data section (blood pressure), two printable hex digits per field:
    0-1     valid flag, "80" for a valid measurement (anything else: invalid)
    2-3     systolic MINUS diastolic (mmHg)
    4-5     diastolic (mmHg)
    6-7     pulse (/min)
    8-9     mean arterial pressure (mmHg)

**Pitfall**: bytes 2-3 are the *difference* systolic - diastolic, not systolic; systolic is
``difference + diastolic``. A reader that takes the first value as systolic under-reports
systolic by the diastolic pressure (120/80 would read 40/80) and scores NEWS2 red.

Source: A&D "PBT series Bluetooth communication specification" as published in the NexJ
PhoneGap healthcare adapter specification (header and blood-pressure data section);
PRODUCT.md. The cuff may resend a packet it got no confirmation for: the message id is
built from the serial number and the measurement time (:func:`msg_id_of`), so a resend
is recognised as the same measurement.

Resync: a packet starts with ``02 00``; bytes that cannot start one are skipped. A header
whose device type is not 767 or whose length is implausible is treated as a false start
(skip one byte). A whole packet with an invalid measurement or a data section that is not
hex is Malformed with ``skip`` covering the packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime

from telecare.devices.codecs import Incomplete, Malformed
from telecare.devices.codecs.stream import StreamDecoder
from telecare.devices.model import Metric, ModelError, Reading

__all__ = [
    "BP_DATA_LEN",
    "DEVICE_TYPE",
    "HEADER_LEN",
    "CuffMeasurement",
    "decoder",
    "msg_id_of",
    "parse",
    "parse_data",
    "readings",
]

HEADER_LEN = 60
BP_DATA_LEN = 10
DEVICE_TYPE = 767
PACKET_TYPE = 2
#: The longest data section we accept (a firmware may append fields after the BP ones).
MAX_DATA_LEN = 64
_START = b"\x02\x00"
_HEX = frozenset(b"0123456789ABCDEFabcdef")


@dataclass(frozen=True, slots=True)
class CuffMeasurement:
    """One blood-pressure measurement, systolic already reconstructed (mmHg, /min)."""

    systolic: int
    diastolic: int
    pulse: int
    mean_arterial: int
    #: The cuff's clock (no zone); ``None`` when the header's date is not a valid date.
    device_time: datetime | None = None
    serial: str = ""
    battery: int = 0


def parse(buffer: bytes) -> tuple[CuffMeasurement, int]:
    """Parse one packet from the start of ``buffer`` (see the module docstring)."""
    if not buffer:
        raise Incomplete("empty buffer")
    if not buffer.startswith(_START[: len(buffer)]):
        nxt = buffer.find(_START, 1)
        if nxt < 0:
            # keep a trailing 0x02: it may be the first byte of the next packet
            nxt = len(buffer) - 1 if buffer[-1] == _START[0] else len(buffer)
        raise Malformed("bytes before an A&D packet start (02 00)", skip=max(1, nxt))
    if len(buffer) < HEADER_LEN:
        raise Incomplete(f"{len(buffer)} of {HEADER_LEN} header bytes")
    (length,) = struct.unpack_from("<I", buffer, 2)
    (device_type,) = struct.unpack_from("<H", buffer, 6)
    if device_type != DEVICE_TYPE:
        raise Malformed(f"A&D device type {device_type} is not a UA-767PBT ({DEVICE_TYPE})")
    if not BP_DATA_LEN <= length <= MAX_DATA_LEN:
        raise Malformed(f"A&D packet length {length} is not {BP_DATA_LEN}..{MAX_DATA_LEN}")
    total = HEADER_LEN + length
    if len(buffer) < total:
        raise Incomplete(f"{len(buffer)} of {total} packet bytes")
    data = buffer[HEADER_LEN : HEADER_LEN + BP_DATA_LEN]
    try:
        values = parse_data(data)
    except Malformed as exc:
        raise Malformed(exc.reason, skip=total) from None
    diff, diastolic, pulse, mean_arterial = values
    serial = buffer[35:47].split(b"\x00", 1)[0].decode("ascii", "replace").strip()
    return (
        CuffMeasurement(
            systolic=diff + diastolic,
            diastolic=diastolic,
            pulse=pulse,
            mean_arterial=mean_arterial,
            device_time=_time(buffer, 9),
            serial=serial,
            battery=buffer[57],
        ),
        total,
    )


def parse_data(data: bytes) -> tuple[int, int, int, int]:
    """The blood-pressure data section -> ``(systolic - diastolic, diastolic, pulse, MAP)``.

    Raises ``Malformed`` for an invalid measurement (flag not ``80``), a section that is
    not printable hex, or a difference of 0 (systolic equal to diastolic is impossible).
    """
    if len(data) != BP_DATA_LEN or any(b not in _HEX for b in data):
        raise Malformed("A&D blood-pressure data section is not 10 printable hex digits")
    flag, diff, diastolic, pulse, mean_arterial = (
        int(data[i : i + 2], 16) for i in range(0, BP_DATA_LEN, 2)
    )
    if flag != 0x80:
        raise Malformed(f"A&D cuff reports an invalid measurement (valid flag {flag:02X})")
    if diff == 0:
        raise Malformed("A&D systolic - diastolic is 0: not a measurement")
    return diff, diastolic, pulse, mean_arterial


def _time(buffer: bytes, offset: int) -> datetime | None:
    (year,) = struct.unpack_from("<H", buffer, offset)
    month, day, hour, minute, second = buffer[offset + 2 : offset + 7]
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def msg_id_of(m: CuffMeasurement) -> str | None:
    """``ua767pbt-<serial>-<YYYYmmddHHMMSS>`` from the cuff's clock (the same for a
    resent packet), or ``None`` when the header carries no valid time."""
    if m.device_time is None:
        return None
    serial = "".join(c for c in m.serial if c.isalnum())[:24] or "x"
    return f"ua767pbt-{serial}-{m.device_time:%Y%m%d%H%M%S}"


def readings(
    m: CuffMeasurement,
    *,
    device_id: str,
    ts: datetime,
    msg_id: str,
    resident_id: str | None = None,
    site_id: str | None = None,
) -> list[Reading]:
    """Systolic, diastolic, MAP (mm[Hg]) and pulse (/min) readings; ``Malformed`` when a
    value is outside the model's plausible range."""
    values = (
        (Metric.SYSTOLIC_BP, m.systolic),
        (Metric.DIASTOLIC_BP, m.diastolic),
        (Metric.MEAN_ARTERIAL_PRESSURE, m.mean_arterial),
        (Metric.PULSE, m.pulse),
    )
    try:
        return [
            Reading(device_id, metric, float(v), metric.unit, ts, msg_id, resident_id, site_id)
            for metric, v in values
        ]
    except ModelError as exc:
        raise Malformed(f"UA-767PBT measurement rejected: {exc}") from None


def decoder() -> StreamDecoder[CuffMeasurement]:
    """A fresh incremental decoder for one cuff's serial port."""
    return StreamDecoder(parse, max_buffer=HEADER_LEN + MAX_DATA_LEN)
