"""A kill -9 of the gateway between receiving a DC-09 alarm and acknowledging it loses
nothing: the unit retries and the duplicate is recognised.

The real gateway (``telecare run``) runs in a child process with the DC-09 receiver on,
against a PostgreSQL schema. The test holds a table lock on ``alerts``: the first alarm
event is stored, then the gateway hangs writing its alert while the other units' frames
wait behind it, received but not stored; no ACK has gone out. The gateway is SIGKILLed
there; its blocked sessions are terminated; a new gateway starts;
the lock is released. The units (simulated DC-09 diallers) have kept re-sending the same
frame all along: every alarm must end up stored exactly once, with an alert and a
dispatch carrying the unit's own event time, and every unit must get its ACK.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from telecare.devices.model import (
    Device,
    DeviceKind,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Site,
    SiteKind,
)
from telecare.firmware_stubs.dc09_unit import Dc09Unit, Reply
from telecare.gateway.store.postgres import PostgresStore
from tests.helpers import eventually
from tests.ingest.support import (
    GatewayProcess,
    awaitable,
    blocked_pids,
    count_rows,
    dc09_section,
    write_config,
)
from tests.services import MqttServer, PgServer, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

KEY = bytes(range(32))
UNITS = 5


async def test_sigkill_between_receipt_and_ack_loses_nothing_and_retries_are_duplicates(
    pg_server: PgServer, pg_schema: str, mqtt_server: MqttServer, tmp_path: Path
) -> None:
    accounts = [f"{1000 + i}" for i in range(UNITS)]
    async with PostgresStore(pg_server.dsn, schema=pg_schema, use_timescale=False) as store:
        await store.migrate()
        await store.upsert_site(Site("home", SiteKind.HOME))
        for i, account in enumerate(accounts):
            await store.upsert_resident(Resident(f"res{i}", "home", "R"))
            await store.upsert_device(Device(f"unit{i}", "home", DeviceKind.PENDANT, f"res{i}"))
            await store.upsert_receiver_account(
                ReceiverAccount(ReceiverKind.CONTACT_ID, account, f"unit{i}")
            )
    port = free_port()
    keys = f'{{ "1001" = "{KEY.hex()}", "1003" = "{KEY.hex()}" }}'
    config = write_config(
        tmp_path / "gw.toml",
        mqtt_host=mqtt_server.host,
        mqtt_port=mqtt_server.port,
        client_id=f"gw-dc09-{uuid.uuid4().hex[:8]}",
        topic_prefix=f"t-{uuid.uuid4().hex[:8]}",
        dsn=pg_server.dsn,
        schema=pg_schema,
        extra=dc09_section(port, keys),
    )
    pressed = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20)
    units = [Dc09Unit(a, key=KEY if a in ("1001", "1003") else None) for a in accounts]
    messages = [u.adm_cid(1, 101, zone=1, event_time=pressed) for u in units]

    with (
        psycopg.connect(pg_server.dsn) as locker,
        psycopg.connect(pg_server.dsn, autocommit=True) as probe,
    ):
        locker.execute(f'LOCK TABLE "{pg_schema}".alerts IN EXCLUSIVE MODE')
        first = GatewayProcess(config, tmp_path / "gw1.log")
        first.start()
        deliveries: list[asyncio.Task[Reply]] = []
        try:
            await first.wait_for_log("dc09_listening")
            deliveries = [
                asyncio.create_task(
                    u.deliver("127.0.0.1", port, m, timeout=1.0, attempts=200, retry_delay=0.1)
                )
                for u, m in zip(units, messages, strict=True)
            ]
            # An event is stored, its alert write hangs, nothing is acknowledged.
            await eventually(lambda: awaitable(blocked_pids, probe, pg_schema), timeout=30)
            stored_before_kill = count_rows(probe, pg_schema, "alarm_events")
            assert stored_before_kill >= 1
            assert all(u.replies == [] for u in units)
        except BaseException:
            for task in deliveries:
                task.cancel()
            await asyncio.gather(*deliveries, return_exceptions=True)
            raise
        finally:
            first.kill()
        for pid in blocked_pids(probe, pg_schema):
            probe.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await eventually(lambda: awaitable(blocked_pids, probe, pg_schema), lambda p: not p)
        assert count_rows(probe, pg_schema, "alerts") == 0

        second = GatewayProcess(config, tmp_path / "gw2.log")
        second.start()
        try:
            await second.wait_for_log("dc09_listening")
            locker.commit()  # release the lock
            replies = await asyncio.wait_for(asyncio.gather(*deliveries), 60)
            assert [r.token for r in replies] == ["ACK"] * UNITS
            rows = probe.execute(
                f'SELECT device_id, msg_id, ts FROM "{pg_schema}".alarm_events'
            ).fetchall()
            # Each exactly once: the retries of what the first gateway had stored were
            # recognised as duplicates, the others stored now.
            assert len(rows) == UNITS
            assert {r[0] for r in rows} == {f"unit{i}" for i in range(UNITS)}
            assert {r[2] for r in rows} == {pressed}
            alerts = await eventually(
                lambda: awaitable(
                    lambda: probe.execute(
                        f'SELECT a.device_id, a.ts FROM "{pg_schema}".alerts a JOIN'
                        f' "{pg_schema}".dispatches d ON d.alert_id = a.alert_id'
                    ).fetchall()
                ),
                lambda found: len(found) == UNITS,
                timeout=30,
            )
            assert sorted(alerts) == sorted((f"unit{i}", pressed) for i in range(UNITS))
            assert count_rows(probe, pg_schema, "alerts") == UNITS
            assert count_rows(probe, pg_schema, "dispatches") == UNITS
        finally:
            for task in deliveries:
                task.cancel()
            await asyncio.gather(*deliveries, return_exceptions=True)
            second.stop()
        assert "dc09_not_stored" not in second.log_text()
