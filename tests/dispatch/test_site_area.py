"""A site's response area is read from the registry as it is now at every dispatch: an
installer who moves a site to another area (``telecare site set --area``) gets that
area's responders in the next cascade, without a restart. The service kept each site's
area for good before, so the next alarm still went to the old area's responders."""

from __future__ import annotations

from pathlib import Path

import pytest

from telecare.devices.model import (
    Device,
    DeviceKind,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.dispatch.responders import ResponderDirectory, ResponderProfile
from telecare.dispatch.service import DispatchService
from telecare.firmware_stubs.mqtt_device import Pendant
from telecare.gateway.app import Gateway
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import FakeClock
from tests.dispatch.conftest import make_alert
from tests.dispatch.live_gateway import cli, connected, sqlite_gateway
from tests.helpers import dispatch_for, eventually
from tests.services import MqttServer

_WARDENS = (
    Responder("w-north", ResponderKind.MOBILE_WARDEN, area="north"),
    Responder("w-south", ResponderKind.MOBILE_WARDEN, area="south"),
)


async def _seed(store: SqliteStore | PostgresStore) -> None:
    """A home in the north with two residents who have no responders of their own, so
    the wellbeing cascade starts with the mobile warden covering the site's area."""
    await store.upsert_site(Site("sa", SiteKind.HOME, area="north"))
    for resident_id in ("ra1", "ra2"):
        await store.upsert_resident(Resident(resident_id, "sa"))
    for warden in _WARDENS:
        await store.upsert_responder(warden)


async def test_a_site_moved_to_another_area_is_dispatched_in_its_new_area(
    store: SqliteStore | PostgresStore, clock: FakeClock
) -> None:
    await _seed(store)
    wardens = ResponderDirectory([ResponderProfile(w) for w in _WARDENS])
    svc = DispatchService(store.dispatches, store, clock, directory=wardens)

    first = make_alert(site_id="sa", resident_id="ra1")
    assert (await store.write_alerts([first]))[0]
    before = await svc.open(first)
    assert before.responder_id == "w-north"

    await store.upsert_site(Site("sa", SiteKind.HOME, area="south"))  # the installer
    second = make_alert(site_id="sa", resident_id="ra2")
    assert (await store.write_alerts([second]))[0]
    after = await svc.open(second)
    assert after.responder_id == "w-south"
    opened = (await svc.repo.audit(after.dispatch_id))[0].detail
    assert opened["area"] == "south"
    assert opened["cascade"][0] == "w-south"
    assert "w-north" not in opened["cascade"]


@pytest.mark.mosquitto
async def test_a_running_gateway_follows_a_site_the_cli_moved_to_another_area(
    mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path
) -> None:
    """The whole path: the CLI (a process of its own) moves the site; the gateway's
    registry watch drops the cached site; the next alarm there is dispatched to the new
    area's warden; the site is then served from the warm cache again (no store read per
    alarm)."""
    config, toml = sqlite_gateway(tmp_path, mqtt_server, topic_prefix)
    async with SqliteStore(
        config.store.sqlite_path
    ) as store:  # provisioned before the gateway starts
        await store.migrate()
        await _seed(store)
        for n in (1, 2):
            await store.upsert_device(Device(f"pa{n}", "sa", DeviceKind.PENDANT, f"ra{n}"))
    async with Gateway(config) as gw:
        await eventually(lambda: connected(gw))
        registry = gw.pipeline.decoder.registry
        async with Pendant(
            "sa", "pa1", host=mqtt_server.host, port=mqtt_server.port, prefix=topic_prefix
        ) as pendant:
            msg_id = await pendant.press()
        before = await dispatch_for(gw.store, alarm_id_for("pa1", msg_id))
        assert before.responder_id == "w-north"

        await cli(toml, "site", "set", "sa", "--area", "south", "--by", "inst")

        async def moved() -> bool:
            site = await gw.dispatcher.registry.get_site("sa")  # what dispatch reads
            return site is not None and site.area == "south"

        await eventually(moved)  # the watch applied the change (within its poll)
        reads = dict(registry.reads)
        async with Pendant(
            "sa", "pa2", host=mqtt_server.host, port=mqtt_server.port, prefix=topic_prefix
        ) as pendant:
            msg_id = await pendant.press()
        after = await dispatch_for(gw.store, alarm_id_for("pa2", msg_id))
        assert after.responder_id == "w-south"
        assert registry.reads == reads  # the alarm read its site (and all) from the cache
