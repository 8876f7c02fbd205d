"""Incremental decoding of a serial byte stream with a pure ``parse`` function.

A stream codec exposes ``parse(buffer) -> (frame, consumed)`` which raises
:class:`~devices.codecs.Incomplete` (wait for more bytes) or
:class:`~devices.codecs.Malformed` (drop ``skip`` bytes and try again).
:class:`StreamDecoder` drives such a function over chunks as they arrive from a
serial port: it keeps the unparsed tail, resynchronises after noise and records
what it skipped, and never raises on bad input.

Skipped bytes are reported as :class:`Skip` records. Consecutive skips with no
frame in between are merged into one record (first reason kept), so a burst of
noise is one report, not one per byte. Call :meth:`StreamDecoder.pop_skips` to
collect them (e.g. to log or dead-letter them); the totals stay on the decoder.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from telecare.devices.codecs import Incomplete, Malformed

__all__ = ["FrameDecoder", "Skip", "StreamDecoder"]

F = TypeVar("F")
F_co = TypeVar("F_co", covariant=True)

#: How many skip records are kept until popped (older ones are dropped, totals are not).
MAX_SKIP_RECORDS = 64


@dataclass(frozen=True, slots=True)
class Skip:
    """``nbytes`` bytes were discarded; ``reason`` says why (the first reason of a burst)."""

    nbytes: int
    reason: str


class FrameDecoder(Protocol[F_co]):
    """What a serial reader needs from any stream decoder."""

    @property
    def skipped_bytes(self) -> int: ...

    @property
    def frames(self) -> int: ...

    def feed(self, data: bytes) -> Sequence[F_co]: ...

    def pop_skips(self) -> list[Skip]: ...


class StreamDecoder(Generic[F]):
    """Feed bytes, get frames. Never raises on noise; bounded memory.

    ``max_buffer`` bounds the unparsed tail: a codec whose ``parse`` keeps answering
    ``Incomplete`` past that size is treated as noise and the buffer is dropped.
    """

    def __init__(self, parse: Callable[[bytes], tuple[F, int]], *, max_buffer: int = 4096) -> None:
        self._parse = parse
        self._buffer = b""
        self._max_buffer = max_buffer
        self._skips: deque[Skip] = deque(maxlen=MAX_SKIP_RECORDS)
        self._in_burst = False
        #: Total bytes discarded since creation.
        self.skipped_bytes = 0
        #: Total frames decoded since creation.
        self.frames = 0

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[F]:
        """Append ``data`` and return every complete frame now available."""
        buf = self._buffer + data
        out: list[F] = []
        pos = 0
        limit = self._max_buffer + 1
        while pos < len(buf):
            # parse a bounded window: a frame never needs more than max_buffer bytes, and
            # this keeps a large chunk from being copied once per frame
            window = buf[pos : pos + limit]
            try:
                frame, used = self._parse(window)
            except Incomplete:
                if len(window) == limit:
                    self._skip(limit, "no complete frame within the buffer limit")
                    pos += limit
                    continue
                break
            except Malformed as exc:
                n = min(exc.skip, len(window))
                self._skip(n, exc.reason)
                pos += n
                continue
            out.append(frame)
            self.frames += 1
            self._in_burst = False
            pos += max(1, used)
        self._buffer = buf[pos:]
        return out

    def pop_skips(self) -> list[Skip]:
        """The skip records since the last call (oldest first)."""
        skips = list(self._skips)
        self._skips.clear()
        self._in_burst = False
        return skips

    def _skip(self, n: int, reason: str) -> None:
        self.skipped_bytes += n
        if self._in_burst and self._skips:
            last = self._skips.pop()
            self._skips.append(Skip(last.nbytes + n, last.reason))
        else:
            self._skips.append(Skip(n, reason))
        self._in_burst = True
