"""Issue 10 item 4: a Contact ID receiver line maps each message's account (and zone) to
a provisioned device, through the real serial path (a pty) into the real pipeline,
store and dispatch service. Two subscribers' presses are two alarms; an unknown
account is a dead letter and cancels nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from telecare.devices.model import (
    Device,
    DeviceKind,
    DispatchState,
    EventType,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Site,
    SiteKind,
)
from telecare.firmware_stubs.alarm_receiver import encode_contact_id
from telecare.gateway.backoff import Backoff
from telecare.gateway.config import SerialPortConfig
from telecare.gateway.decode_serial import SerialDecoding
from telecare.gateway.ingest.serial import SerialIngest
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.clock import FakeClock
from tests.helpers import dispatch_for, eventually, running_pipeline
from tests.ingest.ptys import PtyPort

CID = ReceiverKind.CONTACT_ID
CLOSED = {DispatchState.RESOLVED, DispatchState.CANCELLED}


async def _provision(store: PostgresStore | SqliteStore) -> None:
    await store.upsert_site(Site("arc", SiteKind.HOME))
    await store.upsert_site(Site("home1", SiteKind.HOME))
    await store.upsert_site(Site("home2", SiteKind.HOME))
    await store.upsert_resident(Resident("res1", "home1", "Mrs A"))
    await store.upsert_resident(Resident("res2", "home2", "Mr B"))
    await store.upsert_device(Device("arc1", "arc", DeviceKind.ALARM_RECEIVER, format="contact_id"))
    await store.upsert_device(Device("unit1", "home1", DeviceKind.PENDANT, "res1"))
    await store.upsert_device(Device("smoke1", "home1", DeviceKind.SMOKE_DETECTOR, "res1"))
    await store.upsert_device(Device("unit2", "home2", DeviceKind.PENDANT, "res2"))
    await store.upsert_receiver_account(ReceiverAccount(CID, "1234", "unit1"))
    await store.upsert_receiver_account(ReceiverAccount(CID, "1234", "smoke1", zone="005"))
    await store.upsert_receiver_account(ReceiverAccount(CID, "5678", "unit2"))


async def test_accounts_map_to_devices_and_an_unknown_account_is_dead_lettered(
    store: PostgresStore | SqliteStore, tmp_path: Path
) -> None:
    await _provision(store)
    clock = FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    port = PtyPort(tmp_path)
    try:
        async with running_pipeline(store, clock) as pipeline:
            decoding = SerialDecoding.with_registry(
                [SerialPortConfig(str(port.path), "contact_id", "arc1")],
                pipeline,
                pipeline.decoder.registry,
                clock,
                report_interval=0.2,
            )
            ingest = SerialIngest(decoding, clock, backoff=lambda: Backoff(initial=0.02, cap=0.1))
            async with ingest:
                await asyncio.wait_for(ingest.readers[0].is_open.wait(), 10)
                port.reader_opened()

                async def send(account: str, q: int, code: int, zone: int, n: int) -> None:
                    port.write(encode_contact_id(account, q, code, zone=zone))
                    await eventually(lambda: store.count("alarm_events"), lambda c: c == n)

                # Two subscribers press 30 s apart: two alarms, not one folded.
                await send("1234", 1, 101, 1, 1)
                clock.set(clock.now() + timedelta(seconds=30))
                await send("5678", 1, 101, 1, 2)
                # Zone 005 of account 1234 is the smoke detector, not the pendant.
                clock.set(clock.now() + timedelta(seconds=5))
                await send("1234", 1, 111, 5, 3)
                alerts = await eventually(lambda: store.recent_alerts(), lambda a: len(a) == 3)
                # A cancel from an account nobody mapped: dead letter, cancels nothing.
                clock.set(clock.now() + timedelta(seconds=5))
                port.write(encode_contact_id("9999", 1, 406, zone=1))
                letters = await eventually(lambda: store.dead_letters())
                # A cancel from the other subscriber leaves this one's alarm open.
                await send("5678", 1, 406, 1, 4)
                # Looked up while the dispatch service runs (it stops with the pipeline).
                by_id = {a.device_id: a.alert_id for a in alerts}
                dispatches = [
                    (device_id, await dispatch_for(store, by_id[device_id]))
                    for device_id in ("unit1", "smoke1")
                ]
        by_device = {a.device_id: a for a in alerts}
        assert set(by_device) == {"unit1", "unit2", "smoke1"}
        assert by_device["unit1"].event_type is EventType.PENDANT
        assert by_device["unit2"].event_type is EventType.PENDANT
        assert by_device["smoke1"].event_type is EventType.SMOKE
        assert (by_device["unit1"].resident_id, by_device["unit1"].site_id) == ("res1", "home1")
        assert (by_device["unit2"].resident_id, by_device["unit2"].site_id) == ("res2", "home2")
        assert len(letters) == 1
        assert letters[0].reason.startswith("Contact ID account 9999 zone 001")
        assert letters[0].device_id == "arc1"
        for device_id, d in dispatches:
            assert d.state not in CLOSED, (device_id, d.state)
        assert await store.count("alarm_events") == 4  # the 9999 cancel was not stored
    finally:
        port.unplug()
