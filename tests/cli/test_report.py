"""``telecare report response-times`` through Typer's runner: the figures come from the
stored audit trail through ``dispatch.reports.response_report``, per site on request."""

from __future__ import annotations

import asyncio
import json

from telecare.devices.model import EventType
from telecare.dispatch.reports import build_report
from telecare.dispatch.service import DispatchService
from telecare.gateway.dispatching import dispatch_repository
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.clock import FakeClock
from tests.cli.conftest import Cli
from tests.dispatch.conftest import NOW, directory, make_alert, seed


def _history(cli: Cli) -> None:
    """Two alarms at s1 (answered in 45 s and 145 s; one visit on scene in 30 min) and
    one at s2 never answered."""

    async def run() -> None:
        async with SqliteStore(cli.db) as store:
            await store.migrate()
            await seed(store)
            clock = FakeClock(NOW)
            repo = dispatch_repository(store)
            service = DispatchService(repo, store, clock, directory=directory())
            quick, slow = make_alert(EventType.PENDANT), make_alert(EventType.FALL)
            other = make_alert(EventType.PENDANT, site_id="s2", resident_id="res2")
            for alert in (quick, slow, other):
                await store.write_alerts([alert])
            d1 = (await service.open(quick)).dispatch_id
            d2 = (await service.open(slow)).dispatch_id
            await service.open(other)
            clock.advance(45)
            await service.acknowledge(d1, "op1")
            clock.advance(100)
            await service.acknowledge(d2, "op1")
            await service.contact(d2, "op1")
            await service.accept(d2, "kh1")
            clock.advance(minutes=30)
            await service.on_scene(d2, "kh1")

    asyncio.run(run())


def test_response_times_for_all_sites_and_one_site(cli: Cli) -> None:
    _history(cli)
    window = ("--since", NOW.isoformat(), "--until", (NOW.replace(hour=23)).isoformat())
    everything = cli.json("report", "response-times", *window)
    (day,) = everything["periods"]
    assert (day["alarms"], day["pct_answered_60s"], day["pct_answered_180s"]) == (3, 33.33, 66.67)

    async def expected() -> dict[str, object]:
        async with SqliteStore(cli.db) as store:
            (p,) = await build_report(dispatch_repository(store), NOW, NOW.replace(hour=23))
            return {"alarms": p.alarms, "pct_answered_180s": p.pct_answered_180s}

    want = asyncio.run(expected())  # the one implementation, read directly
    assert {k: day[k] for k in want} == want
    (s1,) = cli.json("report", "response-times", *window, "--site", "s1")["periods"]
    assert (s1["alarms"], s1["pct_answered_60s"], s1["pct_answered_180s"]) == (2, 50.0, 100.0)
    assert sum(r["done"] for r in s1["routes"]) == 1  # the one visit, on scene
    table = cli("report", "response-times", *window, "--site", "s1")
    assert "100.00 %" in table
    cli("report", "response-times", *window, "--site", "nowhere", code=3)
    cli("report", "response-times", "--since", "yesterday-ish", code=1)
    assert json.loads(cli("report", "response-times", "--since", "7d", "--json"))["site"] is None
