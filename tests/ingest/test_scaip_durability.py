"""A kill -9 of ``telecare run`` between receiving a SCAIP alarm and acknowledging it
loses nothing: the unit gets no ``<mrs>``, resends the same ``ref`` to the restarted
gateway, and the alarm is stored, alerted and dispatched exactly once.

The real gateway runs in a child process with the SCAIP receiver on; the simulated unit
(firmware_stubs/scaip_unit.py) sends over UDP and retransmits as a SIP client does. The
test holds a table lock so the gateway's write hangs, then SIGKILLs it there:

* lock on ``alarm_events``: the alarm is received and nothing is stored;
* lock on ``alerts``: the event is stored but its alert is not: the resent ``ref`` is
  recognised as a duplicate event and the pipeline finishes what the first attempt left.
"""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from pathlib import Path

import psycopg
import pytest

from telecare.devices.codecs import scaip
from telecare.devices.codecs.scaip import Snu
from telecare.firmware_stubs.scaip_unit import ScaipUnit
from telecare.gateway.store.postgres import PostgresStore
from tests.helpers import eventually
from tests.ingest.scaip_support import CID, provision
from tests.ingest.support import GatewayProcess, awaitable, blocked_pids, count_rows, write_config
from tests.services import PgServer, free_port, start_mosquitto

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]


def _sip_port() -> int:
    """A port free for both UDP and TCP, below Linux's ephemeral range (32768-60999): the
    restarted gateway binds it again, and an ephemeral port may meanwhile be taken as the
    local port of some other process's outgoing connection."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port for SIP between 20000 and 32000")


@pytest.mark.parametrize("locked", ["alarm_events", "alerts"])
async def test_sigkill_between_receive_and_acknowledge_loses_nothing(
    pg_server: PgServer,
    pg_schema: str,
    topic_prefix: str,
    tmp_path: Path,
    broker_dir: Path,
    locked: str,
) -> None:
    async with PostgresStore(pg_server.dsn, schema=pg_schema, use_timescale=False) as store:
        await store.migrate()
        await provision(store)
    mqtt_port, sip_port = free_port(), _sip_port()
    config = write_config(
        tmp_path / "gateway.toml",
        mqtt_port=mqtt_port,
        client_id=f"gw-scaip-{uuid.uuid4().hex[:8]}",
        topic_prefix=topic_prefix,
        dsn=pg_server.dsn,
        schema=pg_schema,
    )
    with config.open("a", encoding="utf-8") as f:
        f.write(f'\n[receivers.scaip]\nenabled = true\nhost = "127.0.0.1"\nport = {sip_port}\n')
    unit = ScaipUnit(CID, "127.0.0.1", sip_port, timeout=60.0)
    with (
        start_mosquitto(mqtt_port, persistence_dir=broker_dir),
        psycopg.connect(pg_server.dsn) as locker,
        psycopg.connect(pg_server.dsn, autocommit=True) as probe,
    ):
        locker.execute(f'LOCK TABLE "{pg_schema}".{locked} IN EXCLUSIVE MODE')
        first = GatewayProcess(config, tmp_path / "gw1.log")
        first.start()
        sending: asyncio.Task[tuple[int, scaip.Mrs | None]] | None = None
        try:
            await first.wait_for_log("scaip_listening")
            sending = asyncio.create_task(unit.send("ME", "0010", "0003", ref="KILL-1"))
            # The gateway has received the alarm and is stuck storing it: no answer yet.
            await eventually(lambda: awaitable(blocked_pids, probe, pg_schema, locked), timeout=20)
            assert not sending.done()
        except BaseException:
            if sending is not None:
                sending.cancel()
            raise
        finally:
            first.kill()
        assert sending is not None
        for pid in blocked_pids(probe, pg_schema, locked):
            probe.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await eventually(lambda: awaitable(blocked_pids, probe, pg_schema, locked), lambda p: not p)
        stored_before = count_rows(probe, pg_schema, "alarm_events")
        assert stored_before == (0 if locked == "alarm_events" else 1)
        assert not sending.done()  # the unit is still retransmitting the same request

        second = GatewayProcess(config, tmp_path / "gw2.log")
        second.start()
        try:
            await second.wait_for_log("scaip_listening")
            locker.commit()  # release the lock
            status, mrs = await asyncio.wait_for(sending, 60)
            assert status == 200
            assert mrs is not None
            assert (mrs.ref, mrs.snu) == ("KILL-1", Snu.OK)
            await eventually(
                lambda: awaitable(count_rows, probe, pg_schema, "dispatches"), lambda n: n >= 1
            )
            assert count_rows(probe, pg_schema, "alarm_events") == 1
            assert count_rows(probe, pg_schema, "alerts") == 1
            assert count_rows(probe, pg_schema, "dispatches") == 1
            row = probe.execute(
                f'SELECT device_id, msg_id, type FROM "{pg_schema}".alarm_events'
            ).fetchone()
            assert row == ("unit1", "scaip-KILL-1", "pendant")
        finally:
            sending.cancel()  # done by now unless an assertion failed
            await asyncio.gather(sending, return_exceptions=True)
            second.stop()
            second._log.close()  # also when it exited by itself (stop() then returns early)
