"""Notifier transports behind one small interface (``Transport.send(message)``): signed
webhook, MQTT to the responder app, e-mail over SMTP; plus retries with backoff and
delivery receipts (:func:`deliver`)."""

from telecare.dispatch.notifiers.base import (
    DeliveryError,
    Message,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    Transport,
)
from telecare.dispatch.notifiers.delivery import RetryPolicy, backoff_delays, deliver

__all__ = [
    "DeliveryError",
    "Message",
    "PermanentDeliveryError",
    "RetryPolicy",
    "TemporaryDeliveryError",
    "Transport",
    "backoff_delays",
    "deliver",
]
