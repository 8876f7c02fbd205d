"""Operations: /metrics, /healthz and /readyz of a running gateway (``telecare run``)."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import httpx
import pytest

from telecare.gateway.app import Gateway
from telecare.gateway.config import Config, MqttConfig, StoreConfig, WebConfig
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.web.ops import open_alarm_metrics, reason_class
from tests.helpers import eventually
from tests.services import MqttServer
from tests.store.proxy import TcpProxy
from tests.web.conftest import WebEnv, web_env


def test_reason_classes_drop_what_varies_per_message() -> None:
    assert reason_class("device 'pend-77' is not provisioned") == "device _ is not provisioned"
    assert reason_class("DC-09: bad CRC 0x1234 in frame 17") == "DC-_"
    assert reason_class("payload is not JSON: Expecting value: line 1 column 1") == (
        "payload is not JSON"
    )
    assert reason_class("") == "unknown"


async def test_open_alarms_by_priority_and_the_oldest_age(web: WebEnv) -> None:
    await web.care_home("S1", "R1")
    await web.raise_alarm("S1", "R1", priority=1)
    web.clock.advance(seconds=90)
    await web.raise_alarm("S1", "R1", priority=3)
    await open_alarm_metrics(web.services)
    c = await web.client()
    text = (await c.get("/metrics")).text
    assert 'telecare_open_alarms{priority="1"} 1.0' in text
    assert 'telecare_open_alarms{priority="3"} 1.0' in text
    assert "telecare_oldest_open_alarm_age_seconds 90.0" in text


@pytest.mark.mosquitto
async def test_a_running_gateway_reports_ingest_dead_letters_and_readiness(
    mqtt_server: MqttServer, tmp_path: Path, topic_prefix: str
) -> None:
    config = Config(
        mqtt=MqttConfig(port=mqtt_server.port, client_id="gw-ops-test", topic_prefix=topic_prefix),
        store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
        web=WebConfig(enabled=True, port=0),
    )
    async with Gateway(config) as gw:
        assert gw.web is not None
        async with httpx.AsyncClient(base_url=gw.web.url) as c:
            await gw.mqtt.connected.wait()
            ready = await c.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert {x["name"] for x in ready.json()["checks"]} == {"broker", "store", "spool"}
            async with aiomqtt.Client(mqtt_server.host, mqtt_server.port) as device:
                await device.publish(f"{topic_prefix}/S9/ghost-1/event", b"{}", qos=1)

            async def scrape() -> str:
                return (await c.get("/metrics")).text

            text = await eventually(scrape, lambda t: "telecare_dead_letters_total{" in t)
            assert 'telecare_ingest_messages_total{source="mqtt"} 1.0' in text
            assert 'reason="device _ is not provisioned"' in text
            assert "telecare_spool_bytes" in text
            assert 'telecare_queue_depth{queue="dispatch_intake"} 0.0' in text
            assert "telecare_sse_clients 0.0" in text


@pytest.mark.postgres
async def test_the_database_away_is_503_with_retry_after(
    proxied_dsn: str, pg_proxy: TcpProxy, pg_schema: str
) -> None:
    async with (
        PostgresStore(proxied_dsn, schema=pg_schema, timeout=1.0) as store,
    ):
        await store.migrate()
        async with web_env(store) as web:
            await web.care_home("S1", "S1-r1")
            c = await web.client()
            c.headers["Authorization"] = f"Bearer {await web.token('S1')}"
            assert (await c.get("/api/v1/sites/S1/residents")).status_code == 200
            await pg_proxy.cut()
            r = await c.get("/api/v1/sites/S1/residents")
            assert r.status_code == 503
            assert r.headers["Retry-After"] == "5"
            assert "Idempotency-Key" in r.json()["detail"]
            await pg_proxy.restore()
            # The pool replaces the connections the outage broke (with its reconnect
            # backoff); until then callers keep getting 503 + Retry-After, never a 500.
            after = await eventually(
                lambda: c.get("/api/v1/sites/S1/residents"),
                lambda r: r.status_code != 503,
                timeout=15.0,
            )
            assert after.status_code == 200
