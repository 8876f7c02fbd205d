"""Which supported serial device is on a port: try every serial codec with its line
settings and see which one decodes what arrives cleanly.

``probe`` opens the port once per distinct line setting of the registered stream codecs
(CMS50D+ 19200 8-O-1; Nonin, Masimo Rad-8 and Contact ID 9600 8-N-1; whatever else
``devices.codecs.registry`` lists), reads for at most ``seconds`` (less once one codec
has decoded enough frames cleanly), and feeds the bytes to every codec using that
setting. A codec *answers* when it decoded at least ``min_frames`` frames and at most
``1 - min_clean`` of the bytes it consumed were malformed; the best answer is the one
with the cleanest decoding, then the most frames.

The decision rests on the decoding, not on the line settings: a wrong baud rate on a real
port yields garbage that no codec decodes, but a pseudo-terminal ignores baud rate and
parity, so there only the framing tells the codecs apart (``Probe.pseudo_terminal``).
Blocking I/O (pyserial): call it from a thread when inside an event loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import serial

from telecare.devices.codecs import registry
from telecare.devices.codecs.registry import LineSettings, StreamCodec
from telecare.devices.model import AlarmEvent, Reading

__all__ = ["Attempt", "Probe", "ProbeError", "line_text", "probe", "stream_codecs"]

#: Bytes of raw input kept to show what was seen when nothing matched.
SEEN_BYTES = 48


class ProbeError(Exception):
    """The port cannot be opened or read (a user mistake: wrong path, busy, no access)."""


def _why(exc: Exception) -> str:
    """The system's reason (``No such file or directory``), not pyserial's nested
    restatement of the port and errno."""
    errno = getattr(exc, "errno", None)
    return os.strerror(errno) if isinstance(errno, int) and errno > 0 else str(exc)


@dataclass(slots=True)
class Attempt:
    """One codec's result on one line setting."""

    codec: str
    line: LineSettings
    bytes_read: int = 0
    frames: int = 0
    malformed_bytes: int = 0
    sample: list[str] = field(default_factory=list)

    @property
    def clean(self) -> float:
        """Share of the consumed bytes that were not malformed (0 when nothing came)."""
        consumed = self.bytes_read
        if consumed <= 0:
            return 0.0
        return max(0.0, 1.0 - self.malformed_bytes / consumed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "line": line_dict(self.line),
            "bytes": self.bytes_read,
            "frames": self.frames,
            "malformed_bytes": self.malformed_bytes,
            "clean": round(self.clean, 3),
        }


