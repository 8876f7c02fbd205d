"""``python -m bench receivers``: IP alarm receivers against a bare parse-and-ACK loop.

For each protocol (DC-09 over TCP, SCAIP over UDP: bench/_scaip.py), in the same run:

* **bare**: a loop that only parses each frame (framing, CRC, data, Contact ID) and
  sends the ACK, storing nothing;
* **gateway**: the real :class:`~gateway.app.Gateway` with the receiver on: decode,
  account mapping, pipeline, rules, the durable store, the dispatch service; the ACK
  goes out once the event is stored.

The simulated units run in a **separate process** (so they do not share the receiver's
event loop), each on its own TCP connection, and send exactly what a unit sends: the next
frame only after the previous one's ACK. Two phases per side:

1. **saturation**: every unit sends as fast as ACKs come back -> alarms/s (target: the
   gateway >= 0.5 of bare);
2. **paced**: ``--rate`` alarms/s arrive on a fixed schedule (open loop) for
   ``--seconds`` -> latency from the frame's scheduled send time to its ACK, p50 and p99
   (target: p99 <= 50 ms at 500 alarms/s). A frame that has to wait for its unit's
   previous ACK counts that wait: nothing is hidden by coordinated omission.

Each side also gets its CPU time per alarm (user + system, all threads of this
process, from ``getrusage``; the units, Mosquitto and the database server excluded) and
the CPU ratio bare / gateway, which unlike the wall-clock ratio hardly moves with the
other load on a shared machine.

Each unit's first alarm raises an alert and a dispatch; its later presses fold into that
open alarm (the rules' fold window), as repeated presses do. Logging is at ``warning``.

    python -m bench receivers [--store sqlite|postgres] [--dsn ...] [--units 100]
                              [--alarms 4000] [--rate 500] [--seconds 10]
                              [--protocol all|dc-09|scaip] [--rounds 1]

With ``--rounds N`` each protocol runs N rounds; in every other round the gateway goes
first, and the targets are judged on the median of the rounds. Every line carries the
1-minute load average (the machine may be shared: compare ratios within one run).

Adding a protocol: write a child-process driver like :func:`_dc09_units`, a bare server
like :func:`_dc09_bare`, the gateway config and provisioning for it (SCAIP's are in
bench/_scaip.py), and add a :class:`Protocol` entry to :data:`PROTOCOLS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import _scaip
from bench._pg_roles import store_section
from telecare.devices.codecs import Incomplete, Malformed, dc09
from telecare.devices.model import Device, DeviceKind, ReceiverAccount, ReceiverKind, Site, SiteKind
from telecare.gateway.app import Gateway, open_store, prepare_store
from telecare.gateway.config import (
    Config,
    Dc09Config,
    MqttConfig,
    ReceiversSection,
    RulesSection,
)
from telecare.gateway.logging import configure_logging

__all__ = ["main"]

TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0


# --------------------------------------------------------------------------- results


@dataclass
class Run:
    """What the units saw in one phase."""

    acked: int = 0
    other: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds
    cpu: float = 0.0  # seconds of this (the server's) process's CPU, all threads

    @property
    def rate(self) -> float:
        return self.acked / self.elapsed if self.elapsed else 0.0

    @property
    def cpu_ms(self) -> float:
        """The server process's CPU per ACKed alarm, in ms."""
        return 1000 * self.cpu / self.acked if self.acked else float("nan")

    def pct(self, q: float) -> float:
        """Latency percentile in ms."""
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return 1000 * xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


# --------------------------------------------------------------------------- DC-09 units


def _dc09_units(port: int, accounts: list[str], total: int, rate: float | None, out: Any) -> None:
    """Child process: one TCP connection per account; ``total`` alarms spread over the
    units, paced at ``rate``/s (``None``: as fast as ACKs come back)."""
    try:
        out.put(asyncio.run(_dc09_drive(port, accounts, total, rate)))
    except BaseException as exc:
        out.put({"error": repr(exc)})
        raise


