"""Issue 10 items 13 and 16 (test-call default) through the pipeline and the dispatch
service on both store backends: answer time runs from when the alarm was presented, and a
pendant provisioned without an interval is still checked for its periodic test call."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from telecare.devices.codecs import json_v1
from telecare.devices.model import (
    AlertKind,
    Device,
    DeviceKind,
    EventType,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.dispatch import DispatchService, ResponderDirectory
from telecare.dispatch.reports import build_report
from telecare.gateway.cli.provision import app as provision_app
from telecare.gateway.dispatching import add_store_responders, dispatch_repository
from telecare.gateway.envelope import Envelope
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.base import Store
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import FakeClock
from tests.helpers import dispatch_for, running_pipeline

TS = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PREFIX = "telecare/v1"


def _env(topic: str, payload: bytes, at: datetime = TS) -> Envelope:
    return Envelope("mqtt", f"{PREFIX}/{topic}", payload, at)


async def _provision(store: Store) -> None:
    await store.upsert_site(Site("s1", SiteKind.HOME))
    await store.upsert_responder(Responder("kh1", ResponderKind.KEYHOLDER))
    await store.upsert_resident(Resident("r1", "s1", responders=("kh1",)))
    await store.upsert_device(Device("p1", "s1", DeviceKind.PENDANT, "r1"))


async def test_answer_time_runs_from_presentation_not_from_a_late_dispatch(
    store: SqliteStore | PostgresStore,
) -> None:
    """A fall stored at 09:00 whose dispatch only opens at 09:10 (the dispatcher was
    busy / down) and is acknowledged 30 s after that was answered in 10.5 minutes, not in
    30 s."""
    await _provision(store)
    clock = FakeClock(TS)
    directory = ResponderDirectory()
    await add_store_responders(directory, store)
    service = DispatchService(dispatch_repository(store), store, clock, directory=directory)
    pipeline = Pipeline(store, clock, topic_prefix=PREFIX, dispatcher=service)
    await pipeline.handle(_env("s1/p1/event", json_v1.encode_event("f1", TS, EventType.FALL)))
    # Presented now; its dispatch waits in the intake queue until the service runs.
    clock.advance(600)
    async with service:
        d = await dispatch_for(store, alarm_id_for("p1", "f1"))
        assert d.created_at == TS + timedelta(seconds=600)
        clock.advance(30)
        await service.acknowledge(d.dispatch_id, "operator-7")
    repo = dispatch_repository(store)
    (day,) = await build_report(repo, TS - timedelta(hours=1), TS + timedelta(hours=23))
    assert (day.alarms, day.answered) == (1, 1)
    assert (day.answered_60s, day.answered_180s) == (0, 0)  # answered after 630 s
    assert day.pct_answered_60s == 0.0
    [first, *_] = await repo.audit(d.dispatch_id)
    assert first.detail["presented_at"] == TS.isoformat()


async def test_a_pendant_without_an_interval_is_checked_for_its_daily_test_call(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    """``device add`` gives a pendant the 24 h periodic test call by default (0 = never
    checked was the old default): silence for 3 x 24 h raises heartbeat_missed."""
    config = tmp_path / "gateway.toml"
    db = tmp_path / "telecare.sqlite3"
    config.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{db}"\n')
    store = sqlite_store
    await store.upsert_site(Site("s1", SiteKind.HOME))
    await store.upsert_resident(Resident("r1", "s1"))
    with ThreadPoolExecutor(1) as pool:
        for device_id, kind in (("p1", "pendant"), ("pir1", "pir")):
            args = ["device", "add", device_id, "--site", "s1", "--kind", kind]
            args += ["--resident", "r1", "--config", str(config)]
            result = pool.submit(CliRunner().invoke, provision_app, args).result()
            assert result.exit_code == 0, result.output
    assert (await store.get_device("p1")).heartbeat_interval_s == 86400  # type: ignore[union-attr]
    assert (await store.get_device("pir1")).heartbeat_interval_s == 0  # type: ignore[union-attr]

    clock = FakeClock(TS)
    async with running_pipeline(store, clock, PREFIX) as pipeline:
        test_call = json_v1.encode_event("t1", TS, EventType.PERIODIC_TEST)
        await pipeline.handle(_env("s1/p1/event", test_call))
        clock.advance(3 * 86400 - 60)
        await pipeline.tick()
        assert [a for a in await store.recent_alerts() if a.kind is AlertKind.TECHNICAL] == []
        clock.advance(120)
        await pipeline.tick()
        [alert] = await store.recent_alerts()
        assert (alert.event_type, alert.device_id, alert.priority) == (
            EventType.HEARTBEAT_MISSED,
            "p1",
            4,
        )
        await dispatch_for(store, alert.alert_id)
