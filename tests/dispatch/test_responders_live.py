"""Responders added, changed or removed while the gateway runs (``telecare responder
add|set|remove``, an import, another process) are dispatched as the registry has them
now: the registry watch keeps the dispatch service's responder directory in step. The
directory was filled once at start before, so a warden added with the CLI was never
offered until a restart, and a removed or moved one kept being offered."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
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
from telecare.dispatch.responders import Contact, ResponderDirectory, ResponderProfile
from telecare.dispatch.service import DispatchService
from telecare.firmware_stubs.mqtt_device import Pendant
from telecare.gateway.app import Gateway
from telecare.gateway.dispatching import CachedRegistry
from telecare.gateway.registry_cache import Registry, RegistryWatch
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.rows import RegistryChange
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import FakeClock
from tests.dispatch.conftest import make_alert
from tests.dispatch.live_gateway import cli, connected, sqlite_gateway
from tests.helpers import dispatch_for, eventually
from tests.services import MqttServer

_WARDEN = ResponderKind.MOBILE_WARDEN


async def _seed(store: SqliteStore | PostgresStore) -> None:
    """A home in the north whose residents have no responders of their own, and a
    warden in the south only: a wellbeing alarm there starts with a north warden, if any."""
    await store.upsert_site(Site("sa", SiteKind.HOME, area="north"))
    for n in (1, 2, 3):
        await store.upsert_resident(Resident(f"ra{n}", "sa"))
    await store.upsert_responder(Responder("w-south", _WARDEN, area="south"))


async def _opened(
    svc: DispatchService, store: SqliteStore | PostgresStore, resident_id: str
) -> list[str]:
    """The cascade of a dispatch opened now for a pendant alarm of ``resident_id`` (the
    dispatch is then cancelled, so that nothing blocks a responder's removal)."""
    alert = make_alert(site_id="sa", resident_id=resident_id)
    assert (await store.write_alerts([alert]))[0]
    d = await svc.open(alert)
    cascade: list[str] = (await svc.repo.audit(d.dispatch_id))[0].detail["cascade"]
    assert cascade[:1] == ([d.responder_id] if d.responder_id else [])
    await svc.cancel(d.dispatch_id, "operator", "test")
    return cascade


async def test_the_directory_follows_responders_added_moved_and_removed(
    store: SqliteStore | PostgresStore, clock: FakeClock
) -> None:
    await _seed(store)
    # A responder the dispatch file describes (contacts) stays as the file says.
    configured = ResponderProfile(
        Responder("w-file", _WARDEN, area="east"), (Contact("mqtt", "w-file"),)
    )
    directory = ResponderDirectory([configured])
    registry = Registry(store)
    async with RegistryWatch(
        store, registry, poll_s=3600.0, on_responders=directory.register
    ) as watch:
        svc = DispatchService(
            store.dispatches, CachedRegistry(registry), clock, directory=directory
        )
        assert directory.get("w-south") is not None  # loaded at start
        assert "w-new" not in await _opened(svc, store, "ra1")

        await store.upsert_responder(Responder("w-new", _WARDEN, area="north"))  # added
        await watch.poll()
        first = await _opened(svc, store, "ra1")
        assert first[0] == "w-new"

        await store.upsert_responder(Responder("w-new", _WARDEN, area="south"))  # moved
        await watch.poll()
        assert "w-new" not in await _opened(svc, store, "ra2")

        await store.upsert_responder(Responder("w-gone", _WARDEN, area="north"))
        await watch.poll()
        assert (await _opened(svc, store, "ra3"))[0] == "w-gone"
        blockers = await store.remove_entity(
            "responder",
            "w-new",
            RegistryChange(datetime.now(UTC), "inst", "remove", "responder", "w-new"),
        )
        assert blockers == []
        await watch.poll()
        assert directory.get("w-new") is None  # removed
        assert directory.get("w-file") == configured
        assert [p.responder_id for p in directory.profiles()] == ["w-file", "w-gone", "w-south"]
        reads = dict(registry.reads)
        assert (await _opened(svc, store, "ra2"))[0] == "w-gone"
        assert registry.reads == reads  # the alarm read nothing from the store


async def test_a_second_store_on_the_file_leaves_the_first_seeing_other_processes(
    tmp_path: Path,
) -> None:
    """A gateway opens the SQLite file more than once (its store, the alarm lane's).
    Opening a store used to open and close the file itself (to set its mode), which drops
    every POSIX lock the process holds on it: the first connection then no longer saw
    what other processes committed, so the registry watch saw the CLI's first change and
    none after it."""
    db = tmp_path / "gw.sqlite3"
    async with SqliteStore(db) as store:
        await store.migrate()
        await store.upsert_responder(Responder("w1", _WARDEN, area="a0"))
    async with SqliteStore(db) as store, SqliteStore(db) as second:
        registry = Registry(store)
        async with RegistryWatch(store, registry, poll_s=3600.0) as watch:
            assert await second.list_responders()
            for area in ("a1", "a2", "a3"):
                await asyncio.to_thread(_other_process_sets_area, db, area)
                assert await watch.poll() == 1
                assert [r.area for r in registry.responders()] == [area]


def _other_process_sets_area(db: Path, area: str) -> None:
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
        " c.execute('UPDATE responders SET area = ? WHERE responder_id = ?', (sys.argv[2], 'w1'))"
    )
    subprocess.run([sys.executable, "-c", code, str(db), area], check=True, timeout=60)


