"""Serial ingest end to end through real pseudo-terminals into a real store (SQLite and
PostgreSQL): a CMS50D+ oximeter stream, a Contact ID alarm receiver, noise, partial
frames, an unprovisioned device, and an unplugged / replugged adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest

from telecare.devices.codecs.oximetry import OximeterSample
from telecare.devices.model import (
    Device,
    DeviceKind,
    EventType,
    ReceiverAccount,
    ReceiverKind,
    Resident,
    Site,
    SiteKind,
)
from telecare.firmware_stubs.alarm_receiver import encode_contact_id, run_alarm_receiver
from telecare.firmware_stubs.bp_cuff import encode_ua767pbt, run_bp_cuff
from telecare.firmware_stubs.oximeter import run_oximeter
from telecare.gateway.backoff import Backoff
from telecare.gateway.config import SerialPortConfig
from telecare.gateway.decode_serial import SerialDecoding
from telecare.gateway.ingest.serial import PortReader, SerialIngest
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.base import Store
from telecare.rules.clock import SystemClock
from tests.helpers import eventually, running_pipeline
from tests.ingest.ptys import PtyPort


async def _provision(store: Store) -> None:
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    await store.upsert_resident(Resident("res1", "s1", "Mr B"))
    await store.upsert_device(Device("ox1", "s1", DeviceKind.OXIMETER, "res1", format="cms50d"))
    await store.upsert_device(
        Device("arc1", "s1", DeviceKind.ALARM_RECEIVER, "res1", format="contact_id")
    )
    await store.upsert_receiver_account(ReceiverAccount(ReceiverKind.CONTACT_ID, "1234", "arc1"))


@asynccontextmanager
async def reading(
    store: Store, port: PtyPort, codec: str, device_id: str
) -> AsyncIterator[tuple[Pipeline, PortReader]]:
    async with (
        running_pipeline(store, SystemClock()) as pipeline,
        _serial(pipeline, port, codec, device_id) as reader,
    ):
        yield pipeline, reader


@asynccontextmanager
async def _serial(
    pipeline: Pipeline, port: PtyPort, codec: str, device_id: str
) -> AsyncIterator[PortReader]:
    decoding = SerialDecoding.with_registry(
        [SerialPortConfig(str(port.path), codec, device_id)],
        pipeline,
        pipeline.decoder.registry,
        SystemClock(),
        report_interval=0.2,
    )
    ingest = SerialIngest(decoding, SystemClock(), backoff=lambda: Backoff(initial=0.02, cap=0.1))
    async with ingest:
        reader = ingest.readers[0]
        await asyncio.wait_for(reader.is_open.wait(), 10)
        port.reader_opened()
        yield reader


async def _latest(store: Store) -> dict[str, float]:
    return {k: v for k, (_, v) in (await store.latest_vitals(["res1"]))["res1"].items()}


async def _reasons(store: Store) -> list[str]:
    return [d.reason for d in await store.dead_letters()]


async def test_cms50d_oximeter_over_a_pty_is_reduced_and_stored(
    store: Store, tmp_path: Path
) -> None:
    await _provision(store)
    port = PtyPort(tmp_path)
    try:
        async with reading(store, port, "cms50d", "ox1") as (_, reader):
            # Pulse 140 needs bit 7 from byte 2: a classic CMS50D+ driver bug wraps it.
            steady = [OximeterSample(spo2=97, pulse=140)] * 60
            await run_oximeter(port.master, steady, "cms50d", rate_hz=120)
            latest = await eventually(lambda: _latest(store), lambda v: v.get("pulse") == 140.0)
            assert latest["spo2"] == 97.0

            # A desaturation after a burst of line noise: reported once, and stored.
            drop = [OximeterSample(spo2=88, pulse=62)] * 30
            await run_oximeter(port.master, drop, "cms50d", rate_hz=120, noise=0.3, seed=3)
            await eventually(lambda: _latest(store), lambda v: v == {"spo2": 88.0, "pulse": 62.0})
            reasons = await eventually(
                lambda: _reasons(store), lambda rs: any("serial noise" in r for r in rs)
            )
        assert reader.stats.frames >= len(steady) + len(drop)
        assert reader.stats.skipped_bytes > 0
        noise = [r for r in reasons if r.startswith("serial noise")]
        # aggregated: far fewer dead letters than noisy bursts, never one per byte
        assert 1 <= len(noise) < reader.stats.skipped_bytes
        stored = await store.count("readings")
        assert 4 <= stored < 2 * (len(steady) + len(drop))  # reduced, not one per frame
        assert reader.stats.readings == stored
    finally:
        port.unplug()


async def test_contact_id_alarm_receiver_over_a_pty_raises_alarms(
    store: Store, tmp_path: Path
) -> None:
    await _provision(store)
    port = PtyPort(tmp_path)
    try:
        async with reading(store, port, "contact_id", "arc1") as (pipeline, reader):
            good_alarm = encode_contact_id("1234", 1, 101, zone=15)
            bad_checksum = bytearray(encode_contact_id("1234", 1, 120, zone=16))
            bad_checksum[15] = ord("9") if bad_checksum[15] != ord("9") else ord("8")
            restore = encode_contact_id("1234", 3, 101, zone=15)
            await run_alarm_receiver(
                port.master, [good_alarm, bytes(bad_checksum), restore], interval_s=0.01
            )
            await eventually(lambda: store.count("alarm_events"), lambda n: n == 2)
            reasons = await eventually(lambda: _reasons(store))

            async def events_counted() -> int:  # counted once the sink has returned
                return reader.stats.events

            assert await eventually(events_counted, lambda n: n >= 2) == 2
        assert reader.stats.events == 2
        assert any("checksum" in r for r in reasons)
        alerts = await store.recent_alerts()
        assert len(alerts) == 1
        alert = alerts[0]
        assert alert.event_type is EventType.PENDANT
        assert alert.priority == 1
        assert (alert.resident_id, alert.site_id, alert.device_id) == ("res1", "s1", "arc1")
        assert pipeline.counters["events"] == 2
        letters = await store.dead_letters()
        assert {(d.source, d.origin, d.device_id) for d in letters} == {
            ("serial", str(port.path), "arc1")
        }
    finally:
        port.unplug()


async def test_unplugged_adapter_is_reopened_and_partial_frame_reported(
    store: Store, tmp_path: Path
) -> None:
    await _provision(store)
    port = PtyPort(tmp_path)
    try:
        async with reading(store, port, "contact_id", "arc1") as (_, reader):
            port.write(encode_contact_id("1234", 1, 101, zone=1))
            await eventually(lambda: store.count("alarm_events"), lambda n: n == 1)
            port.write(encode_contact_id("1234", 1, 120, zone=2)[:9])  # cut off mid-message
            await eventually(lambda: _bytes_after_first_line(reader), lambda n: n == 9)
            port.unplug()
            await eventually(lambda: _is_open(reader), lambda up: not up)
            port.plug()
            await eventually(lambda: _is_open(reader))
            port.reader_opened()
            port.write(encode_contact_id("1234", 1, 120, zone=2))
            await eventually(lambda: store.count("alarm_events"), lambda n: n == 2)
            reasons = await _reasons(store)
        assert reader.stats.opened == 2
        assert any(r.startswith("partial frame: 9 bytes") for r in reasons)
    finally:
        port.unplug()


async def test_unprovisioned_device_on_a_port_is_dead_lettered(
    sqlite_store: Store, tmp_path: Path
) -> None:
    await _provision(sqlite_store)
    port = PtyPort(tmp_path)
    try:
        async with reading(sqlite_store, port, "contact_id", "ghost9") as (_, reader):
            port.write(encode_contact_id("1234", 1, 101) * 3)
            reasons = await eventually(lambda: _reasons(sqlite_store))
        assert reasons == [f"device 'ghost9' on {port.path} is not provisioned; 3 frames dropped"]
        assert await sqlite_store.count("alarm_events") == 0
        assert reader.stats.frames == 3
    finally:
        port.unplug()


async def _bytes_after_first_line(reader: PortReader) -> int:
    return reader.stats.bytes - 16 - 2  # bytes beyond the first full line


async def _is_open(reader: PortReader) -> bool:
    return reader.is_open.is_set()


@pytest.mark.parametrize("codec", ["ble_2a5e", "no_such_codec"])
def test_a_port_with_a_codec_that_is_not_a_serial_stream_is_a_config_error(codec: str) -> None:
    from telecare.gateway.errors import ConfigError

    with pytest.raises(ConfigError, match=codec):
        SerialDecoding(
            [SerialPortConfig("/dev/ttyUSB9", codec, "ox1")],
            Pipeline.__new__(Pipeline),
            _no_lookup,
            SystemClock(),
        )


async def _no_lookup(device_id: str) -> Device | None:
    return None


async def test_ad_ua767pbt_cuff_over_a_pty_stores_true_systolic(
    store: Store, tmp_path: Path
) -> None:
    """A&D UA-767PBT over a pty: systolic is rebuilt from the difference on the wire, a
    resent packet is stored once, and an invalid measurement is dead-lettered."""
    await _provision(store)
    await store.upsert_device(Device("cuff1", "s1", DeviceKind.BP_CUFF, "res1", format="ua767pbt"))
    port = PtyPort(tmp_path)
    try:
        async with reading(store, port, "ua767pbt", "cuff1") as (_, reader):
            measured = encode_ua767pbt(152, 95, 81, measured_at=datetime(2026, 1, 5, 9, 30))
            invalid = encode_ua767pbt(120, 80, 70, valid=False)
            await run_bp_cuff(port.master, [b"\x00\x17", measured, invalid, measured], 0.01)
            latest = await eventually(
                lambda: _latest(store), lambda v: v.get("systolic_bp") is not None
            )
            reasons = await eventually(
                lambda: _reasons(store), lambda rs: any("invalid measurement" in r for r in rs)
            )
            await eventually(lambda: store.count("readings"), lambda n: n >= 4)
        assert latest["systolic_bp"] == 152.0  # not 57, the difference the cuff sends
        assert latest["diastolic_bp"] == 95.0
        assert latest["pulse"] == 81.0
        assert reader.stats.frames == 2
        assert await store.count("readings") == 4  # the resent packet is the same measurement
        assert any("invalid measurement" in r for r in reasons)
    finally:
        port.unplug()
