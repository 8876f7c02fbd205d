"""Simulated oximeters: the bytes a CMS50D+, Nonin (formats 2 and 8) or Masimo Rad-8
sends, and a stub that writes such a stream to a serial device path (a pty slave).

Encoders are pure and are the reference for the codecs' round-trip tests. ``None``
values are sent as each device's no-value marker.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from telecare.devices.codecs.oximetry import OximeterSample

__all__ = [
    "FORMATS",
    "RATES_HZ",
    "encode_cms50d",
    "encode_masimo",
    "encode_nonin2",
    "encode_nonin8",
    "encode_sample",
    "run_oximeter",
    "stream_chunks",
    "with_noise",
]

FORMATS = ("cms50d", "nonin2", "nonin8", "masimo_rad8")
#: How many encoded units (packet, record or line) each device sends a second.
RATES_HZ = {"cms50d": 60.0, "nonin2": 3.0, "nonin8": 1.0, "masimo_rad8": 1.0}


def encode_cms50d(
    spo2: int | None,
    pulse: int | None,
    *,
    finger_out: bool = False,
    pleth: int = 64,
    signal: int = 8,
    searching: bool = False,
    sensor_error: bool = False,
) -> bytes:
    """One 5-byte CMS50D+ live packet (``None`` -> SpO2 127 / pulse 255)."""
    s = 127 if spo2 is None else spo2
    p = 255 if pulse is None else pulse
    if not (0 <= s <= 127 and 0 <= p <= 255 and 0 <= pleth <= 127 and 0 <= signal <= 15):
        raise ValueError(f"value out of range for CMS50D+: spo2={s} pulse={p}")
    b0 = 0x80 | (0x10 if finger_out else 0) | signal
    b2 = ((p >> 1) & 0x40) | (0x20 if searching else 0) | (0x10 if sensor_error else 0)
    return bytes((b0, pleth, b2, p & 0x7F, s))


def encode_nonin2(
    spo2: int | None,
    pulse: int | None,
    *,
    finger_out: bool = False,
    pleth: Sequence[int] = (),
) -> bytes:
    """One 25-frame (125-byte) Nonin format-2 packet (``None`` -> 127 / 511)."""
    s = 127 if spo2 is None else spo2
    p = 511 if pulse is None else pulse
    if not (0 <= s <= 127 and 0 <= p <= 511):
        raise ValueError(f"value out of range for Nonin: spo2={s} pulse={p}")
    waves = list(pleth) or [128] * 25
    if len(waves) != 25 or not all(0 <= w <= 255 for w in waves):
        raise ValueError("pleth must be 25 values 0..255")
    values = [0] * 25
    values[0], values[1], values[2] = (p >> 7) & 0x03, p & 0x7F, s
    values[3] = 0x30  # firmware revision
    out = bytearray()
    for i in range(25):
        status = 0x80 | (0x01 if i == 0 else 0) | (0x40 if finger_out else 0) | 0x06
        frame = [0x01, status, waves[i], values[i]]
        out += bytes([*frame, sum(frame) & 0xFF])
    return bytes(out)


def encode_nonin8(
    spo2: int | None,
    pulse: int | None,
    *,
    finger_out: bool = False,
    low_battery: bool = False,
    artifact: bool = False,
) -> bytes:
    """One 4-byte Nonin format-8 record (``None`` -> 127 / 511)."""
    s = 127 if spo2 is None else spo2
    p = 511 if pulse is None else pulse
    if not (0 <= s <= 127 and 0 <= p <= 511):
        raise ValueError(f"value out of range for Nonin: spo2={s} pulse={p}")
    s1 = 0x80 | (0x40 if finger_out else 0) | (0x04 if artifact else 0) | (p >> 7)
    s2 = 0x01 if low_battery else 0
    return bytes((s1, p & 0x7F, s, s2))


def encode_masimo(
    spo2: int | None,
    pulse: int | None,
    *,
    when: datetime,
    perfusion_index: float | None = None,
    serial: str = "0000056661",
    alarm: int = 0,
    exc: int = 0,
) -> bytes:
    """One Masimo Rad-8 ASCII line with CR LF (``None`` -> ``---``/``--.--``)."""
    spo2_s = "---" if spo2 is None else f"{spo2:03d}"
    bpm_s = "---" if pulse is None else f"{pulse:03d}"
    pi_s = "--.--" if perfusion_index is None else f"{perfusion_index:05.2f}"
    return (
        f"{when:%m/%d/%y %H:%M:%S} SN={serial} SPO2={spo2_s}% BPM={bpm_s} PI={pi_s}% "
        f"SPCO=--.-% SPMET=--.-% DESAT=-- PIDELTA=+-- ALARM={alarm:04X} EXC={exc:06X}\r\n"
    ).encode("ascii")


def encode_sample(fmt: str, sample: OximeterSample, *, when: datetime | None = None) -> bytes:
    """Encode ``sample`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "cms50d":
        return encode_cms50d(sample.spo2, sample.pulse, finger_out=sample.finger_out)
    if fmt == "nonin2":
        return encode_nonin2(sample.spo2, sample.pulse, finger_out=sample.finger_out)
    if fmt == "nonin8":
        return encode_nonin8(sample.spo2, sample.pulse, finger_out=sample.finger_out)
    if fmt == "masimo_rad8":
        return encode_masimo(
            sample.spo2,
            sample.pulse,
            when=when or sample.device_time or datetime(2016, 2, 22, 22, 47, 45),
            perfusion_index=sample.perfusion_index,
        )
    raise ValueError(f"unknown oximeter format {fmt!r}; known: {', '.join(FORMATS)}")


def with_noise(chunks: Iterable[bytes], noise: float, rng: random.Random) -> Iterator[bytes]:
    """Yield ``chunks``, each preceded with probability ``noise`` by 1-8 random bytes."""
    for chunk in chunks:
        if noise > 0 and rng.random() < noise:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + chunk
        else:
            yield chunk


def stream_chunks(
    fmt: str, samples: Iterable[OximeterSample], *, noise: float = 0.0, seed: int = 0
) -> Iterator[bytes]:
    """The encoded units for ``samples``, with optional injected noise (deterministic)."""
    encoded = (encode_sample(fmt, s) for s in samples)
    return with_noise(encoded, noise, random.Random(seed))


async def run_oximeter(
    path: str | int,
    samples: Iterable[OximeterSample],
    fmt: str,
    rate_hz: float | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> int:
    """Write ``samples`` to the serial device at ``path`` at the device's rate.

    Opens ``path`` (a pty slave or a real port; or uses an open file descriptor such as
    a pty master, left open) write-only, writes one encoded unit per
    ``1/rate_hz`` seconds (``rate_hz`` defaults to the device's own rate; 0 means as fast
    as possible), closes it and returns the number of bytes written. Line settings are
    not applied: a pty ignores them.
    """
    rate = RATES_HZ[fmt] if rate_hz is None else rate_hz
    fd = path if isinstance(path, int) else os.open(path, os.O_WRONLY | os.O_NOCTTY)
    written = 0
    try:
        for chunk in stream_chunks(fmt, samples, noise=noise, seed=seed):
            view = memoryview(chunk)
            while view:
                n = os.write(fd, view)
                view = view[n:]
                written += n
            await asyncio.sleep(1 / rate if rate > 0 else 0)
    finally:
        if not isinstance(path, int):
            os.close(fd)
    return written