@pytest.mark.mosquitto
async def test_a_running_gateway_dispatches_to_responders_the_cli_added_and_moved(
    mqtt_server: MqttServer, topic_prefix: str, tmp_path: Path
) -> None:
    """The whole path: the CLI (a process of its own) adds a warden in the site's area;
    the gateway's registry watch applies the change; the next alarm there goes to that
    warden. The CLI moves them to another area: the next alarm no longer offers them.
    The CLI adds a keyholder and puts them in a resident's cascade: that resident's next
    alarm goes to them first. No alarm reads the registry from the store."""
    config, toml = sqlite_gateway(tmp_path, mqtt_server, topic_prefix)
    async with SqliteStore(
        config.store.sqlite_path
    ) as store:  # provisioned before the gateway starts
        await store.migrate()
        await _seed(store)
        for n in (1, 2, 3):
            await store.upsert_device(Device(f"pa{n}", "sa", DeviceKind.PENDANT, f"ra{n}"))

    async with Gateway(config) as gw:
        await eventually(lambda: connected(gw))
        registry = gw.pipeline.decoder.registry

        async def press(device_id: str) -> list[str]:
            reads = dict(registry.reads)
            async with Pendant(
                "sa", device_id, host=mqtt_server.host, port=mqtt_server.port, prefix=topic_prefix
            ) as pendant:
                msg_id = await pendant.press()
            d = await dispatch_for(gw.store, alarm_id_for(device_id, msg_id))
            cascade: list[str] = (await gw.dispatcher.repo.audit(d.dispatch_id))[0].detail[
                "cascade"
            ]
            assert registry.reads == reads  # the alarm read its registry from the cache
            return cascade

        await cli(toml, "responder", "add", "w-north", "--kind", "mobile_warden", "--area", "north")

        async def known() -> bool:
            return gw.dispatcher.directory.get("w-north") is not None

        await eventually(known)  # the watch applied the change (within its poll)
        assert (await press("pa1"))[0] == "w-north"

        await cli(toml, "responder", "set", "w-north", "--area", "south", "--by", "inst")

        async def moved() -> bool:
            p = gw.dispatcher.directory.get("w-north")
            return p is not None and p.responder.area == "south"

        await eventually(moved)
        assert "w-north" not in await press("pa2")

        await cli(toml, "responder", "add", "kh-new", "--kind", "keyholder")
        await cli(toml, "resident", "set", "ra3", "--responders", "kh-new", "--by", "inst")

        async def in_cascade() -> bool:
            resident = await gw.dispatcher.registry.get_resident("ra3")  # what dispatch reads
            return resident is not None and resident.responders == ("kh-new",)

        await eventually(in_cascade)
        assert (await press("pa3"))[0] == "kh-new"
