"""The pipeline on both store backends, without a broker: decode -> rules -> store ->
dispatch, idempotency under redelivery, and dead letters for bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from telecare.devices.codecs import json_v1
from telecare.devices.model import (
    AlarmEvent,
    AlertKind,
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
from telecare.gateway.dispatching import dispatch_repository
from telecare.gateway.envelope import Envelope
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.base import Store
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.store.tables import event_digest
from telecare.gateway.timebounds import TimeBounds
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import FakeClock
from tests.helpers import dispatch_for, running_pipeline
from tests.refusing_db import REFUSED_ZONE, refuse_zone

TS = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PREFIX = "telecare/v1"


async def _provision(store: Store) -> None:
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    await store.upsert_site(Site("s2", SiteKind.HOME))
    await store.upsert_responder(Responder("staff", ResponderKind.MOBILE_WARDEN))
    await store.upsert_resident(Resident("r1", "s1", "Name Private", responders=("staff",)))
    await store.upsert_resident(Resident("r2", "s1"))
    await store.upsert_device(Device("p1", "s1", DeviceKind.PENDANT, "r1"))
    await store.upsert_device(Device("hub", "s1", DeviceKind.HUB))
    await store.upsert_device(Device("p2", "s1", DeviceKind.PENDANT, "r2", hub_id="hub"))
    await store.upsert_device(Device("oxi", "s1", DeviceKind.OXIMETER, "r1", hub_id="hub"))


@pytest.fixture
async def pipeline(store: SqliteStore | PostgresStore) -> AsyncIterator[Pipeline]:
    await _provision(store)
    async with running_pipeline(store, FakeClock(TS), PREFIX) as p:
        yield p


def _env(topic: str, payload: bytes) -> Envelope:
    return Envelope("mqtt", f"{PREFIX}/{topic}", payload, TS)


async def test_redelivered_press_is_processed_once(store: Store, pipeline: Pipeline) -> None:
    env = _env("s1/p1/event", json_v1.encode_event("m1", TS, EventType.PENDANT))
    for _ in range(3):
        await pipeline.handle(env)
    assert await store.count("alarm_events") == 1
    assert await store.count("alerts") == 1
    await dispatch_for(store, alarm_id_for("p1", "m1"))
    assert await store.count("dispatches") == 1
    assert pipeline.counters["events_duplicate"] == 2


async def test_redelivery_completes_what_a_crash_left_undone(
    store: Store, pipeline: Pipeline
) -> None:
    """The event row was stored but the gateway died before the alert and dispatch."""
    await store.write_events([AlarmEvent("p1", EventType.FALL, Phase.ALARM, TS, "m9", "s1", "r1")])
    await pipeline.handle(_env("s1/p1/event", json_v1.encode_event("m9", TS, EventType.FALL)))
    alert_id = alarm_id_for("p1", "m9")
    dispatch = await dispatch_for(store, alert_id)
    assert dispatch.responder_id == "staff"
    assert await store.count("alarm_events") == 1


async def test_resident_without_own_responders_gets_the_areas_warden(
    store: Store, pipeline: Pipeline
) -> None:
    await pipeline.handle(_env("s1/p2/event", json_v1.encode_event("m1", TS, EventType.PENDANT)))
    dispatch = await dispatch_for(store, alarm_id_for("p2", "m1"))
    # r2 has no keyholders of their own: the wellbeing cascade falls through to the
    # mobile warden covering the site's area.
    assert dispatch.responder_id == "staff"
    assert dispatch.resident_id == "r2"


async def test_restore_and_periodic_test_raise_no_alert(store: Store, pipeline: Pipeline) -> None:
    await pipeline.handle(
        _env("s1/p1/event", json_v1.encode_event("m1", TS, EventType.LOW_BATTERY, Phase.RESTORE))
    )
    await pipeline.handle(
        _env("s1/p1/event", json_v1.encode_event("m2", TS, EventType.PERIODIC_TEST))
    )
    assert await store.count("alarm_events") == 2
    assert await store.count("alerts") == 0


async def test_hub_batch_attributes_children_to_their_residents(
    store: Store, pipeline: Pipeline
) -> None:
    items = [
        {
            "device_id": "oxi",
            "channel": "reading",
            "msg_id": "a",
            "ts": TS.isoformat(),
            "readings": [{"metric": "spo2", "value": 94, "unit": "%"}],
        },
        {
            "device_id": "p2",
            "channel": "event",
            "msg_id": "b",
            "ts": TS.isoformat(),
            "type": "fall",
        },
    ]
    await pipeline.handle(_env("s1/hub/batch", json_v1.encode_batch("batch1", items)))
    assert (await store.latest_vitals(["r1"]))["r1"]["spo2"] == (TS, 94.0)
    dispatch = await dispatch_for(store, alarm_id_for("p2", "b"))
    assert dispatch.resident_id == "r2"


async def test_bad_input_becomes_specific_dead_letters(store: Store, pipeline: Pipeline) -> None:
    good = json_v1.encode_event("ok", TS, EventType.PENDANT)
    cases = [
        (_env("s1/p1/event", b"{oops"), "malformed JSON"),
        (_env("s1/ghost/event", good), "device 'ghost' is not provisioned"),
        (_env("s2/p1/event", good), "belongs to site 's1', not 's2'"),
        (_env("s1/p1", good), "must be"),
        (
            _env(
                "s1/hub/batch",
                json_v1.encode_batch(
                    "b",
                    [
                        {
                            "device_id": "ghost",
                            "channel": "event",
                            "msg_id": "x",
                            "ts": TS.isoformat(),
                            "type": "fall",
                        }
                    ],
                ),
            ),
            "forwarded for unknown device 'ghost'",
        ),
    ]
    for env, _ in cases:
        await pipeline.handle(env)
    letters = list(reversed(await store.dead_letters()))
    assert len(letters) == len(cases)
    for letter, (env, reason) in zip(letters, cases, strict=True):
        assert reason in letter.reason
        assert letter.payload == env.payload
        assert letter.origin == env.origin
    # Nothing else was stored, and good traffic still flows.
    assert await store.count("alarm_events") == 0
    await pipeline.handle(_env("s1/p1/event", good))
    await dispatch_for(store, alarm_id_for("p1", "ok"))


async def test_observation_set_is_scored_stored_and_escalated(
    store: Store, pipeline: Pipeline
) -> None:
    await store.upsert_device(Device("ipad", "s1", DeviceKind.TABLET))
    high = json_v1.encode_observation(
        "obs1",
        TS,
        "r1",
        respiration_rate=26,
        spo2=91,
        on_oxygen=True,
        systolic_bp=88,
        pulse=135,
        consciousness="V",
        temperature=34.9,
    )
    await pipeline.handle(_env("s1/ipad/observation", high))
    [score] = await store.news2_history("r1", TS, TS + timedelta(seconds=1))
    assert score.total == 20
    assert score.risk == "high"
    assert score.red_flag is True
    # The vitals are kept as readings too.
    latest = (await store.latest_vitals(["r1"]))["r1"]
    assert latest["pulse"] == (TS, 135.0)
    assert latest["temperature"] == (TS, 34.9)
    [alert] = [a for a in await store.recent_alerts() if a.kind is AlertKind.NEWS2]
    assert alert.priority == 1
    assert alert.resident_id == "r1"
    assert "NEWS2 20 (high risk)" in alert.reason
    dispatch = await dispatch_for(store, alert.alert_id)
    assert dispatch.priority == 1


async def test_partial_observation_set_is_not_a_news2(store: Store, pipeline: Pipeline) -> None:
    await store.upsert_device(Device("ipad", "s1", DeviceKind.TABLET))
    partial = json_v1.encode_observation("obs2", TS, "r1", spo2=97, pulse=70)
    await pipeline.handle(_env("s1/ipad/observation", partial))
    assert await store.news2_history("r1", TS, TS + timedelta(seconds=1)) == []
    assert await store.count("readings") == 2
    assert await store.count("alerts") == 0


async def test_observation_for_a_resident_of_another_site_is_rejected(
    store: Store, pipeline: Pipeline
) -> None:
    await store.upsert_resident(Resident("r9", "s2"))
    await store.upsert_device(Device("ipad", "s1", DeviceKind.TABLET))
    obs = json_v1.encode_observation("obs3", TS, "r9", spo2=97)
    await pipeline.handle(_env("s1/ipad/observation", obs))
    [letter] = await store.dead_letters()
    assert "resident 'r9' is not a resident of site 's1'" in letter.reason
    assert await store.count("readings") == 0


# --------------------------------------------------------------------------- issue 9


async def test_a_message_the_store_refuses_is_poison_not_storage_away(
    store: SqliteStore | PostgresStore, pipeline: Pipeline
) -> None:
    """Finding 1: an exception that is not "storage unavailable" while processing one
    message dead-letters it (stage, class, where) and the next message goes through."""
    error = refuse_zone(store)
    poison = _env("s1/p1/event", json_v1.encode_event("m1", TS, "pendant", zone=REFUSED_ZONE))
    await pipeline.handle(poison)  # returns: the source may acknowledge it
    [letter] = await store.dead_letters()
    assert letter.reason.startswith(f"process failed: {error} in ")
    assert letter.device_id == "p1"
    assert letter.payload == poison.payload
    assert pipeline.counters["poison_process"] == 1
    await pipeline.handle(_env("s1/p2/event", json_v1.encode_event("m2", TS, "fall")))
    await dispatch_for(store, alarm_id_for("p2", "m2"))


async def test_a_group_with_one_poison_message_dead_letters_only_that_one(
    store: SqliteStore | PostgresStore, pipeline: Pipeline
) -> None:
    refuse_zone(store)
    batch = json_v1.encode_batch(
        "b1",
        [
            {
                "device_id": "p2",
                "channel": "event",
                "msg_id": "e1",
                "ts": TS.isoformat(),
                "type": "low_battery",
                "zone": REFUSED_ZONE,
            }
        ],
    )
    good = json_v1.encode_readings("r1", TS, [("spo2", 96, "%")])
    await pipeline.handle_group([_env("s1/hub/batch", batch), _env("s1/oxi/reading", good)])
    [letter] = await store.dead_letters()
    assert letter.origin.endswith("s1/hub/batch")
    assert (await store.latest_vitals(["r1"]))["r1"]["spo2"] == (TS, 96.0)


async def test_reused_msg_id_on_both_backends(store: Store, pipeline: Pipeline) -> None:
    """Finding 5: the digest is stored with the idempotency key (migration 0006)."""
    test_call = _env("s1/p1/event", json_v1.encode_event("m1", TS, EventType.PERIODIC_TEST))
    await pipeline.handle(test_call)
    await pipeline.handle(_env("s1/p1/event", json_v1.encode_event("m1", TS, EventType.SMOKE)))
    await pipeline.handle(test_call)
    [letter] = await store.dead_letters()
    assert "already used for an event with different content" in letter.reason
    assert await store.count("alerts") == 0
    assert await store.count("alarm_events") == 1
    stored = AlarmEvent("p1", EventType.PERIODIC_TEST, Phase.ALARM, TS, "m1")
    assert await store.stored_event_digest("p1", "m1") == event_digest(stored)
    assert pipeline.counters["events_duplicate"] == 1


@pytest.mark.parametrize(
    ("channel", "offset", "accepted"),
    [
        ("reading", timedelta(minutes=4), True),
        ("reading", timedelta(minutes=6), False),
        ("reading", -timedelta(days=13), True),
        ("reading", -timedelta(days=15), False),
        ("event", timedelta(days=1), True),  # re-timed by the rules: an alarm is never lost
        ("event", timedelta(days=15), False),
        ("event", -timedelta(days=15), False),
    ],
)
async def test_time_bounds_at_their_edges(
    store: Store, pipeline: Pipeline, channel: str, offset: timedelta, accepted: bool
) -> None:
    """Finding 6 with the defaults (5 min ahead, 14 days behind the gateway's clock; 14
    days ahead for what the rules re-time when a device clock runs ahead)."""
    if channel == "event":
        payload = json_v1.encode_event("m1", TS + offset, EventType.PENDANT)
        table, topic = "alarm_events", "s1/p1/event"
    else:
        payload = json_v1.encode_readings("m1", TS + offset, [("spo2", 97, "%")])
        table, topic = "readings", "s1/oxi/reading"
    await pipeline.handle(_env(topic, payload))
    assert await store.count(table) == (1 if accepted else 0)
    letters = await store.dead_letters()
    if accepted:
        assert letters == []
    else:
        [letter] = letters
        which = "in the future" if offset > timedelta(0) else "old"
        assert which in letter.reason


async def test_time_bounds_are_configurable(store: SqliteStore | PostgresStore) -> None:
    await _provision(store)
    bounds = TimeBounds(max_future_s=30, max_age_s=3600)
    directory = ResponderDirectory()
    service = DispatchService(dispatch_repository(store), store, FakeClock(TS), directory=directory)
    async with service as dispatcher:
        pipeline = Pipeline(
            store, FakeClock(TS), topic_prefix=PREFIX, dispatcher=dispatcher, time_bounds=bounds
        )
        ahead = json_v1.encode_readings("m1", TS + timedelta(minutes=1), [("spo2", 97, "%")])
        behind = json_v1.encode_event("m2", TS - timedelta(hours=2), EventType.PENDANT)
        await pipeline.handle(_env("s1/oxi/reading", ahead))
        await pipeline.handle(_env("s1/p1/event", behind))
    reasons = sorted(d.reason for d in await store.dead_letters())
    assert reasons == [
        "timestamp is 2 h old (older than the 60 min allowed)",
        "timestamp is 60 s in the future (more than the 30 s clock skew allowed)",
    ]


async def test_an_unknown_resident_id_is_not_echoed(store: Store, pipeline: Pipeline) -> None:
    """A name typed where the resident id belongs (issue 9 finding 7, the part in the
    pipeline's observation check) must not come back in the dead letter's reason."""
    await store.upsert_device(Device("ipad", "s1", DeviceKind.TABLET))
    obs = json_v1.encode_observation("obs4", TS, "Winifred.Marker", spo2=91)
    await pipeline.handle(_env("s1/ipad/observation", obs))
    [letter] = await store.dead_letters()
    assert letter.reason == (
        "observation names a resident that is not provisioned (15-character id); site 's1'"
    )
    assert await store.count("readings") == 0


async def test_reused_msg_id_for_an_observation_set(store: Store, pipeline: Pipeline) -> None:
    """Finding 5 for observation sets: their content is their readings, stored under the
    key; another set under the same key is a dead letter and scores nothing."""
    await store.upsert_device(Device("ipad", "s1", DeviceKind.TABLET))
    first = json_v1.encode_observation(
        "obs5", TS, "r1", respiration_rate=16, spo2=97, on_oxygen=False, systolic_bp=120,
        pulse=70, consciousness="A", temperature=36.8,
    )  # fmt: skip
    emergency = json_v1.encode_observation(
        "obs5", TS, "r1", respiration_rate=26, spo2=90, on_oxygen=True, systolic_bp=88,
        pulse=135, consciousness="V", temperature=38.5,
    )  # fmt: skip
    await pipeline.handle(_env("s1/ipad/observation", first))
    await pipeline.handle(_env("s1/ipad/observation", emergency))
    await pipeline.handle(_env("s1/ipad/observation", first))  # a true redelivery
    [letter] = await store.dead_letters()
    assert "already used for an observation set with different content" in letter.reason
    [score] = await store.news2_history("r1", TS, TS + timedelta(seconds=1))
    assert score.total == 0
    assert await store.count("alerts") == 0
    assert (await store.latest_vitals(["r1"]))["r1"]["pulse"] == (TS, 70.0)
    assert pipeline.counters["msg_id_reused"] == 1
