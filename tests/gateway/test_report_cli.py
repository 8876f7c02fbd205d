"""``telecare report responses`` on both store backends: alarms through the pipeline and
the dispatch service on a fake clock, then the report as an operator runs it, each route
against its own attend target (issue 10 item 17)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from telecare.devices.codecs import json_v1
from telecare.devices.model import (
    Device,
    DeviceKind,
    EventType,
    Resident,
    Responder,
    ResponderKind,
    Site,
    SiteKind,
)
from telecare.gateway.cli.common import ExitCode
from telecare.gateway.cli.main import app
from telecare.gateway.envelope import Envelope
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import FakeClock
from tests.helpers import dispatch_for, running_pipeline

TS = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PREFIX = "telecare/v1"


def _config(
    request: pytest.FixtureRequest, store: SqliteStore | PostgresStore, tmp_path: Path
) -> Path:
    path = tmp_path / "gateway.toml"
    if isinstance(store, SqliteStore):
        text = f'[store]\nbackend = "sqlite"\nsqlite_path = "{tmp_path / "telecare.sqlite3"}"\n'
    else:
        dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
        text = f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\nschema = "{schema}"\n'
    path.write_text(text, encoding="utf-8")
    return path


async def test_report_shows_each_route_against_its_own_target(
    store: SqliteStore | PostgresStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    await store.upsert_site(Site("s1", SiteKind.HOME))
    await store.upsert_responder(Responder("kh1", ResponderKind.KEYHOLDER))
    await store.upsert_resident(Resident("r1", "s1", responders=("kh1",)))
    await store.upsert_device(Device("p1", "s1", DeviceKind.PENDANT, "r1"))
    clock = FakeClock(TS)
    async with running_pipeline(store, clock, PREFIX) as pipeline:
        svc = pipeline.dispatcher
        assert svc is not None
        dispatches = []
        for msg_id, event in (("w", EventType.PENDANT), ("u", EventType.FALL)):
            payload = json_v1.encode_event(msg_id, TS, event)
            await pipeline.handle(Envelope("mqtt", f"{PREFIX}/s1/p1/event", payload, TS))
            dispatches.append(await dispatch_for(store, alarm_id_for("p1", msg_id)))
        for d in dispatches:
            await svc.acknowledge(d.dispatch_id, "op1")
            await svc.contact(d.dispatch_id, "op1")
            await svc.accept(d.dispatch_id, "kh1")
        clock.advance(minutes=50)  # both on scene after 50 min
        for d in dispatches:
            await svc.on_scene(d.dispatch_id, "kh1")

    args = ["report", "responses", "--from", "2026-11-23", "--to", "2026-11-24"]
    args += ["--config", str(_config(request, store, tmp_path))]
    with ThreadPoolExecutor(1) as pool:  # the CLI runs its own event loop
        as_json = pool.submit(CliRunner().invoke, app, [*args, "--json"]).result()
        table = pool.submit(CliRunner().invoke, app, args).result()
    assert as_json.exit_code == 0, as_json.output
    (day,) = json.loads(as_json.output)
    assert day["alarms"] == 2
    rows = {r["route"]: r for r in day["routes"]}
    # 50 min: within the urgent route's 2 h, late for the wellbeing route's 45 min.
    assert rows["urgent"]["target_min"] == 120
    assert (rows["urgent"]["within_target"], rows["urgent"]["pct_within_target"]) == (1, 100.0)
    assert rows["urgent"]["meets_goal"] is True
    assert (rows["wellbeing"]["target_min"], rows["wellbeing"]["within_target"]) == (45, 0)
    assert (rows["wellbeing"]["within_all"], rows["wellbeing"]["meets_goal"]) == (1, False)
    assert table.exit_code == 0, table.output
    assert "urgent" in table.output
    assert "wellbeing" in table.output


def test_report_refuses_an_empty_range(tmp_path: Path) -> None:
    args = ["report", "responses", "--from", "2026-11-24", "--to", "2026-11-23"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == ExitCode.INVALID
    assert "must be after" in result.output
