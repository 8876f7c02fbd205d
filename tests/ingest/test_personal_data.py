"""The incident in issue 9, finding 7: a resident's name sent as ``resident_id`` with an
SpO2 of 91 came back in a log line and on the published dead-letter topic. Through the
real broker, neither the log events nor the topic carry the name or the vital sign."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import aiomqtt
import pytest
from structlog.testing import capture_logs

from telecare.gateway.app import Gateway
from telecare.gateway.config import Config, MqttConfig, StoreConfig
from telecare.gateway.ingest.mqtt import gateway_topic
from telecare.gateway.logging import processors
from tests.helpers import eventually
from tests.ingest.support import listen_dead_letters, provision
from tests.services import MqttServer

pytestmark = pytest.mark.mosquitto

NAME = "Edna Smith"


async def test_a_name_sent_as_resident_id_is_neither_logged_nor_published(
    mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path
) -> None:
    host, port = mqtt_server.host, mqtt_server.port
    config = Config(
        mqtt=MqttConfig(
            host=host,
            port=port,
            topic_prefix=topic_prefix,
            client_id=f"gw-pii-{uuid.uuid4().hex[:8]}",
            clean_session=True,
        ),
        store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
    )
    doc = {"v": 1, "msg_id": "m1", "ts": "2024-05-01T10:00:00Z", "resident_id": NAME}
    doc |= {"spo2": 91, "pulse": 88, "respiration_rate": 22}
    with capture_logs(processors=processors()) as logs:
        async with (
            Gateway(config) as gw,
            listen_dead_letters(host, port, gateway_topic(topic_prefix, "deadletter")) as dl,
        ):
            await provision(gw.store)
            await eventually(lambda: _connected(gw))
            async with aiomqtt.Client(host, port) as device:
                await device.publish(
                    f"{topic_prefix}/s1/pend1/observation", json.dumps(doc).encode(), qos=1
                )
            await eventually(lambda: gw.store.count("dead_letters"), lambda n: n == 1)
            await eventually(lambda: _value(len(dl.messages)), lambda n: n == 1)
    published = dl.messages[0]
    assert set(published) == {
        "v", "received_at", "source", "origin", "device_id", "reason", "payload_bytes"
    }  # fmt: skip
    assert published["device_id"] == "pend1"
    for text in (json.dumps(published), repr(logs)):
        assert "Edna" not in text
        assert "Smith" not in text
        assert "spo2" not in text.lower()
        assert not re.search(r"(?<![\w.:-])91(?![\w.:-])", text), text  # the value itself
    assert any(e["event"] == "dead_letter" for e in logs)


async def _connected(gw: Gateway) -> bool:
    return gw.mqtt.connected.is_set()


async def _value(n: int) -> int:
    return n
