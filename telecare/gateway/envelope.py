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
    #: A retained MQTT message the broker replayed because the gateway (re)subscribed,
    #: not one published just now: ``received_at`` says nothing of when it was sent
    #: (a device's last will can be days old). See ``docs/protocol.md`` ("status").
    retained: bool = False
