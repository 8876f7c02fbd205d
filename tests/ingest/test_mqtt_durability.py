"""A crash never loses an acknowledged alarm; a broker restart loses nothing.

The kill test runs the real gateway (``telecare run``) in a child process against a
private Mosquitto with persistence and a PostgreSQL schema. The test holds a table lock
on ``alarm_events`` so the gateway's inserts hang: every alarm the broker accepted has
reached the gateway, or is queued for it, and none is stored. The gateway is SIGKILLed
there, between receipt and storage; its blocked database sessions are terminated (so
nothing it started can still commit); a new gateway starts with the same client id; the
lock is released. Every alarm must then be stored exactly once and raise an alert with a
dispatch: which is only possible if the first gateway had not acknowledged them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from telecare.firmware_stubs.mqtt_device import Pendant
from telecare.gateway.app import Gateway
from telecare.gateway.backoff import Backoff
from telecare.gateway.config import Config, MqttConfig, StoreConfig
from telecare.gateway.store.postgres import PostgresStore
from tests.helpers import eventually
from tests.ingest.support import GatewayProcess, provision, write_config
from tests.services import PgServer, free_port, start_mosquitto

T = TypeVar("T")

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]

ALARMS_PER_PENDANT = 6
PENDANTS = 5


def _blocked_pids(conn: psycopg.Connection, schema: str) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_locks WHERE NOT granted AND relation = to_regclass(%s)",
        (f'"{schema}".alarm_events',),
    ).fetchall()
    return [int(r[0]) for r in rows]


def _alerted_devices(conn: psycopg.Connection, schema: str) -> set[str]:
    rows = conn.execute(
        f'SELECT DISTINCT a.device_id FROM "{schema}".alerts a'
        f' JOIN "{schema}".dispatches d ON d.alert_id = a.alert_id'
    ).fetchall()
    return {str(r[0]) for r in rows}


def _count(conn: psycopg.Connection, schema: str, table: str) -> int:
    row = conn.execute(f'SELECT count(*) FROM "{schema}".{table}').fetchone()
    assert row is not None
    return int(row[0])


async def _publish_alarms(port: int, prefix: str, pendant_ids: list[str]) -> set[str]:
    """Publish alarms; each ``press`` returns once the broker has acknowledged it."""
    accepted: set[str] = set()
    for device_id in pendant_ids:
        async with Pendant("s1", device_id, port=port, prefix=prefix) as pendant:
            for _ in range(ALARMS_PER_PENDANT):
                accepted.add(f"{device_id}/{await pendant.press()}")
    return accepted


async def test_sigkill_between_receipt_and_storage_loses_no_acknowledged_alarm(
    pg_server: PgServer, pg_schema: str, topic_prefix: str, tmp_path: Path, broker_dir: Path
) -> None:
    async with PostgresStore(pg_server.dsn, schema=pg_schema, use_timescale=False) as store:
        await store.migrate()
        pendant_ids = await provision(store, pendants=PENDANTS)
    port = free_port()
    config = write_config(
        tmp_path / "gateway.toml",
        mqtt_port=port,
        client_id=f"gw-kill-{uuid.uuid4().hex[:8]}",
        topic_prefix=topic_prefix,
        dsn=pg_server.dsn,
        schema=pg_schema,
    )
    with (
        start_mosquitto(port, persistence_dir=broker_dir),
        psycopg.connect(pg_server.dsn) as locker,
        psycopg.connect(pg_server.dsn, autocommit=True) as probe,
    ):
        locker.execute(f'LOCK TABLE "{pg_schema}".alarm_events IN EXCLUSIVE MODE')
        first = GatewayProcess(config, tmp_path / "gw1.log")
        first.start()
        try:
            await first.wait_for_log("mqtt_connected")
            accepted = await _publish_alarms(port, topic_prefix, pendant_ids)
            assert len(accepted) == PENDANTS * ALARMS_PER_PENDANT
            # The gateway has received alarms and is stuck storing them.
            await eventually(lambda: _async(_blocked_pids, probe, pg_schema), timeout=20)
            assert _count(probe, pg_schema, "alarm_events") == 0
        finally:
            first.kill()
        # Whatever the dead gateway had started in the database must not complete.
        for pid in _blocked_pids(probe, pg_schema):
            probe.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await eventually(lambda: _async(_blocked_pids, probe, pg_schema), lambda p: not p)

        second = GatewayProcess(config, tmp_path / "gw2.log")
        second.start()
        try:
            await second.wait_for_log("mqtt_connected")
            locker.commit()  # release the lock: the redelivered alarms can be stored
            total = len(accepted)
            await eventually(
                lambda: _async(_count, probe, pg_schema, "alarm_events"),
                lambda n: n >= total,
                timeout=30,
            )
            rows = probe.execute(
                f'SELECT device_id, msg_id FROM "{pg_schema}".alarm_events'
            ).fetchall()
            assert {f"{d}/{m}" for d, m in rows} == accepted
            assert len(rows) == total  # each exactly once
            # Every pendant's alarm raised an alert with its dispatch (the rules may fold
            # repeated presses of one pendant into one alert).
            alerted = await eventually(
                lambda: _async(_alerted_devices, probe, pg_schema),
                lambda found: found == set(pendant_ids),
            )
            assert alerted == set(pendant_ids)
            assert _count(probe, pg_schema, "dispatches") == _count(probe, pg_schema, "alerts")
        finally:
            second.stop()
        assert "mqtt_message_not_stored" not in second.log_text()


async def _async(fn: Callable[..., T], *args: object) -> T:
    """Run a synchronous probe as the awaitable ``eventually`` polls."""
    return fn(*args)


async def test_broker_restart_with_persistence_loses_nothing(
    topic_prefix: str, tmp_path: Path, broker_dir: Path
) -> None:
    port = free_port()
    persistence = broker_dir
    config = Config(
        mqtt=MqttConfig(
            port=port, client_id=f"gw-restart-{uuid.uuid4().hex[:8]}", topic_prefix=topic_prefix
        ),
        store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
    )
    with start_mosquitto(port, persistence_dir=persistence):
        # A first run creates the gateway's persistent session, then the gateway stops.
        async with Gateway(config) as gw:
            await provision(gw.store)
            await eventually(lambda: _async(gw.mqtt.connected.is_set))
        # Alarms published while the gateway is away are queued in its session...
        queued = await _publish_alarms(port, topic_prefix, ["pend1"])
    # ...and survive a broker restart (persistence).
    async with Gateway(config) as gw:
        gw.mqtt.backoff = Backoff(initial=0.05, cap=0.2)
        with start_mosquitto(port, persistence_dir=persistence):
            await eventually(
                lambda: gw.store.count("alarm_events"), lambda n: n == len(queued), timeout=20
            )
            connections = gw.mqtt.connections
        # The broker goes away under the running gateway and comes back: the gateway
        # reconnects, resubscribes and carries on.
        await eventually(lambda: _async(gw.mqtt.connected.is_set), lambda up: not up)
        with start_mosquitto(port, persistence_dir=persistence):
            await eventually(lambda: _async(lambda: gw.mqtt.connections), lambda n: n > connections)
            more = await _publish_alarms(port, topic_prefix, ["pend1"])
            await eventually(
                lambda: gw.store.count("alarm_events"),
                lambda n: n == len(queued) + len(more),
                timeout=20,
            )
        assert await gw.store.count("dispatches") >= 1
