"""An alarm whose alert could not be written is not a silent fold target.

The store really fails at that step: a trigger on ``alerts`` refuses every insert (both
backends) while the first press is processed, so the event is stored and the rules hold
the alarm open but no alert exists. Once the store is well again, the next press of the
same unit (inside the fold window) must raise that alarm's alert and open its dispatch;
before the fix it was folded into the open alarm and no alert was ever written. Through
the MQTT path (``Pipeline.handle``, one event) and a receiver batch
(``Pipeline.handle_events``). And the fold counts a receiver's writer defers reach the
alert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from telecare.devices.codecs import json_v1
from telecare.devices.model import (
    AlarmEvent,
    Device,
    DeviceKind,
    EventType,
    Phase,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.dispatch import DispatchService, ResponderDirectory
from telecare.gateway.decode_receivers import EventWriter
from telecare.gateway.dispatching import add_store_responders, dispatch_repository
from telecare.gateway.envelope import Envelope
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import FakeClock
from tests.helpers import dispatch_for, eventually
from tests.refusing_db import inserts_refused

TS = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PREFIX = "telecare/v1"


@pytest.fixture
async def pipeline(store: SqliteStore | PostgresStore) -> AsyncIterator[Pipeline]:
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    await store.upsert_responder(Responder("staff", ResponderKind.MOBILE_WARDEN))
    await store.upsert_resident(Resident("r1", "s1", responders=("staff",)))
    await store.upsert_device(Device("p1", "s1", DeviceKind.PENDANT, "r1"))
    clock = FakeClock(TS)
    directory = ResponderDirectory()
    await add_store_responders(directory, store)
    service = DispatchService(dispatch_repository(store), store, clock, directory=directory)
    async with service as dispatcher:
        yield Pipeline(store, clock, topic_prefix=PREFIX, dispatcher=dispatcher)


async def _press(pipeline: Pipeline, via: str, msg_id: str) -> None:
    now = pipeline.clock.now()
    if via == "mqtt":
        payload = json_v1.encode_event(msg_id, now, EventType.PENDANT, Phase.ALARM)
        await pipeline.handle(Envelope("mqtt", f"{PREFIX}/s1/p1/event", payload, now))
        return
    event = AlarmEvent("p1", EventType.PENDANT, Phase.ALARM, now, msg_id, "s1", "r1")
    await pipeline.handle_events([event], received_at=now)


@pytest.mark.parametrize("via", ["mqtt", "receiver batch"])
async def test_the_next_press_raises_an_alarm_whose_alert_write_failed(
    store: SqliteStore | PostgresStore, pipeline: Pipeline, via: str
) -> None:
    assert isinstance(pipeline.clock, FakeClock)
    async with inserts_refused(store, "alerts"):
        if via == "mqtt":  # the source's guard makes it a poison message (acknowledged)
            await _press(pipeline, via, "m1")
            assert pipeline.counters["poison_process"] == 1
        else:  # the receiver's writer refuses the frame (the unit gets no ACK)
            with pytest.raises(Exception, match="alerts write refused"):
                await _press(pipeline, via, "m1")
    assert await store.count("alarm_events") == 1
    assert await store.recent_alerts(10) == []
    assert [a.alarm_id for a in pipeline.engine.alarms.open_alarms] == [alarm_id_for("p1", "m1")]

    pipeline.clock.advance(10)  # inside the fold window
    await _press(pipeline, via, "m2")
    [alert] = await store.recent_alerts(10)
    assert alert.alert_id == alarm_id_for("p1", "m1")  # the open alarm's own alert
    assert alert.ts == TS  # its first press's time
    assert alert.detail["count"] == 2
    assert (await dispatch_for(store, alert.alert_id)).alert_id == alert.alert_id
    assert pipeline.counters["alerts_recovered"] == 1


async def test_a_receiver_writers_fold_counts_reach_the_alert_once_it_falls_idle(
    store: SqliteStore | PostgresStore, pipeline: Pipeline
) -> None:
    # The notes of batches that come in a row share a write (at most one a second);
    # what is left is written once the writer has nothing to do.
    assert isinstance(pipeline.clock, FakeClock)
    async with EventWriter("test:store", pipeline, pipeline.clock) as writer:
        for n in range(5):
            now = pipeline.clock.now()
            press = AlarmEvent("p1", EventType.PENDANT, Phase.ALARM, now, f"w{n}", "s1", "r1")
            await writer.store([press])
            pipeline.clock.advance(1)

        async def count() -> object:
            [alert] = await store.recent_alerts(10)
            return alert.detail.get("count")

        assert await eventually(count, lambda c: c == 5) == 5
    assert not pipeline.notes_pending


@pytest.mark.parametrize("via", ["mqtt", "receiver batch"])
async def test_an_events_received_at_is_the_gateways_receive_time_not_the_databases(
    store: SqliteStore | PostgresStore, pipeline: Pipeline, via: str
) -> None:
    # The pipeline's clock is days behind the database's: the stored receive time is
    # the gateway's (the time the message arrived), not when the row was written.
    await _press(pipeline, via, "r1")
    row = await store.sql.fetch_one("SELECT received_at FROM alarm_events")
    assert row is not None
    assert row[0] == TS
