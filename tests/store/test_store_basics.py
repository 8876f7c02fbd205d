"""The store contract, run against both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    AlertKind,
    Device,
    DeviceKind,
    Dispatch,
    DispatchState,
    EventType,
    Metric,
    Phase,
    Reading,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.dispatch.records import AuditRecord
from telecare.gateway.store.base import Store
from telecare.gateway.store.rows import DeadLetter

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


async def _registry(store: Store) -> None:
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME, "Oak House"))
    await store.upsert_responder(Responder("r1", ResponderKind.KEYHOLDER, "Key Holder"))
    await store.upsert_responder(Responder("r2", ResponderKind.RAPID_RESPONSE))
    await store.upsert_resident(Resident("res1", "s1", "Resident One", responders=("r2", "r1")))
    await store.upsert_device(Device("d1", "s1", DeviceKind.PENDANT, "res1"), "secret-hash")


async def test_migrate_is_idempotent(store: Store) -> None:
    assert await store.migrate() == []


async def test_registry_round_trip(store: Store) -> None:
    await _registry(store)
    resident = await store.get_resident("res1")
    assert resident is not None
    assert resident.responders == ("r2", "r1")
    assert resident.name == "Resident One"
    device = await store.get_device("d1")
    assert device == Device("d1", "s1", DeviceKind.PENDANT, "res1")
    assert await store.device_credentials() == [("d1", "secret-hash")]
    # Re-provisioning without a new secret keeps the old one.
    await store.upsert_device(Device("d1", "s1", DeviceKind.PENDANT, "res1", location="hall"))
    assert await store.device_credentials() == [("d1", "secret-hash")]
    assert await store.get_device("nope") is None


async def test_readings_are_idempotent(store: Store) -> None:
    await _registry(store)
    batch = [
        Reading("d1", Metric.SPO2, 96, "%", NOW, "m1", "res1"),
        Reading("d1", Metric.PULSE, 72, "/min", NOW, "m1", "res1"),
    ]
    assert await store.write_readings(batch) == 2
    assert await store.write_readings(batch) == 0
    assert await store.write_readings(batch + batch) == 0
    assert await store.count("readings") == 2
    latest = (await store.latest_vitals(["res1"]))["res1"]
    assert latest["spo2"][1] == 96.0
    assert latest["pulse"][0] == NOW


async def test_event_alert_dispatch(store: Store) -> None:
    await _registry(store)
    event = AlarmEvent("d1", EventType.PENDANT, Phase.ALARM, NOW, "m2", "s1", "res1")
    assert (await store.write_events([event]))[0] is True
    assert (await store.write_events([event]))[0] is False
    alert = Alert(
        "a1",
        AlertKind.ALARM,
        1,
        "pendant pressed",
        NOW,
        "s1",
        "res1",
        "d1",
        EventType.PENDANT,
        "d1/m2",
    )
    assert (await store.write_alerts([alert]))[0] is True
    assert (await store.write_alerts([alert]))[0] is False
    dispatch = Dispatch("dp1", "a1", DispatchState.RAISED, 1, NOW, NOW, "s1", "res1", "r2")
    audit = AuditRecord("dp1", NOW, None, DispatchState.RAISED, "gateway", "pendant pressed")
    assert await store.dispatches.create(dispatch, audit, (), ()) is True
    assert await store.dispatches.create(dispatch, audit, (), ()) is False
    assert await store.dispatches.load("dp1") == dispatch
    assert [a.dispatch.dispatch_id for a in await store.open_alarms() if a.dispatch] == ["dp1"]
    assert await store.dispatches.audit("dp1") == [audit]
    assert (await store.recent_alerts())[0] == alert


async def test_dead_letters_keep_payload_and_reason(store: Store) -> None:
    letter = DeadLetter(NOW, "mqtt", "t/x", "malformed JSON at line 1", b"\x00{", "d9")
    await store.write_dead_letter(letter)
    assert await store.dead_letters() == [letter]
