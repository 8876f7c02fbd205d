"""Issue 9, finding 1 for serial: a frame whose content the store refuses (not "storage
unavailable") is dead-lettered through the pipeline's guarded stage and the port reads
on; before, the reader retried it for ever and the alarm receiver's line stalled. Real
pseudo-terminal, real SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from telecare.firmware_stubs.alarm_receiver import encode_contact_id, run_alarm_receiver
from telecare.gateway.ingest.serial import PortReader
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from tests.helpers import eventually
from tests.ingest.ptys import PtyPort
from tests.ingest.test_serial import _provision, reading
from tests.refusing_db import REFUSED_ZONE, refuse_zone


async def _events(reader: PortReader) -> int:
    return reader.stats.events


async def test_a_frame_the_store_refuses_is_dead_lettered_and_the_line_reads_on(
    store: SqliteStore | PostgresStore, tmp_path: Path
) -> None:
    await _provision(store)
    error = refuse_zone(store)
    port = PtyPort(tmp_path)
    try:
        async with reading(store, port, "contact_id", "arc1") as (pipeline, reader):
            frames = [
                encode_contact_id("1234", 1, 101, zone=int(REFUSED_ZONE)),  # refused
                encode_contact_id("1234", 1, 120, zone=14),  # a fall after it
            ]
            await run_alarm_receiver(port.master, frames, interval_s=0.05)
            await eventually(lambda: store.count("alarm_events"), lambda n: n == 1)
            [letter] = await eventually(store.dead_letters)
            # The line is still read: a third frame is stored too.
            await run_alarm_receiver(
                port.master, [encode_contact_id("1234", 1, 111, zone=15)], interval_s=0.01
            )
            await eventually(lambda: store.count("alarm_events"), lambda n: n == 2)
            await eventually(lambda: _events(reader), lambda n: n == 2)
        assert letter.reason.startswith(f"process failed: {error} in ")
        assert (letter.source, letter.origin, letter.device_id) == (
            "serial",
            str(port.path),
            "arc1",
        )
        assert letter.payload  # the chunk the frame came in
        assert pipeline.counters["poison_process"] == 1
        assert reader.stats.events == 2
        assert reader.stats.dead_letters == 1
        alerts = await store.recent_alerts()
        assert {a.event_type.value for a in alerts if a.event_type} == {"fall", "smoke"}
    finally:
        port.unplug()
