"""Issue 12 part 1: a tablet that publishes an observation set over MQTT reads its NEWS2
result on ``<prefix>/_gateway/tablets/<tablet>/result``, through Mosquitto run with the
shipped configuration and ACL (each tablet logged in with its own credentials): the
score, band, the site's advice and the dispatch it opened; another tablet cannot read it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from telecare.devices.codecs import json_v1
from telecare.devices.model import Device, DeviceKind, Resident, Site, SiteKind
from telecare.firmware_stubs.tablet import Tablet
from telecare.gateway.app import Gateway
from telecare.gateway.config import StoreConfig
from telecare.gateway.store.base import Store
from telecare.rules.config import DEFAULT_ADVICE
from tests.ingest.shipped import (
    device_client,
    device_password,
    gateway_config,
    running_gateway,
    shipped_broker,
    users_for,
)

pytestmark = [pytest.mark.mosquitto]

NORMAL = {
    "respiration_rate": 16,
    "spo2": 97,
    "on_oxygen": False,
    "systolic_bp": 120,
    "pulse": 70,
    "consciousness": "A",
    "temperature": 36.8,
}
#: NEWS2 18: respiration 3, SpO2 3, oxygen 2, systolic 3, pulse 3, consciousness 3,
#: temperature 1.
EMERGENCY = {**NORMAL, "respiration_rate": 26, "spo2": 90, "on_oxygen": True}
EMERGENCY |= {"systolic_bp": 88, "pulse": 135, "consciousness": "V", "temperature": 38.5}


async def _provision(store: Store) -> None:
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    await store.upsert_site(Site("s2", SiteKind.CARE_HOME))
    await store.upsert_resident(Resident("res1", "s1"))
    await store.upsert_resident(Resident("res3", "s2"))
    await store.upsert_device(Device("tab1", "s1", DeviceKind.TABLET))
    await store.upsert_device(Device("tab2", "s2", DeviceKind.TABLET))


@pytest.fixture
def broker(topic_prefix: str) -> Iterator[int]:
    with shipped_broker(topic_prefix, users_for(["tab1", "tab2"])) as port:
        yield port


@pytest.fixture
async def gateway(broker: int, topic_prefix: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    store = StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3"))
    async with running_gateway(gateway_config(broker, topic_prefix, store)) as gw:
        await _provision(gw.store)
        gw.pipeline.decoder.registry.prime(
            await gw.store.list_devices(), await gw.store.list_residents(), []
        )
        yield gw


def _tablet(port: int, prefix: str, site: str, device: str) -> Tablet:
    return Tablet(site, device, port=port, prefix=prefix, password=device_password(device))


async def test_a_tablet_reads_the_score_band_and_advice_of_its_set(
    gateway: Gateway, broker: int, topic_prefix: str
) -> None:
    async with _tablet(broker, topic_prefix, "s1", "tab1") as tablet:
        reply = await tablet.observe("res1", NORMAL)
    assert reply["v"] == 1
    assert (reply["site_id"], reply["resident_id"]) == ("s1", "res1")
    news2 = reply["news2"]
    assert (news2["complete"], news2["total"], news2["risk"], news2["red_flag"]) == (
        True,
        0,
        "low",
        False,
    )
    assert news2["sub_scores"] == dict.fromkeys(news2["sub_scores"], 0)
    assert len(news2["sub_scores"]) == 7
    assert news2["missing"] == []
    assert news2["monitoring"] == "minimum 12-hourly"
    assert reply["advice"] == DEFAULT_ADVICE["zero"]
    assert (reply["alerts"], reply["dispatch"]) == ([], None)


async def test_a_partial_set_is_answered_with_what_is_missing(
    gateway: Gateway, broker: int, topic_prefix: str
) -> None:
    partial = {k: v for k, v in NORMAL.items() if k not in ("temperature", "systolic_bp")}
    async with _tablet(broker, topic_prefix, "s1", "tab1") as tablet:
        reply = await tablet.observe("res1", partial)
    news2 = reply["news2"]
    assert (news2["complete"], news2["total"], news2["risk"]) == (False, None, None)
    assert sorted(news2["missing"]) == ["systolic_bp", "temperature"]


async def test_an_emergency_set_is_answered_with_its_dispatch(
    gateway: Gateway, broker: int, topic_prefix: str
) -> None:
    async with _tablet(broker, topic_prefix, "s1", "tab1") as tablet:
        reply = await tablet.observe("res1", EMERGENCY)
    news2 = reply["news2"]
    assert (news2["total"], news2["risk"], news2["red_flag"]) == (18, "high", True)
    assert news2["monitoring"].startswith("continuous monitoring")
    assert news2["monitoring_interval_s"] == 0
    assert reply["advice"] == DEFAULT_ADVICE["high"]
    [alert] = reply["alerts"]
    assert alert["priority"] == 1
    dispatch = await gateway.dispatcher.repo.load_for_alert(alert["alert_id"])
    assert dispatch is not None
    assert reply["dispatch"]["dispatch_id"] == dispatch.dispatch_id
    assert reply["dispatch"]["alert_id"] == alert["alert_id"]


async def test_one_tablet_cannot_read_another_tablets_results(
    gateway: Gateway, broker: int, topic_prefix: str
) -> None:
    """``tab2`` subscribes to every tablet's results; the broker delivers it only its own.
    Replies reach a subscriber in publish order, so had tab1's been delivered it would
    have come first. (One connection as tab2: the broker binds client ids to users.)"""
    async with device_client(broker, "tab2") as snoop:
        await snoop.subscribe(f"{topic_prefix}/_gateway/tablets/#", qos=1)
        async with _tablet(broker, topic_prefix, "s1", "tab1") as tab1:
            first = await tab1.observe("res1", NORMAL)
        own = json_v1.encode_observation("own-1", datetime.now(UTC), "res3", **NORMAL)
        await snoop.publish(f"{topic_prefix}/s2/tab2/observation", own, qos=1)
        message: aiomqtt.Message = await anext(aiter(snoop.messages))
    assert isinstance(message.payload, bytes)
    assert json.loads(message.payload)["msg_id"] == "own-1" != first["msg_id"]
    assert message.topic.value == f"{topic_prefix}/_gateway/tablets/tab2/result"


async def test_a_reply_the_broker_refuses_is_retried_and_a_full_queue_drops_the_oldest() -> None:
    """No broker needed: ``TabletReplies`` over a publish that fails twice."""
    from telecare.devices.model import ObservationSet
    from telecare.gateway.tablet_reply import QUEUE_SIZE, TabletReplies
    from telecare.rules.engine import EngineResult
    from telecare.rules.news2 import Observation, score

    sent: list[tuple[str, dict[str, object]]] = []
    attempts = 0
    first_at: list[int] = []
    done = asyncio.Event()

    async def publish(topic: str, payload: bytes) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            raise ConnectionError("broker away")
        sent.append((topic, json.loads(payload)))
        if not done.is_set():
            first_at.append(attempts)
        done.set()

    async def no_dispatch(alert_id: str) -> None:
        return None

    news = score(Observation(**NORMAL))  # type: ignore[arg-type]
    replies = TabletReplies(publish, "p/telecare/v1", no_dispatch, retry_s=0.01)
    for n in range(QUEUE_SIZE + 1):  # one more than fits: the oldest goes
        obs = ObservationSet("tab1", "res1", datetime.now(UTC), f"m{n}", site_id="s1")
        replies.submit(obs, news, EngineResult())
    assert replies.dropped == 1
    async with replies:
        await asyncio.wait_for(done.wait(), 10)
    topic, doc = sent[0]
    assert topic == "p/telecare/v1/_gateway/tablets/tab1/result"
    assert doc["msg_id"] == "m1"  # m0 was dropped
    assert first_at == [3]  # two failures, then the same reply again
