"""MQTT to the responder app: the message's JSON published at QoS 1 to
``<prefix>/_gateway/responders/<address>/dispatch`` through a connected ``aiomqtt.Client``.

The topic sits under ``_gateway/`` and has four levels after the prefix, so it never
matches the gateway's own device subscription (``<prefix>/+/+/+``) and the broker ACL
lets only the gateway write it (``deploy/mosquitto/telecare.acl``).

The client is the caller's (the gateway owns its connection and reconnects); a publish
that fails because the connection is down is a temporary error.
"""

from __future__ import annotations

import aiomqtt

from telecare.dispatch.notifiers.base import Message, TemporaryDeliveryError

__all__ = ["MqttTransport", "responder_topic"]


def responder_topic(prefix: str, address: str) -> str:
    """Where the responder app ``address`` listens for its dispatches."""
    return f"{prefix.rstrip('/')}/_gateway/responders/{address}/dispatch"


class MqttTransport:
    channel = "mqtt"

    def __init__(self, client: aiomqtt.Client, *, topic_prefix: str = "telecare/v1") -> None:
        self._client = client
        self._prefix = topic_prefix.rstrip("/")

    def topic(self, address: str) -> str:
        return responder_topic(self._prefix, address)

    async def send(self, message: Message) -> str:
        topic = self.topic(message.address)
        try:
            await self._client.publish(topic, message.payload(), qos=1)
        except aiomqtt.MqttError as exc:
            raise TemporaryDeliveryError(f"publish to {topic}: {exc}") from None
        return f"published {topic}"
