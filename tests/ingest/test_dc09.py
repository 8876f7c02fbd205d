"""The SIA DC-09 receiver end to end: real TCP/UDP sockets on loopback, the real pipeline,
store (SQLite and PostgreSQL) and dispatch service. Peers: ``my-dc09-spt`` (an
independent DC-09 dialler from PyPI) and the simulated unit in ``firmware_stubs``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from my_dc09_spt.dc09_spt import dc09_spt

from telecare.devices.codecs import dc09
from telecare.devices.model import (
    AlarmEvent,
    Device,
    DeviceKind,
    DispatchState,
    EventType,
    Phase,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Site,
    SiteKind,
)
from telecare.firmware_stubs.dc09_unit import Dc09Unit, parse_reply
from telecare.gateway.config import Dc09Config
from telecare.gateway.decode_dc09 import Dc09Decoding
from telecare.gateway.decode_receivers import EventWriter
from telecare.gateway.ingest.dc09 import Dc09Receiver
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.clock import SystemClock
from telecare.rules.engine import EngineResult
from tests.helpers import dispatch_for, eventually, running_pipeline

Store = PostgresStore | SqliteStore
KEY128 = bytes(range(16))
KEY256 = bytes(range(100, 132))
CID, SIA = ReceiverKind.CONTACT_ID, ReceiverKind.SIA


async def _provision(store: Store) -> None:
    await store.upsert_site(Site("home1", SiteKind.HOME))
    await store.upsert_site(Site("home2", SiteKind.HOME))
    await store.upsert_resident(Resident("res1", "home1", "Mrs A"))
    await store.upsert_resident(Resident("res2", "home2", "Mr B"))
    await store.upsert_device(Device("unit1", "home1", DeviceKind.PENDANT, "res1"))
    await store.upsert_device(Device("smoke1", "home1", DeviceKind.SMOKE_DETECTOR, "res1"))
    await store.upsert_device(Device("unit2", "home2", DeviceKind.PENDANT, "res2"))
    await store.upsert_device(Device("unit3", "home2", DeviceKind.PENDANT, "res2"))
    for mapping in (
        ReceiverAccount(CID, "1234", "unit1"),
        ReceiverAccount(CID, "1234", "smoke1", "005"),
        ReceiverAccount(SIA, "1234", "unit1"),
        ReceiverAccount(SIA, "1234", "smoke1", "05"),
        ReceiverAccount(CID, "5678", "unit2"),
        ReceiverAccount(SIA, "5678", "unit2"),
        ReceiverAccount(CID, "AB12", "unit3"),
        ReceiverAccount(SIA, "AB12", "unit3"),
    ):
        await store.upsert_receiver_account(mapping)


CONFIG = Dc09Config(
    enabled=True,
    host="127.0.0.1",
    port=0,
    keys={"5678": KEY128.hex(), "AB12": KEY256.hex()},
)


@contextlib.asynccontextmanager
async def receiving(
    store: Store, config: Dc09Config = CONFIG
) -> AsyncIterator[tuple[Pipeline, Dc09Receiver]]:
    await _provision(store)
    clock = SystemClock()
    async with running_pipeline(store, clock) as pipeline:
        decoding = Dc09Decoding.with_registry(config, pipeline, pipeline.decoder.registry, clock)
        receiver = Dc09Receiver(config, decoding, clock)
        async with receiver:
            yield pipeline, receiver


def _spt_send(
    port: int, account: str, key: bytes | None, kind: str, mtype: str, msg: dict[str, object]
) -> None:
    spt = dc09_spt(account)
    spt.set_path("main", "primary", "127.0.0.1", port, account=account, key=key, type=kind)
    spt.send_msg(mtype, msg)  # raises when no path got an ACK


@pytest.mark.parametrize(
    ("transport", "account", "key"),
    [
        ("tcp", "1234", None),
        ("udp", "1234", None),
        ("tcp", "5678", KEY128),
        ("udp", "AB12", KEY256),
    ],
    ids=["tcp-plain", "udp-plain", "tcp-aes128", "udp-aes256"],
)
async def test_an_independent_dialler_gets_its_alarms_stored_and_acknowledged(
    store: Store, transport: str, account: str, key: bytes | None
) -> None:
    async with receiving(store) as (_, receiver):
        port = receiver.tcp_port
        assert port is not None
        await asyncio.to_thread(
            _spt_send,
            port,
            account,
            key,
            transport.upper(),
            "ADM-CID",
            {"code": 101, "q": 1, "zone": 1},
        )
        await asyncio.to_thread(
            _spt_send, port, account, key, transport.upper(), "SIA-DCS", {"code": "FA", "zone": 5}
        )
        await asyncio.to_thread(
            _spt_send, port, account, key, transport.upper(), "ADM-CID", {"code": 602, "q": 1}
        )
        alerts = await eventually(lambda: store.recent_alerts(), lambda a: len(a) >= 1)
        assert await store.count("alarm_events") == 3
        device = {"1234": "unit1", "5678": "unit2", "AB12": "unit3"}[account]
        pendant = [a for a in alerts if a.event_type is EventType.PENDANT]
        assert [a.device_id for a in pendant] == [device]
        # While the dispatch service runs: an alert still in its intake queue when the
        # service stops gets its dispatch only from the next start's orphan sweep.
        d = await dispatch_for(store, pendant[0].alert_id)
    counters = receiver.counters
    assert (counters["ack"], counters["nak"], counters["duh"]) == (3, 0, 0)
    assert d.state is DispatchState.RAISED


async def test_a_unit_alarm_reaches_one_dispatch_with_its_true_time_despite_retries(
    store: Store,
) -> None:
    pressed = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    async with receiving(store) as (pipeline, receiver):
        port = receiver.tcp_port
        assert port is not None
        unit = Dc09Unit("5678", key=KEY128)
        msg = unit.adm_cid(1, 101, zone=1, event_time=pressed)
        frame = unit.frame(msg)
        # The unit did not hear the first ACK and sends the same frame twice more, once
        # over UDP: one event, one alert, one dispatch; every copy is acknowledged.
        for udp in (False, False, True):
            exchange = unit.exchange_udp if udp else unit.exchange_tcp
            reply = await exchange("127.0.0.1", port, frame, 5.0)
            assert (reply.token, reply.seq) == ("ACK", "0001")
            assert reply.timestamp is not None
        # A unit that re-stamps its retry (same sequence and content) is recognised too.
        again = await unit.exchange_tcp("127.0.0.1", port, unit.frame(msg), 5.0)
        assert again.token == "ACK"
        alerts = await eventually(lambda: store.recent_alerts(), lambda a: len(a) == 1)
        (alert,) = alerts
        await dispatch_for(store, alert.alert_id)  # while the dispatch service runs
    assert await store.count("alarm_events") == 1
    assert pipeline.counters["events_duplicate"] == 3
    assert alert.ts == pressed  # the unit's event time, not the receive time
    assert (alert.device_id, alert.resident_id, alert.event_type) == (
        "unit2",
        "res2",
        EventType.PENDANT,
    )
    assert await store.count("dispatches") == 1


async def test_bad_frames_get_nak_or_duh_and_refusals_are_dead_lettered(store: Store) -> None:
    async with receiving(store) as (_, receiver):
        port = receiver.tcp_port
        assert port is not None
        plain = Dc09Unit("1234")
        good = plain.frame(plain.adm_cid(1, 101, zone=1))

        async def reply(frame: bytes, *, udp: bool = False) -> str:
            ex = plain.exchange_udp if udp else plain.exchange_tcp
            return (await ex("127.0.0.1", port, frame, 5.0)).token

        bad_crc = good[:1] + (b"0000" if good[1:5] != b"0000" else b"FFFF") + good[5:]
        assert await reply(bad_crc) == "NAK"
        assert await reply(bad_crc, udp=True) == "NAK"
        assert await reply(good[:1] + good[1:5] + b"0009" + good[9:]) == "NAK"  # length
        assert await reply(good[:-3] + b"\r", udp=True) == "NAK"  # cut short
        # A clock 5 minutes slow: NAK with the receiver's time; the unit corrects it.
        slow = Dc09Unit("1234", clock_offset_s=-300)
        assert (await slow.deliver("127.0.0.1", port, slow.adm_cid(1, 602))).token == "ACK"
        assert slow.replies == ["NAK", "ACK"]
        assert abs(slow.clock_offset_s) < 5
        # Refused for good: DUH and a dead letter with the reason.
        stranger = Dc09Unit("9999")
        assert await reply(stranger.frame(stranger.adm_cid(1, 101))) == "DUH"
        keyed_in_clear = Dc09Unit("5678")
        assert await reply(keyed_in_clear.frame(keyed_in_clear.adm_cid(1, 101))) == "DUH"
        wrong_key = Dc09Unit("5678", key=KEY256[:16])
        assert await reply(wrong_key.frame(wrong_key.adm_cid(1, 101))) == "DUH"
        no_key = Dc09Unit("1234", key=KEY128)
        assert await reply(no_key.frame(no_key.adm_cid(1, 101))) == "DUH"
        assert await reply(plain.frame(plain.adm_cid(1, 999))) == "DUH"  # unmapped code
        assert await reply(plain.frame(plain.sia_dcs("QQ", 1))) == "DUH"
        assert (
            await reply(
                b"\n" + b"%04X%04X" % (dc09.crc16(b'"FOO"0001#1234[]'), 16) + b'"FOO"0001#1234[]\r'
            )
            == "DUH"
        )
        letters = await eventually(lambda: store.dead_letters(), lambda d: len(d) == 7)
        assert await store.count("alarm_events") == 1  # only the corrected test call
    reasons = sorted(d.reason for d in letters)
    expected = [
        "account 5678 has a key; its plain frames are refused",
        "contact_id account 9999 zone 000 is not mapped",
        "decrypted DC-09 data",  # wrong key
        "encrypted DC-09 frame from account 1234, which has no key",
        "event code 999 is not one we map",
        "SIA event code QQ is not one we map",
        "id token 'FOO' is not supported",
    ]
    for part in expected:
        assert any(part in r for r in reasons), (part, reasons)
    assert all(r.startswith("DC-09: ") for r in reasons)
    assert all(d.source == "dc09" and d.origin.startswith("dc09/") for d in letters)
    assert receiver.counters["nak"] == 5
    assert receiver.counters["duh"] == 7


async def test_a_tcp_connection_carries_many_frames_in_order_and_survives_noise(
    sqlite_store: SqliteStore,
) -> None:
    async with receiving(sqlite_store) as (_, receiver):
        port = receiver.tcp_port
        assert port is not None
        unit = Dc09Unit("1234")
        frames = [
            unit.frame(unit.adm_cid(1, 101, zone=1)),
            unit.frame(unit.sia_dcs("FA", 5)),  # zone 05 of the SIA account: smoke1
            unit.frame(unit.null()),
            unit.frame(unit.adm_cid(3, 101, zone=1)),
        ]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # Noise before a frame, frames split across writes and glued together.
        blob = b"\x00garbage" + b"".join(frames)
        for i in range(0, len(blob), 7):
            writer.write(blob[i : i + 7])
            await writer.drain()
        replies = [parse_reply(await reader.readuntil(b"\r")) for _ in frames]
        writer.close()
        await writer.wait_closed()
        events = await eventually(lambda: sqlite_store.count("alarm_events"), lambda n: n == 3)
    assert [(r.token, r.seq) for r in replies] == [("ACK", f"{i:04d}") for i in range(1, 5)]
    assert events == 3
    assert receiver.counters["noise_bytes"] == 8
    assert receiver.counters["link_tests"] == 1
    alerts = await sqlite_store.recent_alerts()
    assert {(a.device_id, a.event_type) for a in alerts} == {
        ("unit1", EventType.PENDANT),
        ("smoke1", EventType.SMOKE),
    }


async def test_a_poison_frame_is_dead_lettered_and_refused_and_the_receiver_goes_on(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with receiving(sqlite_store) as (pipeline, receiver):
        port = receiver.tcp_port
        assert port is not None
        real = pipeline.engine.on_event

        def on_event(event: AlarmEvent, *args: Any, **kwargs: Any) -> EngineResult:
            if event.device_id == "unit1":
                raise ValueError("a rules bug")  # what a poison event makes processing do
            return real(event, *args, **kwargs)

        monkeypatch.setattr(pipeline.engine, "on_event", on_event)
        poisoned, healthy = Dc09Unit("1234"), Dc09Unit("5678", key=KEY128)
        frame = poisoned.frame(poisoned.adm_cid(1, 101, zone=1))
        assert (await poisoned.exchange_tcp("127.0.0.1", port, frame, 5.0)).token == "DUH"
        frame = healthy.frame(healthy.adm_cid(1, 101, zone=1))
        assert (await healthy.exchange_tcp("127.0.0.1", port, frame, 5.0)).token == "ACK"
        letters = await eventually(sqlite_store.dead_letters, lambda d: len(d) == 1)
    assert letters[0].reason.startswith("process failed: ValueError in ")
    assert letters[0].device_id == "unit1"
    assert "a rules bug" not in letters[0].reason  # the exception's text may quote data
    assert (receiver.counters["poison"], receiver.counters["ack"]) == (1, 1)


async def test_the_writer_stores_a_batch_one_by_one_so_only_the_poison_request_fails(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _provision(sqlite_store)
    clock = SystemClock()
    async with running_pipeline(sqlite_store, clock) as pipeline:
        real = pipeline.engine.on_event

        def on_event(event: AlarmEvent, *args: Any, **kwargs: Any) -> EngineResult:
            if event.device_id == "unit1":
                raise ValueError("a rules bug")
            return real(event, *args, **kwargs)

        monkeypatch.setattr(pipeline.engine, "on_event", on_event)
        now = clock.now()
        poison = AlarmEvent("unit1", EventType.PENDANT, Phase.ALARM, now, "w1", "home1", "res1")
        fine = AlarmEvent("unit2", EventType.PENDANT, Phase.ALARM, now, "w2", "home2", "res2")
        async with EventWriter("test:store", pipeline, clock) as writer:
            results = await asyncio.gather(
                writer.store([poison]), writer.store([fine]), return_exceptions=True
            )
    assert isinstance(results[0], ValueError)
    assert results[1] is None
    assert writer.writes == 1  # one joint write, then each request on its own
    assert await sqlite_store.count("alarm_events") == 2
    assert [a.device_id for a in await sqlite_store.recent_alerts()] == ["unit2"]
