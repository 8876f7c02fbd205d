"""Issue 10 item 14 through the pipeline: missed-heartbeat storms end as one group
dispatch per area that clears only when every member was heard again, later silent
devices join the open group, and the orphan sweeper never undoes a grouping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from telecare.devices.codecs import json_v1
from telecare.devices.model import (
    Device,
    DeviceKind,
    Dispatch,
    DispatchState,
    EventType,
    Site,
    SiteKind,
)
from telecare.dispatch import DispatchService
from telecare.gateway.dispatching import dispatch_repository
from telecare.gateway.envelope import Envelope
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.gateway.sweeper import OrphanSweeper
from telecare.rules.clock import FakeClock
from tests.helpers import eventually

TS = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PREFIX = "telecare/v1"
DEVICES = [f"p{i}" for i in range(12)]
NORTH = frozenset(DEVICES[:6])


def site_of(device: str) -> str:
    return "north" if device in NORTH else "south"


class Rig:
    def __init__(
        self, store: SqliteStore | PostgresStore, clock: FakeClock, pipeline: Pipeline
    ) -> None:
        self.store, self.clock, self.pipeline = store, clock, pipeline
        self.dispatcher: DispatchService = pipeline.dispatcher
        self._n = 0

    async def heartbeat(self, device: str) -> None:
        self._n += 1
        payload = json_v1.encode_heartbeat(f"h{self._n}", self.clock.now())
        site = site_of(device)
        env = Envelope("mqtt", f"{PREFIX}/{site}/{device}/heartbeat", payload, self.clock.now())
        await self.pipeline.handle(env)

    async def missed(self) -> list[str]:
        return [
            a.alert_id
            for a in await self.store.recent_alerts(500)
            if a.event_type is EventType.HEARTBEAT_MISSED
        ]

    async def groups(self, members: int) -> list[Dispatch]:
        """The open dispatches once ``members`` alerts are grouped into them."""
        repo = self.dispatcher.repo

        async def grouped() -> list[Dispatch]:
            found: dict[str, Dispatch] = {}
            for alert_id in await self.missed():
                d = await repo.load_for_alert(alert_id)
                if d is None:
                    return []
                found[d.dispatch_id] = d
            total = sum([len(await repo.members(k)) for k in found])
            return list(found.values()) if total == members else []

        return await eventually(grouped)

    async def state(self, d: Dispatch) -> DispatchState:
        found = await self.dispatcher.repo.load(d.dispatch_id)
        assert found is not None
        return found.state


@pytest.fixture
async def rig(store: SqliteStore | PostgresStore) -> AsyncIterator[Rig]:
    await store.upsert_site(Site("north", SiteKind.HOME, area="north"))
    await store.upsert_site(Site("south", SiteKind.HOME, area="south"))
    for device in DEVICES:
        await store.upsert_device(
            Device(device, site_of(device), DeviceKind.PENDANT, heartbeat_interval_s=60)
        )
    clock = FakeClock(TS)
    async with DispatchService(dispatch_repository(store), store, clock) as dispatcher:
        rig = Rig(store, clock, Pipeline(store, clock, topic_prefix=PREFIX, dispatcher=dispatcher))
        for device in DEVICES:
            await rig.heartbeat(device)
        yield rig


async def test_a_storm_is_one_group_per_area_that_clears_only_when_all_are_back(
    rig: Rig,
) -> None:
    rig.clock.advance(181)  # everybody silent for more than 3 x 60 s
    await rig.pipeline.tick()
    assert len(await rig.missed()) == 12
    groups = await rig.groups(12)
    assert len(groups) == 2  # one per area
    north = next(g for g in groups if g.site_id == "north")
    for device in ("p0", "p1", "p2", "p3", "p4"):  # five of the six are heard again
        await rig.heartbeat(device)
        assert await rig.state(north) is DispatchState.RAISED
    await rig.heartbeat("p5")  # the last one
    await eventually(lambda: rig.state(north), lambda s: s is DispatchState.RESOLVED)
    south = next(g for g in groups if g.site_id == "south")
    assert await rig.state(south) is DispatchState.RAISED


async def test_devices_falling_silent_later_join_the_open_group(rig: Rig) -> None:
    for device in DEVICES[6:]:
        rig.clock.advance(20)
        await rig.heartbeat(device)  # the south keeps talking a little longer
    rig.clock.advance(181 - 6 * 20)
    await rig.pipeline.tick()  # the north is missing now
    [north] = await rig.groups(6)
    await rig.dispatcher.acknowledge(north.dispatch_id, "op")
    rig.clock.advance(6 * 20)
    await rig.pipeline.tick()  # now the south
    rig.clock.advance(60)
    await rig.pipeline.tick()
    groups = await rig.groups(12)
    assert len(groups) == 2
    assert await rig.store.count("dispatches") == 2


async def test_the_sweeper_never_undoes_a_grouping(rig: Rig) -> None:
    rig.clock.advance(181)
    await rig.pipeline.tick()
    await rig.groups(12)
    sweeper = OrphanSweeper(rig.store, rig.dispatcher, rig.clock)
    for _ in range(3):
        rig.clock.advance(30)
        assert await sweeper.sweep() == 0
    assert await rig.store.alerts_without_dispatch() == []
    assert await rig.store.count("dispatches") == 2


async def test_resolving_a_group_rearms_its_devices(rig: Rig) -> None:
    rig.clock.advance(181)
    await rig.pipeline.tick()
    groups = await rig.groups(12)
    for g in groups:
        await rig.dispatcher.acknowledge(g.dispatch_id, "op")
        await rig.dispatcher.resolve(g.dispatch_id, "op", "technical_fixed")
    rig.clock.advance(60)
    await rig.pipeline.tick()
    assert len(await rig.missed()) == 12  # still silent, but not yet 3 intervals since
    rig.clock.advance(121)
    await rig.pipeline.tick()
    assert len(await rig.missed()) == 24  # silent 3 intervals after the close: again
    groups = await rig.groups(24)
    assert len(groups) == 4  # two new groups; the resolved ones are not reopened
    assert sorted([await rig.state(g) for g in groups]).count(DispatchState.RAISED) == 2
