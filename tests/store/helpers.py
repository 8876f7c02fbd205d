"""Builders shared by the storage tests: messages of readings, events, alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from telecare.devices.model import (
    AlarmEvent,
    Alert,
    AlertKind,
    Device,
    DeviceKind,
    EventType,
    Metric,
    Phase,
    Reading,
    Resident,
    Site,
    SiteKind,
)
from telecare.gateway.store.base import Store
from telecare.gateway.store.rows import RegistryChange
from telecare.gateway.store.tables import REGISTRY_AUDIT

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def message(i: int, device: str = "ox1", resident: str = "res1") -> list[Reading]:
    """One oximeter message: SpO2, pulse and perfusion index, one second apart."""
    ts = T0 + timedelta(seconds=i)
    msg = f"m{i}"
    return [
        Reading(device, Metric.SPO2, 90 + i % 10, "%", ts, msg, resident),
        Reading(device, Metric.PULSE, 60 + i % 40, "/min", ts, msg, resident),
        Reading(device, Metric.PERFUSION_INDEX, 1 + (i % 50) / 10, "%", ts, msg, resident),
    ]


def event(i: int, device: str = "p1") -> AlarmEvent:
    return AlarmEvent(
        device, EventType.PENDANT, Phase.ALARM, T0 + timedelta(seconds=i), f"e{i}", "s1", "res1"
    )


def alert(i: int, priority: int = 1) -> Alert:
    return Alert(
        f"a{i}",
        AlertKind.ALARM,
        priority,
        "pendant pressed",
        T0 + timedelta(seconds=i),
        "s1",
        "res1",
        "p1",
        EventType.PENDANT,
        f"p1/e{i}",
    )


async def registry(store: Store) -> None:
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    await store.upsert_resident(Resident("res1", "s1"))
    await store.upsert_resident(Resident("res2", "s1"))
    await store.upsert_device(Device("ox1", "s1", DeviceKind.OXIMETER, "res1"))
    await store.upsert_device(Device("p1", "s1", DeviceKind.PENDANT, "res1"))


async def registry_changes(
    store: Store, kind: str | None = None, entity_id: str | None = None
) -> list[RegistryChange]:
    """The registry audit, oldest first (of one thing, when given): only tests read it."""
    changes = await REGISTRY_AUDIT.all(store.sql, "ORDER BY audit_id")
    return [c for c in changes if kind in (None, c.kind) and entity_id in (None, c.entity_id)]
