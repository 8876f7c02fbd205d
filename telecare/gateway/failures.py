"""What a failure while handling one message means for that message.

Every ingest source (MQTT, serial, and the HTTP and IP alarm receivers to come) hands a
message to the pipeline and acknowledges it once the pipeline returns. Only one kind of
failure may stop that: **storage unavailable** (the database is away and the spool is
full or unwritable, the SQLite file is locked or the disk full). The message is then left
unacknowledged and its sender redelivers it later.

Any other exception raised while decoding or processing one message is a **poison
message**: something in that message (a number no float can hold, a timestamp that
overflows, a nesting that exhausts the stack, a value a rule did not expect) makes
handling it fail, and it would fail again on every redelivery, holding up every message
behind it. It is dead-lettered with :func:`poison_reason` (the stage and the exception
class, never the exception's text, which may quote the payload) and the gateway moves on.
"""

from __future__ import annotations

import sqlite3
import traceback
from typing import Final

from telecare.gateway.errors import TransientError
from telecare.gateway.store.errors import SpoolFull, is_unavailable

__all__ = ["STAGES", "is_storage_unavailable", "poison_reason", "where"]

#: Where a message can fail: the decode stage (bytes -> model, provisioning, bounds) and
#: the process stage (store, rules, dispatch).
STAGES: Final = ("decode", "process")

#: SQLite primary result codes that mean "the file cannot be written now", not "this
#: statement is wrong": BUSY, LOCKED, IOERR, FULL, CANTOPEN, PROTOCOL.
_SQLITE_UNAVAILABLE: Final = frozenset({5, 6, 10, 13, 14, 15})


def is_storage_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means "storage cannot take this now; try the message again later"
    (leave it unacknowledged) rather than "this message cannot be handled" (dead-letter)."""
    if isinstance(exc, SpoolFull | TransientError) or is_unavailable(exc):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_UNAVAILABLE
    return False


def where(exc: BaseException) -> str:
    """The innermost code location of ``exc`` (``module.py:function``), for a reason or
    a log line: it points a developer at the failure without quoting any value."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown location"
    last = frames[-1]
    filename = last.filename.replace("\\", "/").rsplit("/", 2)
    return f"{'/'.join(filename[-2:])}:{last.name}"


def poison_reason(stage: str, exc: BaseException) -> str:
    """The dead-letter reason for a message whose ``stage`` raised ``exc``."""
    return f"{stage} failed: {type(exc).__name__} in {where(exc)}"
