"""MQTT to the responder app: the message's JSON published at QoS 1 to
``<prefix>/responders/<address>/dispatch`` through a connected ``aiomqtt.Client``.

The client is the caller's (the gateway owns its connection and reconnects); a publish
that fails because the connection is down is a temporary error.
"""

from __future__ import annotations

import aiomqtt

from dispatch.notifiers.base import Message, TemporaryDeliveryError

__all__ = ["MqttTransport"]


class MqttTransport:
    channel = "mqtt"

    def __init__(self, client: aiomqtt.Client, *, topic_prefix: str = "telecare/v1") -> None:
        self._client = client
        self._prefix = topic_prefix.rstrip("/")

    def topic(self, address: str) -> str:
        return f"{self._prefix}/responders/{address}/dispatch"

    async def send(self, message: Message) -> str:
        topic = self.topic(message.address)
        try:
            await self._client.publish(topic, message.payload(), qos=1)
        except aiomqtt.MqttError as exc:
            raise TemporaryDeliveryError(f"publish to {topic}: {exc}") from None
        return f"published {topic}"
