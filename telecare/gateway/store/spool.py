"""A local append-only spool on disk for what could not reach the database.

Layout: a directory of segment files ``<seq:016d>.seg``, each starting with the magic
``TCSPOOL1`` and followed by records::

    +----------------+----------------+-------------------+
    | length: u32 BE | crc32: u32 BE  | payload (length)  |
    +----------------+----------------+-------------------+

The CRC covers the length bytes and the payload, so a torn write (a crash part-way
through a record) or a flipped bit is detected when the segment is read back; the
damaged record and anything after it in that segment are skipped and counted, never
raised (a damaged spool must not stop the gateway from starting).

Appends go to the *active* segment and are flushed and ``fsync``-ed before ``append``
returns; a new segment's directory entry is ``fsync``-ed too. A process never appends to
a segment left by an earlier run: those are *sealed*. ``seal()`` closes the active one so
a replayer can read every sealed segment in order, then ``remove()`` each once applied.

Bound: ``max_bytes`` over all segments. An append that would pass it raises
:class:`~gateway.store.errors.SpoolFull` (the caller must not acknowledge). The spool
reports its state, and decides nothing more: crossing ``alarm_ratio`` of the bound logs
and calls ``on_state`` once with a :class:`SpoolState` whose ``near_full`` is true; when
usage falls back below ``alarm_ratio - 0.1`` it calls ``on_state`` again with
``near_full`` false. Whether that is an alert is the caller's (the rules') decision.

All methods block on disk I/O: async callers run them in a worker thread (see
``gateway.store.durable``). One ``Spool`` per directory and process.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

from telecare.gateway.private_files import open_private, private_dir
from telecare.gateway.store.errors import SpoolFull

__all__ = ["MAGIC", "SegmentContents", "Spool", "SpoolState"]

log = structlog.get_logger(__name__)

MAGIC = b"TCSPOOL1"
_HEADER = struct.Struct(">II")
#: A record larger than this is taken as a corrupt length field, not a real record.
MAX_RECORD = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SegmentContents:
    """What could be read from one segment: the good records, and why reading stopped
    early (``None`` when the whole segment was sound)."""

    records: list[bytes]
    damage: str | None = None


@dataclass(frozen=True, slots=True)
class SpoolState:
    """How full the spool is, reported when it crosses its alarm ratio either way."""

    used_bytes: int
    max_bytes: int
    directory: str
    near_full: bool


class Spool:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 1024 * 1024 * 1024,
        segment_bytes: int = 16 * 1024 * 1024,
        alarm_ratio: float = 0.8,
        on_state: Callable[[SpoolState], None] | None = None,
    ) -> None:
        if not 0 < alarm_ratio <= 1:
            raise ValueError(f"alarm_ratio {alarm_ratio!r} must be in (0, 1]")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.alarm_ratio = alarm_ratio
        self._on_state = on_state
        self._lock = threading.Lock()
        self._active: BinaryIO | None = None
        self._active_path: Path | None = None
        self._active_size = 0
        self._sealed_sizes: dict[Path, int] = {}
        self._next_seq = 1
        self._alarmed = False
        self._records_appended = 0
        self._damaged = 0
        private_dir(self.directory, own=True)  # segments hold personal data: 0700
        for path in sorted(p for p in self.directory.glob("*.seg") if p.stem.isdigit()):
            self._sealed_sizes[path] = path.stat().st_size
            self._next_seq = max(self._next_seq, int(path.stem) + 1)

    # -- state ------------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        return sum(self._sealed_sizes.values()) + self._active_size

    @property
    def pending(self) -> bool:
        """True while any record (sealed or active) waits to be replayed."""
        return bool(self._sealed_sizes) or self._active_size > len(MAGIC)

    def stats(self) -> dict[str, int]:
        return {
            "spool_bytes": self.used_bytes,
            "spool_max_bytes": self.max_bytes,
            "spool_segments": len(self._sealed_sizes) + (self._active is not None),
            "spool_records_appended": self._records_appended,
            "spool_damaged_segments": self._damaged,
        }

    # -- writing ----------------------------------------------------------------------
    def append(self, payloads: Sequence[bytes]) -> None:
        """Append records and fsync; return only once they are on disk.

        Raises ``SpoolFull`` (nothing written) when they would pass ``max_bytes``.
        """
        data = b"".join(_frame(p) for p in payloads)
        with self._lock:
            extra = len(data) + (0 if self._active is not None else len(MAGIC))
            if self.used_bytes + extra > self.max_bytes:
                self._maybe_alarm(force=True)
                raise SpoolFull(str(self.directory), self.used_bytes, self.max_bytes, extra)
            if self._active is not None and self._active_size + len(data) > self.segment_bytes:
                self._seal_locked()
            active = self._active if self._active is not None else self._start_segment()
            active.write(data)
            active.flush()
            os.fsync(active.fileno())
            self._active_size += len(data)
            self._records_appended += len(payloads)
            self._maybe_alarm()

    def seal(self) -> None:
        """Close the active segment (if it holds records) so it can be replayed."""
        with self._lock:
            self._seal_locked()

    close = seal

    def _start_segment(self) -> BinaryIO:
        path = self.directory / f"{self._next_seq:016d}.seg"
        self._next_seq += 1
        f = open_private(path, exclusive=True)  # 0600
        f.write(MAGIC)
        f.flush()
        os.fsync(f.fileno())
        _fsync_dir(self.directory)
        self._active, self._active_path, self._active_size = f, path, len(MAGIC)
        return f

    def _seal_locked(self) -> None:
        f, path = self._active, self._active_path
        if f is None or path is None:
            return
        f.close()
        self._active, self._active_path = None, None
        if self._active_size > len(MAGIC):
            self._sealed_sizes[path] = self._active_size
        else:  # nothing in it: do not leave empty segments behind
            path.unlink(missing_ok=True)
        self._active_size = 0

    # -- reading back -----------------------------------------------------------------
    def sealed(self) -> list[Path]:
        """Sealed segments, oldest first."""
        with self._lock:
            return sorted(self._sealed_sizes)

    def read(self, path: Path) -> SegmentContents:
        """The sound records of one segment; damage is reported, never raised."""
        contents = _read_segment(path)
        if contents.damage is not None:
            self._damaged += 1
            log.warning(
                "spool_segment_damaged",
                segment=path.name,
                reason=contents.damage,
                records_kept=len(contents.records),
            )
        return contents

    def remove(self, path: Path) -> None:
        """Delete a segment whose records have all been applied."""
        with self._lock:
            path.unlink(missing_ok=True)
            self._sealed_sizes.pop(path, None)
            if self._alarmed and self.used_bytes < (self.alarm_ratio - 0.1) * self.max_bytes:
                self._alarmed = False
                log.info("spool_alarm_cleared", used_bytes=self.used_bytes)
                self._report(near_full=False)

    # -- alarm ------------------------------------------------------------------------
    def _maybe_alarm(self, *, force: bool = False) -> None:
        used = self.used_bytes
        if self._alarmed or (not force and used < self.alarm_ratio * self.max_bytes):
            return
        self._alarmed = True
        log.error(
            "spool_near_full",
            used_bytes=used,
            max_bytes=self.max_bytes,
            percent=round(100 * used / self.max_bytes, 1),
            directory=str(self.directory),
        )
        self._report(near_full=True)

    def _report(self, *, near_full: bool) -> None:
        if self._on_state is None:
            return
        state = SpoolState(self.used_bytes, self.max_bytes, str(self.directory), near_full)
        try:
            self._on_state(state)
        except Exception:  # a failing callback must not lose the append that succeeded
            log.exception("spool_state_callback_failed")


def _frame(payload: bytes) -> bytes:
    length = struct.pack(">I", len(payload))
    crc = zlib.crc32(payload, zlib.crc32(length))
    return _HEADER.pack(len(payload), crc) + payload


def _read_segment(path: Path) -> SegmentContents:
    """Parse one segment file: its sound records and the reason it stopped early."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        return SegmentContents([], "bad magic: not a spool segment")
    records: list[bytes] = []
    pos = len(MAGIC)
    while pos < len(data):
        if len(data) - pos < _HEADER.size:
            return SegmentContents(records, f"truncated header at byte {pos}")
        length, crc = _HEADER.unpack_from(data, pos)
        if length > MAX_RECORD:
            return SegmentContents(records, f"implausible length {length} at byte {pos}")
        start = pos + _HEADER.size
        if start + length > len(data):
            return SegmentContents(records, f"truncated record at byte {pos}")
        payload = data[start : start + length]
        if zlib.crc32(payload, zlib.crc32(data[pos : pos + 4])) != crc:
            return SegmentContents(records, f"CRC mismatch at byte {pos}")
        records.append(payload)
        pos = start + length
    return SegmentContents(records)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
