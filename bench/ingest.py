"""``python -m bench ingest``: MQTT ingest throughput against a bare receive loop.

Both sides drain the same backlog from the same private Mosquitto (started here with
``max_inflight_messages`` and ``max_queued_messages`` raised): a persistent session is
created, N messages are published and queued for it, then the receiver connects and the
clock runs until the last one is done.

* **baseline**: a bare aiomqtt loop that only receives (automatic PUBACK).
* **gateway**: the real :class:`~gateway.app.Gateway` (MQTT ingest, provisioning checks,
  decode, rules, the batching durable store, the dispatch service), with manual PUBACK
  after each message is stored; done when every message is acknowledged.

Run for single readings (one message = SpO2 + pulse) and hub batches (one message =
``--batch`` child readings). Each side runs ``--rounds`` times, alternating (the machine
is small and noisy); the best run of each side is compared. Prints messages/s for both,
the ratio (target >= 0.7) and each round's ratio, and the gateway's CPU time (this
process, every thread) while it drained: messages per CPU second move much less than
wall-clock rates when other work shares the machine.

    python -m bench ingest [--store sqlite|postgres] [--dsn ...] [--rounds 3]
                           [--messages 6000] [--batches 1500] [--batch 20] [--devices 200]
                           [--against TREE] [--emit FILE]

``--against TREE``: the same benchmark on another tree (the code before a change) and on
this checkout, alternating, one round at a time (``bench/_against.py``). ``--emit FILE``:
also write the figures as JSON (what ``--against`` reads).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

from telecare.devices.codecs import json_v1
from telecare.devices.model import Device, DeviceKind, Resident, Site, SiteKind
from telecare.gateway.app import Gateway, open_store
from telecare.gateway.config import Config, MqttConfig, RulesSection, StoreConfig
from telecare.gateway.logging import configure_logging
from telecare.gateway.store.base import Store

__all__ = ["main"]

TARGET_RATIO = 0.7


# --------------------------------------------------------------------------- broker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_broker() -> Iterator[int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    tmp = Path(tempfile.mkdtemp(prefix="telecare-bench-mqtt-"))
    port = _free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        "max_inflight_messages 1000\nmax_queued_messages 1000000\nmax_queued_bytes 0\n"
        "log_dest none\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)])
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Workload:
    name: str
    messages: list[tuple[str, bytes]]
    readings: int


def _ts() -> str:
    return datetime.now(UTC).isoformat()


def single_readings(prefix: str, n: int, devices: int) -> Workload:
    now = datetime.now(UTC)
    msgs = []
    for i in range(n):
        dev = f"d{i % devices}"
        payload = json_v1.encode_readings(
            f"m{i}", now, [("spo2", 90 + i % 10, "%"), ("pulse", 60 + i % 40, "/min")]
        )
        msgs.append((f"{prefix}/s1/{dev}/reading", payload))
    return Workload("single readings", msgs, 2 * n)


def hub_batches(prefix: str, n: int, size: int, devices: int) -> Workload:
    msgs = []
    hubs = max(1, devices // 2)
    for i in range(n):
        hub = i % hubs
        # A hub forwards only for the devices registered to it (see ``provision``).
        children = range(hub, devices, hubs)
        items: list[dict[str, Any]] = [
            {
                "device_id": f"d{children[(i * size + j) % len(children)]}",
                "channel": "reading",
                "msg_id": f"b{i}-{j}",
                "ts": _ts(),
                "readings": [{"metric": "spo2", "value": 90 + j % 10, "unit": "%"}],
            }
            for j in range(size)
        ]
        msgs.append((f"{prefix}/s1/h{hub}/batch", json_v1.encode_batch(f"b{i}", items)))
    return Workload(f"hub batches of {size}", msgs, n * size)


async def provision(store: Store, devices: int, hubs: int) -> None:
    """Residents r<i> with oximeters d<i>, each registered to hub h<i mod hubs>."""
    await store.upsert_site(Site("s1", SiteKind.CARE_HOME))
    for h in range(hubs):
        await store.upsert_device(Device(f"h{h}", "s1", DeviceKind.HUB))
    for r in range(devices):
        await store.upsert_resident(Resident(f"r{r}", "s1"))
        await store.upsert_device(
            Device(f"d{r}", "s1", DeviceKind.OXIMETER, f"r{r}", hub_id=f"h{r % hubs}")
        )


async def enqueue(port: int, client_id: str, subscription: str, work: Workload) -> None:
    """Create the persistent session, then publish the backlog it will drain."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False) as c:
        await c.subscribe(subscription, qos=1)
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=1000) as pub:
        for i in range(0, len(work.messages), 500):
            chunk = work.messages[i : i + 500]
            await asyncio.gather(*(pub.publish(t, p, qos=1) for t, p in chunk))


# --------------------------------------------------------------------------- receivers


