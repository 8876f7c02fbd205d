"""End to end: a firmware stub presses a pendant -> broker -> gateway -> stored alarm
event, priority-1 alert and a dispatch in state ``raised`` proposing the resident's first
responder. Once on Mosquitto + PostgreSQL, once on the embedded default (amqtt + SQLite)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from devices.model import (
    AlertKind,
    Device,
    DeviceKind,
    DispatchState,
    EventType,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from firmware_stubs.mqtt_device import Pendant
from gateway.app import Gateway
from gateway.broker import EmbeddedBroker
from gateway.config import Config, MqttConfig, RulesSection, StoreConfig
from gateway.store.base import Store
from rules.alarms import alarm_id_for
from tests.helpers import eventually
from tests.services import MqttServer, PgServer


async def provision(store: Store) -> None:
    await store.upsert_site(Site("s1", SiteKind.HOME, "1 High Street"))
    await store.upsert_responder(Responder("kh1", ResponderKind.KEYHOLDER, "Neighbour"))
    await store.upsert_responder(Responder("ff1", ResponderKind.FIREFIGHTER))
    await store.upsert_resident(Resident("res1", "s1", "Mrs A", responders=("kh1", "ff1")))
    await store.upsert_device(Device("pend1", "s1", DeviceKind.PENDANT, "res1"))


@asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[Gateway]:
    async with Gateway(config) as gw:
        await provision(gw.store)
        await eventually(lambda: _connected(gw), timeout=10)
        yield gw


async def _connected(gw: Gateway) -> bool:
    return gw.mqtt.connected.is_set()


async def press_and_check(gw: Gateway, host: str, port: int, prefix: str) -> None:
    async with Pendant("s1", "pend1", host=host, port=port, prefix=prefix) as pendant:
        msg_id = await pendant.press()
    alert_id = alarm_id_for("pend1", msg_id)
    dispatch = await eventually(lambda: gw.dispatcher.repo.load_for_alert(alert_id))
    assert dispatch is not None
    assert dispatch.state is DispatchState.RAISED
    assert dispatch.responder_id == "kh1"  # the resident's first responder
    assert dispatch.priority == 1
    assert dispatch.resident_id == "res1"
    assert dispatch.site_id == "s1"

    alerts = await gw.store.recent_alerts()
    assert [a.alert_id for a in alerts] == [alert_id]
    alert = alerts[0]
    assert alert.priority == 1
    assert alert.kind is AlertKind.ALARM
    assert alert.event_type is EventType.PENDANT
    assert alert.device_id == "pend1"
    assert alert.source_key == f"pend1/{msg_id}"
    assert "Mrs A" not in alert.reason

    assert await gw.store.count("alarm_events") == 1
    audit = await gw.store.dispatch_audit(dispatch.dispatch_id)
    assert [(a.from_state, a.to_state, a.actor) for a in audit] == [
        (None, DispatchState.RAISED, "system")
    ]
    # A pendant press without a reported injury is a wellbeing call: the resident's own
    # responders (keyholder first), in order.
    assert audit[0].detail["route"] == "wellbeing"
    assert audit[0].detail["cascade"] == ["kh1", "ff1"]


@pytest.mark.postgres
@pytest.mark.mosquitto
async def test_pendant_press_end_to_end_on_mosquitto_and_postgres(
    mqtt_server: MqttServer,
    pg_server: PgServer,
    pg_schema: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    config = Config(
        mqtt=MqttConfig(
            host=mqtt_server.host,
            port=mqtt_server.port,
            topic_prefix=topic_prefix,
            client_id=f"gw-{uuid.uuid4().hex[:8]}",
        ),
        store=StoreConfig(backend="postgres", dsn=pg_server.dsn, schema=pg_schema),
        rules=RulesSection(state_file=str(tmp_path / "rules-state.json")),
    )
    async with running_gateway(config) as gw:
        assert gw.store.mode in ("postgres", "timescaledb")
        await press_and_check(gw, mqtt_server.host, mqtt_server.port, topic_prefix)


async def test_pendant_press_end_to_end_on_embedded_default(tmp_path: Path) -> None:
    async with EmbeddedBroker() as broker:
        config = Config(
            mqtt=MqttConfig(port=broker.port, client_id="gw-embedded"),
            store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
        )
        async with running_gateway(config) as gw:
            assert gw.store.mode == "sqlite"
            await press_and_check(gw, "127.0.0.1", broker.port, config.mqtt.topic_prefix)
