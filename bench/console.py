"""``python -m bench console``: alarm publish -> visible on the live console, with 20 SSE
clients connected while ``bench ingest``-style load runs; ingest with and without them.

Each phase runs a fresh :class:`~telecare.gateway.app.Gateway` (SQLite or PostgreSQL
store, rules, dispatch service, the web face and the console's live hub, as ``telecare
run`` has them) on a private Mosquitto, and three processes of its own, so the clients'
and the load's own CPU does not count against the gateway:

* **alarms** (``--role alarms``): logs in as an operator, opens ``--clients`` clients
  that behave as the console's queue page does (0 in the baseline phase): each reads a
  ``/console/live?scope=queue`` SSE stream, on which the gateway pushes the rendered
  queue after each change, and fetches ``/console/queue`` itself only when no queue was
  pushed within 2 s of a change (as ``console.js``). It then
  publishes a pendant press every ``--interval`` s, each from another pendant (a repeat
  press would fold into the open alarm and raise nothing new). Latency = the time a
  client's queue (pushed or fetched) first holds the press's row minus the publish,
  on one clock (same process); one sample per (alarm, client): what the operator sees,
  short of the browser painting the HTML it was given. The arrival of the ``alert``
  event on the stream is reported too (the SSE leg alone).
* **load** (``--role load``): publishes ``--messages`` single-reading messages (SpO2 +
  pulse) from 200 oximeters as fast as the broker takes them (QoS 1, 1000 in flight), a
  backlog the gateway drains as in ``bench ingest``; or, with ``--load-rate R``, at a
  steady R messages/s (a busy centre the gateway keeps up with).
* the orchestrator: the gateway; ingest rate = load messages / (first load reading
  stored .. last load reading stored).

Phases alternate (without clients, with clients) for ``--rounds``; the best ingest rate
of each side is compared (the machine is small and shared). Targets: p99 <= 1 s;
ingest with clients >= 0.9 of without.

    python -m bench console [--store sqlite|postgres] [--dsn ...] [--clients 20]
                            [--messages 6000] [--interval 0.2] [--rounds 2]
                            [--load-rate 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from bench.ingest import private_broker, single_readings
from telecare.devices.codecs import json_v1
from telecare.devices.model import Device, DeviceKind, EventType, Resident, Site, SiteKind
from telecare.gateway.app import Gateway, open_store
from telecare.gateway.config import Config, MqttConfig, RulesSection, StoreConfig, WebConfig
from telecare.gateway.logging import configure_logging
from telecare.gateway.store.accounts import Accounts, Role
from telecare.gateway.store.base import Store
from telecare.gateway.web.auth import hash_password
from telecare.rules.alarms import alarm_id_for

__all__ = ["main"]

TARGET_P99_S = 1.0
TARGET_RATIO = 0.9
LIVE_PATH = "/console/live"
OPERATOR = "bench-operator"
PASSWORD = "bench operator passphrase"
ROOT = Path(__file__).resolve().parents[1]
OXIMETERS = 200
PENDANTS = 400


# --------------------------------------------------------------------------- alarms role


@dataclass
class _Stream:
    #: alert id -> when its ``alert`` event arrived on this stream (perf_counter).
    seen: dict[str, float]
    #: alert id -> when this client's re-fetched queue first showed the alarm's row.
    visible: dict[str, float]
    ready: asyncio.Event
    #: resident id -> when the ``dispatch`` event of its alarm's dispatch arrived.
    dispatched: dict[str, float]
    #: How long each ``/console/queue`` request took (s).
    fetches: list[float]
    #: Queues pushed to this client; when the last push and the last change arrived.
    pushes: int = 0
    pushed_at: float = 0.0
    changed_at: float = 0.0


#: Event kinds on which the page re-fetches the queue (``console.js`` QUEUE_KINDS).
QUEUE_KINDS = frozenset({"alert", "dispatch", "console", "cleared", "restored", "folded", "reset"})
#: The page fetches the queue itself when none was pushed this long after a change.
FALLBACK_S = 2.0


async def _read_stream(
    client: httpx.AsyncClient, stream: _Stream, dirty: asyncio.Event, rows: dict[str, str]
) -> None:
    """Read one SSE stream as the queue page does (``?scope=queue``): note when each
    ``alert`` event arrives, when a pushed ``queue`` first shows an alarm's row (the
    row is on the screen), and mark the queue dirty for the page's fetch fallback."""
    url = f"{LIVE_PATH}?scope=queue"
    async with client.stream("GET", url, headers={"accept": "text/event-stream"}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{LIVE_PATH} answered {r.status_code}: is the console there?")
        event, data = "", []
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                stream.ready.set()
            elif line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            elif not line and event:
                _on_event(stream, event, "\n".join(data), dirty, rows)
                event, data = "", []


def _on_event(
    stream: _Stream, event: str, data: str, dirty: asyncio.Event, rows: dict[str, str]
) -> None:
    now = time.perf_counter()
    if event in ("queue", "just_in"):
        stream.pushes += 1
        stream.pushed_at = now
        _mark_visible(stream, data, now, rows)
        return
    if event not in QUEUE_KINDS:
        return
    stream.changed_at = now
    dirty.set()
    doc = json.loads(data)
    if event == "alert" and doc.get("alert_id") is not None:
        stream.seen.setdefault(doc["alert_id"], now)
    elif event == "dispatch" and doc.get("state") == "raised":
        resident = doc.get("resident_id")
        if resident is not None:
            stream.dispatched.setdefault(resident, now)


def _mark_visible(stream: _Stream, html: str, now: float, rows: dict[str, str]) -> None:
    for alert_id, marker in list(rows.items()):
        if alert_id not in stream.visible and marker in html:
            stream.visible[alert_id] = now


async def _refresh_queue(
    client: httpx.AsyncClient, stream: _Stream, dirty: asyncio.Event, rows: dict[str, str]
) -> None:
    """The page's fallback (``console.js``): when no queue was pushed within 2 s of a
    change, fetch ``/console/queue``. ``rows``: alert id -> the resident cell that marks
    its row in the fragment."""
    while True:
        await dirty.wait()
        dirty.clear()
        changed = stream.changed_at
        await asyncio.sleep(FALLBACK_S)
        if stream.pushed_at >= changed:
            continue
        asked = time.perf_counter()
        r = await client.get("/console/queue", headers={"accept": "text/html"})
        r.raise_for_status()
        now = time.perf_counter()
        stream.fetches.append(now - asked)
        _mark_visible(stream, r.text, now, rows)


async def _alarms(args: argparse.Namespace) -> dict[str, Any]:
    streams = [_Stream({}, {}, asyncio.Event(), {}, []) for _ in range(args.clients)]
    published: dict[str, float] = {}
    rows: dict[str, str] = {}  # alert id -> its row's resident cell in the queue fragment
    async with contextlib.AsyncExitStack() as stack:
        tasks: list[asyncio.Task[None]] = []
        if args.clients:
            # One login (argon2 is slow on purpose), its session shared by every stream.
            async with httpx.AsyncClient(base_url=args.url, timeout=60) as login:
                r = await login.post(
                    "/api/v1/session", json={"username": OPERATOR, "password": PASSWORD}
                )
                r.raise_for_status()
                cookies = login.cookies
            for stream in streams:
                client = await stack.enter_async_context(
                    httpx.AsyncClient(base_url=args.url, timeout=None, cookies=cookies)
                )
                dirty = asyncio.Event()
                tasks.append(asyncio.create_task(_read_stream(client, stream, dirty, rows)))
                tasks.append(asyncio.create_task(_refresh_queue(client, stream, dirty, rows)))
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in streams)), 120)
        mqtt = await stack.enter_async_context(aiomqtt.Client("127.0.0.1", args.port))
        # The orchestrator writes "go" when the load starts and closes stdin when it ends.
        stdin = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        print("ready", flush=True)
        await stdin.readline()
        stop = asyncio.Event()
        eof = asyncio.create_task(stdin.read())
        eof.add_done_callback(lambda _: stop.set())
        n = 0
        while not stop.is_set() and n < PENDANTS:
            device, msg_id = f"p{n}", f"press-{n}"
            payload = json_v1.encode_event(msg_id, datetime.now(UTC), EventType.PENDANT)
            alert_id = alarm_id_for(device, msg_id)
            rows[alert_id] = f"<strong>pr{n}</strong>"  # the row shows its resident
            published[alert_id] = time.perf_counter()
            await mqtt.publish(f"{args.prefix}/s1/{device}/event", payload, qos=1)
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.interval)
        await eof
        deadline = time.perf_counter() + 5  # stragglers
        while streams and time.perf_counter() < deadline:
            if all(len(s.visible) >= len(published) for s in streams):
                break
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [s.visible[a] - t for s in streams for a, t in published.items() if a in s.visible]
    events = [s.seen[a] - t for s in streams for a, t in published.items() if a in s.seen]
    resident_of = {a: marker[8:-9] for a, marker in rows.items()}  # <strong>prN</strong>
    dispatched = [
        s.dispatched[resident_of[a]] - t
        for s in streams
        for a, t in published.items()
        if resident_of[a] in s.dispatched
    ]
    fetches = [x for s in streams for x in s.fetches]
    pushes = sum(s.pushes for s in streams)
    # Fan-out: for each alarm, last client's arrival minus the first's (the SSE leg's own
    # cost of many clients, apart from the time the alarm spent in ingest).
    spread = []
    for a in published:
        times = [s.seen[a] for s in streams if a in s.seen]
        if len(times) > 1:
            spread.append(max(times) - min(times))
    return {
        "client_cpu_s": time.process_time(),
        "alarms": len(published),
        "clients": args.clients,
        "latencies": latencies,
        "events": events,
        "dispatched": dispatched,
        "fetches": fetches,
        "pushes": pushes,
        "spread": spread,
        "missing": len(published) * args.clients - len(latencies),
    }


