"""Where an IP receiver's time goes: store round trips and time per step, per batch.

    python -m bench._receivers_where [dc-09|scaip] [sqlite|postgres] [--alarms 4000]
                                     [--rate 0 (as fast as ACKs come back) | 500]
                                     [--seconds 10] [--profile FILE]

Runs one phase of ``python -m bench receivers`` (the same gateway, units and alarms) with
timers wrapped around the pipeline's batch steps and the store's writes, and counts the
SQLite worker-thread trips (each one a hand-over to the store thread and back). Prints,
for each step, how often it ran, its mean and its worst time, and the ACK latency with
and without the first 500 alarms (each unit's first alarm raises an alert and a
dispatch; the later ones fold). A diagnostic, not a benchmark: the wrappers cost a
little themselves, and there is no baseline.

It also prints the process's CPU time per alarm (all threads, ``getrusage``; the units,
Mosquitto and the database server excluded) and the event-loop thread's. With
``--profile FILE`` the event-loop thread runs under cProfile on a CPU clock
(``time.thread_time``: a wait costs nothing) for the phase; the profile goes to FILE
(``python -m pstats FILE``) and the 25 functions with the most own time are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import functools
import pstats
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import receivers
from bench.ingest import private_broker
from telecare.dispatch import DispatchService
from telecare.gateway.logging import configure_logging
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store import sql
from telecare.gateway.store.durable import DurableStore

__all__ = ["main"]

_TIMES: dict[str, list[float]] = collections.defaultdict(list)
_TRIPS = collections.Counter[str]()


def _timed(cls: type, name: str) -> None:
    """Record how long every call of ``cls.name`` (a coroutine method) takes."""
    original: Callable[..., Awaitable[Any]] = getattr(cls, name)

    @functools.wraps(original)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            _TIMES[name].append(time.perf_counter() - start)

    setattr(cls, name, wrapper)


def _count_trips() -> None:
    original = sql._in_thread

    async def counted(fn: Any, conn: Any) -> Any:
        _TRIPS["sqlite"] += 1
        return await original(fn, conn)

    sql._in_thread = counted


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ms(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return 1000 * xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else float("nan")


async def _run(args: argparse.Namespace) -> None:
    proto = next(p for p in receivers.PROTOCOLS if args.protocol in p.name.lower())
    bench_args = argparse.Namespace(store=args.store, dsn=args.dsn, units=args.units)
    rate = args.rate or None
    total = args.alarms if rate is None else round(args.rate * args.seconds)
    with private_broker() as mqtt_port, tempfile.TemporaryDirectory() as tmp:
        accounts = [f"1{i:03X}" for i in range(args.units)]
        async with proto.gateway(bench_args, Path(tmp), mqtt_port, accounts) as port:
            _TIMES.clear()
            trips = _TRIPS["sqlite"]
            profile = cProfile.Profile(time.thread_time) if args.profile else None
            cpu, loop_cpu = _cpu(), time.thread_time()
            if profile is not None:
                profile.enable()
            run = await proto.drive(port, accounts, total, rate)
            if profile is not None:
                profile.disable()
            cpu, loop_cpu = _cpu() - cpu, time.thread_time() - loop_cpu
            trips = _TRIPS["sqlite"] - trips
    phase = f"paced {args.rate:g}/s" if rate else "saturation"
    print(
        f"{proto.name} on {args.store}, {phase}:"
        f" {run.acked} acked in {run.elapsed:.2f} s ({run.rate:.0f}/s);"
        f" ACK p50 {run.pct(50):.1f} ms p99 {run.pct(99):.1f} ms;"
        f" after the first 500: p99 {_ms(run.latencies[500:], 0.99):.1f} ms;"
        f" SQLite thread trips {trips} ({trips / max(1, run.acked):.2f} per alarm)"
    )
    per = 1000 / max(1, run.acked)
    print(
        f"  CPU per alarm: process {cpu * per:.3f} ms (all threads; database server"
        f" excluded), event-loop thread {loop_cpu * per:.3f} ms"
        + (" (profiled: inflated)" if profile is not None else "")
    )
    if profile is not None:
        profile.dump_stats(args.profile)
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
    for name, xs in _TIMES.items():
        print(
            f"  {name:15s} n={len(xs):6d}  mean {1000 * statistics.fmean(xs):7.2f} ms"
            f"  p99 {_ms(xs, 0.99):7.1f} ms  max {1000 * max(xs):7.1f} ms"
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._receivers_where")
    parser.add_argument("protocol", choices=("dc-09", "scaip"))
    parser.add_argument("store", choices=("sqlite", "postgres"))
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--alarms", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=0.0, help="0: as fast as ACKs come back")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--profile", metavar="FILE", help="cProfile the loop thread to FILE")
    args = parser.parse_args(argv)
    for cls, names in (
        (Pipeline, ("handle_events", "_event_stored", "_raise_alerts", "_fold_targets")),
        (DurableStore, ("write_events", "note_alerts", "alarm_states")),
        (DispatchService, ("open_or_join",)),  # the dispatch intake, per alert
    ):
        for name in names:
            if hasattr(cls, name):  # an older tree may lack a step (to compare)
                _timed(cls, name)
    _count_trips()
    configure_logging("warning", "console")
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
