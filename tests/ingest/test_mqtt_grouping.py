"""MqttIngest grouping: readings handled together are acknowledged only after the group
handler returns (or not at all); events on one topic stay in order. Real Mosquitto."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator, Sequence
from typing import TypeVar

import aiomqtt
import pytest

from telecare.gateway.backoff import Backoff
from telecare.gateway.config import MqttConfig
from telecare.gateway.envelope import Envelope
from telecare.gateway.ingest.mqtt import MqttIngest
from telecare.rules.clock import SystemClock
from tests.helpers import eventually
from tests.services import MqttServer, start_mosquitto

T = TypeVar("T")


@pytest.fixture
def broker() -> Iterator[MqttServer]:
    with start_mosquitto() as server:
        yield server


def _config(broker: MqttServer, prefix: str, client_id: str) -> MqttConfig:
    return MqttConfig(port=broker.port, client_id=client_id, topic_prefix=prefix)


async def _backlog(broker: MqttServer, prefix: str, client_id: str, msgs: list[str]) -> None:
    """Create the persistent session, then queue ``msgs`` (topics; payload = index)."""
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier=client_id, clean_session=False
    ) as c:
        await c.subscribe(f"{prefix}/+/+/+", qos=1)
    async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
        for i, topic in enumerate(msgs):
            await pub.publish(topic, str(i).encode(), qos=1)


async def _nothing(env: Envelope) -> None:
    raise AssertionError(f"unexpected single message {env.origin}")


async def test_group_is_acknowledged_only_after_the_group_handler_returns(
    broker: MqttServer,
) -> None:
    prefix = f"g-{uuid.uuid4().hex[:8]}/telecare/v1"
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    topics = [f"{prefix}/s1/d{i % 7}/reading" for i in range(50)]
    await _backlog(broker, prefix, client_id, topics)
    release = asyncio.Event()
    seen: list[int] = []

    async def blocked(envs: Sequence[Envelope]) -> None:
        seen.append(len(envs))
        await release.wait()

    first = MqttIngest(
        _config(broker, prefix, client_id), _nothing, SystemClock(), group_handler=blocked
    )
    async with first:
        # The broker sends up to its inflight limit (20 by default) unacknowledged.
        await eventually(lambda: _value(sum(seen)), lambda n: n >= 20)
        await asyncio.sleep(0.3)
        assert first.acked == 0
        assert max(seen) > 1  # taken together
    # Left without the handler returning: nothing acknowledged, all redelivered.
    got: list[str] = []

    async def store(envs: Sequence[Envelope]) -> None:
        got.extend(e.payload.decode() for e in envs)

    second = MqttIngest(
        _config(broker, prefix, client_id), _nothing, SystemClock(), group_handler=store
    )
    async with second:
        await eventually(lambda: _value(second.acked), lambda n: n == 50)
    assert sorted(map(int, got)) == list(range(50))
    # ... and acknowledged this time: a third session gets nothing.
    third_got: list[str] = []

    async def again(envs: Sequence[Envelope]) -> None:
        third_got.extend(e.payload.decode() for e in envs)

    third = MqttIngest(
        _config(broker, prefix, client_id), _nothing, SystemClock(), group_handler=again
    )
    async with third:
        await third.connected.wait()
        # A barrier instead of a sleep: a message published now arrives after anything the
        # broker still held for this session.
        async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
            await pub.publish(f"{prefix}/s1/d0/reading", b"barrier", qos=1)
        await eventually(lambda: _value(list(third_got)), lambda got: "barrier" in got)
    assert third_got == ["barrier"]


async def test_failed_group_is_not_acknowledged_and_is_redelivered(broker: MqttServer) -> None:
    prefix = f"g-{uuid.uuid4().hex[:8]}/telecare/v1"
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    await _backlog(broker, prefix, client_id, [f"{prefix}/s1/d1/reading"] * 30)
    calls = 0
    stored: set[str] = set()

    async def flaky(envs: Sequence[Envelope]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("database away")
        stored.update(e.payload.decode() for e in envs)

    ingest = MqttIngest(
        _config(broker, prefix, client_id),
        _nothing,
        SystemClock(),
        group_handler=flaky,
        backoff=Backoff(initial=0.01, cap=0.05),
    )
    async with ingest:
        await eventually(lambda: _value(len(stored)), lambda n: n == 30)
        await eventually(lambda: _value(ingest.acked), lambda n: n >= 30)
    assert ingest.not_stored >= 1
    assert ingest.connections >= 2


@pytest.mark.parametrize("grouping", [True, False])
async def test_events_on_one_topic_stay_in_order(broker: MqttServer, grouping: bool) -> None:
    prefix = f"g-{uuid.uuid4().hex[:8]}/telecare/v1"
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    topics = []
    for i in range(40):
        topics.append(f"{prefix}/s1/p{i % 4}/event")
        topics.append(f"{prefix}/s1/d{i % 3}/reading")
    await _backlog(broker, prefix, client_id, topics)
    order: dict[str, list[int]] = {}

    async def handle(env: Envelope) -> None:
        await asyncio.sleep(random.random() / 200)
        order.setdefault(env.origin, []).append(int(env.payload))

    async def handle_group(envs: Sequence[Envelope]) -> None:
        for env in envs:
            await handle(env)

    ingest = MqttIngest(
        _config(broker, prefix, client_id),
        handle,
        SystemClock(),
        group_handler=handle_group if grouping else None,
    )
    async with ingest:
        await eventually(lambda: _value(ingest.acked), lambda n: n == len(topics))
    for topic, indexes in order.items():
        if topic.endswith("/event"):
            assert indexes == sorted(indexes), topic
    assert sum(len(v) for v in order.values()) == len(topics)


async def _value(v: T) -> T:
    return v
