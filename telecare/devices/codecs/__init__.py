"""Pure device codecs: bytes in, readings / events / a specific error out. No I/O.

Error hierarchy (what the caller does next)::

    CodecError                  base; never raised itself
    ├── Incomplete              need more bytes: keep the buffer, read again
    └── Malformed               bad input: dead-letter it with ``reason`` and move on
        └── UnknownDevice       well-formed but from a device we have not provisioned

Stream codecs (serial) expose ``parse(buffer) -> (frame, consumed)`` and raise
``Incomplete``/``Malformed``; a ``Malformed`` carries ``skip`` (how many bytes to drop
to resynchronise). Message codecs (MQTT) expose ``decode(payload, ...)``.
"""

from __future__ import annotations

__all__ = ["CodecError", "Incomplete", "Malformed", "UnknownDevice"]


class CodecError(Exception):
    """Base class of every codec error."""


class Incomplete(CodecError):
    """The buffer holds the start of a frame but not all of it yet."""


class Malformed(CodecError):
    """The input is not a valid frame/message. ``reason`` is specific and safe to log.

    ``skip`` is how many bytes a stream parser should discard before trying again
    (at least 1, so a parser always makes progress through noise).
    """

    def __init__(self, reason: str, *, skip: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.skip = max(1, skip)


class UnknownDevice(Malformed):
    """The message is well formed but names a device that is not provisioned."""
