"""A device's retained status replayed by the broker when the gateway (re)subscribes is
not news: it was recorded when it was published (if the gateway was running), and a last
will carries no time of its own. Before, every replay was stamped with the gateway's
clock, so after each gateway restart an offline device's last will looked as if it had
just dropped (a fresh "OFFLINE" on the console's live feed, ``changed_at`` moved) and a
device whose status carries no time was "last heard" at the restart. A replayed state
the gateway has not recorded is still stored (docs/protocol.md, "status")."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import aiomqtt
import pytest

from telecare.devices.codecs import json_v1
from telecare.devices.model import Device, DeviceKind, Resident, Site, SiteKind
from telecare.gateway.app import Gateway
from telecare.gateway.config import Config, MqttConfig, RulesSection, StoreConfig
from telecare.gateway.ingest.mqtt import MqttIngest
from telecare.gateway.pipeline import Activity, ActivityFeed
from telecare.gateway.store.sqlite import SqliteStore
from tests.helpers import eventually
from tests.services import MqttServer

pytestmark = pytest.mark.mosquitto


def _config(mqtt_server: MqttServer, topic_prefix: str, db: Path) -> Config:
    """A new client id each time: a new session, so what arrives at connect is only the
    broker's replay of retained messages (nothing queued for an earlier session)."""
    return Config(
        mqtt=MqttConfig(
            host=mqtt_server.host,
            port=mqtt_server.port,
            topic_prefix=topic_prefix,
            client_id=f"gw-{uuid.uuid4().hex[:8]}",
        ),
        store=StoreConfig(backend="sqlite", sqlite_path=str(db)),
        rules=RulesSection(tick_s=3600.0),
    )


@asynccontextmanager
async def _broker(mqtt_server: MqttServer) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(mqtt_server.host, mqtt_server.port) as client:
        yield client


async def _status(gw: Gateway, device_id: str) -> tuple[bool | None, datetime | None]:
    row = await gw.store.sql.fetch_one(
        "SELECT online, changed_at FROM device_status WHERE device_id = ?", device_id
    )
    if row is None:
        return None, None
    at = row[1] if isinstance(row[1], datetime) else datetime.fromisoformat(row[1])
    return bool(row[0]), at


def _status_ingest(gw: Gateway) -> MqttIngest:
    """The session that handles ``status`` (the alarm lane's, when it runs)."""
    return getattr(gw, "alarm_mqtt", None) or gw.mqtt


async def _start(config: Config, seen: list[Activity]) -> Gateway:
    """A started gateway whose every activity (from its first message on) is in ``seen``."""
    feed = ActivityFeed()
    feed.listen(seen.append)
    gw = Gateway(config, feed=feed)
    await gw.__aenter__()
    return gw


async def _acked(ingest: MqttIngest, n: int) -> bool:
    return ingest.acked >= n


@pytest.mark.parametrize("online", [False, True], ids=["last-will", "online-without-ts"])
async def test_a_replayed_retained_status_is_not_stamped_anew(
    mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path, online: bool
) -> None:
    db = tmp_path / "gw.sqlite3"
    async with SqliteStore(db) as store:
        await store.migrate()
        await store.upsert_site(Site("s1", SiteKind.HOME))
        await store.upsert_resident(Resident("r1", "s1"))
        await store.upsert_device(Device("d1", "s1", DeviceKind.PENDANT, "r1"))
    topic = f"{topic_prefix}/s1/d1/status"
    # What the broker publishes for a dropped device (its will), or a device's "online"
    # without a time: retained, no ``ts``.
    payload = json_v1.encode_status(online)
    first: list[Activity] = []
    gw = await _start(_config(mqtt_server, topic_prefix, db), first)
    try:
        await eventually(lambda: _connected(gw))
        async with _broker(mqtt_server) as broker:
            await broker.publish(topic, payload, qos=1, retain=True)
        _, recorded = await eventually(lambda: _status(gw, "d1"), lambda s: s[0] is online)
        assert recorded is not None
        assert [a for a in first if a.kind == "status"]  # live: news, timed on arrival
    finally:
        await gw.__aexit__(None, None, None)

    again: list[Activity] = []
    gw = await _start(_config(mqtt_server, topic_prefix, db), again)  # a restart
    try:
        ingest = _status_ingest(gw)
        await eventually(lambda: _acked(ingest, 1))  # the broker's replay, handled
        assert await _status(gw, "d1") == (online, recorded)  # not re-timed
        assert [a for a in again if a.kind == "status"] == []  # nothing new to show
    finally:
        await gw.__aexit__(None, None, None)
        async with _broker(mqtt_server) as broker:
            await broker.publish(topic, b"", qos=1, retain=True)  # clear the retained


async def test_a_replayed_status_the_gateway_never_saw_is_recorded(
    mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path
) -> None:
    """The device dropped while the gateway was away (a new session: nothing queued):
    the replayed last will is the only news of it and is stored, said to be of unknown
    time."""
    db = tmp_path / "gw.sqlite3"
    async with SqliteStore(db) as store:
        await store.migrate()
        await store.upsert_site(Site("s1", SiteKind.HOME))
        await store.upsert_resident(Resident("r1", "s1"))
        await store.upsert_device(Device("d1", "s1", DeviceKind.PENDANT, "r1"))
    topic = f"{topic_prefix}/s1/d1/status"
    async with _broker(mqtt_server) as broker:
        await broker.publish(topic, json_v1.encode_status(False), qos=1, retain=True)
    feed: list[Activity] = []
    gw = await _start(_config(mqtt_server, topic_prefix, db), feed)
    try:
        state, _ = await eventually(lambda: _status(gw, "d1"), lambda s: s[0] is False)
        assert state is False
        [news] = [a for a in feed if a.kind == "status"]
        assert news.summary == "device d1 OFFLINE (retained status: time unknown)"
    finally:
        await gw.__aexit__(None, None, None)
        async with _broker(mqtt_server) as broker:
            await broker.publish(topic, b"", qos=1, retain=True)


async def _connected(gw: Gateway) -> bool:
    return gw.mqtt.connected.is_set()
