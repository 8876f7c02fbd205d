"""Issue 9, findings 3, 5 and 6, through Mosquitto run with the shipped configuration
(each device logs in with its own credentials and the ACL lets it publish only on its own
topics) into a gateway on SQLite and on PostgreSQL:

* 3 — one device cannot raise alarms or NEWS2 sets for other residents: only hubs and
  alarm receivers forward, only for children registered to them; observation sets only
  from a tablet, only for residents of its own site;
* 5 — a msg_id reused with different content is a dead letter and goes through no rules;
  a redelivery with the same content stays a silent duplicate;
* 6 — timestamps far in the future or the past are dead letters saying which and by how
  much.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from telecare.devices.codecs import json_v1
from telecare.devices.model import (
    AlarmEvent,
    Device,
    DeviceKind,
    EventType,
    Phase,
    Resident,
    Site,
    SiteKind,
)
from telecare.gateway.app import Gateway
from telecare.gateway.config import IngestSection, StoreConfig
from telecare.gateway.store.base import Store
from telecare.gateway.store.rows import DeadLetter
from telecare.gateway.store.tables import event_digest
from tests.helpers import eventually
from tests.ingest.shipped import device_client, gateway_config, running_gateway, shipped_broker
from tests.ingest.shipped import users_for as _users_for
from tests.services import PgServer

pytestmark = [pytest.mark.mosquitto]

DEVICES = ["pend1", "pend2", "hub1", "ox1", "tab1", "tab2"]

#: NEWS2 17 (the issue's emergency dispatch), if anybody scored it.
EMERGENCY = {
    "respiration_rate": 26,
    "spo2": 90,
    "on_oxygen": True,
    "systolic_bp": 88,
    "pulse": 135,
    "consciousness": "V",
    "temperature": 38.5,
}
NORMAL = {
    "respiration_rate": 16,
    "spo2": 97,
    "on_oxygen": False,
    "systolic_bp": 120,
    "pulse": 70,
    "consciousness": "A",
    "temperature": 36.8,
}


async def _provision(store: Store) -> None:
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    await store.upsert_site(Site("s2", SiteKind.CARE_HOME))
    await store.upsert_resident(Resident("res1", "s1"))
    await store.upsert_resident(Resident("res2", "s1"))
    await store.upsert_resident(Resident("res3", "s2"))
    await store.upsert_device(Device("pend1", "s1", DeviceKind.PENDANT, "res1"))
    await store.upsert_device(Device("pend2", "s1", DeviceKind.PENDANT, "res2"))
    await store.upsert_device(Device("hub1", "s1", DeviceKind.HUB))
    await store.upsert_device(Device("ox1", "s1", DeviceKind.OXIMETER, "res1", hub_id="hub1"))
    await store.upsert_device(Device("tab1", "s1", DeviceKind.TABLET))
    await store.upsert_device(Device("tab2", "s2", DeviceKind.TABLET))


@pytest.fixture
def broker(topic_prefix: str) -> Iterator[int]:
    with shipped_broker(topic_prefix, _users_for(DEVICES)) as port:
        yield port


@pytest.fixture(params=["sqlite", "postgres"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    if request.param == "sqlite":
        return StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "telecare.sqlite3"))
    pg: PgServer = request.getfixturevalue("pg_server")
    schema: str = request.getfixturevalue("pg_schema")
    return StoreConfig(backend="postgres", dsn=pg.dsn, schema=schema, timescale=False)


@pytest.fixture
async def gateway(
    broker: int, topic_prefix: str, store_config: StoreConfig
) -> AsyncIterator[Gateway]:
    ingest = IngestSection(max_future_skew_s=300, max_age_s=14 * 86400)
    async with running_gateway(gateway_config(broker, topic_prefix, store_config, ingest)) as gw:
        await _provision(gw.store)
        yield gw


async def _publish(port: int, prefix: str, device: str, channel: str, payload: bytes) -> str:
    """Publish as ``device`` on its own topic; return the topic."""
    site = "s2" if device == "tab2" else "s1"
    topic = f"{prefix}/{site}/{device}/{channel}"
    async with device_client(port, device) as client:
        await client.publish(topic, payload, qos=1)
    return topic


async def _dead_letter(gw: Gateway, part: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for letter in await gw.store.dead_letters():
            if part in letter.reason:
                return letter.reason
        if time.monotonic() > deadline:
            reasons = [d.reason for d in await gw.store.dead_letters()]
            raise AssertionError(f"no dead letter with {part!r}; got {reasons}")
        await asyncio.sleep(0.02)


async def _counter(gw: Gateway, name: str) -> int:
    return gw.pipeline.counters[name]


def _item(device_id: str, channel: str, msg_id: str, **body: Any) -> dict[str, Any]:
    return {"device_id": device_id, "channel": channel, "msg_id": msg_id, **body}


# --------------------------------------------------------------------------- finding 3


async def test_a_pendant_cannot_forward_a_fall_for_another_resident(
    gateway: Gateway, broker: int, topic_prefix: str
) -> None:
    gw, now = gateway, datetime.now(UTC).isoformat()
    batch = json_v1.encode_batch(
        "b1", [_item("pend2", "event", "f1", ts=now, type="fall", phase="alarm")]
    )
    topic = await _publish(broker, topic_prefix, "pend1", "batch", batch)
    reason = await _dead_letter(gw, "may not forward")
    assert reason.startswith("device 'pend1' of kind 'pendant' may not forward for other devices")
    # The same through BLE forwarding: a pendant naming the oximeter.
    ble = {"v": 1, "msg_id": "x1", "ts": now, "device_id": "ox1", "uuid": "2A5E", "data": "00"}
    await _publish(broker, topic_prefix, "pend1", "ble", json.dumps(ble).encode())

    async def forwarding_letters() -> list[DeadLetter]:
        return [d for d in await gw.store.dead_letters() if "may not forward" in d.reason]

    letters = await eventually(forwarding_letters, lambda found: len(found) == 2)
    assert {d.origin for d in letters} == {topic, topic.replace("/batch", "/ble")}
    assert await gw.store.count("alerts") == 0
    assert await gw.store.count("dispatches") == 0
    assert await gw.store.stored_event_digest("pend2", "f1") is None


async def test_a_hub_forwards_only_for_its_registered_children(
    gateway: Gateway, broker: int, topic_prefix: str
) -> None:
    gw, now = gateway, datetime.now(UTC).isoformat()
    spo2 = [{"metric": "spo2", "value": 95, "unit": "%"}]
    own = json_v1.encode_batch("b1", [_item("ox1", "reading", "r1", ts=now, readings=spo2)])
    await _publish(broker, topic_prefix, "hub1", "batch", own)
    stranger = json_v1.encode_batch(
        "b2", [_item("pend2", "event", "f2", ts=now, type="fall", phase="alarm")]
    )
    await _publish(broker, topic_prefix, "hub1", "batch", stranger)
    reason = await _dead_letter(gw, "not registered to it")
    assert reason == "hub 'hub1' forwarded for device 'pend2', which is not registered to it"
    vitals = await eventually(lambda: gw.store.latest_vitals(["res1"]), lambda v: bool(v["res1"]))
    assert vitals["res1"]["spo2"][1] == 95.0  # its child: stored
    assert await gw.store.stored_event_digest("pend2", "f2") is None
    assert await gw.store.count("alerts") == 0


async def test_observation_sets_only_from_a_tablet_for_its_own_sites_residents(
    gateway: Gateway, broker: int, topic_prefix: str
) -> None:
    gw, now = gateway, datetime.now(UTC)
    # A pendant naming another resident: the NEWS2 17 emergency.
    spoofed = json_v1.encode_observation("o1", now, "res2", **EMERGENCY)
    await _publish(broker, topic_prefix, "pend1", "observation", spoofed)
    reason = await _dead_letter(gw, "may not send observation sets")
    assert reason == (
        "device 'pend1' of kind 'pendant' may not send observation sets (only: tablet)"
    )
    # A tablet at s2 naming a resident of s1.
    other_site = json_v1.encode_observation("o2", now, "res1", **EMERGENCY)
    await _publish(broker, topic_prefix, "tab2", "observation", other_site)
    assert "is not a resident of site 's2'" in await _dead_letter(gw, "is not a resident")
    # The tablet of the resident's own site is heard.
    await _publish(
        broker,
        topic_prefix,
        "tab1",
        "observation",
        json_v1.encode_observation("o3", now, "res2", **NORMAL),
    )
    window = (now - timedelta(seconds=1), now + timedelta(seconds=1))
    [score] = await eventually(lambda: gw.store.news2_history("res2", *window))
    assert score.total == 0
    assert await gw.store.news2_history("res1", *window) == []
    assert await gw.store.count("alerts") == 0
    assert await gw.store.count("dispatches") == 0


# --------------------------------------------------------------------------- finding 5


async def test_msg_id_reused_with_different_content_is_a_dead_letter_and_raises_nothing(
    gateway: Gateway, broker: int, topic_prefix: str
) -> None:
    gw, now = gateway, datetime.now(UTC)
    first = json_v1.encode_event("m-dup", now, EventType.PERIODIC_TEST)
    await _publish(broker, topic_prefix, "pend1", "event", first)
    smoke = json_v1.encode_event("m-dup", now, EventType.SMOKE)
    await _publish(broker, topic_prefix, "pend1", "event", smoke)
    reason = await _dead_letter(gw, "already used")
    assert reason == (
        "msg_id m-dup of device pend1 was already used for an event with different content"
        " (a msg_id must be unique per message)"
    )
    await _publish(broker, topic_prefix, "pend1", "event", first)  # a true redelivery
    await eventually(lambda: _counter(gw, "events_duplicate"), lambda n: n == 1)
    stored = AlarmEvent("pend1", EventType.PERIODIC_TEST, Phase.ALARM, now, "m-dup")
    assert await gw.store.stored_event_digest("pend1", "m-dup") == event_digest(stored)
    assert await gw.store.count("alarm_events") == 1
    assert await gw.store.count("alerts") == 0
    assert await gw.store.count("dispatches") == 0
    assert len(await gw.store.dead_letters()) == 1  # the redelivery is silent
    assert gw.pipeline.counters["msg_id_reused"] == 1
    assert gw.pipeline.counters["events_duplicate"] == 1


# --------------------------------------------------------------------------- finding 6


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        (
            "9999-01-01T00:00:00Z",
            r"timestamp is \d+ days in the future"
            r" \(more than the 14 days a device clock may run ahead\)",
        ),
        ("1900-01-01T00:00:00Z", r"timestamp is \d+ days old \(older than the 14 days allowed\)"),
    ],
    ids=["far_future", "far_past"],
)
async def test_implausible_timestamps_are_dead_letters_saying_which_and_by_how_much(
    ts: str, reason: str, gateway: Gateway, broker: int, topic_prefix: str
) -> None:
    gw = gateway
    payload = f'{{"v":1,"msg_id":"t1","ts":"{ts}","type":"pendant"}}'.encode()
    await _publish(broker, topic_prefix, "pend1", "event", payload)
    found = await _dead_letter(gw, "timestamp is")
    assert re.fullmatch(reason, found), found
    assert await gw.store.stored_event_digest("pend1", "t1") is None
    assert await gw.store.count("alerts") == 0
