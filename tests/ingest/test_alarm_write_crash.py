"""A kill -9 after the rules pass and the rule state's write, before the alerts' write,
loses no alert: the unit's retry raises it (the open alarm the restored rules hold has no
stored alert, so the retry is not folded into it silently).

The real gateway (``telecare run``) runs in a child process with the DC-09 receiver on,
against a PostgreSQL schema, with the time-driven rules ticking every 0.2 s (the tick
writes the rule state). The test holds a table lock on ``alerts``: the alarm event is
stored, the rules open the alarm, the alert's write hangs; the tick writes the open alarm
to ``rule_state`` meanwhile (the test waits for that row). The gateway is SIGKILLed
there, a new one starts with the rule state restored, and the unit retries with a new
timestamp (a DC-09 unit may re-stamp a retry; the in-memory retry memo died with the
process, so the retry is a new message to the store and the rules see a second press of
an open alarm). Before the fix the retry was folded into that alarm, acknowledged, and
no alert or dispatch was ever written.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
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
from tests.ingest.support import GatewayProcess, awaitable, blocked_pids, dc09_section, write_config
from tests.services import MqttServer, PgServer, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _scalar(conn: psycopg.Connection, sql: str, *params: object) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


async def test_sigkill_after_the_rule_state_write_before_the_alert_write_loses_no_alert(
    pg_server: PgServer, pg_schema: str, mqtt_server: MqttServer, tmp_path: Path
) -> None:
    async with PostgresStore(pg_server.dsn, schema=pg_schema, use_timescale=False) as store:
        await store.migrate()
        await store.upsert_site(Site("home", SiteKind.HOME))
        await store.upsert_resident(Resident("res0", "home", "R"))
        await store.upsert_device(Device("unit0", "home", DeviceKind.PENDANT, "res0"))
        await store.upsert_receiver_account(
            ReceiverAccount(ReceiverKind.CONTACT_ID, "2000", "unit0")
        )
    port = free_port()
    config = write_config(
        tmp_path / "gw.toml",
        mqtt_host=mqtt_server.host,
        mqtt_port=mqtt_server.port,
        client_id=f"gw-crash-{uuid.uuid4().hex[:8]}",
        topic_prefix=f"t-{uuid.uuid4().hex[:8]}",
        dsn=pg_server.dsn,
        schema=pg_schema,
        extra="[rules]\ntick_s = 0.2\n\n" + dc09_section(port),
    )
    unit = Dc09Unit("2000")
    # No event time ([H...]): the frame's DC-09 timestamp keys the message, as for a
    # unit that stamps each transmission.
    press = unit.adm_cid(1, 101, zone=1)
    s = f'"{pg_schema}"'

    with (
        psycopg.connect(pg_server.dsn) as locker,
        psycopg.connect(pg_server.dsn, autocommit=True) as probe,
    ):
        locker.execute(f"LOCK TABLE {s}.alerts IN EXCLUSIVE MODE")
        first = GatewayProcess(config, tmp_path / "gw1.log")
        first.start()
        delivery: asyncio.Task[Reply] | None = None
        try:
            await first.wait_for_log("dc09_listening")
            delivery = asyncio.create_task(
                unit.deliver("127.0.0.1", port, press, timeout=30.0, attempts=1)
            )
            # The event is stored, the alert's write hangs on the lock, and the rules
            # tick has written the open alarm to rule_state: the crash point.
            await eventually(lambda: awaitable(blocked_pids, probe, pg_schema), timeout=30)
            await eventually(
                lambda: awaitable(
                    _scalar, probe, f"SELECT count(*) FROM {s}.rule_state WHERE section = 'alarm'"
                ),
                timeout=30,
            )
            assert _scalar(probe, f"SELECT count(*) FROM {s}.alarm_events") == 1
            assert unit.replies == []
        finally:
            first.kill()
            if delivery is not None:
                delivery.cancel()
                await asyncio.gather(delivery, return_exceptions=True)
        for pid in blocked_pids(probe, pg_schema):
            probe.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await eventually(lambda: awaitable(blocked_pids, probe, pg_schema), lambda p: not p)
        locker.commit()  # release the lock
        assert _scalar(probe, f"SELECT count(*) FROM {s}.alerts") == 0

        second = GatewayProcess(config, tmp_path / "gw2.log")
        second.start()
        try:
            await second.wait_for_log("dc09_listening")
            assert "rule_state_restored" in second.log_text()
            await asyncio.sleep(1.1)  # the retry's timestamp is another second
            retry_stamp = datetime.now(UTC)
            reply = await unit.deliver("127.0.0.1", port, press, timeout=10.0)
            assert reply.token == "ACK"
            # The retry was a new message to the store (re-stamped), not a duplicate.
            assert _scalar(probe, f"SELECT count(*) FROM {s}.alarm_events") == 2
            found = await eventually(
                lambda: awaitable(
                    lambda: probe.execute(
                        f"SELECT a.device_id, d.state FROM {s}.alerts a"
                        f" JOIN {s}.dispatches d ON d.alert_id = a.alert_id"
                    ).fetchall()
                ),
                lambda rows: len(rows) >= 1,
                timeout=30,
            )
            assert [r[0] for r in found] == ["unit0"]
            assert _scalar(probe, f"SELECT count(*) FROM {s}.alerts") == 1
            ts = probe.execute(f"SELECT ts FROM {s}.alerts").fetchone()
            assert ts is not None
            assert ts[0] < retry_stamp  # the alarm's own (first) time
        finally:
            second.stop()
