"""The SCAIP receiver with the simulated unit (firmware_stubs/scaip_unit.py): SIP over TLS,
UDP retransmissions absorbed, raw noise answered by nothing and dead-lettered, a clean
stop that still answers what is in flight."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from telecare.devices.codecs import scaip, sip
from telecare.devices.codecs.scaip import Snu
from telecare.devices.model import AlarmEvent, EventType
from telecare.firmware_stubs.scaip_unit import ScaipUnit, encode_message, encode_mrq
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.clock import FakeClock, SystemClock
from telecare.rules.engine import EngineResult
from tests.helpers import eventually
from tests.ingest.scaip_support import (
    CID,
    AnyStore,
    last_heartbeat,
    provision,
    receiving,
    stored_events,
)


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_sip_over_tls(store: AnyStore, tmp_path: Path) -> None:
    await provision(store)
    cert, key = _certificate(tmp_path)
    async with receiving(
        store, SystemClock(), tls=True, tls_port=0, tls_cert=str(cert), tls_key=str(key)
    ) as (_, receiver):
        assert receiver.tls_address is not None
        client = ssl.create_default_context(cafile=str(cert))
        unit = ScaipUnit(CID, "127.0.0.1", receiver.tls_address[1], transport="TLS", tls=client)
        status, mrs = await unit.send("ME", "0010", "0005", ref="T-1")
    assert status == 200
    assert mrs == scaip.Mrs("T-1", Snu.OK)
    events = await stored_events(store)
    assert [(e.type, e.msg_id) for e in events] == [("fall", "scaip-T-1")]


async def test_udp_retransmissions_are_absorbed_and_answered_alike(
    store: AnyStore, tmp_path: Path
) -> None:
    await provision(store)
    async with receiving(store, SystemClock()) as (_, receiver):
        assert receiver.udp_address is not None
        port = receiver.udp_address[1]
        message = encode_message(encode_mrq("R-1", CID), from_user=CID, host="127.0.0.1", port=port)
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.connect(("127.0.0.1", port))
            for _ in range(3):  # the unit's timer E fires before the answer arrives
                s.send(message)
            first = await asyncio.wait_for(loop.sock_recv(s, 65536), 10)
            s.send(message)  # after the answer: the same answer again, nothing stored
            again = await asyncio.wait_for(loop.sock_recv(s, 65536), 10)
    assert first == again
    response, _ = sip.parse(first, stream=False)
    assert isinstance(response, sip.SipResponse)
    assert scaip.decode_mrs(response.body) == scaip.Mrs("R-1", Snu.OK)
    assert receiver.counters["retransmissions"] >= 1
    assert receiver.counters["events"] == 1
    assert len(await stored_events(store)) == 1


async def test_noise_datagrams_and_a_garbled_tcp_stream_are_dead_lettered(
    store: AnyStore, tmp_path: Path
) -> None:
    await provision(store)
    async with receiving(store, SystemClock()) as (_, receiver):
        assert receiver.udp_address is not None
        assert receiver.tcp_address is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00\xff not SIP at all", receiver.udp_address)
            s.sendto(b"\r\n\r\n", receiver.udp_address)  # keep-alive: silently ignored
        reader, writer = await asyncio.open_connection(*receiver.tcp_address)
        writer.write(b"MESSAGE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n")  # no Content-Length
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no answer
        writer.close()
        letters = await eventually(store.dead_letters, lambda ds: len(ds) >= 2)
        # the receiver still works for the next unit
        unit = ScaipUnit(CID, "127.0.0.1", receiver.udp_address[1])
        status, mrs = await unit.send(ref="OK-1")
    reasons = sorted(d.reason for d in letters)
    assert any("without Content-Length" in r for r in reasons)
    assert any(r.startswith("SIP: ") for r in reasons)
    assert (status, mrs) == (200, scaip.Mrs("OK-1", Snu.OK))


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_information_message_is_stored_without_an_alert(
    store: AnyStore, transport: str
) -> None:
    await provision(store)
    async with receiving(store, SystemClock()) as (_, receiver):
        address = receiver.udp_address if transport == "UDP" else receiver.tcp_address
        assert address is not None
        unit = ScaipUnit(CID, "127.0.0.1", address[1], transport=transport)
        status, mrs = await unit.send("IN", "0083", "0011", ref="I-1", lco="021")
        low = await unit.send("IN", "0016", "0003", ref="I-2")
    assert (status, mrs) == (200, scaip.Mrs("I-1", Snu.OK))
    assert low[0] == 200
    events = await stored_events(store)
    assert [(e.type, e.code, e.device_type, e.location) for e in events] == [
        ("information", 83, "0011", "021"),
        ("low_battery", 16, "0003", None),
    ]
    alerts = await store.recent_alerts()
    assert [a.event_type.value for a in alerts if a.event_type] == ["low_battery"]


async def test_pi_heartbeats_feed_the_missed_heartbeat_rule_per_unit(store: AnyStore) -> None:
    """unit1 tests in every 60 s (heartbeat_interval_s); silent for more than 3 x 60 s it
    raises a missed-heartbeat alert, and its next PI clears it."""
    await provision(store)
    clock = FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    async with receiving(store, clock) as (pipeline, receiver):
        assert receiver.udp_address is not None
        unit = ScaipUnit(CID, "127.0.0.1", receiver.udp_address[1])
        assert (await unit.send("PI", None, "0002"))[1] == scaip.Mrs(unit_ref(unit, 1), Snu.OK)
        clock.set(clock.now() + timedelta(seconds=170))
        await pipeline.tick()
        assert await store.recent_alerts() == []  # within 3 x 60 s
        clock.set(clock.now() + timedelta(seconds=20))
        await pipeline.tick()
        alerts = await store.recent_alerts()
        assert [(a.device_id, a.event_type) for a in alerts] == [
            ("unit1", EventType.HEARTBEAT_MISSED)
        ]
        status, _ = await unit.send("PI", None, "0002")
        assert status == 200
        assert pipeline.counters["cleared"] == 1  # heard again: the alert is cleared
    assert await last_heartbeat(store, "unit1") is not None


def unit_ref(unit: ScaipUnit, n: int) -> str:
    return f"{unit._session}-{n:06d}"


async def test_over_max_in_flight_a_unit_gets_503_and_nothing_is_acknowledged_early(
    pg_dsn: str, pg_schema: str
) -> None:
    """The store hangs (a table lock): one request is in flight, the next gets 503 at once
    (the unit retries later); the first is answered only when its event is stored."""
    async with PostgresStore(pg_dsn, schema=pg_schema, use_timescale=False) as store:
        await store.migrate()
        await provision(store)
        with psycopg.connect(pg_dsn) as locker:
            locker.execute(f'LOCK TABLE "{pg_schema}".alarm_events IN EXCLUSIVE MODE')
            async with receiving(store, SystemClock(), max_in_flight=1) as (_, receiver):
                assert receiver.udp_address is not None
                port = receiver.udp_address[1]
                first = asyncio.create_task(ScaipUnit(CID, "127.0.0.1", port).send(ref="B-1"))
                await eventually(lambda: _async(lambda: receiver.counters["requests"] == 1))
                second = await ScaipUnit(CID, "127.0.0.1", port).send(ref="B-2")
                assert second == (503, None)
                assert not first.done()
                locker.commit()  # the store works again
                assert await first == (200, scaip.Mrs("B-1", Snu.OK))
        events = await stored_events(store)
    assert [e.msg_id for e in events] == ["scaip-B-1"]
    assert receiver.counters["busy"] == 1


async def _async(fn: Callable[[], bool]) -> bool:
    return fn()


async def test_a_ref_reused_for_other_content_is_refused_and_dead_lettered(
    store: AnyStore,
) -> None:
    await provision(store)
    async with receiving(store, SystemClock()) as (_, receiver):
        assert receiver.udp_address is not None
        unit = ScaipUnit(CID, "127.0.0.1", receiver.udp_address[1])
        assert await unit.send("ME", "0010", "0003", ref="U-1") == (200, scaip.Mrs("U-1", Snu.OK))
        status, mrs = await unit.send("IN", "0083", "0011", ref="U-1")  # same ref, other data
        letters = await eventually(store.dead_letters, lambda ds: len(ds) == 1)
    assert status == 200
    assert mrs is not None
    assert (mrs.ref, mrs.snu) == ("U-1", Snu.WRONG_DATA_CONTENT)
    assert "already used for an event with different content" in letters[0].reason
    assert [e.type for e in await stored_events(store)] == ["pendant"]


async def test_a_poison_request_gets_not_treated_and_a_dead_letter_and_the_next_is_taken(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await provision(sqlite_store)
    async with receiving(sqlite_store, SystemClock()) as (pipeline, receiver):
        assert receiver.udp_address is not None
        real = pipeline.engine.on_event

        def on_event(event: AlarmEvent, *args: Any, **kwargs: Any) -> EngineResult:
            if event.msg_id == "scaip-P-1":
                raise ValueError("a rules bug")  # what a poison event makes processing do
            return real(event, *args, **kwargs)

        monkeypatch.setattr(pipeline.engine, "on_event", on_event)
        unit = ScaipUnit(CID, "127.0.0.1", receiver.udp_address[1])
        poisoned = await unit.send("ME", "0010", "0003", ref="P-1")
        taken = await unit.send("ME", "0010", "0003", ref="P-2")
        letters = await eventually(sqlite_store.dead_letters, lambda ds: len(ds) == 1)
    assert poisoned[0] == 200
    assert poisoned[1] is not None
    assert (poisoned[1].ref, poisoned[1].snu) == ("P-1", Snu.NOT_TREATED)
    assert taken == (200, scaip.Mrs("P-2", Snu.OK))
    assert letters[0].reason.startswith("process failed: ValueError in ")
    assert letters[0].device_id == "unit1"
    assert receiver.counters["poison"] == 1
