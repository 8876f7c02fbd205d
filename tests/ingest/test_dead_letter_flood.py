"""A device flooding the gateway with bad input is shed, counted and alarmed as a
technical fault, never at the expense of another device's alarm (issue 9, finding 7)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from telecare.devices.model import AlertKind
from telecare.firmware_stubs.mqtt_device import Pendant
from telecare.gateway.app import Gateway
from telecare.gateway.config import Config, MqttConfig, StoreConfig
from telecare.gateway.ingest.deadletter import (
    BURST,
    FLOOD_PRIORITY,
    DeadLetterLimiter,
    Verdict,
    flood_alert,
    sender_key,
)
from tests.helpers import eventually
from tests.ingest.support import provision
from tests.services import MqttServer

A, S, F = Verdict.ADMIT, Verdict.SHED, Verdict.FLOOD_STARTED


def test_each_sender_has_its_own_bucket_and_one_alarm_per_episode() -> None:
    limiter = DeadLetterLimiter(burst=3, per_second=1.0)
    assert [limiter.admit("pend2", 0.0) for _ in range(6)] == [A, A, A, F, S, S]
    assert limiter.admit("pend1", 0.0) is A  # another device is not affected
    assert limiter.shed("pend2") == 3
    assert limiter.admit("pend2", 1.0) is A  # one token back, but the flood goes on
    assert limiter.admit("pend2", 1.0) is S
    assert limiter.stats() == {"dead_letters_shed": 4, "floods": 1, "flooding": 1}
    # Quiet long enough to refill the whole bucket: the episode is over.
    assert limiter.admit("pend2", 5.0) is A
    assert limiter.shed("pend2") == 0
    assert [limiter.admit("pend2", 5.0) for _ in range(3)] == [A, A, F]  # a new episode
    assert limiter.floods == 2


def test_senders_are_bounded() -> None:
    limiter = DeadLetterLimiter(burst=1, per_second=1.0, max_senders=2)
    for key in ("a", "b", "c"):
        limiter.admit(key, 0.0)
    assert limiter.admit("a", 0.0) is A  # "a" was forgotten, not held against it


def test_dead_letters_are_charged_to_the_sender() -> None:
    prefix = "telecare/v1"
    assert sender_key("mqtt", f"{prefix}/s1/pend2/event", "pend2", prefix) == "pend2"
    # No known device: the topic's device level, whatever site or channel it varies.
    assert sender_key("mqtt", f"{prefix}/s9/pend2/x", None, prefix) == "pend2"
    assert sender_key("mqtt", f"{prefix}/s8/pend2/y", None, prefix) == "pend2"
    assert sender_key("serial", "/dev/ttyUSB0", None, prefix) == "serial:/dev/ttyUSB0"


def test_flood_alert_is_one_per_episode() -> None:
    at = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    alert = flood_alert("pend2", None, at, "malformed JSON 943 476 5919")
    assert alert.kind is AlertKind.TECHNICAL
    assert alert.priority == FLOOD_PRIORITY
    assert "943" not in alert.reason
    assert flood_alert("pend2", None, at, "other").alert_id == alert.alert_id
    assert flood_alert("pend3", None, at, "x").alert_id != alert.alert_id


def _connected(gw: Gateway) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return gw.mqtt.connected.is_set()

    return probe


@pytest.mark.mosquitto
async def test_a_flooding_device_does_not_delay_another_devices_alarm(
    mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path
) -> None:
    host, port = mqtt_server.host, mqtt_server.port
    config = Config(
        mqtt=MqttConfig(
            host=host,
            port=port,
            topic_prefix=topic_prefix,
            client_id=f"gw-flood-{uuid.uuid4().hex[:8]}",
            clean_session=True,
        ),
        store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
    )
    flood = 3000
    async with Gateway(config) as gw:
        await provision(gw.store, pendants=2)
        await eventually(_connected(gw))
        counters = gw.pipeline.counters
        async with aiomqtt.Client(host, port) as flooder:
            sent = 0

            async def send(n: int) -> None:
                nonlocal sent
                for _ in range(n):
                    await flooder.publish(f"{topic_prefix}/s1/pend2/event", b'{"v":1,', qos=1)
                    sent += 1

            async def send_flood() -> None:  # four publishers: a backlog builds up
                await asyncio.gather(*(send(flood // 4) for _ in range(4)))

            flooding = asyncio.create_task(send_flood())
            await eventually(lambda: _value(sent), lambda n: n >= flood // 2)
            # Mid-flood, behind a backlog of bad input, another device raises an alarm:
            # stored within 2 s.
            async with Pendant("s1", "pend1", host=host, port=port, prefix=topic_prefix) as p:
                msg_id = await p.press()

            async def pend1_alert() -> list[str]:
                return [a.source_key or "" for a in await gw.store.recent_alerts()]

            await eventually(pend1_alert, lambda keys: f"pend1/{msg_id}" in keys, timeout=2.0)
            assert not flooding.done()  # the flood was still going on
            await flooding
        await eventually(
            lambda: _value(counters["dead_letters"] + counters["dead_letters_shed"]),
            lambda n: n == flood,
        )
        stored = await gw.store.count("dead_letters")
        alerts = await gw.store.recent_alerts()
    # Shed, not stored: the burst plus what refilled while the flood lasted.
    assert BURST <= stored < BURST + 30, stored
    assert counters["dead_letters_shed"] == flood - stored
    flood_alerts = [a for a in alerts if a.device_id == "pend2"]
    assert len(flood_alerts) == 1, flood_alerts
    assert flood_alerts[0].kind is AlertKind.TECHNICAL
    assert flood_alerts[0].priority == FLOOD_PRIORITY
    assert flood_alerts[0].site_id == "s1"


async def _value(n: int) -> int:
    return n
