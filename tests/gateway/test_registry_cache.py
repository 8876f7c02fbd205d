"""The registry cache is loaded once and kept warm; registry changes made anywhere (another
store connection, the CLI in another process) reach a running gateway through the store's
change log (``registry_changelog``, migration 0016) within a bounded time; a heartbeat of a
known device reads nothing from the registry tables."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from structlog.testing import capture_logs

from telecare.devices.model import (
    Device,
    DeviceKind,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Site,
    SiteKind,
)
from telecare.firmware_stubs.mqtt_device import Pendant
from telecare.gateway.app import Gateway
from telecare.gateway.config import Config, MqttConfig, RulesSection, StoreConfig
from telecare.gateway.registry_cache import Registry, RegistryWatch
from telecare.gateway.store.base import Store
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.registry import RegistryChange
from telecare.gateway.store.sql import SqliteSql
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.tasks import Supervisor
from telecare.rules.engine import RuleEngine
from tests.helpers import eventually
from tests.services import MqttServer, PgServer
from tests.store.proxy import TcpProxy

#: Registry tables: a statement reading one of them is a registry read.
_REGISTRY_READ = re.compile(
    r"^\s*SELECT\b.*\bFROM\s+(devices|residents|resident_clinical|receiver_accounts)\b",
    re.IGNORECASE | re.DOTALL,
)


@asynccontextmanager
async def _other(
    store: SqliteStore | PostgresStore, request: pytest.FixtureRequest
) -> AsyncIterator[SqliteStore | PostgresStore]:
    """A second store on the same database: its own connection, as another process has."""
    if isinstance(store, SqliteStore):
        async with SqliteStore(store.path) as other:
            yield other
    else:
        async with PostgresStore(request.getfixturevalue("pg_dsn"), schema=store.schema) as pg:
            yield pg


def _change(action: str, device_id: str) -> RegistryChange:
    return RegistryChange(datetime.now(UTC), "test", action, "device", device_id)


async def test_changes_made_on_another_connection_reach_the_cache(
    store: SqliteStore | PostgresStore, request: pytest.FixtureRequest
) -> None:
    await store.upsert_site(Site("s1", SiteKind.HOME))
    await store.upsert_resident(Resident("r1", "s1"))
    for device_id in ("d1", "d2", "d3"):
        await store.upsert_device(
            Device(device_id, "s1", DeviceKind.PENDANT, "r1", heartbeat_interval_s=300)
        )
    engine = RuleEngine()
    for device in await store.list_devices():
        engine.watch_device(device)
    registry = Registry(store)
    async with RegistryWatch(store, registry, poll_s=0.05, engine=engine) as watch:
        assert await registry.device("d1") is not None
        assert await registry.resident("r1") is not None
        assert registry.reads == {"device": 0, "resident": 0, "site": 0, "account": 0}  # primed

        async with _other(store, request) as other:
            await other.upsert_device(
                Device("d1", "s1", DeviceKind.PENDANT, "r1", heartbeat_interval_s=60)
            )
            assert await other.remove_entity("device", "d2", _change("remove", "d2")) == []
            await other.upsert_resident(Resident("r1", "s1", name="Renamed"))
            await other.upsert_receiver_account(
                ReceiverAccount(ReceiverKind.CONTACT_ID, "1234", "d3")
            )

        await eventually(lambda: _polled_past(watch, 4))
        d1 = registry.cached_device("d1")
        assert d1 is not None
        assert d1[1] is not None
        assert d1[1].heartbeat_interval_s == 60
        assert await registry.device("d2") is None
        found = await registry.receiver_device(ReceiverKind.CONTACT_ID, "1234")
        assert found is not None
        assert found.device_id == "d3"
        resident = await registry.resident("r1")
        assert resident is not None
        assert resident.name == "Renamed"
        # The rules watch d1's new interval and no longer watch the removed d2.
        watched = {key: row for section, key, row in engine.rows() if section == "device"}
        assert watched["d1"]["interval_s"] == 60
        assert "d2" not in watched


async def _polled_past(watch: RegistryWatch, changes: int) -> bool:
    return watch.changes >= changes


@pytest.mark.postgres
async def test_the_watch_retries_while_the_database_is_away_and_catches_up(
    pg_server: PgServer, pg_schema: str
) -> None:
    """The watch is a supervised loop: a poll that meets the database away is retried
    with a ``loop_retry`` line (the cache serving what it holds), and once the database
    is back the change made meanwhile (by another connection) reaches the cache."""
    parts = urlsplit(pg_server.dsn)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        netloc = f"{parts.username}@" if parts.username else ""
        proxied = urlunsplit(parts._replace(netloc=f"{netloc}{proxy.host}:{proxy.port}"))
        async with PostgresStore(proxied, schema=pg_schema, timeout=1.0) as store:
            await store.migrate()
            await store.upsert_site(Site("s1", SiteKind.HOME))
            await store.upsert_device(Device("d1", "s1", DeviceKind.PENDANT))
            registry = Registry(store)
            with capture_logs() as logs:
                async with (
                    Supervisor() as supervisor,
                    RegistryWatch(store, registry, poll_s=0.05, supervisor=supervisor) as watch,
                ):
                    assert supervisor.running == ["registry-watch"]
                    await proxy.cut()

                    async def retried() -> bool:
                        return any(
                            e["event"] == "loop_retry" and e["loop"] == "registry-watch"
                            for e in logs
                        )

                    await eventually(retried)
                    assert await registry.device("d1") is not None  # served from the cache
                    async with PostgresStore(pg_server.dsn, schema=pg_schema) as other:
                        await other.upsert_device(
                            Device("d1", "s1", DeviceKind.PENDANT, heartbeat_interval_s=60)
                        )
                    await proxy.restore()
                    await eventually(lambda: _polled_past(watch, 1), timeout=30.0)
                    d1 = registry.cached_device("d1")
                    assert d1 is not None
                    assert d1[1] is not None
                    assert d1[1].heartbeat_interval_s == 60
                    assert supervisor.running == ["registry-watch"]
                assert supervisor.failure is None
            assert not [e for e in logs if e["event"] == "loop_failed"]


def _config(mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path) -> Config:
    return Config(
        mqtt=MqttConfig(
            host=mqtt_server.host,
            port=mqtt_server.port,
            topic_prefix=topic_prefix,
            client_id=f"gw-{uuid.uuid4().hex[:8]}",
        ),
        store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
        rules=RulesSection(tick_s=3600.0),
    )


async def _provision(store: Store, device_id: str) -> None:
    await store.upsert_site(Site("s1", SiteKind.HOME))
    await store.upsert_resident(Resident("res1", "s1"))
    await store.upsert_device(
        Device(device_id, "s1", DeviceKind.PENDANT, "res1", heartbeat_interval_s=300)
    )


async def _heard(gw: Gateway, n: int) -> bool:
    return gw.pipeline.counters["heartbeats"] >= n


@pytest.mark.mosquitto
async def test_a_device_removed_with_the_cli_is_refused_by_a_running_gateway(
    mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path
) -> None:
    device_id = f"rm-{uuid.uuid4().hex[:8]}"
    config = _config(mqtt_server, topic_prefix, tmp_path)
    toml = tmp_path / "gateway.toml"
    toml.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{config.store.sqlite_path}"\n')
    async with Gateway(config) as gw:
        running = gw.supervisor.running
        assert "registry-watch" in running
        # Both store paths (telemetry and the alarm lane) run their loops in the gateway's
        # supervisor, so neither can stop unseen.
        assert running.count("spool-replayer") == 2
        assert running.count("reading-batcher-flusher") == 2
        await _provision(gw.store, device_id)
        await eventually(lambda: _connected(gw))
        async with Pendant(
            "s1", device_id, host=mqtt_server.host, port=mqtt_server.port, prefix=topic_prefix
        ) as pendant:
            await pendant.heartbeat()
            await eventually(lambda: _heard(gw, 1))

            # The CLI, in a process of its own, removes the device.
            command = ["device", "remove", device_id, "--config", str(toml), "--by", "installer"]
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "telecare.gateway.cli", *command],
                capture_output=True,
                text=True,
                env={**os.environ, "COLUMNS": "200"},
                timeout=60,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            removed_at = time.monotonic()

            async def refused() -> bool:
                await pendant.heartbeat()
                await asyncio.sleep(0.1)
                return any(
                    d.device_id == device_id and "not provisioned" in d.reason
                    for d in await gw.store.dead_letters(20)
                )

            await eventually(refused, timeout=10.0)
            took = time.monotonic() - removed_at
            # Bounded by the watch's poll interval (1 s) plus a poll and a heartbeat.
            assert took < 5.0, took
            assert all(k != device_id for s, k, _ in gw.pipeline.engine.rows() if s == "device")


@pytest.mark.mosquitto
async def test_a_heartbeat_of_a_known_device_reads_nothing_from_the_registry(
    mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path
) -> None:
    device_id = f"hb-{uuid.uuid4().hex[:8]}"
    config = _config(mqtt_server, topic_prefix, tmp_path)
    async with SqliteStore(config.store.sqlite_path) as store:  # provisioned before start
        await store.migrate()
        await _provision(store, device_id)
    async with Gateway(config) as gw:
        await eventually(lambda: _connected(gw))
        # Every statement SQLite runs on the gateway's connection from now on.
        sql = gw.store.sql
        assert isinstance(sql, SqliteSql)
        statements: list[str] = []
        await sql.run(lambda conn: conn.set_trace_callback(statements.append))
        try:
            async with Pendant(
                "s1", device_id, host=mqtt_server.host, port=mqtt_server.port, prefix=topic_prefix
            ) as pendant:
                for n in range(1, 21):
                    await pendant.heartbeat()
                    await eventually(lambda n=n: _heard(gw, n))
        finally:
            await sql.run(lambda conn: conn.set_trace_callback(None))
    status_writes = [s for s in statements if "device_status" in s]
    assert len(status_writes) >= 20  # the trace saw the heartbeats' own writes
    assert [s for s in statements if _REGISTRY_READ.match(s)] == []
    assert gw.pipeline.decoder.registry.reads == {
        "device": 0,
        "resident": 0,
        "site": 0,
        "account": 0,
    }


async def _connected(gw: Gateway) -> bool:
    return gw.mqtt.connected.is_set()
