"""End to end: a firmware stub presses a pendant -> broker -> gateway -> stored alarm
event, priority-1 alert and a dispatch in state ``raised`` proposing the resident's first
responder. Once on Mosquitto + PostgreSQL, once on the embedded default (amqtt + SQLite)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from telecare.devices.model import (
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
from telecare.firmware_stubs.mqtt_device import Pendant
from telecare.gateway.app import Gateway
from telecare.gateway.broker import EmbeddedBroker
from telecare.gateway.config import Config, DispatchSection, MqttConfig, RulesSection, StoreConfig
from telecare.gateway.store.base import Store
from telecare.rules.alarms import alarm_id_for
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
    audit = await gw.store.dispatches.audit(dispatch.dispatch_id)
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


@pytest.mark.mosquitto
async def test_responder_app_is_notified_through_the_gateways_broker_connection(
    mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path
) -> None:
    """An operator contacts the proposed responder: the responder app receives the
    dispatch on its own topic, and the gateway does not mistake its own notification for
    device traffic (no dead letter)."""
    dispatch_file = tmp_path / "dispatch.toml"
    dispatch_file.write_text(
        '[[responders]]\nid = "kh1"\nkind = "keyholder"\ncontacts = { mqtt = "kh1-app" }\n'
    )
    config = Config(
        mqtt=MqttConfig(
            host=mqtt_server.host,
            port=mqtt_server.port,
            topic_prefix=topic_prefix,
            client_id=f"gw-{uuid.uuid4().hex[:8]}",
        ),
        store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
        dispatch=DispatchSection(file=str(dispatch_file)),
    )
    async with (
        running_gateway(config) as gw,
        aiomqtt.Client(mqtt_server.host, mqtt_server.port) as app,
    ):
        await app.subscribe(f"{topic_prefix}/_gateway/responders/kh1-app/dispatch", qos=1)
        async with Pendant(
            "s1", "pend1", host=mqtt_server.host, port=mqtt_server.port, prefix=topic_prefix
        ) as pendant:
            msg_id = await pendant.press()
        alert_id = alarm_id_for("pend1", msg_id)
        dispatch = await eventually(lambda: gw.dispatcher.repo.load_for_alert(alert_id))
        assert dispatch is not None
        await gw.dispatcher.acknowledge(dispatch.dispatch_id, "operator-7")
        contacted = await gw.dispatcher.contact(dispatch.dispatch_id, "operator-7")
        assert contacted.state is DispatchState.RESPONDER_CONTACTED
        assert contacted.responder_id == "kh1"
        message = await asyncio.wait_for(anext(aiter(app.messages)), timeout=10)
        body = json.loads(message.payload)  # type: ignore[arg-type]
        assert body["dispatch_id"] == dispatch.dispatch_id
        assert body["recipient"] == "kh1"
        assert "Mrs A" not in message.payload.decode()  # type: ignore[union-attr]
        # A barrier instead of a sleep: a device message published after the notification
        # is stored only after the gateway would have seen (and dead-lettered) its own
        # notification, had it been on a subscribed topic.
        async with Pendant(
            "s1", "pend1", host=mqtt_server.host, port=mqtt_server.port, prefix=topic_prefix
        ) as pendant:
            await pendant.press()
        await eventually(lambda: gw.store.count("alarm_events"), lambda n: n == 2)
        assert await gw.store.count("dead_letters") == 0
