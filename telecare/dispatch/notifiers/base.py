"""The transport interface and the message every transport sends.

Error hierarchy (what :func:`~dispatch.notifiers.delivery.deliver` does next)::

    DeliveryError                 base; never raised itself
    ├── TemporaryDeliveryError    network down, 5xx, SMTP 4xx: retry with backoff
    └── PermanentDeliveryError    4xx, bad address, SMTP 5xx: give up, record a failed receipt

A message carries identifiers and the reason only (no names, addresses or notes): the
responder app or the console looks the rest up behind its own authentication.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "DeliveryError",
    "Message",
    "PermanentDeliveryError",
    "TemporaryDeliveryError",
    "Transport",
]


class DeliveryError(Exception):
    """Base class of every delivery error."""


class TemporaryDeliveryError(DeliveryError):
    """Worth retrying."""


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help; fix the address or the endpoint."""


@dataclass(frozen=True, slots=True)
class Message:
    dispatch_id: str
    #: A responder id, or ``"supervisors"``.
    recipient: str
    channel: str
    #: URL, responder-app id (one topic level) or e-mail address.
    address: str
    subject: str
    body: dict[str, Any] = field(default_factory=dict)
    #: Unique per message (kept across its retries): receivers refuse a repeat.
    delivery_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def payload(self) -> bytes:
        """The canonical JSON body (sorted keys, so a signature is reproducible)."""
        doc = {
            "delivery_id": self.delivery_id,
            "dispatch_id": self.dispatch_id,
            "recipient": self.recipient,
            "subject": self.subject,
            **self.body,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class Transport(Protocol):
    #: The channel name this transport serves: ``webhook``, ``mqtt`` or ``email``.
    channel: str

    async def send(self, message: Message) -> str:
        """Deliver once; return a short detail for the receipt (status, message id).
        Raise :class:`TemporaryDeliveryError` or :class:`PermanentDeliveryError`."""
        ...
