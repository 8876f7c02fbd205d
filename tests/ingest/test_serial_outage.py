"""Issue 11, part 1: the database is cut under a serial stream.

A CMS50D+ oximeter streams into a whole ``Gateway`` (PostgreSQL behind a TCP proxy that
the test cuts, tests/store/proxy.py). While the database is away the device lookup goes
to the store and fails (``OperationalError`` / ``PoolTimeout``), which used to end the
``serial:<port>`` task silently. Now the port keeps reading, its readings are spooled,
and they are back-filled when the database returns; the port's loop never stops.

A second test: a loop that meets an error it does not retry stops the gateway loudly
(a critical log line and :class:`LoopFailed` from ``wait_closed``), never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from structlog.testing import capture_logs

from telecare.devices.codecs.oximetry import OximeterSample
from telecare.devices.model import (
    Device,
    DeviceKind,
    Resident,
    Site,
    SiteKind,
)
from telecare.firmware_stubs.oximeter import run_oximeter
from telecare.gateway.app import Gateway
from telecare.gateway.config import (
    Config,
    DispatchSection,
    MqttConfig,
    RulesSection,
    SerialPortConfig,
    StoreConfig,
)
from telecare.gateway.store.durable import DurableStore
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.spool import SpoolState
from telecare.gateway.tasks import LoopFailed
from tests.helpers import eventually
from tests.ingest.ptys import PtyPort
from tests.ingest.support import GatewayProcess
from tests.services import MqttServer, PgServer
from tests.store.proxy import TcpProxy

GUARD = 60.0  # seconds: a hang guard only, never a performance assertion


@contextlib.asynccontextmanager
async def _proxied(pg_server: PgServer) -> AsyncIterator[tuple[TcpProxy, str]]:
    parts = urlsplit(pg_server.dsn)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        netloc = f"{parts.username}@" if parts.username else ""
        netloc += f"{proxy.host}:{proxy.port}"
        yield proxy, urlunsplit(parts._replace(netloc=netloc))


async def _stored_readings(dsn: str, schema: str, since: datetime | None = None) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'SET search_path = "{schema}"')
        cur = await conn.execute(
            "SELECT count(*) FROM readings WHERE device_id = 'ox1' AND ts >= %s",
            (since or datetime(2000, 1, 1, tzinfo=UTC),),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def _stream(port: PtyPort, stop: asyncio.Event) -> None:
    """An oximeter that keeps sending (one second of samples at a time)."""
    pulse = 60
    while not stop.is_set():
        pulse = 60 + (pulse - 59) % 40  # a changing pulse: readings keep coming
        await run_oximeter(port.master, [OximeterSample(spo2=97, pulse=pulse)] * 60, "cms50d")


@pytest.mark.postgres
async def test_serial_port_keeps_reading_spools_and_back_fills_through_a_db_outage(
    pg_server: PgServer, pg_schema: str, mqtt_server: MqttServer, tmp_path: Path
) -> None:
    async with PostgresStore(pg_server.dsn, schema=pg_schema, use_timescale=False) as direct:
        await direct.migrate()
        await direct.upsert_site(Site("s1", SiteKind.CARE_HOME))
        await direct.upsert_resident(Resident("res1", "s1", "Mr B"))
        await direct.upsert_device(
            Device("ox1", "s1", DeviceKind.OXIMETER, "res1", format="cms50d")
        )
    port = PtyPort(tmp_path)
    stop = asyncio.Event()
    async with _proxied(pg_server) as (proxy, dsn):
        config = Config(
            mqtt=MqttConfig(port=mqtt_server.port, client_id=f"gw-{pg_schema}"),
            store=StoreConfig(
                backend="postgres",
                dsn=dsn,
                schema=pg_schema,
                timescale=False,
                spool_dir=str(tmp_path / "spool"),
            ),
            rules=RulesSection(state_file=str(tmp_path / "rules.json")),
            serial=(SerialPortConfig(str(port.path), "cms50d", "ox1"),),
        )
        async with Gateway(config) as gw:
            assert gw.serial is not None
            reader = gw.serial.readers[0]
            await asyncio.wait_for(reader.is_open.wait(), GUARD)
            port.reader_opened()
            store = gw.store
            assert isinstance(store, DurableStore)
            streaming = asyncio.create_task(_stream(port, stop))
            try:
                await eventually(lambda: _stored_readings(pg_server.dsn, pg_schema), timeout=GUARD)

                await proxy.cut()
                cut_at = datetime.now(UTC)
                read_before = reader.stats.readings

                async def spooled() -> tuple[bool, int, int]:
                    return (
                        store.degraded,
                        store.stats()["items_spooled"],
                        reader.stats.readings - read_before,
                    )

                # The port keeps reading during the outage, and what it reads is spooled.
                await eventually(
                    spooled, lambda s: s[0] and s[1] >= 5 and s[2] >= 10, timeout=GUARD
                )
                assert f"serial:{port.path}" in gw.supervisor.running

                await proxy.restore()
                await asyncio.wait_for(store.wait_drained(), GUARD)
                stop.set()
                await asyncio.wait_for(streaming, GUARD)
                # Back-filled: what was read during the outage is in the database now.
                assert await _stored_readings(pg_server.dsn, pg_schema, cut_at) > 0
                await eventually(
                    lambda: _stored_readings(pg_server.dsn, pg_schema),
                    lambda n: n == reader.stats.readings,
                    timeout=GUARD,
                )
                assert f"serial:{port.path}" in gw.supervisor.running
            finally:
                stop.set()
                await asyncio.wait_for(streaming, GUARD)
                port.unplug()
        assert gw.failure is None


async def test_a_loop_failing_with_an_unexpected_error_stops_the_gateway_loudly(
    mqtt_server: MqttServer, tmp_path: Path
) -> None:
    db = tmp_path / "telecare.sqlite3"
    config = Config(
        mqtt=MqttConfig(port=mqtt_server.port, client_id=f"gw-{tmp_path.name}"),
        store=StoreConfig(backend="sqlite", sqlite_path=str(db)),
        dispatch=DispatchSection(sweep_s=0.05),
        rules=RulesSection(state_file=str(tmp_path / "rules.json")),
    )
    gateways: list[Gateway] = []

    async def run_until_it_stops() -> None:
        async with Gateway(config) as gw:
            gateways.append(gw)
            # The schema breaks under the running gateway: every sweep now fails with an
            # error that is not "storage unavailable" and would fail for ever.
            with sqlite3.connect(db) as conn:
                conn.execute("ALTER TABLE alerts RENAME TO alerts_gone")
            await asyncio.wait_for(gw.wait_closed(), GUARD)

    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(LoopFailed) as raised:
        await run_until_it_stops()
    (gw,) = gateways
    assert time.monotonic() - started < GUARD
    failure = raised.value
    assert failure.name == "orphan-sweep"
    assert isinstance(failure.__cause__, sqlite3.OperationalError)
    assert gw.supervisor.running == []
    events = [e["event"] for e in logs]
    (line,) = [e for e in logs if e["event"] == "loop_failed"]
    assert line["log_level"] == "critical"
    assert line["loop"] == "orphan-sweep"
    # stopped in order after the failure, not abandoned half-way
    assert events.index("loop_failed") < events.index("gateway_failing")
    assert events.index("gateway_failing") < events.index("gateway_stopped")


async def test_telecare_run_exits_non_zero_when_a_loop_fails(
    mqtt_server: MqttServer, tmp_path: Path
) -> None:
    """The same failure under ``telecare run``: the process exits 70 (internal error, the
    exit-code scheme of docs/cli.md) and says why."""
    db = tmp_path / "telecare.sqlite3"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[mqtt]\nport = {mqtt_server.port}\nclient_id = "gw-{tmp_path.name}"\n\n'
        f'[store]\nbackend = "sqlite"\nsqlite_path = "{db}"\n\n'
        "[dispatch]\nsweep_s = 0.05\n\n"
        '[log]\nlevel = "info"\nformat = "json"\n',
        encoding="utf-8",
    )
    gateway = GatewayProcess(config, tmp_path / "gateway.log")
    gateway.start()
    try:
        await gateway.wait_for_log("mqtt_connected")
        with sqlite3.connect(db) as conn:
            conn.execute("ALTER TABLE alerts RENAME TO alerts_gone")
        assert gateway.proc is not None
        deadline = time.monotonic() + GUARD
        while gateway.proc.poll() is None:
            assert time.monotonic() < deadline, gateway.log_text()
            await asyncio.sleep(0.05)
        assert gateway.proc.returncode == 70, gateway.log_text()
        log = gateway.log_text()
        assert '"event": "loop_failed"' in log or '"event":"loop_failed"' in log, log
        assert "gateway stopped: loop 'orphan-sweep' stopped: OperationalError" in log
    finally:
        gateway.stop()


async def test_a_spool_nearly_full_becomes_the_rules_priority_2_alert(
    mqtt_server: MqttServer, tmp_path: Path
) -> None:
    """What the spool reports (its state, ``SpoolState``) is decided by the rules
    (``rules.storage``) and raised in the background through the pipeline."""
    config = Config(
        mqtt=MqttConfig(port=mqtt_server.port, client_id=f"gw-{tmp_path.name}"),
        store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
        rules=RulesSection(state_file=str(tmp_path / "rules.json")),
    )
    async with Gateway(config) as gw:
        gw._spool_state(SpoolState(700, 1000, str(tmp_path), near_full=False))
        gw._spool_state(
            SpoolState(850, 1000, str(tmp_path), near_full=True)
        )  # what the spool calls
        [alert] = await eventually(gw.store.recent_alerts, lambda a: len(a) == 1)
    assert alert.priority == 2
    assert "85% full (850 of 1000 bytes)" in alert.reason
