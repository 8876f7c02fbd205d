"""Simulated alarm receiver: Ademco Contact ID messages as it prints them on its serial
output (one 16-digit message a line, CR LF), with a correct checksum, and a stub that
writes them to a serial device path (a pty slave).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable

from telecare.devices.codecs.contact_id import digit_value

__all__ = ["checksum_digit", "encode_contact_id", "run_alarm_receiver"]

_DIGITS = "0123456789BCDEF"


def checksum_digit(digits15: str) -> str:
    """The 16th digit that makes the digit sum a multiple of 15 (``0`` counts as 10)."""
    total = sum(digit_value(c) for c in digits15)
    need = 15 - total % 15  # 1..15
    return "0" if need == 10 else "0123456789ABCDEF"[need]


def encode_contact_id(
    account: str,
    qualifier: int,
    code: int,
    *,
    group: int = 1,
    zone: int = 0,
    message_type: str = "18",
    line_end: bytes = b"\r\n",
) -> bytes:
    """One Contact ID message line, e.g. ``encode_contact_id("1234", 1, 101, zone=15)``.

    ``account`` is 4 digits 0-9/B-F; ``group`` 0..99 and ``zone`` 0..999 are decimal.
    """
    if len(account) != 4 or any(c not in _DIGITS for c in account.upper()):
        raise ValueError(f"account {account!r} must be 4 digits 0-9/B-F")
    if not (0 <= qualifier <= 9 and 0 <= code <= 999 and 0 <= group <= 99 and 0 <= zone <= 999):
        raise ValueError("qualifier 0..9, code 0..999, group 0..99, zone 0..999")
    body = f"{account.upper()}{message_type}{qualifier}{code:03d}{group:02d}{zone:03d}"
    return (body + checksum_digit(body)).encode("ascii") + line_end


async def run_alarm_receiver(
    path: str | int, lines: Iterable[bytes], interval_s: float = 0.5
) -> int:
    """Write each line to the serial device at ``path`` (or an open fd), ``interval_s`` apart.

    Returns the number of bytes written.
    """
    fd = path if isinstance(path, int) else os.open(path, os.O_WRONLY | os.O_NOCTTY)
    written = 0
    try:
        for line in lines:
            view = memoryview(line)
            while view:
                n = os.write(fd, view)
                view = view[n:]
                written += n
            await asyncio.sleep(interval_s)
    finally:
        if not isinstance(path, int):
            os.close(fd)
    return written
