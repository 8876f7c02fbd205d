"""The generic incremental StreamDecoder."""

from __future__ import annotations

from telecare.devices.codecs import Incomplete, Malformed
from telecare.devices.codecs.stream import Skip, StreamDecoder


def parse_line(buffer: bytes) -> tuple[bytes, int]:
    """A toy codec: lines of 'OK' only; anything else is malformed."""
    if not buffer.startswith(b"O"[: len(buffer)]) and not buffer.startswith(b"OK"):
        raise Malformed("not OK", skip=1)
    end = buffer.find(b"\n")
    if end < 0:
        raise Incomplete("no newline")
    if buffer[:end] != b"OK":
        raise Malformed("not OK", skip=end + 1)
    return buffer[:end], end + 1


def never_complete(buffer: bytes) -> tuple[bytes, int]:
    raise Incomplete("never")


def test_bursts_are_merged_and_popped() -> None:
    dec = StreamDecoder(parse_line)
    assert dec.feed(b"xyzOK\nabcdOK\nO") == [b"OK", b"OK"]
    assert dec.pending == 1
    assert dec.pop_skips() == [Skip(3, "not OK"), Skip(4, "not OK")]
    assert dec.pop_skips() == []
    assert dec.feed(b"K\n") == [b"OK"]
    assert (dec.frames, dec.skipped_bytes) == (3, 7)


def test_buffer_limit_bounds_memory() -> None:
    dec = StreamDecoder(never_complete, max_buffer=16)
    for _ in range(10):
        assert dec.feed(b"x" * 10) == []
    assert dec.pending <= 16
    assert dec.skipped_bytes + dec.pending == 100
    (skip,) = dec.pop_skips()
    assert skip.reason == "no complete frame within the buffer limit"
