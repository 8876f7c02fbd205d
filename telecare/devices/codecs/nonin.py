"""Nonin serial data formats 2 and 8 (9600 8-N-1).

**Format 2** — 5-byte frames at 75/s, 25 frames a packet (3 packets/s)::

    START(0x01)  STATUS  PLETH  VALUE  CHK      CHK = (START+STATUS+PLETH+VALUE) & 0xFF

STATUS: bit 7 always 1, bit 6 SNSD sensor disconnected, bit 5 ARTF artifact, bit 4 OOT
out of track, bit 3 SNSA sensor alarm, bits 2/1 YPRF/RPRF perfusion, bit 0 SYNC (set on
frame 1 of a packet). VALUE depends on the frame's index in the packet: frame 1 HR MSB
(bits 7-8 of a 9-bit pulse), frame 2 HR LSB (bits 0-6), frame 3 SpO2 (4-beat average,
formatted for recording); the other frames carry firmware, timer, display and extended
averages, which we do not use. ``parse`` reads one frame; the decoder assembles packets
and yields one :class:`OximeterSample` per complete packet, with its 25 pleth values.

**Format 8** — 4 bytes once a second, no checksum (sync is bit 7 of STATUS1 only)::

    STATUS1  HR-LSB  SpO2  STATUS2

STATUS1: bit 7 always 1, bit 6 SNSD, bit 5 OOT, bit 4 LPRF low perfusion, bit 3 MPRF
marginal perfusion, bit 2 ARTF, bits 1-0 HR bits 8-7. STATUS2: bit 5 SmartPoint, bit 3
sensor fault, bit 2 spot-check mode, bit 1 critical battery, bit 0 low battery.

No-value markers in both: SpO2 127 and pulse 511 ("missing"), and sensor disconnected.
"""

from __future__ import annotations

from dataclasses import dataclass

from telecare.devices.codecs import Incomplete, Malformed
from telecare.devices.codecs.oximetry import OximeterSample
from telecare.devices.codecs.stream import Skip, StreamDecoder

__all__ = [
    "FRAMES_PER_PACKET",
    "Nonin2Decoder",
    "Nonin2Frame",
    "decoder2",
    "decoder8",
    "parse2",
    "parse8",
]

FRAMES_PER_PACKET = 25
SPO2_NO_VALUE = 127
PULSE_NO_VALUE = 511
_START = 0x01


@dataclass(frozen=True, slots=True)
class Nonin2Frame:
    """One format-2 frame (5 bytes)."""

    status: int
    pleth: int
    value: int

    @property
    def sync(self) -> bool:
        return bool(self.status & 0x01)


def parse2(buffer: bytes) -> tuple[Nonin2Frame, int]:
    """Parse one format-2 frame; ``Malformed(skip=1)`` on a bad start, status or checksum."""
    if not buffer:
        raise Incomplete("empty buffer")
    if buffer[0] != _START:
        nxt = buffer.find(_START, 1)
        raise Malformed(
            f"byte 0x{buffer[0]:02x} is not a Nonin frame start (0x01)",
            skip=nxt if nxt > 0 else len(buffer),
        )
    if len(buffer) >= 2 and not buffer[1] & 0x80:
        raise Malformed(f"Nonin status 0x{buffer[1]:02x} lacks bit 7", skip=1)
    if len(buffer) < 5:
        raise Incomplete(f"{len(buffer)} of 5 bytes")
    chk = sum(buffer[0:4]) & 0xFF
    if chk != buffer[4]:
        raise Malformed(
            f"Nonin checksum 0x{buffer[4]:02x} does not match 0x{chk:02x}",
            skip=1,
        )
    return Nonin2Frame(buffer[1], buffer[2], buffer[3]), 5


def _values(
    spo2_raw: int, pulse_raw: int, disconnected: bool
) -> tuple[int | None, int | None, list[str]]:
    missing: list[str] = []
    spo2: int | None = spo2_raw
    pulse: int | None = pulse_raw
    if disconnected:
        return None, None, ["spo2: sensor disconnected", "pulse: sensor disconnected"]
    if spo2_raw == SPO2_NO_VALUE:
        spo2 = None
        missing.append(f"spo2: no-value marker {SPO2_NO_VALUE}")
    if pulse_raw == PULSE_NO_VALUE:
        pulse = None
        missing.append(f"pulse: no-value marker {PULSE_NO_VALUE}")
    return spo2, pulse, missing


def _packet_sample(frames: list[Nonin2Frame]) -> OximeterSample:
    """Build the sample of a complete 25-frame packet (raises Malformed on bad values)."""
    status_or = 0
    for f in frames:
        status_or |= f.status
    pulse_raw = ((frames[0].value & 0x03) << 7) | (frames[1].value & 0x7F)
    spo2_raw = frames[2].value
    if 100 < spo2_raw != SPO2_NO_VALUE:
        raise Malformed(f"Nonin SpO2 {spo2_raw} is out of range 0..100")
    disconnected = bool(status_or & 0x40)
    spo2, pulse, missing = _values(spo2_raw, pulse_raw, disconnected)
    flags = set()
    for bit, name in ((0x40, "finger_out"), (0x20, "artifact"), (0x10, "out_of_track")):
        if status_or & bit:
            flags.add(name)
    if status_or & 0x08:
        flags.add("sensor_alarm")
    return OximeterSample(
        spo2=spo2,
        pulse=pulse,
        finger_out=disconnected,
        flags=frozenset(flags),
        missing=tuple(missing),
        pleth=tuple(f.pleth for f in frames),
    )


