"""Issue 10 item 9: heartbeats are proof of life. Through Mosquitto with a short heartbeat
interval: no alarm while heartbeats flow, exactly one when they stop, cleared when the
device is heard again. The gateway runs on a fake clock, so the test jumps time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from telecare.devices.model import (
    Alert,
    Device,
    DeviceKind,
    DispatchState,
    EventType,
    Resident,
    Site,
    SiteKind,
)
from telecare.firmware_stubs.mqtt_device import Pendant
from telecare.gateway.app import Gateway
from telecare.gateway.config import Config, MqttConfig, RulesSection, StoreConfig
from telecare.rules.clock import FakeClock
from tests.helpers import eventually
from tests.services import MqttServer

INTERVAL_S = 5  # missing after 3 x 5 s without a message


async def _missed(gw: Gateway) -> list[Alert]:
    return [
        a for a in await gw.store.recent_alerts(100) if a.event_type is EventType.HEARTBEAT_MISSED
    ]


@pytest.mark.mosquitto
async def test_heartbeats_keep_a_device_alive_and_silence_raises_exactly_one_alarm(
    mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path
) -> None:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    # A device id of its own: the broker is shared, and MQTT client ids are broker-wide.
    device_id = f"hb-{uuid.uuid4().hex[:8]}"
    config = Config(
        mqtt=MqttConfig(
            host=mqtt_server.host,
            port=mqtt_server.port,
            topic_prefix=topic_prefix,
            client_id=f"gw-{uuid.uuid4().hex[:8]}",
        ),
        store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
        rules=RulesSection(state_file=str(tmp_path / "rules.json"), tick_s=1.0),
    )
    async with Gateway(config, clock=clock) as gw:
        await gw.store.upsert_site(Site("s1", SiteKind.HOME))
        await gw.store.upsert_resident(Resident("res1", "s1"))
        await gw.store.upsert_device(
            Device(device_id, "s1", DeviceKind.PENDANT, "res1", heartbeat_interval_s=INTERVAL_S)
        )
        await eventually(lambda: _connected(gw))
        async with Pendant(
            "s1", device_id, host=mqtt_server.host, port=mqtt_server.port, prefix=topic_prefix
        ) as pendant:
            # A minute of heartbeats every 5 s: the device is alive throughout.
            for n in range(1, 13):
                await pendant.heartbeat()
                await eventually(lambda n=n: _count(gw, "heartbeats", n))
                clock.advance(INTERVAL_S)
                await gw.pipeline.tick()
            assert await _missed(gw) == []

            # Silence: 16 s later (more than 3 intervals) exactly one alarm, and no second
            # one however long it stays silent.
            for _ in range(10):
                clock.advance(INTERVAL_S)
                await gw.pipeline.tick()
            [alert] = await _missed(gw)
            assert alert.device_id == device_id
            assert alert.priority == 4
            dispatch = await eventually(lambda: gw.dispatcher.repo.load_for_alert(alert.alert_id))
            assert dispatch is not None
            assert dispatch.state is DispatchState.RAISED

            # Heard again: the alarm clears (auto-clear while unacknowledged).
            await pendant.heartbeat()
            cleared = await eventually(
                lambda: gw.dispatcher.repo.load(dispatch.dispatch_id),
                lambda d: d is not None and d.state is DispatchState.RESOLVED,
            )
            assert cleared is not None
            assert len(await _missed(gw)) == 1


async def _connected(gw: Gateway) -> bool:
    return gw.mqtt.connected.is_set()


async def _count(gw: Gateway, counter: str, n: int) -> bool:
    return gw.pipeline.counters[counter] >= n
