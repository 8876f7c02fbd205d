"""The alarm lane (gateway/ingest/lanes.py): with the telemetry path blocked at the
database, alarms still become dispatches. Real Mosquitto, real PostgreSQL, the real
gateway; the block is a real table lock on ``readings`` held by another connection, so
the telemetry lane's COPY waits while its in-flight window and the broker's queue fill.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import psycopg

from telecare.devices.codecs import json_v1
from telecare.devices.model import (
    Device,
    DeviceKind,
    DispatchState,
    EventType,
    Resident,
    Site,
    SiteKind,
)
from telecare.firmware_stubs.mqtt_device import Hub, Pendant
from telecare.gateway.app import Gateway
from telecare.gateway.auth import hash_secret, write_password_file
from telecare.gateway.config import Config, MqttConfig, RulesSection, StoreConfig
from telecare.gateway.ingest.lanes import alarm_subscriptions, is_alarm_topic, lane_mqtt_config
from telecare.rules.alarms import alarm_id_for
from tests.helpers import eventually
from tests.ingest.test_provision import shipped_broker
from tests.services import MqttServer

READING_MESSAGES = 60


def _config(mqtt: MqttServer, prefix: str, dsn: str, schema: str, tmp: Path) -> Config:
    return Config(
        # A small window: a handful of stuck readings fills it (the broker's own limit,
        # 20 by default, holds the rest back in its queue for this session).
        mqtt=MqttConfig(
            host=mqtt.host,
            port=mqtt.port,
            client_id=f"gw-{uuid.uuid4().hex[:8]}",
            topic_prefix=prefix,
            max_inflight=10,
        ),
        store=StoreConfig(
            backend="postgres",
            dsn=dsn,
            schema=schema,
            timescale=False,
            spool_dir=str(tmp / "spool"),
        ),
        rules=RulesSection(state_file=str(tmp / "rules.json"), tick_s=3600),
    )


async def _provision(gw: Gateway) -> None:
    store = gw.store
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    await store.upsert_resident(Resident("r1", "s1"))
    await store.upsert_resident(Resident("r2", "s1"))
    await store.upsert_device(Device("pend1", "s1", DeviceKind.PENDANT, "r1"))
    await store.upsert_device(Device("hub1", "s1", DeviceKind.HUB))
    await store.upsert_device(Device("pend2", "s1", DeviceKind.PENDANT, "r2", hub_id="hub1"))
    await store.upsert_device(Device("oxi1", "s1", DeviceKind.OXIMETER, "r1", hub_id="hub1"))


@asynccontextmanager
async def _running(config: Config) -> AsyncIterator[Gateway]:
    async with Gateway(config) as gw:
        await _provision(gw)
        assert gw.alarm_mqtt is not None
        lane = gw.alarm_mqtt
        await eventually(lambda: _true(gw.mqtt.connected.is_set() and lane.subscribed))
        yield gw


async def _true(value: bool) -> bool:
    return value


@asynccontextmanager
async def _readings_locked(dsn: str, schema: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """Hold ``ACCESS EXCLUSIVE`` on ``readings`` until the block exits: every write of
    telemetry waits; the tables of alarms, alerts and dispatches stay open."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.execute(f'LOCK TABLE "{schema}".readings IN ACCESS EXCLUSIVE MODE')
        try:
            yield conn
        finally:
            await conn.rollback()


async def _copy_waits(dsn: str, schema: str) -> bool:
    """Whether some session waits for a lock on ``readings`` (the telemetry COPY)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
            (f'"{schema}".readings',),
        )
        row = await cur.fetchone()
        return bool(row and row[0])


async def _flood_readings(mqtt: MqttServer, prefix: str) -> None:
    """Telemetry the gateway cannot store while ``readings`` is locked."""
    now = datetime.now(UTC)
    async with aiomqtt.Client(mqtt.host, mqtt.port) as pub:
        for i in range(READING_MESSAGES):
            payload = json_v1.encode_readings(
                f"m{i}", now, [("spo2", 95, "%"), ("pulse", 70, "/min")]
            )
            await pub.publish(f"{prefix}/s1/oxi1/reading", payload, qos=1)


async def _dispatch_state(gw: Gateway, alert_id: str) -> DispatchState | None:
    found = await gw.dispatcher.repo.load_for_alert(alert_id)
    return found.state if found else None


async def test_an_alarm_becomes_a_dispatch_while_telemetry_is_blocked(
    mqtt_server: MqttServer, pg_dsn: str, pg_schema: str, topic_prefix: str, tmp_path: Path
) -> None:
    config = _config(mqtt_server, topic_prefix, pg_dsn, pg_schema, tmp_path)
    async with _running(config) as gw:
        async with _readings_locked(pg_dsn, pg_schema):
            await _flood_readings(mqtt_server, topic_prefix)
            await eventually(lambda: _copy_waits(pg_dsn, pg_schema))
            # The telemetry lane is stuck: its window is full of readings it cannot store.
            async with Pendant("s1", "pend1", port=mqtt_server.port, prefix=topic_prefix) as p:
                direct = await p.press()
            # A hub's event on the urgent channel travels in the alarm lane as well.
            async with Hub("s1", "hub1", port=mqtt_server.port, prefix=topic_prefix) as hub:
                item = hub.child_event("pend2", EventType.PENDANT)
                await hub.forward([item], urgent=True)
            for alert_id in (alarm_id_for("pend1", direct), alarm_id_for("pend2", item["msg_id"])):
                state = await eventually(lambda a=alert_id: _dispatch_state(gw, a))
                assert state is DispatchState.RAISED
            assert gw.mqtt.acked < READING_MESSAGES  # telemetry still blocked meanwhile
            assert await _copy_waits(pg_dsn, pg_schema)
        # Unblocked: every reading is stored after all, nothing was dropped.
        await eventually(lambda: gw.store.count("readings"), lambda n: n == 2 * READING_MESSAGES)
        assert gw.alarm_mqtt is not None
        assert gw.alarm_mqtt.acked >= 2  # the press and the urgent batch (+ statuses)
        # The telemetry session saw its own copies of the alarm-class messages (the pendant's
        # and the hub's status, the press) and acknowledged them without processing.
        await eventually(lambda: _true(gw.mqtt.skipped >= 2))
        assert await gw.store.count("alarm_events") == 2


async def test_an_event_inside_a_telemetry_batch_is_dispatched_before_its_readings_are_stored(
    mqtt_server: MqttServer, pg_dsn: str, pg_schema: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A hub that sends an event inside a ``batch`` (not ``urgent``): the telemetry lane
    hands the event to the alarm lane's store path as soon as it decodes the batch, so
    the dispatch opens although the batch's readings cannot be stored yet."""
    config = _config(mqtt_server, topic_prefix, pg_dsn, pg_schema, tmp_path)
    async with _running(config) as gw:
        async with _readings_locked(pg_dsn, pg_schema):
            async with Hub("s1", "hub1", port=mqtt_server.port, prefix=topic_prefix) as hub:
                event = hub.child_event("pend2", EventType.PENDANT)
                reading = hub.child_readings("oxi1", [("spo2", 96, "%")])
                await hub.forward([reading, event])
            state = await eventually(
                lambda: _dispatch_state(gw, alarm_id_for("pend2", event["msg_id"]))
            )
            assert state is DispatchState.RAISED
            assert await _copy_waits(pg_dsn, pg_schema)  # the batch's reading still waits
        await eventually(lambda: gw.store.count("readings"), lambda n: n == 1)