async def bare_receive(port: int, subscription: str, work: Workload) -> float:
    client_id = f"bare-{uuid.uuid4().hex[:8]}"
    await enqueue(port, client_id, subscription, work)
    n = len(work.messages)
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=client_id, clean_session=False
    ) as client:
        start = time.perf_counter()
        got = 0
        async for _ in client.messages:
            got += 1
            if got == n:
                break
        return time.perf_counter() - start


async def gateway_receive(
    port: int, prefix: str, work: Workload, args: argparse.Namespace, tmp: Path
) -> tuple[float, float, Counter[str]]:
    """The real :class:`~gateway.app.Gateway` (durable store, rules, dispatch service),
    timed from connect until every queued message has been stored and acknowledged:
    the wall time and this process's CPU time (every thread: SQLite's too)."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    run_dir = tmp / client_id
    config = Config(
        mqtt=MqttConfig(port=port, client_id=client_id, topic_prefix=prefix, max_inflight=1000),
        store=StoreConfig(
            backend=args.store,
            dsn=args.dsn,
            schema=schema,
            timescale=False,
            sqlite_path=str(run_dir / "bench.sqlite3"),
            spool_dir=str(run_dir / "spool"),
        ),
        rules=RulesSection(state_file=str(run_dir / "rules-state.json"), tick_s=3600),
    )
    try:
        async with open_store(config) as store:
            await store.migrate()
            await provision(store, args.devices, max(1, args.devices // 2))
        await enqueue(port, client_id, f"{prefix}/+/+/+", work)
        n = len(work.messages)
        async with Gateway(config) as gw:
            await gw.mqtt.connected.wait()
            start, cpu_start = time.perf_counter(), time.process_time()
            while gw.mqtt.acked < n:  # noqa: ASYNC110 - polling a counter, 2 ms resolution
                await asyncio.sleep(0.002)
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            counters = Counter(gw.pipeline.counters)
    finally:
        if args.store == "postgres":
            import psycopg

            async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as c:
                await c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return elapsed, cpu, counters


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, figures: dict[str, float]) -> bool:
    ok = True
    with private_broker() as port, tempfile.TemporaryDirectory() as tmpdir:
        for kind in ("single", "batch"):
            bare_times: list[float] = []
            gw_times: list[float] = []
            gw_cpu: list[float] = []
            ratios: list[float] = []
            bad = 0
            for _ in range(args.rounds):
                prefix = f"bench-{uuid.uuid4().hex[:6]}/telecare/v1"
                work = (
                    single_readings(prefix, args.messages, args.devices)
                    if kind == "single"
                    else hub_batches(prefix, args.batches, args.batch, args.devices)
                )
                base = await bare_receive(port, f"{prefix}/+/+/+", work)
                gw, cpu, counters = await gateway_receive(port, prefix, work, args, Path(tmpdir))
                gw_cpu.append(cpu)
                bad += counters["dead_letters"]
                bare_times.append(base)
                gw_times.append(gw)
                ratios.append(base / gw)
            n = len(work.messages)
            base, gw = min(bare_times), min(gw_times)
            ratio = base / gw
            ok &= ratio >= TARGET_RATIO and bad == 0
            figures[f"{work.name}: gateway msg/s"] = n / gw
            figures[f"{work.name}: bare msg/s"] = n / base
            figures[f"{work.name}: gateway/bare"] = ratio
            figures[f"{work.name}: gateway msg per CPU s"] = n / min(gw_cpu)
            print(
                f"{work.name:>22}: gateway {n / gw:9.0f} msg/s ({work.readings / gw:9.0f}"
                f" readings/s, {n} msgs in {gw:.2f}s) | bare receive {n / base:9.0f} msg/s"
                f" | ratio {ratio:.2f} (target >= {TARGET_RATIO}; best of {args.rounds},"
                f" per round {' '.join(f'{r:.2f}' for r in ratios)})"
                f" | gateway CPU {min(gw_cpu):.2f}s ({n / min(gw_cpu):.0f} msg per CPU s)"
                + (f" | {bad} DEAD LETTERS" if bad else "")
            )
    return ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("TELECARE_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--batches", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of each side; the best of each is compared"
    )
    parser.add_argument("--against", metavar="TREE", help="compare with the code in TREE")
    parser.add_argument("--emit", metavar="FILE", help="write the figures as JSON to FILE")
    args = parser.parse_args(argv)
    if args.against:
        from bench._against import side_by_side, strip_option

        rest = strip_option(argv, "--against")
        return side_by_side(__file__, args.against, rest, args.rounds)
    print(
        f"ingest benchmark: the gateway on {args.store} (durable store, rules, dispatch),"
        " private mosquitto (max_inflight_messages 1000)"
    )
    configure_logging("error", "console")
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    figures: dict[str, float] = {}
    ok = asyncio.run(run(args, figures))
    if args.emit:
        Path(args.emit).write_text(json.dumps(figures))
    return 0 if ok else 1
