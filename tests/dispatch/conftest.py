"""Shared dispatch fixtures: a seeded registry, a fake clock, alerts and repositories."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from telecare.devices.model import (
    Alert,
    AlertKind,
    EventType,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.dispatch.notifiers.base import Message
from telecare.dispatch.responders import Contact, OnCall, ResponderDirectory, ResponderProfile
from telecare.gateway.store.base import Store
from telecare.rules.clock import FakeClock

#: A Monday, 10:00 UTC (10:00 in London in November).
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
_ids = itertools.count(1)

RESPONDERS = (
    Responder("kh1", ResponderKind.KEYHOLDER, area="north"),
    Responder("kh2", ResponderKind.KEYHOLDER, area="north"),
    Responder("rr1", ResponderKind.RAPID_RESPONSE, area="north", skills=("lifting",)),
    Responder("ff1", ResponderKind.FIREFIGHTER, area="north"),
    Responder("amb", ResponderKind.AMBULANCE, area="north"),
)


def directory() -> ResponderDirectory:
    weekdays = (OnCall.parse("mon-fri 08:00-20:00"),)
    return ResponderDirectory(
        [
            ResponderProfile(RESPONDERS[0], (Contact("memory", "kh1"),)),
            ResponderProfile(RESPONDERS[1], (Contact("memory", "kh2"),)),
            ResponderProfile(RESPONDERS[2], (Contact("memory", "rr1"),), weekdays),
            ResponderProfile(RESPONDERS[3], (), weekdays),
            ResponderProfile(RESPONDERS[4], (Contact("memory", "amb"),)),
        ]
    )


SUPERVISORS = (Contact("memory", "supervisor-desk"),)


class MemoryTransport:
    """An in-process transport (a real implementation of the interface) that keeps what
    it was asked to send, for service tests; the network transports have their own
    tests against real servers."""

    channel = "memory"

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> str:
        self.sent.append(message)
        return "kept"


async def seed(store: Store) -> None:
    await store.upsert_site(Site("s1", SiteKind.HOME, area="north"))
    await store.upsert_site(Site("s2", SiteKind.HOME, area="south"))
    for r in RESPONDERS:
        await store.upsert_responder(r)
    await store.upsert_resident(Resident("res1", "s1", responders=("kh1", "kh2")))
    await store.upsert_resident(Resident("res2", "s2", responders=()))


def make_alert(
    event_type: EventType | None = EventType.PENDANT,
    *,
    kind: AlertKind = AlertKind.ALARM,
    priority: int = 1,
    site_id: str = "s1",
    resident_id: str | None = "res1",
    detail: dict[str, Any] | None = None,
    ts: datetime = NOW,
) -> Alert:
    n = next(_ids)
    return Alert(
        alert_id=f"a{n}",
        kind=kind,
        priority=priority,
        reason=f"{event_type or kind} alarm",
        ts=ts,
        site_id=site_id,
        resident_id=resident_id,
        device_id="dev1",
        event_type=event_type,
        source_key=f"dev1/m{n}",
        detail=detail or {},
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Wait until ``check()`` is true (a safety bound, not a timed assertion)."""

    async def poll() -> None:
        while not await check():  # noqa: ASYNC110 - polling the store; no event to await
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), within)