@dataclass(slots=True)
class Probe:
    port: str
    attempts: list[Attempt]
    match: Attempt | None
    seen: bytes
    pseudo_terminal: bool

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape (stable; documented in docs/cli.md)."""
        m = self.match
        return {
            "port": self.port,
            "matched": m is not None,
            "codec": m.codec if m else None,
            "line": line_dict(m.line) if m else None,
            "sample": list(m.sample) if m else [],
            "attempts": [a.as_dict() for a in self.attempts],
            "seen": {"bytes": len(self.seen), "hex": self.seen.hex(" "), "text": _text(self.seen)},
            "pseudo_terminal": self.pseudo_terminal,
            "decided_by": "clean decoding (valid frames vs malformed bytes)",
        }


def line_text(line: LineSettings) -> str:
    """``19200 8-O-1``."""
    return f"{line.baudrate} {line.bytesize}-{line.parity}-{line.stopbits}"


def line_dict(line: LineSettings) -> dict[str, Any]:
    return {
        "baudrate": line.baudrate,
        "bytesize": line.bytesize,
        "parity": line.parity,
        "stopbits": line.stopbits,
    }


def stream_codecs(names: Sequence[str] | None = None) -> list[StreamCodec]:
    """The serial codecs to try (all registered ones, or ``names``; ``KeyError`` for an
    unknown or non-serial name)."""
    found = [c for c in registry.CODECS.values() if isinstance(c, StreamCodec)]
    if not names:
        return found
    by_name = {c.name: c for c in found}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(
            f"not a serial codec: {', '.join(unknown)}; known: {', '.join(sorted(by_name))}"
        )
    return [by_name[n] for n in names]


def probe(
    port: str,
    codecs: Sequence[StreamCodec],
    *,
    seconds: float = 4.0,
    min_frames: int = 2,
    min_clean: float = 0.9,
    enough_frames: int = 8,
    opener: Callable[..., Any] = serial.Serial,
) -> Probe:
    """Try ``codecs`` on ``port``, at most ``seconds`` per distinct line setting."""
    groups: dict[LineSettings, list[StreamCodec]] = {}
    for codec in codecs:
        groups.setdefault(codec.line, []).append(codec)
    attempts: list[Attempt] = []
    seen = b""
    for line, members in groups.items():
        results, raw = _attempt(
            port, line, members, seconds, min_frames, min_clean, enough_frames, opener
        )
        attempts.extend(results)
        if len(seen) < SEEN_BYTES:
            seen += raw[: SEEN_BYTES - len(seen)]
    answering = [a for a in attempts if a.frames >= min_frames and a.clean >= min_clean]
    match = max(answering, key=lambda a: (a.clean, a.frames), default=None)
    real = os.path.realpath(port)
    return Probe(port, attempts, match, seen, real.startswith(("/dev/pts/", "/dev/ptmx")))


def _attempt(
    port: str,
    line: LineSettings,
    codecs: list[StreamCodec],
    seconds: float,
    min_frames: int,
    min_clean: float,
    enough_frames: int,
    opener: Callable[..., Any],
) -> tuple[list[Attempt], bytes]:
    decoders = [(c, c.new_decoder()) for c in codecs]
    results = [Attempt(c.name, line) for c in codecs]
    last: list[Any] = [None] * len(codecs)
    raw = b""
    try:
        handle = opener(
            port=port,
            baudrate=line.baudrate,
            bytesize=line.bytesize,
            parity=line.parity,
            stopbits=line.stopbits,
            timeout=0.05,
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise ProbeError(f"cannot open {port}: {_why(exc)}") from None
    deadline = time.monotonic() + seconds
    try:
        handle.reset_input_buffer()  # what queued before this setting was applied
        while time.monotonic() < deadline:
            try:
                data = handle.read(512)
            except (serial.SerialException, OSError) as exc:
                raise ProbeError(f"cannot read {port}: {_why(exc)}") from None
            if not data:
                continue
            if len(raw) < SEEN_BYTES:
                raw += data[: SEEN_BYTES - len(raw)]
            for i, (_, dec) in enumerate(decoders):
                frames = dec.feed(data)
                if frames:
                    last[i] = frames[-1]
                results[i].bytes_read += len(data)
            if any(
                dec.frames >= enough_frames
                and _clean(dec.skipped_bytes, r.bytes_read - _pending(dec)) >= min_clean
                for (_, dec), r in zip(decoders, results, strict=True)
            ):
                break
    finally:
        handle.close()
    for i, (codec, dec) in enumerate(decoders):
        r = results[i]
        r.frames = dec.frames
        r.malformed_bytes = dec.skipped_bytes
        r.bytes_read -= _pending(dec)  # a frame still arriving is neither good nor bad
        if last[i] is not None:
            r.sample = _sample(codec, last[i])
    return results, raw


def _pending(dec: Any) -> int:
    return int(getattr(dec, "pending", 0))


def _clean(skipped: int, consumed: int) -> float:
    return 0.0 if consumed <= 0 else 1.0 - skipped / consumed


def _sample(codec: StreamCodec, frame: Any) -> list[str]:
    """A few decoded values of the last frame, as ``metric=value unit`` / event text."""
    try:
        items = codec.to_model(frame, device_id="probe", ts=datetime.now(UTC))
    except Exception as exc:  # a frame that decodes but is not a valid reading
        return [f"(not convertible: {type(exc).__name__})"]
    out: list[str] = []
    for item in items:
        if isinstance(item, Reading):
            out.append(f"{item.metric.label}={item.value:g} {item.unit}")
        elif isinstance(item, AlarmEvent):
            code = f" code {item.code}" if item.code is not None else ""
            out.append(f"event {item.type.value} {item.phase.value}{code}")
    return out or ["(no values: e.g. finger out)"]


def _text(data: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in data)
