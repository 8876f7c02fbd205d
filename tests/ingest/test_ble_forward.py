"""BLE characteristics forwarded by a hub over the real broker, decoded by the running
gateway into readings for the forwarded device; bad values become dead letters."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devices.codecs.ble import SfloatSpecial
from devices.model import Device, DeviceKind
from firmware_stubs.ble_hub import encode_2a5e, encode_2a5f, encode_2a35
from firmware_stubs.mqtt_device import Hub
from gateway.app import Gateway
from gateway.config import Config, MqttConfig, StoreConfig
from tests.helpers import eventually
from tests.ingest.support import provision
from tests.services import MqttServer

pytestmark = [pytest.mark.mosquitto]


@pytest.fixture
async def gateway(
    mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path
) -> AsyncIterator[Gateway]:
    config = Config(
        mqtt=MqttConfig(
            host=mqtt_server.host,
            port=mqtt_server.port,
            topic_prefix=topic_prefix,
            client_id=f"gw-ble-{uuid.uuid4().hex[:8]}",
            clean_session=True,
        ),
        store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
    )
    async with Gateway(config) as gw:
        await provision(gw.store)
        await gw.store.upsert_device(Device("cuff1", "s1", DeviceKind.BP_CUFF, "res1", "ble"))

        async def connected() -> bool:
            return gw.mqtt.connected.is_set()

        await eventually(connected)
        yield gw


async def _forward(hub: Hub, device_id: str, char: str, data: bytes) -> str:
    msg_id = hub.next_msg_id()
    doc = {
        "v": 1,
        "msg_id": msg_id,
        "ts": datetime.now(UTC).isoformat(),
        "device_id": device_id,
        "uuid": char,
        "data": data.hex(),
    }
    await hub.publish("ble", json.dumps(doc).encode())
    return msg_id


async def test_forwarded_ble_values_become_readings_or_dead_letters(
    gateway: Gateway, mqtt_server: MqttServer, topic_prefix: str
) -> None:
    gw = gateway
    async with Hub(
        "s1", "hub1", host=mqtt_server.host, port=mqtt_server.port, prefix=topic_prefix
    ) as hub:
        await _forward(hub, "ox1", "2A5E", encode_2a5e(95, 72))
        await eventually(lambda: gw.store.count("readings"), lambda n: n == 2)
        await _forward(hub, "ox1", "2a5f", encode_2a5f(93, 131, fast=(92, 130)))
        await _forward(hub, "cuff1", "2A35", encode_2a35(142, 88, 106, kpa=True, pulse=66))
        await eventually(lambda: gw.store.count("readings"), lambda n: n == 8)

        await _forward(hub, "ox1", "2A5E", encode_2a5e(SfloatSpecial.NAN, SfloatSpecial.NRES))
        await _forward(hub, "ox1", "2A5E", encode_2a5e(95, 72)[:3])
        await _forward(hub, "ox1", "2A37", b"\x00\x48")
        await _forward(hub, "ghost1", "2A5E", encode_2a5e(95, 72))
        letters = await eventually(gw.store.dead_letters, lambda ds: len(ds) == 4)

    latest = {k: v for k, (_, v) in (await gw.store.latest_readings("res1")).items()}
    assert latest["spo2"] == 93.0
    assert latest["systolic_bp"] == pytest.approx(142, abs=0.5)  # sent in kPa
    assert latest["diastolic_bp"] == pytest.approx(88, abs=0.5)
    assert latest["pulse"] in (66.0, 131.0)  # same resident, two devices
    reasons = sorted(d.reason for d in letters)
    assert any(r.startswith("BLE 2A5E: no measurement value") and "NAN" in r for r in reasons)
    assert any(r.startswith("BLE 2A5E: ") and "no measurement" not in r for r in reasons)
    assert any("BLE characteristic 2A37 is not supported" in r for r in reasons)
    assert any("forwarded for unknown device 'ghost1'" in r for r in reasons)
    assert gw.pipeline.counters["readings"] == 8
