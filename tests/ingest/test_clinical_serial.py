"""Issue 10 item 16 over real pseudo-terminals into a real store (SQLite and PostgreSQL):
a Masimo Rad-8 reading taken while EXC reports a sensor problem is invalid; Contact ID 102
(no movement after a fall) is priority 1 and latching; 302 (the unit's battery) and 384 (a
peripheral's battery) are distinct alarms."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from telecare.devices.model import Device, DeviceKind, DispatchState, EventType, Metric
from telecare.firmware_stubs.alarm_receiver import encode_contact_id, run_alarm_receiver
from telecare.firmware_stubs.oximeter import encode_masimo
from telecare.gateway.dispatching import dispatch_repository
from telecare.gateway.store.base import Store
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from tests.helpers import eventually
from tests.ingest.ptys import PtyPort
from tests.ingest.test_serial import _latest, _provision, reading


async def test_masimo_lines_with_a_sensor_exception_are_not_stored(
    store: Store, tmp_path: Path
) -> None:
    await _provision(store)
    await store.upsert_device(
        Device("rad8", "s1", DeviceKind.OXIMETER, "res1", format="masimo_rad8")
    )
    port = PtyPort(tmp_path)
    start = datetime.now(UTC)
    when = datetime(2026, 11, 23, 9, 0)
    try:
        async with reading(store, port, "masimo_rad8", "rad8") as (_, reader):

            async def emit(lines: list[bytes]) -> None:
                for line in lines:  # a Rad-8 sends one line a second; 10 Hz keeps it quick
                    port.write(line)
                    await asyncio.sleep(0.1)

            await emit([encode_masimo(97, 80, when=when, exc=0x800)] * 3)
            await eventually(lambda: _latest(store), lambda v: v.get("spo2") == 97.0)
            # Sensor off (0x20), then low perfusion (0x04), for over a second: the numbers
            # are not measurements (the reducer would have stored a new value by then).
            bad = [encode_masimo(70, 150, when=when, exc=exc) for exc in (0x20, 0x04, 0x824)]
            await emit(bad * 5)
            # A limit ALARM alone does not invalidate a real desaturation.
            await emit([encode_masimo(88, 81, when=when, alarm=0x0001, exc=0x800)] * 3)
            await eventually(lambda: _latest(store), lambda v: v.get("spo2") == 88.0)
        assert reader.stats.frames >= 21
        history = await store.metric_history(
            "res1", Metric.SPO2, start - timedelta(minutes=1), datetime.now(UTC), timedelta(hours=1)
        )
        assert min(h.min for h in history) == 88.0  # 70 never became a reading
        pulses = await store.metric_history(
            "res1",
            Metric.PULSE,
            start - timedelta(minutes=1),
            datetime.now(UTC),
            timedelta(hours=1),
        )
        assert max(h.max for h in pulses) == 81.0
    finally:
        port.unplug()


async def test_contact_id_102_latches_at_priority_1_and_302_384_are_distinct(
    store: SqliteStore | PostgresStore, tmp_path: Path
) -> None:
    await _provision(store)
    port = PtyPort(tmp_path)
    repo = dispatch_repository(store)
    try:
        async with reading(store, port, "contact_id", "arc1") as (_, _reader):
            await run_alarm_receiver(
                port.master,
                [
                    encode_contact_id("1234", 1, 102, zone=3),  # no movement after a fall
                    encode_contact_id("1234", 3, 102, zone=3),  # ...restored by the unit
                    encode_contact_id("1234", 1, 302),  # the unit's own battery
                    encode_contact_id("1234", 1, 384, zone=7),  # a pendant's battery
                ],
                interval_s=0.01,
            )
            alerts = await eventually(lambda: store.recent_alerts(), lambda a: len(a) == 3)
            by_type = {a.event_type: a for a in alerts}
            assert set(by_type) == {
                EventType.POST_FALL_INACTIVITY,
                EventType.LOW_BATTERY,
                EventType.SENSOR_LOW_BATTERY,
            }
            fall = by_type[EventType.POST_FALL_INACTIVITY]
            assert fall.priority == 1
            assert fall.detail["contact_id"] == 102

            async def state(event_type: EventType) -> DispatchState | None:
                d = await repo.load_for_alert(by_type[event_type].alert_id)
                return d.state if d else None

            for event_type in by_type:
                await eventually(lambda t=event_type: state(t))  # type: ignore[misc]
            await run_alarm_receiver(
                port.master, [encode_contact_id("1234", 3, 302)], interval_s=0.01
            )
            await eventually(lambda: store.count("alarm_events"), lambda n: n == 5)
            # The unit's battery restore clears only the unit's battery alarm ...
            await eventually(
                lambda: state(EventType.LOW_BATTERY), lambda s: s is DispatchState.RESOLVED
            )
            assert await state(EventType.SENSOR_LOW_BATTERY) is DispatchState.RAISED
            # ... and the restore of 102 never closed the fall alarm: a person must.
            assert await state(EventType.POST_FALL_INACTIVITY) is DispatchState.RAISED
    finally:
        port.unplug()
