"""Bad input through the real broker and a running gateway: each case becomes a stored
dead letter with a specific reason, a message on ``<prefix>/_gateway/deadletter`` and a
counter, and a valid alarm sent right after it is still stored. Serial noise goes the
same way through a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from telecare.devices.codecs import json_v1
from telecare.devices.model import EventType
from telecare.firmware_stubs.alarm_receiver import encode_contact_id
from telecare.firmware_stubs.mqtt_device import Pendant
from telecare.gateway.app import Gateway
from telecare.gateway.config import Config, MqttConfig, SerialPortConfig, StoreConfig
from telecare.gateway.ingest.mqtt import gateway_topic
from telecare.gateway.store.rows import DEAD_LETTER_PREVIEW
from tests.helpers import eventually
from tests.ingest.ptys import PtyPort
from tests.ingest.support import listen_dead_letters, provision
from tests.services import MqttServer, PgServer

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]

NOW = datetime(2024, 5, 1, 10, 0, tzinfo=UTC).isoformat()


def _reading(value: str) -> bytes:
    return (
        f'{{"v":1,"msg_id":"r1","ts":"{NOW}",'
        f'"readings":[{{"metric":"spo2","value":{value},"unit":"%"}}]}}'
    ).encode()


@dataclass(frozen=True)
class Case:
    name: str
    site: str
    device: str
    channel: str
    payload: bytes
    reason: str  # a specific part of the dead letter's reason
    device_id: str | None


CASES = [
    Case("malformed_json", "s1", "pend1", "event", b'{"v":1,"type":', "malformed JSON", "pend1"),
    Case("not_utf8", "s1", "pend1", "event", b"\xff\xfe\x00", "not UTF-8", "pend1"),
    Case("wrong_type", "s1", "pend1", "reading", _reading('"high"'), "is not a number", "pend1"),
    Case("nan", "s1", "pend1", "reading", _reading("NaN"), "NaN is not allowed", "pend1"),
    Case("infinity", "s1", "pend1", "reading", _reading("Infinity"), "Infinity is not", "pend1"),
    Case("impossible", "s1", "pend1", "reading", _reading("150"), "is impossible", "pend1"),
    Case(
        "unknown_event_type",
        "s1",
        "pend1",
        "event",
        json_v1.encode_event("e1", datetime.now(UTC), "earthquake"),
        "not in the taxonomy",
        "pend1",
    ),
    Case(
        "unknown_device",
        "s1",
        "ghost1",
        "event",
        json_v1.encode_event("e1", datetime.now(UTC), EventType.PENDANT),
        "'ghost1' is not provisioned",
        "ghost1",
    ),
    Case(
        "other_sites_topic",
        "s2",
        "pend1",
        "event",
        json_v1.encode_event("e1", datetime.now(UTC), EventType.PENDANT),
        "belongs to site 's1', not 's2'",
        "pend1",
    ),
    Case(
        "oversized",
        "s1",
        "pend1",
        "event",
        b'{"v":1,"pad":"' + b"x" * json_v1.MAX_PAYLOAD_BYTES + b'"}',
        f"exceeds the {json_v1.MAX_PAYLOAD_BYTES} limit",
        "pend1",
    ),
]


@pytest.fixture
async def gateway(
    mqtt_server: MqttServer, pg_server: PgServer, pg_schema: str, topic_prefix: str
) -> AsyncIterator[Gateway]:
    config = Config(
        mqtt=MqttConfig(
            host=mqtt_server.host,
            port=mqtt_server.port,
            topic_prefix=topic_prefix,
            client_id=f"gw-bad-{uuid.uuid4().hex[:8]}",
            clean_session=True,
        ),
        store=StoreConfig(backend="postgres", dsn=pg_server.dsn, schema=pg_schema),
    )
    async with Gateway(config) as gw:
        await provision(gw.store)
        await eventually(_connected(gw))
        yield gw


def _connected(gw: Gateway) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return gw.mqtt.connected.is_set()

    return probe


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_input_is_dead_lettered_and_other_traffic_flows(
    case: Case, gateway: Gateway, mqtt_server: MqttServer, topic_prefix: str
) -> None:
    gw = gateway
    host, port = mqtt_server.host, mqtt_server.port
    topic = f"{topic_prefix}/{case.site}/{case.device}/{case.channel}"
    async with listen_dead_letters(
        host, port, gateway_topic(topic_prefix, "deadletter")
    ) as listener:
        async with aiomqtt.Client(host, port) as raw:
            await raw.publish(topic, case.payload, qos=1)
        published = await listener.wait_for(case.reason)

        async with Pendant("s1", "pend1", host=host, port=port, prefix=topic_prefix) as pendant:
            msg_id = await pendant.press()
        await eventually(lambda: gw.store.count("alarm_events"), lambda n: n == 1)

    letters = await gw.store.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert case.reason in letter.reason
    assert letter.source == "mqtt"
    assert letter.origin == topic
    assert letter.device_id == case.device_id
    assert letter.payload == case.payload[:DEAD_LETTER_PREVIEW]  # a bounded preview
    assert letter.payload_bytes == len(case.payload)
    assert gw.pipeline.counters["dead_letters"] == 1

    assert published["origin"] == topic
    assert published["device_id"] == case.device_id
    assert published["reason"] == letter.reason
    assert published["payload_bytes"] == len(case.payload)
    assert "payload_b64" not in published  # the topic carries the reason and ids only

    alerts = await eventually(gw.store.recent_alerts)  # stored after its event
    assert [a.source_key for a in alerts] == [f"pend1/{msg_id}"]


async def test_serial_noise_is_dead_lettered_and_published_and_alarms_still_flow(
    mqtt_server: MqttServer, pg_server: PgServer, pg_schema: str, topic_prefix: str, tmp_path: Path
) -> None:
    host, port = mqtt_server.host, mqtt_server.port
    pty = PtyPort(tmp_path)
    config = Config(
        mqtt=MqttConfig(
            host=host,
            port=port,
            topic_prefix=topic_prefix,
            client_id=f"gw-bad-{uuid.uuid4().hex[:8]}",
            clean_session=True,
        ),
        store=StoreConfig(backend="postgres", dsn=pg_server.dsn, schema=pg_schema),
        serial=(SerialPortConfig(str(pty.path), "contact_id", "arc1"),),
    )
    try:
        async with (
            Gateway(config) as gw,
            listen_dead_letters(host, port, gateway_topic(topic_prefix, "deadletter")) as dl,
        ):
            await provision(gw.store)
            assert gw.serial is not None
            await asyncio.wait_for(gw.serial.readers[0].is_open.wait(), 10)
            pty.reader_opened()
            await eventually(_connected(gw))
            pty.write(b"\x00\xff garbage \x07" * 20)
            published = await dl.wait_for("serial noise")
            pty.write(encode_contact_id("1234", 1, 101, zone=3))
            async with Pendant("s1", "pend1", host=host, port=port, prefix=topic_prefix) as p:
                await p.press()
            await eventually(lambda: gw.store.count("alarm_events"), lambda n: n == 2)
            letters = await gw.store.dead_letters()
        assert len(letters) == 1
        assert letters[0].reason.startswith("serial noise: skipped")
        assert (letters[0].source, letters[0].origin) == ("serial", str(pty.path))
        assert published["reason"] == letters[0].reason
        assert published["device_id"] == "arc1"
    finally:
        pty.unplug()
