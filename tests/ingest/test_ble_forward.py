"""BLE characteristics forwarded by a hub over the real broker, decoded by the running
gateway into readings for the forwarded device; bad values become dead letters."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from telecare.devices.codecs.ble import SfloatSpecial
from telecare.devices.model import Device, DeviceKind, Resident
from telecare.firmware_stubs.ble_hub import encode_2a5e, encode_2a5f, encode_2a35
from telecare.firmware_stubs.mqtt_device import Hub
from telecare.gateway.app import Gateway
from telecare.gateway.config import Config, MqttConfig, StoreConfig
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
        await gw.store.upsert_device(
            Device("cuff1", "s1", DeviceKind.BP_CUFF, "res1", "ble", hub_id="hub1")
        )

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

    latest = {k: v for k, (_, v) in (await gw.store.latest_vitals(["res1"]))["res1"].items()}
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


STORAGE, DEMO, INVALID = 1 << 9, 1 << 10, 1 << 15  # PLX measurement status bits
SENSOR_DISCONNECTED = 1 << 15  # PLX device and sensor status bit


async def test_ble_device_time_demo_invalid_data_and_user_ids(
    gateway: Gateway, mqtt_server: MqttServer, topic_prefix: str
) -> None:
    """Issue 10 item 12: the device's own time is used, demonstration/invalid data from a
    disconnected sensor is dead-lettered, and a cuff's user id picks the resident."""
    gw = gateway
    await gw.store.upsert_resident(Resident("res2", "s1"))
    week_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=7)
    async with Hub(
        "s1", "hub1", host=mqtt_server.host, port=mqtt_server.port, prefix=topic_prefix
    ) as hub:
        # From storage, demo and invalid, sensor disconnected: not a measurement.
        await _forward(
            hub,
            "ox1",
            "2A5E",
            encode_2a5e(
                97,
                64,
                timestamp=week_ago.replace(tzinfo=None),
                measurement_status=STORAGE | DEMO | INVALID,
                device_status=SENSOR_DISCONNECTED,
            ),
        )
        # For user 2 of a cuff paired with res1 and no user map: whose is it? Nobody's.
        await _forward(hub, "cuff1", "2A35", encode_2a35(150, 95, 113, user_id=2))
        letters = await eventually(gw.store.dead_letters, lambda ds: len(ds) == 2)
        reasons = sorted(d.reason for d in letters)
        assert reasons[0].startswith("BLE 2A35: user 2 of device 'cuff1' is not mapped")
        assert reasons[1].startswith("BLE 2A5E: not a measurement of the patient")
        assert "data for demonstration" in reasons[1]
        assert "invalid measurement detected" in reasons[1]
        assert "sensor disconnected" in reasons[1]
        assert await gw.store.count("readings") == 0

        # A good value from the oximeter's memory keeps its own (week-old) time.
        await _forward(
            hub,
            "ox1",
            "2A5E",
            encode_2a5e(
                95, 70, timestamp=week_ago.replace(tzinfo=None), measurement_status=STORAGE
            ),
        )
        await eventually(lambda: gw.store.count("readings"), lambda n: n == 2)
        assert (await gw.store.latest_vitals(["res1"]))["res1"]["spo2"] == (week_ago, 95.0)

        # Once user 2 is mapped to res2, the cuff's reading for user 2 is res2's.
        await gw.store.set_device_user("cuff1", 2, "res2")
        await gw.store.set_device_user("cuff1", 1, "res1")
        await _forward(hub, "cuff1", "2A35", encode_2a35(150, 95, 113, user_id=2))
        await eventually(lambda: gw.store.count("readings"), lambda n: n == 5)
        assert (await gw.store.latest_vitals(["res2"]))["res2"]["systolic_bp"][1] == 150.0
        assert "systolic_bp" not in (await gw.store.latest_vitals(["res1"]))["res1"]
        # The unknown user (0xFF) is never guessed.
        await _forward(hub, "cuff1", "2A35", encode_2a35(150, 95, 113, user_id=0xFF))
        letters = await eventually(gw.store.dead_letters, lambda ds: len(ds) == 3)
        assert any("unknown user (0xFF)" in d.reason for d in letters)
