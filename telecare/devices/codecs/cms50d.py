"""Contec CMS50D+ live stream: 5-byte packets at 60/s, serial 19200 8-O-1.

Layout (byte 0 is the only byte with bit 7 set, which is how the stream syncs)::

    byte 0  1 B F . S S S S   B pulse beep, F (bit 4) finger out / probe off,
                              bit 5 SpO2 dropping, S signal strength 0..15
    byte 1  0 W W W W W W W   plethysmogram 0..127
    byte 2  0 P s e G G G G   P pulse bit 7, s searching, e sensor error, G bar graph
    byte 3  0 p p p p p p p   pulse bits 0..6
    byte 4  0 o o o o o o o   SpO2 %

Pulse is 8 bits: bit 7 comes from byte 2 bit 6, so pulses above 127 do not wrap (a known
bug elsewhere). No-value markers: SpO2 127, pulse 255, SpO2/pulse 0 (searching), and the
finger-out flag (then both values are ignored); each yields ``None`` and a ``missing``
reason. SpO2 101..126 is impossible and rejected as Malformed.
"""

from __future__ import annotations

from telecare.devices.codecs import Incomplete, Malformed
from telecare.devices.codecs.oximetry import OximeterSample
from telecare.devices.codecs.stream import StreamDecoder

__all__ = ["FRAME_LEN", "decoder", "parse"]

FRAME_LEN = 5
SPO2_NO_VALUE = 127
PULSE_NO_VALUE = 255


def _next_sync(buffer: bytes, start: int) -> int:
    for i in range(start, len(buffer)):
        if buffer[i] & 0x80:
            return i
    return len(buffer)


def parse(buffer: bytes) -> tuple[OximeterSample, int]:
    """Parse one packet from the start of ``buffer``; return it and the bytes consumed.

    Raises ``Incomplete`` for a valid but short prefix, ``Malformed`` (with ``skip`` up to
    the next possible sync byte) otherwise.
    """
    if not buffer:
        raise Incomplete("empty buffer")
    b0 = buffer[0]
    if not b0 & 0x80:
        skip = _next_sync(buffer, 1)
        raise Malformed(f"byte 0x{b0:02x} is not a CMS50D+ sync byte", skip=skip)
    for i in range(1, min(FRAME_LEN, len(buffer))):
        if buffer[i] & 0x80:
            raise Malformed(f"CMS50D+ packet cut short after {i} bytes", skip=i)
    if len(buffer) < FRAME_LEN:
        raise Incomplete(f"{len(buffer)} of {FRAME_LEN} bytes")
    b1, b2, b3, b4 = buffer[1], buffer[2], buffer[3], buffer[4]
    finger_out = bool(b0 & 0x10)
    pulse_raw = ((b2 & 0x40) << 1) | b3
    spo2_raw = b4
    flags = set()
    if b2 & 0x20:
        flags.add("searching")
    if b2 & 0x10:
        flags.add("sensor_error")
    if b0 & 0x20:
        flags.add("spo2_dropping")
    if b0 & 0x40:
        flags.add("pulse_beep")
    if finger_out:
        flags.add("finger_out")
    if 100 < spo2_raw < SPO2_NO_VALUE:
        raise Malformed(f"CMS50D+ SpO2 {spo2_raw} is out of range 0..100", skip=FRAME_LEN)
    missing: list[str] = []
    spo2: int | None = spo2_raw
    pulse: int | None = pulse_raw
    if finger_out:
        spo2 = pulse = None
        missing += ["spo2: finger out", "pulse: finger out"]
    else:
        if spo2_raw in (0, SPO2_NO_VALUE):
            spo2 = None
            missing.append(f"spo2: no-value marker {spo2_raw}")
        if pulse_raw in (0, PULSE_NO_VALUE):
            pulse = None
            missing.append(f"pulse: no-value marker {pulse_raw}")
    sample = OximeterSample(
        spo2=spo2,
        pulse=pulse,
        finger_out=finger_out,
        flags=frozenset(flags),
        missing=tuple(missing),
        pleth=(b1,),
    )
    return sample, FRAME_LEN


def decoder() -> StreamDecoder[OximeterSample]:
    """A fresh incremental decoder for one CMS50D+ serial stream."""
    return StreamDecoder(parse, max_buffer=64)
