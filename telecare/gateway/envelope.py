"""What every ingest source hands to the pipeline: bytes as they arrived."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Envelope"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """Bytes as they arrived, before any decoding."""

    source: str  # "mqtt", "serial", "api"
    origin: str  # topic, serial port or endpoint
    payload: bytes
    received_at: datetime