async def _dc09_drive(
    port: int, accounts: list[str], total: int, rate: float | None
) -> dict[str, Any]:
    from telecare.firmware_stubs.dc09_unit import Dc09Unit

    units = [Dc09Unit(a) for a in accounts]
    n = len(units)
    queues: list[asyncio.Queue[float]] = [asyncio.Queue() for _ in units]
    run = Run()
    start = time.perf_counter()

    async def unit_loop(i: int, count: int) -> None:
        unit = units[i]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(count):
                scheduled = await queues[i].get() if rate else time.perf_counter()
                msg = unit.adm_cid(1, 101, zone=1)
                writer.write(unit.frame(msg))
                raw = await reader.readuntil(b"\r")
                now = time.perf_counter()
                token = raw[10:13].decode()
                if token == "ACK":
                    run.acked += 1
                    run.latencies.append(now - scheduled)
                else:
                    run.other[token] = run.other.get(token, 0) + 1
        finally:
            writer.close()

    async def pace() -> None:
        assert rate is not None
        t0 = time.perf_counter()
        for k in range(total):
            due = t0 + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queues[k % n].put_nowait(due)

    counts = [total // n + (1 if i < total % n else 0) for i in range(n)]
    tasks = [asyncio.create_task(unit_loop(i, c)) for i, c in enumerate(counts)]
    if rate:
        tasks.append(asyncio.create_task(pace()))
    await asyncio.gather(*tasks)
    run.elapsed = time.perf_counter() - start
    return {
        "acked": run.acked,
        "other": run.other,
        "elapsed": run.elapsed,
        "latencies": run.latencies,
    }


async def _drive(port: int, accounts: list[str], total: int, rate: float | None) -> Run:
    """Run the units in a child process; the result when they are done."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_dc09_units, args=(port, accounts, total, rate, out))
    proc.start()
    try:
        data = await asyncio.to_thread(_result, out, proc)
    finally:
        await asyncio.to_thread(proc.join, 30)
    if "error" in data:
        raise RuntimeError(f"the simulated units failed: {data['error']}")
    return Run(data["acked"], data["other"], data["elapsed"], data["latencies"])


def _result(out: Any, proc: Any, limit: float = 600.0) -> dict[str, Any]:
    """The child's result; fails at once when the child died without one."""
    import queue

    deadline = time.monotonic() + limit
    while True:
        try:
            data: dict[str, Any] = out.get(True, 1.0)
            return data
        except queue.Empty:
            if not proc.is_alive():
                return {"error": f"the units' process exited ({proc.exitcode}) without a result"}
            if time.monotonic() > deadline:
                return {"error": f"no result within {limit:g}s"}


@contextlib.asynccontextmanager
async def _dc09_bare() -> AsyncIterator[int]:
    """The baseline: parse each frame and ACK it; store nothing."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        try:
            while chunk := await reader.read(4096):
                buffer += chunk
                while buffer:
                    try:
                        block, used = dc09.parse(buffer)
                    except Incomplete:
                        break
                    except Malformed as exc:
                        buffer = buffer[exc.skip :]
                        continue
                    buffer = buffer[used:]
                    content = dc09.open_block(block, None)
                    dc09.adm_cid(content, content.account or block.account)
                    writer.write(dc09.ack(block, None, datetime.now(UTC)))
                    await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


# --------------------------------------------------------------------------- gateway


@contextlib.asynccontextmanager
async def _dc09_gateway(
    args: argparse.Namespace, tmp: Path, mqtt_port: int, accounts: list[str]
) -> AsyncIterator[int]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    run_dir = tmp / schema
    async with store_section(args.store, args.dsn, run_dir) as store_config:
        config = Config(
            mqtt=MqttConfig(port=mqtt_port, client_id=f"gw-{schema}", topic_prefix=schema),
            store=store_config,
            rules=RulesSection(state_file=str(run_dir / "rules-state.json"), tick_s=3600),
            receivers=ReceiversSection(dc09=Dc09Config(enabled=True, port=0, udp=False)),
        )
        async with open_store(config) as store:
            await prepare_store(config, store)
            await store.upsert_site(Site("bench", SiteKind.HOME))
            for a in accounts:
                await store.upsert_device(Device(f"u{a}", "bench", DeviceKind.PENDANT))
                await store.upsert_receiver_account(
                    ReceiverAccount(ReceiverKind.CONTACT_ID, a, f"u{a}")
                )
        async with Gateway(config) as gw:
            assert gw.dc09 is not None
            assert gw.dc09.tcp_port is not None
            yield gw.dc09.tcp_port
            refused = gw.dc09.counters["duh"] + gw.dc09.counters["nak"]
            if refused:
                print(f"  gateway refused {refused} frames: {dict(gw.dc09.counters)}")


# --------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Protocol:
    name: str
    bare: Callable[[], contextlib.AbstractAsyncContextManager[int]]
    gateway: Callable[
        [argparse.Namespace, Path, int, list[str]], contextlib.AbstractAsyncContextManager[int]
    ]
    drive: Callable[[int, list[str], int, float | None], Awaitable[Run]]


async def _scaip_drive(port: int, cids: list[str], total: int, rate: float | None) -> Run:
    data = await _scaip.drive(port, cids, total, rate)
    return Run(data["acked"], data["other"], data["elapsed"], data["latencies"])


PROTOCOLS: list[Protocol] = [
    Protocol("DC-09 over TCP", _dc09_bare, _dc09_gateway, _drive),
    Protocol("SCAIP over UDP", _scaip.bare, _scaip.gateway, _scaip_drive),
]


async def _phase(
    proto: Protocol,
    args: argparse.Namespace,
    tmp: Path,
    mqtt_port: int,
    phase: int,
    total: int,
    rate: float | None,
) -> tuple[Run, Run]:
    """Bare and gateway on the same alarms; in every other round (phases 3-4, 7-8 ...)
    the gateway goes first, so that a drift in the machine's load over a run does not
    always favour the same side."""
    accounts = [f"{phase:X}{i:03X}" for i in range(args.units)]
    runs: dict[str, Run] = {}
    for side in ("gateway", "bare") if (phase - 1) // 2 % 2 else ("bare", "gateway"):
        server = proto.bare() if side == "bare" else proto.gateway(args, tmp, mqtt_port, accounts)
        async with server as port:
            before = _cpu()
            runs[side] = await proto.drive(port, accounts, total, rate)
            runs[side].cpu = _cpu() - before
    return runs["bare"], runs["gateway"]


def _cpu() -> float:
    """User + system CPU seconds of this process, all its threads (the event loop, the
    SQLite worker thread, the PostgreSQL pool's I/O): the server side of both loops. The
    simulated units (a child process), Mosquitto and the database server are not in it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_line(bare: Run, gw: Run) -> str:
    """CPU per alarm of both sides and their ratio (bare / gateway): unlike the
    wall-clock ratio, it does not swing with the other load on the machine."""
    ratio = bare.cpu_ms / gw.cpu_ms if gw.cpu_ms else float("nan")
    return (
        f"CPU/alarm gateway {gw.cpu_ms:.3f} ms | bare {bare.cpu_ms:.3f} ms"
        f" | CPU ratio {ratio:.2f} (>= 0.5: within 2x of bare; database server excluded)"
    )


def _load() -> str:
    """The 1-minute load average now (the machine is shared: every figure carries it)."""
    return f"load {os.getloadavg()[0]:.1f}"


async def run(args: argparse.Namespace) -> bool:
    from bench.ingest import private_broker

    ok = True
    with private_broker() as mqtt_port, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for proto in PROTOCOLS:
            if args.protocol != "all" and args.protocol not in proto.name.lower():
                continue
            ratios: list[float] = []
            p99s: list[float] = []
            cpus: list[float] = []
            for r in range(args.rounds):
                ratio, p99, cpu = await _round(proto, args, tmp, mqtt_port, r)
                ratios.append(ratio)
                p99s.append(p99)
                cpus.append(cpu)
            ok &= statistics.median(ratios) >= TARGET_RATIO
            ok &= statistics.median(p99s) <= TARGET_P99_MS
            if args.rounds > 1:
                print(
                    f"{proto.name}: median of {args.rounds} rounds: ratio"
                    f" {statistics.median(ratios):.2f} (target >= {TARGET_RATIO}),"
                    f" gateway paced p99 {statistics.median(p99s):.1f} ms"
                    f" (target <= {TARGET_P99_MS:g} ms),"
                    f" saturation CPU ratio {statistics.median(cpus):.2f}"
                )
    return ok


async def _round(
    proto: Protocol, args: argparse.Namespace, tmp: Path, mqtt_port: int, r: int
) -> tuple[float, float, float]:
    """One saturation and one paced phase; (throughput ratio, gateway paced p99 ms,
    saturation CPU ratio: bare CPU per alarm / gateway CPU per alarm)."""
    tag = f"{proto.name} [round {r + 1}]" if args.rounds > 1 else proto.name
    bare, gw = await _phase(proto, args, tmp, mqtt_port, 2 * r + 1, args.alarms, None)
    ratio = gw.rate / bare.rate if bare.rate else 0.0
    print(
        f"{tag}: saturation ({args.units} units, {args.alarms} alarms):"
        f" gateway {gw.rate:7.0f} alarms/s | bare {bare.rate:7.0f} alarms/s"
        f" | ratio {ratio:.2f} (target >= {TARGET_RATIO}) | {_load()}"
        + (f" | gateway non-ACK replies {gw.other}" if gw.other else "")
    )
    print(f"{tag}: saturation {_cpu_line(bare, gw)}")
    total = round(args.rate * args.seconds)
    bare_p, gw_p = await _phase(proto, args, tmp, mqtt_port, 2 * r + 2, total, args.rate)
    print(
        f"{tag}: paced {args.rate:g} alarms/s for {args.seconds:g}s ({total}):"
        f" gateway p50 {gw_p.pct(50):6.1f} ms p99 {gw_p.pct(99):6.1f} ms"
        f" max {gw_p.pct(100):6.1f} ms ({gw_p.rate:5.0f}/s acked)"
        f" | bare p50 {bare_p.pct(50):6.1f} ms p99 {bare_p.pct(99):6.1f} ms"
        f" | target p99 <= {TARGET_P99_MS:g} ms"
        f" | gateway mean {_mean_ms(gw_p):.1f} ms | {_load()}"
    )
    print(f"{tag}: paced {_cpu_line(bare_p, gw_p)}")
    cpu_ratio = bare.cpu_ms / gw.cpu_ms if gw.cpu_ms else 0.0
    if gw.other or gw_p.acked != total:
        return 0.0, float("inf"), 0.0  # a gateway that refused or lost alarms meets nothing
    return ratio, gw_p.pct(99), cpu_ratio


def _mean_ms(r: Run) -> float:
    return statistics.fmean(r.latencies) * 1000 if r.latencies else float("nan")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench receivers", description=__doc__)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("TELECARE_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument(
        "--protocol", choices=("all", "dc-09", "scaip"), default="all", help="run only one"
    )
    parser.add_argument("--units", type=int, default=100, help="simulated units (connections)")
    parser.add_argument("--alarms", type=int, default=4000, help="alarms in the saturation phase")
    parser.add_argument("--rate", type=float, default=500.0, help="alarms/s in the paced phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the paced phase")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds per protocol (sides alternate; median)"
    )
    args = parser.parse_args(argv)
    print(
        f"receivers benchmark: the gateway on {args.store} (mapping, pipeline, rules, durable"
        " store, dispatch; ACK after storing) against a bare parse-and-ACK loop;"
        " units in a separate process"
    )
    configure_logging("warning", "console")
    ok = asyncio.run(run(args))
    return 0 if ok else 1