def test_the_lane_identity_subscriptions_and_topics() -> None:
    mqtt = MqttConfig(username="telecare-gateway")
    lane = lane_mqtt_config(mqtt)
    assert (lane.username, lane.client_id) == ("telecare-gateway-alarms",) * 2
    assert lane.password == mqtt.password
    anonymous = lane_mqtt_config(MqttConfig(client_id="gw-1"))
    assert (anonymous.username, anonymous.client_id) == ("", "gw-1-alarms")
    assert alarm_subscriptions("telecare/v1/") == (
        "telecare/v1/+/+/event",
        "telecare/v1/+/+/observation",
        "telecare/v1/+/+/status",
        "telecare/v1/+/+/urgent",
    )
    assert is_alarm_topic("telecare/v1/s1/hub1/urgent")
    assert not is_alarm_topic("telecare/v1/s1/hub1/batch")
    assert not is_alarm_topic("telecare/v1/s1/oxi1/reading")


async def test_the_shipped_broker_gives_the_lane_its_own_user_and_only_alarm_topics(
    broker_dir: Path, tmp_path: Path
) -> None:
    """With deploy/mosquitto's configuration and ACL: the lane logs in as
    ``telecare-gateway-alarms`` (same password), is granted the alarm channels, and a
    device's press reaches a dispatch; the lane's user may not read telemetry."""
    prefix = f"lane-{uuid.uuid4().hex[:8]}/telecare/v1"
    gw_password = "gw-" + uuid.uuid4().hex
    pwfile = broker_dir / "telecare.passwd"
    users = {"telecare-gateway": gw_password, "telecare-gateway-alarms": gw_password}
    users["pend1"] = "pend1-" + uuid.uuid4().hex
    write_password_file(pwfile, [(u, hash_secret(p)) for u, p in users.items()])
    with shipped_broker(broker_dir, prefix, pwfile) as port:
        config = Config(
            mqtt=MqttConfig(
                port=port, username="telecare-gateway", password=gw_password, topic_prefix=prefix
            ),
            store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "gw.sqlite3")),
            rules=RulesSection(state_file=str(tmp_path / "rules.json"), tick_s=3600),
        )
        async with Gateway(config) as gw:
            await gw.store.upsert_site(Site("s1", SiteKind.HOME))
            await gw.store.upsert_resident(Resident("r1", "s1"))
            await gw.store.upsert_device(Device("pend1", "s1", DeviceKind.PENDANT, "r1"))
            lane = gw.alarm_mqtt
            assert lane is not None
            await eventually(lambda: _true(lane.subscribed and gw.mqtt.connected.is_set()))
            assert lane.config.username == lane.config.client_id == "telecare-gateway-alarms"
            pendant = Pendant("s1", "pend1", port=port, prefix=prefix, password=users["pend1"])
            async with pendant:
                msg_id = await pendant.press()
            state = await eventually(lambda: _dispatch_state(gw, alarm_id_for("pend1", msg_id)))
            assert state is DispatchState.RAISED
            assert lane.acked >= 1
        # The lane's user reads the alarm channels only: a reading published before a
        # press never reaches it (one publisher: the broker keeps its order).
        spy = aiomqtt.Client(
            "127.0.0.1", port, username="telecare-gateway-alarms", password=gw_password
        )
        async with spy, pendant:
            await spy.subscribe([(f"{prefix}/+/+/reading", 1), (f"{prefix}/+/+/event", 1)])
            now = datetime.now(UTC)
            await pendant.publish(
                "reading", json_v1.encode_readings("r1", now, [("pulse", 70, "/min")])
            )
            await pendant.press()
            first = await anext(aiter(spy.messages))
        assert first.topic.value.endswith("/pend1/event")
