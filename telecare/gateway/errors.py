"""The gateway's exception hierarchy, split by what the caller does next::

    TelecareError
    ├── ConfigError          fix the configuration file or environment, then restart
    ├── InputRejected        bad input from a device or client: dead-letter / 4xx, carry on
    │   └── UnknownDevice    a device that is not provisioned (or not on this site)
    ├── AuthError            credentials missing or wrong: 401/403, no retry
    └── TransientError       a dependency is away (broker, database): retry with backoff

Codec errors (``devices.codecs.Malformed`` / ``Incomplete``) stay in the devices layer;
the pipeline turns a ``Malformed`` into a dead letter.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "InputRejected",
    "TelecareError",
    "TransientError",
    "UnknownDevice",
]


class TelecareError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(TelecareError):
    """The configuration is invalid. The message names the key and what is wrong."""


class InputRejected(TelecareError):
    """Input from a device or client was refused; ``reason`` is safe to log and return."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownDevice(InputRejected):
    """A message from a device that is not provisioned."""


class AuthError(TelecareError):
    """Authentication or authorisation failed."""


class TransientError(TelecareError):
    """A dependency is unavailable; the operation may succeed later."""
