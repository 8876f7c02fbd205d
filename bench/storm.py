"""``python -m bench storm``: a regional outage, measured end to end on PostgreSQL.

``--devices`` pendants (default 10,000) in ``--areas`` areas heartbeat every 60 s, then
all fall silent at once. The time-driven rules run as the gateway's rule runner runs
them (``Pipeline.tick``), raising one missed-heartbeat alert per device; each is stored
and goes through the real dispatch service (intake queue, group dispatches). Meanwhile:

* a probe task sleeps 5 ms in a loop and records how late it wakes (the event-loop
  stall: nothing else, ingest included, can run for that long);
* a pendant press arrives through ``Pipeline.handle`` halfway through; its time to an
  open dispatch is reported;
* an inactivity alert is due in the same tick (another time rule); the time until it
  is stored is reported.

When the storm has settled, the dispatches are counted (the target is one group per
area), and the orphan sweeper is run three times (it must re-submit nothing).

Baseline in the same run: the same storm with the tick in one chunk (``tick_chunk`` =
the number of devices: no yielding), on a fresh schema. Ratio = baseline max stall /
chunked max stall.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime

import psycopg

from telecare.devices.codecs import json_v1
from telecare.devices.model import Alert, Device, DeviceKind, EventType, Resident, Site, SiteKind
from telecare.dispatch import DispatchService
from telecare.gateway.dispatching import dispatch_repository
from telecare.gateway.envelope import Envelope
from telecare.gateway.logging import configure_logging
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.sweeper import OrphanSweeper
from telecare.rules.alarms import alarm_id_for
from telecare.rules.clock import FakeClock
from telecare.rules.config import InactivityWindow, ResidentRules, RulesConfig
from telecare.rules.engine import RuleEngine

__all__ = ["main"]

PREFIX = "telecare/v1"
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@dataclass
class Figures:
    tick_s: float = 0.0
    settle_s: float = 0.0
    max_stall_ms: float = 0.0
    p99_stall_ms: float = 0.0
    press_s: float = 0.0
    inactivity_s: float = 0.0
    alerts: int = 0
    dispatches: int = 0
    resubmitted: int = 0


async def _probe(stalls: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.005)
        stalls.append(max(0.0, loop.time() - before - 0.005))


@contextlib.asynccontextmanager
async def _schema(dsn: str) -> AsyncIterator[PostgresStore]:
    schema = f"bench_storm_{uuid.uuid4().hex[:8]}"
    try:
        async with PostgresStore(dsn, schema=schema, max_size=8) as store:
            await store.migrate()
            yield store
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _provision(store: PostgresStore, devices: int, areas: int) -> list[Device]:
    for a in range(areas):
        await store.upsert_site(Site(f"site{a}", SiteKind.HOME, area=f"area{a}"))
    await store.upsert_resident(Resident("res-press", "site0"))
    await store.upsert_device(Device("press1", "site0", DeviceKind.PENDANT, "res-press"))
    out = [
        Device(f"p{i}", f"site{i % areas}", DeviceKind.PENDANT, heartbeat_interval_s=60)
        for i in range(devices)
    ]
    async with store.pool.connection() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO devices (device_id, site_id, kind, heartbeat_interval_s)"
            " VALUES (%s, %s, %s, %s)",
            [(d.device_id, d.site_id, d.kind.value, d.heartbeat_interval_s) for d in out],
        )
    return out


async def _storm(dsn: str, devices: int, areas: int, chunk: int) -> Figures:
    fig = Figures()
    async with _schema(dsn) as store:
        fleet = await _provision(store, devices, areas)
        clock = FakeClock(START)
        window = InactivityWindow(dtime(8, 0), dtime(9, 3))
        rules = RulesConfig(
            residents={
                "res-press": ResidentRules("res-press", "site0", inactivity_windows=(window,))
            }
        )
        engine = RuleEngine(rules, clock)
        engine.tick(START - timedelta(hours=2))  # watching the resident since 07:00
        for d in fleet:
            engine.watch_device(d, START)
        repo = dispatch_repository(store)
        async with DispatchService(repo, store, clock) as dispatcher:
            pipeline = Pipeline(
                store, clock, topic_prefix=PREFIX, dispatcher=dispatcher, engine=engine
            )
            pipeline.tick_chunk = chunk
            clock.advance(181)  # every device silent for more than 3 x 60 s
            stalls: list[float] = []
            stop = asyncio.Event()
            probe = asyncio.create_task(_probe(stalls, stop))
            started = time.perf_counter()

            async def press() -> None:
                await asyncio.sleep(0.2)  # halfway into the storm
                t0 = time.perf_counter()
                payload = json_v1.encode_event("press-1", clock.now(), EventType.PENDANT)
                env = Envelope("mqtt", f"{PREFIX}/site0/press1/event", payload, clock.now())
                await pipeline.handle(env)
                alert_id = alarm_id_for("press1", "press-1")
                await _until(lambda: _is_set(repo.load_for_alert(alert_id)), 0.005)
                fig.press_s = time.perf_counter() - t0

            async def inactivity() -> None:
                while True:
                    found = [
                        a
                        for a in await store.recent_alerts(20)
                        if a.event_type is EventType.INACTIVITY
                    ]
                    if found:
                        fig.inactivity_s = time.perf_counter() - started
                        return
                    await asyncio.sleep(0.01)

            watchers = [asyncio.create_task(press()), asyncio.create_task(inactivity())]
            await pipeline.tick()
            fig.tick_s = time.perf_counter() - started
            await asyncio.gather(*watchers)
            fig.alerts = pipeline.counters["alerts"]
            # settled: every missed-heartbeat alert belongs to a dispatch
            await _until(lambda: _is_empty(store.alerts_without_dispatch(limit=1)), 0.02)
            fig.settle_s = time.perf_counter() - started
            stop.set()
            await probe
            stalls.sort()
            fig.max_stall_ms = 1000 * stalls[-1]
            fig.p99_stall_ms = 1000 * stalls[int(0.99 * (len(stalls) - 1))]
            sweeper = OrphanSweeper(store, dispatcher, clock)
            for _ in range(3):
                clock.advance(30)
                fig.resubmitted += await sweeper.sweep()
            fig.dispatches = await store.count("dispatches")
    return fig


async def _until(check: Callable[[], Awaitable[bool]], interval: float) -> None:
    while True:
        if await check():
            return
        await asyncio.sleep(interval)


async def _is_set(found: Awaitable[object | None]) -> bool:
    return await found is not None


async def _is_empty(found: Awaitable[list[Alert]]) -> bool:
    return not await found


def _print(label: str, f: Figures, areas: int) -> None:
    print(
        f"  {label:<20} tick {f.tick_s:6.2f} s  settled {f.settle_s:6.2f} s"
        f"  loop stall max {f.max_stall_ms:7.1f} ms (p99 {f.p99_stall_ms:5.1f})"
        f"  press->dispatch {1000 * f.press_s:7.1f} ms  inactivity alert at {f.inactivity_s:5.2f} s"
    )
    print(
        f"  {'':<20} alerts {f.alerts:,}  dispatches {f.dispatches:,}"
        f" (pendant + inactivity + {f.dispatches - 2:,} groups for {areas} areas)"
        f"  sweeper re-submitted {f.resubmitted}"
    )


async def _run(args: argparse.Namespace) -> int:
    configure_logging("warning", "console")
    print(
        f"storm benchmark: {args.devices:,} devices in {args.areas} areas fall silent at once;"
        f" PostgreSQL; {args.rounds} round(s)"
    )
    base: list[Figures] = []
    chunked: list[Figures] = []
    for _ in range(args.rounds):
        base.append(await _storm(args.dsn, args.devices, args.areas, chunk=args.devices))
        _print("one chunk (baseline)", base[-1], args.areas)
        chunked.append(await _storm(args.dsn, args.devices, args.areas, chunk=args.chunk))
        _print(f"chunks of {args.chunk}", chunked[-1], args.areas)
    b = statistics.median(f.max_stall_ms for f in base)
    c = statistics.median(f.max_stall_ms for f in chunked)
    print(f"median max loop stall: baseline {b:.1f} ms, chunked {c:.1f} ms, ratio {b / c:.1f} x")
    bad = [f for f in chunked if f.resubmitted or f.dispatches != args.areas + 2]
    if bad:
        print("FAILED: the storm did not end as one group dispatch per area")
        return 1
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench storm", description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--areas", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    return asyncio.run(_run(parser.parse_args(argv)))