# --------------------------------------------------------------------------- load role


async def _load(args: argparse.Namespace) -> None:
    """Publish the load: as fast as the broker takes it (``--load-rate 0``, a backlog the
    gateway drains, as ``bench ingest``), or at a steady ``--load-rate`` messages/s."""
    work = single_readings(args.prefix, args.messages, OXIMETERS)
    step = 500 if args.load_rate <= 0 else max(1, round(args.load_rate / 20))
    async with aiomqtt.Client("127.0.0.1", args.port, max_inflight_messages=1000) as pub:
        start = time.perf_counter()
        for i in range(0, len(work.messages), step):
            chunk = work.messages[i : i + step]
            await asyncio.gather(*(pub.publish(t, p, qos=1) for t, p in chunk))
            if args.load_rate > 0:
                due = start + (i + step) / args.load_rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))


# --------------------------------------------------------------------------- orchestrator


async def _provision(store: Store) -> None:
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    for h in range(OXIMETERS // 2):
        await store.upsert_device(Device(f"h{h}", "s1", DeviceKind.HUB))
    for r in range(OXIMETERS):
        await store.upsert_resident(Resident(f"r{r}", "s1"))
        await store.upsert_device(
            Device(f"d{r}", "s1", DeviceKind.OXIMETER, f"r{r}", hub_id=f"h{r % (OXIMETERS // 2)}")
        )
    for p in range(PENDANTS):
        await store.upsert_resident(Resident(f"pr{p}", "s1"))
        await store.upsert_device(Device(f"p{p}", "s1", DeviceKind.PENDANT, f"pr{p}"))
    digest = await asyncio.to_thread(hash_password, PASSWORD)
    await Accounts(store.sql).add_user(
        OPERATOR, "Bench operator", Role.OPERATOR, digest, datetime.now(UTC)
    )


def _role(role: str, args: argparse.Namespace, **extra: object) -> list[str]:
    argv = [sys.executable, "-m", "bench", "console", "--role", role]
    argv += ["--port", str(args.port), "--prefix", args.prefix, "--messages", str(args.messages)]
    argv += ["--interval", str(args.interval), "--load-rate", str(args.load_rate)]
    for key, value in extra.items():
        argv += [f"--{key}", str(value)]
    return argv


@dataclass
class Phase:
    clients: int
    rate: float
    seconds: float
    result: dict[str, Any]
    #: CPU seconds of the gateway's process while the load drained.
    gateway_cpu_s: float = 0.0
    #: How long the console took to render each queue it pushed (s).
    renders: list[float] = field(default_factory=list)


async def _phase(args: argparse.Namespace, clients: int, tmp: Path) -> Phase:
    run = uuid.uuid4().hex[:8]
    args.prefix = f"bench-{run}/telecare/v1"
    schema = f"bench_{run}"
    config = Config(
        mqtt=MqttConfig(
            port=args.port, client_id=f"gw-{run}", topic_prefix=args.prefix, max_inflight=1000
        ),
        store=StoreConfig(
            backend=args.store,
            dsn=args.dsn,
            schema=schema,
            timescale=False,
            sqlite_path=str(tmp / run / "bench.sqlite3"),
            spool_dir=str(tmp / run / "spool"),
        ),
        rules=RulesSection(state_file=str(tmp / run / "rules-state.json"), tick_s=3600),
        web=WebConfig(enabled=True, host="127.0.0.1", port=0, secure_cookies=False),
    )
    try:
        async with open_store(config) as store:
            await store.migrate()
            await _provision(store)
        async with Gateway(config) as gw:
            await gw.mqtt.connected.wait()
            assert gw.web is not None
            alarms = await asyncio.create_subprocess_exec(
                *_role("alarms", args, url=gw.web.url, clients=clients),
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert alarms.stdout is not None
            assert alarms.stdin is not None
            try:
                line = await asyncio.wait_for(alarms.stdout.readline(), 180)
            except TimeoutError:
                alarms.kill()
                await alarms.wait()
                raise
            if line.strip() != b"ready":
                raise RuntimeError(f"the alarm process did not start ({line!r})")
            alarms.stdin.write(b"go\n")
            await alarms.stdin.drain()
            cpu = time.process_time()
            rate, seconds = await _ingest(args, gw)
            cpu = time.process_time() - cpu
            renders = list(gw.console.push_seconds) if gw.console is not None else []
            alarms.stdin.close()
            out, _ = await asyncio.wait_for(alarms.communicate(), 60)
            result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        if args.store == "postgres":
            import psycopg

            async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as c:
                await c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return Phase(clients, rate, seconds, result, cpu, renders)


async def _ingest(args: argparse.Namespace, gw: Gateway) -> tuple[float, float]:
    """Run the load process; its messages per second from its first to its last reading
    stored (2 readings a message)."""
    counters = gw.pipeline.counters
    before = counters["readings"]
    target = before + 2 * args.messages
    load = await asyncio.create_subprocess_exec(*_role("load", args), cwd=ROOT)
    while counters["readings"] == before:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.002)
    start = time.perf_counter()
    while counters["readings"] < target:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.002)
    seconds = time.perf_counter() - start
    await load.wait()
    return args.messages / seconds, seconds


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _orchestrate(args: argparse.Namespace) -> bool:
    phases: list[Phase] = []
    with private_broker() as port, tempfile.TemporaryDirectory() as tmpdir:
        args.port = port
        for n in range(args.rounds):
            order = (0, args.clients) if n % 2 == 0 else (args.clients, 0)
            for clients in order:
                phase = await _phase(args, clients, Path(tmpdir))
                phases.append(phase)
                print(
                    f"  round {n + 1}: {clients:2d} SSE clients: ingest {phase.rate:7.0f} msg/s"
                    f" ({args.messages} msgs in {phase.seconds:.2f}s),"
                    f" {phase.result['alarms']} alarms, gateway CPU {phase.gateway_cpu_s:.2f} s,"
                    f" clients' process CPU {phase.result['client_cpu_s']:.2f} s"
                    + (
                        f", p50 {statistics.median(phase.result['latencies']) * 1000:.0f} ms"
                        f" p99 {_pct(phase.result['latencies'], 0.99) * 1000:.0f} ms"
                        if phase.result["latencies"]
                        else ""
                    ),
                    flush=True,
                )
    with_clients = [p for p in phases if p.clients]
    latencies = [x for p in with_clients for x in p.result["latencies"]]
    events = [x for p in with_clients for x in p.result["events"]]
    dispatched = [x for p in with_clients for x in p.result["dispatched"]]
    fetches = [x for p in with_clients for x in p.result["fetches"]]
    missing = sum(p.result["missing"] for p in with_clients)
    samples = sum(p.result["alarms"] * p.clients for p in with_clients)
    base = max(p.rate for p in phases if not p.clients)
    loaded = max(p.rate for p in with_clients)
    ratio = loaded / base
    spread = [x for p in with_clients for x in p.result["spread"]]
    p50, p99 = statistics.median(latencies), _pct(latencies, 0.99)
    print(
        f"alarm -> row in the client's queue, {args.clients} clients, under ingest load:"
        f" p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        f" ({len(latencies)} of {samples} samples; {missing} missing) | target p99 <= 1 s"
    )
    if events:
        print(
            f"  of which alarm -> {LIVE_PATH} event: p50"
            f" {statistics.median(events) * 1000:.0f} ms, p99 {_pct(events, 0.99) * 1000:.0f} ms"
        )
    if dispatched:
        print(
            f"  of which alarm -> its dispatch's event: p50"
            f" {statistics.median(dispatched) * 1000:.0f} ms,"
            f" p99 {_pct(dispatched, 0.99) * 1000:.0f} ms"
        )
    pushes = sum(p.result["pushes"] for p in with_clients)
    renders = [x for p in with_clients for x in p.renders]
    print(f"  queues pushed to the clients: {pushes}; fallback fetches: {len(fetches)}")
    if renders:
        print(
            f"  queue renderings for the pushes ({len(renders)}): p50"
            f" {statistics.median(renders) * 1000:.0f} ms, p99 {_pct(renders, 0.99) * 1000:.0f} ms"
        )
    if fetches:
        print(
            f"  /console/queue requests ({len(fetches)}): p50"
            f" {statistics.median(fetches) * 1000:.0f} ms, p99 {_pct(fetches, 0.99) * 1000:.0f} ms"
        )
    if spread:
        print(
            f"fan-out (last client - first client, per alarm): p50"
            f" {statistics.median(spread) * 1000:.0f} ms, p99 {_pct(spread, 0.99) * 1000:.0f} ms"
        )
    print(
        f"ingest: {base:.0f} msg/s without clients, {loaded:.0f} msg/s with {args.clients}"
        f" | ratio {ratio:.2f} (target >= {TARGET_RATIO}; best of {args.rounds} each)"
    )
    return p99 <= TARGET_P99_S and ratio >= TARGET_RATIO and missing == 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench console", description=__doc__)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("TELECARE_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between alarms")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--load-rate",
        type=float,
        default=0,
        help="load messages/s (0: all at once, a backlog the gateway drains)",
    )
    parser.add_argument("--role", choices=("alarms", "load"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    if args.role == "alarms":
        print(json.dumps(asyncio.run(_alarms(args))), flush=True)
        return 0
    if args.role == "load":
        asyncio.run(_load(args))
        return 0
    configure_logging("error", "console")
    print(
        f"console benchmark: gateway on {args.store} with the web face and live console,"
        f" {args.clients} SSE clients, {args.messages} load messages"
        f" ({f'{args.load_rate:g}/s' if args.load_rate > 0 else 'all at once'}), an alarm every"
        f" {args.interval} s; alarms, load and clients in their own processes"
    )
    return 0 if asyncio.run(_orchestrate(args)) else 1
