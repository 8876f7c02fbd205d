"""An alert stored without a dispatch (crash between the two, or the database away when
the dispatch service tried) gets its dispatch: at start, and by the periodic sweep."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

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
from telecare.gateway.app import Gateway, open_store
from telecare.gateway.broker import EmbeddedBroker
from telecare.gateway.config import Config, DispatchSection, MqttConfig, StoreConfig
from telecare.rules.clock import SystemClock
from tests.helpers import eventually


def _alert(alert_id: str, age_s: float) -> Alert:
    return Alert(
        alert_id=alert_id,
        kind=AlertKind.ALARM,
        priority=1,
        reason="pendant alarm from device p1",
        ts=SystemClock().now() - timedelta(seconds=age_s),
        site_id="s1",
        resident_id="r1",
        device_id="p1",
        event_type=EventType.PENDANT,
        source_key=f"p1/{alert_id}",
    )


async def test_orphan_alerts_are_dispatched_at_start_and_by_the_sweep(tmp_path: Path) -> None:
    async with EmbeddedBroker() as broker:
        config = Config(
            mqtt=MqttConfig(port=broker.port, client_id="gw-sweep"),
            store=StoreConfig(backend="sqlite", sqlite_path=str(tmp_path / "t.sqlite3")),
            dispatch=DispatchSection(sweep_s=0.2),
        )
        async with open_store(config) as store:
            await store.migrate()
            await store.upsert_site(Site("s1", SiteKind.HOME))
            await store.upsert_responder(Responder("kh1", ResponderKind.KEYHOLDER))
            await store.upsert_resident(Resident("r1", "s1", responders=("kh1",)))
            # Left by a "previous run": stored, never dispatched.
            assert (await store.write_alerts([_alert("al-before", age_s=600)]))[0]
        async with Gateway(config) as gw:
            repo = gw.dispatcher.repo
            found = await eventually(lambda: repo.load_for_alert("al-before"))
            assert found is not None
            assert found.responder_id == "kh1"
            # Stored while running without going through the dispatch service (as after a
            # spool replay): the sweep opens it once it is older than the grace period.
            assert (await gw.store.write_alerts([_alert("al-during", age_s=60)]))[0]
            late = await eventually(lambda: repo.load_for_alert("al-during"))
            assert late is not None
            assert await gw.store.alerts_without_dispatch() == []