class Nonin2Decoder:
    """Incremental format-2 decoder: frames -> packets -> one sample per packet.

    Frames before the first SYNC frame, and packets cut short by a new SYNC frame, are
    skipped and reported like noise (5 bytes per lost frame).
    """

    def __init__(self) -> None:
        self._frames: StreamDecoder[Nonin2Frame] = StreamDecoder(parse2, max_buffer=64)
        self._packet: list[Nonin2Frame] = []
        self._skips: list[Skip] = []
        self._skipped = 0
        self.frames = 0

    @property
    def skipped_bytes(self) -> int:
        return self._frames.skipped_bytes + self._skipped

    def feed(self, data: bytes) -> list[OximeterSample]:
        out: list[OximeterSample] = []
        for frame in self._frames.feed(data):
            self._skips.extend(self._frames.pop_skips())
            if frame.sync:
                if self._packet:
                    self._drop(f"Nonin packet cut short after {len(self._packet)} frames")
                self._packet = [frame]
            elif not self._packet:
                self._lose(5, "Nonin frame outside a packet (waiting for SYNC)")
                continue
            else:
                self._packet.append(frame)
            if len(self._packet) == FRAMES_PER_PACKET:
                packet, self._packet = self._packet, []
                try:
                    out.append(_packet_sample(packet))
                except Malformed as exc:
                    self._lose(5 * FRAMES_PER_PACKET, exc.reason)
                    continue
                self.frames += 1
        self._skips.extend(self._frames.pop_skips())
        return out

    def pop_skips(self) -> list[Skip]:
        skips, self._skips = self._skips, []
        return skips

    def _drop(self, reason: str) -> None:
        self._lose(5 * len(self._packet), reason)
        self._packet = []

    def _lose(self, nbytes: int, reason: str) -> None:
        self._skipped += nbytes
        if self._skips and self._skips[-1].reason == reason:
            last = self._skips.pop()
            self._skips.append(Skip(last.nbytes + nbytes, reason))
        else:
            self._skips.append(Skip(nbytes, reason))
        del self._skips[:-64]


def parse8(buffer: bytes) -> tuple[OximeterSample, int]:
    """Parse one format-8 record (4 bytes) from the start of ``buffer``."""
    if not buffer:
        raise Incomplete("empty buffer")
    s1 = buffer[0]
    if not s1 & 0x80:
        nxt = next((i for i in range(1, len(buffer)) if buffer[i] & 0x80), len(buffer))
        raise Malformed(f"byte 0x{s1:02x} is not a Nonin format-8 STATUS1", skip=nxt)
    for i in range(1, min(4, len(buffer))):
        if buffer[i] & 0x80:
            raise Malformed(f"Nonin format-8 record cut short after {i} bytes", skip=i)
    if len(buffer) < 4:
        raise Incomplete(f"{len(buffer)} of 4 bytes")
    hr_lsb, spo2_raw, s2 = buffer[1], buffer[2], buffer[3]
    if 100 < spo2_raw != SPO2_NO_VALUE:
        raise Malformed(f"Nonin SpO2 {spo2_raw} is out of range 0..100", skip=4)
    pulse_raw = ((s1 & 0x03) << 7) | hr_lsb
    disconnected = bool(s1 & 0x40)
    spo2, pulse, missing = _values(spo2_raw, pulse_raw, disconnected)
    flags = set()
    for byte, bit, name in (
        (s1, 0x40, "finger_out"),
        (s1, 0x20, "out_of_track"),
        (s1, 0x10, "low_perfusion"),
        (s1, 0x08, "marginal_perfusion"),
        (s1, 0x04, "artifact"),
        (s2, 0x20, "smartpoint"),
        (s2, 0x08, "sensor_fault"),
        (s2, 0x04, "spot_check"),
        (s2, 0x02, "critical_battery"),
        (s2, 0x01, "low_battery"),
    ):
        if byte & bit:
            flags.add(name)
    sample = OximeterSample(
        spo2=spo2,
        pulse=pulse,
        finger_out=disconnected,
        flags=frozenset(flags),
        missing=tuple(missing),
    )
    return sample, 4


def decoder2() -> Nonin2Decoder:
    """A fresh incremental decoder for one Nonin format-2 stream."""
    return Nonin2Decoder()


def decoder8() -> StreamDecoder[OximeterSample]:
    """A fresh incremental decoder for one Nonin format-8 stream."""
    return StreamDecoder(parse8, max_buffer=64)
