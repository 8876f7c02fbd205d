"""The outbound publisher: its own MQTT session, separate from ingest; a publish while it
is away fails with ``PublishFailed`` (callers retry); it reconnects on its own."""

from __future__ import annotations

import asyncio
import uuid

import aiomqtt
import pytest

from telecare.dispatch.notifiers.base import Message, TemporaryDeliveryError
from telecare.gateway.backoff import Backoff
from telecare.gateway.config import MqttConfig
from telecare.gateway.dispatching import GatewayMqttTransport
from telecare.gateway.publisher import MqttPublisher, PublishFailed, publisher_identity
from tests.helpers import eventually
from tests.services import MqttServer, free_port

pytestmark = pytest.mark.mosquitto


def test_the_publisher_has_its_own_identity() -> None:
    assert publisher_identity(MqttConfig(username="telecare-gateway")) == (
        "telecare-gateway-out",
        "telecare-gateway-out",
    )
    assert publisher_identity(MqttConfig(client_id="gw-1")) == ("", "gw-1-out")


async def test_publishes_on_its_own_session(mqtt_server: MqttServer, topic_prefix: str) -> None:
    topic = f"{topic_prefix}/_gateway/deadletter"
    config = MqttConfig(port=mqtt_server.port, client_id=f"gw-{uuid.uuid4().hex[:8]}")
    async with (
        aiomqtt.Client(mqtt_server.host, mqtt_server.port) as listener,
        MqttPublisher(config) as publisher,
    ):
        await listener.subscribe(topic, qos=1)
        await eventually(lambda: _true(publisher.connected))
        await publisher.publish(topic, b'{"v":1}')
        async with asyncio.timeout(10):
            message = await anext(aiter(listener.messages))
    assert message.payload == b'{"v":1}'
    assert publisher.published == 1


async def test_a_publish_while_the_broker_is_away_fails_and_says_so() -> None:
    config = MqttConfig(port=free_port(), client_id=f"gw-{uuid.uuid4().hex[:8]}")
    async with MqttPublisher(config, backoff=Backoff(initial=0.05, cap=0.1)) as publisher:
        with pytest.raises(PublishFailed, match="not connected"):
            await publisher.publish("t/_gateway/deadletter", b"{}")


async def _true(value: bool) -> bool:
    return value


async def test_the_responder_transport_treats_a_disconnected_publisher_as_temporary() -> None:
    """The MQTT notifier goes through the publisher; while it is away the cascade is told
    "temporary" (retry), not a permanent failure."""
    config = MqttConfig(port=free_port(), client_id=f"gw-{uuid.uuid4().hex[:8]}")
    async with MqttPublisher(config, backoff=Backoff(initial=0.05, cap=0.1)) as publisher:
        transport = GatewayMqttTransport(publisher.publish, "t/telecare/v1")
        message = Message("d-1", "kh1", "mqtt", "app1", "Please attend", {"priority": 1})
        with pytest.raises(TemporaryDeliveryError, match="not connected"):
            await transport.send(message)
