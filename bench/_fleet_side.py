"""One side of ``python -m bench fleet``: run as a script in a process of its own, with
``PYTHONPATH`` naming the code tree under test (this checkout, or an export of an older
commit), so "before" and "after" run the same driver against their own ``telecare``.

    python bench/_fleet_side.py gateway --store postgres --dsn ... --devices 100000 ...
    python bench/_fleet_side.py publish --port ... --prefix ... --devices ... --rate ...

``gateway``: provisions the devices (bulk SQL), starts the real ``Gateway``, starts the
publisher (a process of its own), waits ``--warmup`` seconds, then measures for
``--seconds``: this process's CPU time (all threads) over wall time, heartbeats handled,
registry reads that reached the store, the longest event-loop stall (a 10 ms sleeper's
overshoot), and each rule-state write (the tick's save: the JSON file before, the
``rule_state`` rows after). Prints one JSON line with the figures.

Uses only what both trees have (``Gateway``, ``Config``, ``open_store``); instrumentation
wraps the store instance's registry reads and the rule-state module's save function,
counting and timing the real calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- publisher


async def publish(args: argparse.Namespace) -> None:
    """Heartbeats for devices 0, 1, 2, ... at ``--rate`` per second (QoS 1)."""
    import aiomqtt

    interval = 1.0 / args.rate
    async with aiomqtt.Client(
        "127.0.0.1", args.port, identifier=f"pub-{uuid.uuid4().hex[:8]}"
    ) as client:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < args.seconds:
            due = start + n * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            i = n % args.devices
            ts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            payload = json.dumps({"v": 1, "msg_id": f"h{n}", "ts": ts, "battery": 90})
            await client.publish(f"{args.prefix}/s{i % args.sites}/d{i}/heartbeat", payload, qos=1)
            n += 1


# --------------------------------------------------------------------------- provisioning


def _rows(args: argparse.Namespace) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    sites = [(f"s{k}", "care_home", f"site {k}") for k in range(args.sites)]
    devices = [(f"d{i}", f"s{i % args.sites}", "pendant", 300) for i in range(args.devices)]
    return sites, devices


_SITE = "INSERT INTO sites (site_id, kind, name) VALUES ({p}, {p}, {p})"
_DEVICE = (
    "INSERT INTO devices (device_id, site_id, kind, heartbeat_interval_s)"
    " VALUES ({p}, {p}, {p}, {p})"
)


async def provision(args: argparse.Namespace) -> None:
    sites, devices = _rows(args)
    if args.store == "postgres":
        import psycopg

        async with await psycopg.AsyncConnection.connect(args.dsn) as conn:
            await conn.execute(f"SET search_path = {args.schema}, public")
            async with conn.cursor() as cur:
                await cur.executemany(_SITE.format(p="%s"), sites)
                await cur.executemany(_DEVICE.format(p="%s"), devices)
            await conn.commit()
        return

    def run() -> None:
        with sqlite3.connect(args.sqlite) as conn:
            conn.executemany(_SITE.format(p="?"), sites)
            conn.executemany(_DEVICE.format(p="?"), devices)

    await asyncio.to_thread(run)


# --------------------------------------------------------------------------- measuring


class Stalls:
    """The event loop's longest delay: how late a 10 ms sleep wakes up."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.over_50ms = 0

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            late = time.perf_counter() - t0 - 0.01
            self.longest = max(self.longest, late)
            self.over_50ms += late > 0.05

    def reset(self) -> None:
        self.longest = 0.0
        self.over_50ms = 0


def _count_calls(obj: Any, names: tuple[str, ...], counts: dict[str, int]) -> None:
    """Count the calls of ``obj``'s methods ``names`` (each still does its real work)."""
    for name in names:
        real = getattr(obj, name)

        async def counted(*a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            counts[_name] = counts.get(_name, 0) + 1
            return await _real(*a, **kw)

        setattr(obj, name, counted)


def _time_rule_writes(writes: list[float], rows: list[int]) -> str:
    """Time every rule-state save of the tick (whichever function this tree has)."""
    from telecare.gateway import rule_state

    if hasattr(rule_state, "write_changes"):  # rows in the store
        real_async = rule_state.write_changes

        async def timed_async(*a: Any, **kw: Any) -> Any:
            rows.append(len(a[1]))
            t0 = time.perf_counter()
            try:
                return await real_async(*a, **kw)
            finally:
                writes.append(time.perf_counter() - t0)

        rule_state.write_changes = timed_async
        return "rule_state rows (changed only)"
    real = rule_state.save_engine  # type: ignore[attr-defined]

    def timed(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            writes.append(time.perf_counter() - t0)

    rule_state.save_engine = timed  # type: ignore[attr-defined]
    return "JSON file (whole state)"


_REGISTRY = re.compile(
    r"\s*SELECT\b.*\bFROM\s+(devices|residents|resident_clinical|receiver_accounts)\b",
    re.IGNORECASE | re.DOTALL,
)


class Statements:
    """Every SQL statement the gateway process sends, by kind (counted at the driver:
    psycopg's cursor, SQLite's trace callback)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def note(self, query: object) -> None:
        if isinstance(query, bytes):
            query = query.decode(errors="replace")
        text = query.strip() if isinstance(query, str) else ""
        if isinstance(query, str) and not text:
            kind = "pool check (empty query)"
        elif _REGISTRY.match(text):
            kind = "registry read"
        elif "device_status" in text:
            kind = "status upsert"
        elif "rule_state" in text:
            kind = "rule_state write"
        elif "registry_changelog" in text:
            kind = "registry_changelog poll"
        else:
            kind = "other"
        self.counts[kind] += 1

    def watch_psycopg(self) -> None:
        import psycopg

        execute, executemany = psycopg.AsyncCursor.execute, psycopg.AsyncCursor.executemany

        async def counted_execute(cur: Any, query: Any, *a: Any, **kw: Any) -> Any:
            self.note(query)
            return await execute(cur, query, *a, **kw)

        async def counted_many(cur: Any, query: Any, *a: Any, **kw: Any) -> Any:
            self.note(query)
            return await executemany(cur, query, *a, **kw)

        psycopg.AsyncCursor.execute = counted_execute  # type: ignore[method-assign,assignment]
        psycopg.AsyncCursor.executemany = counted_many  # type: ignore[method-assign,assignment]

    async def watch_sqlite(self, backend: Any) -> None:
        def trace(conn: sqlite3.Connection) -> None:
            conn.set_trace_callback(self.note)

        sql = getattr(backend, "sql", None)
        if sql is not None and hasattr(sql, "run"):
            await sql.run(trace)
        else:  # the tree before store.sql
            await backend._run(trace)


async def _pg_scans(args: argparse.Namespace) -> int | None:
    """Index and sequential scans of ``devices`` so far (PostgreSQL's own statistics)."""
    if args.store != "postgres":
        return None
    import psycopg

    async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT COALESCE(idx_scan, 0) + COALESCE(seq_scan, 0) FROM pg_stat_user_tables"
            " WHERE schemaname = %s AND relname = 'devices'",
            (args.schema,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def gateway(args: argparse.Namespace) -> dict[str, Any]:
    from telecare.gateway import rule_state
    from telecare.gateway.app import Gateway, open_store
    from telecare.gateway.config import Config, MqttConfig, RulesSection, StoreConfig
    from telecare.gateway.logging import configure_logging

    configure_logging("error", "console")
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    tmp = Path(args.tmp)
    config = Config(
        mqtt=MqttConfig(
            port=args.port,
            client_id=f"gw-{uuid.uuid4().hex[:8]}",
            topic_prefix=args.prefix,
            max_inflight=1000,
        ),
        store=StoreConfig(
            backend=args.store,
            dsn=args.dsn,
            schema=args.schema,
            timescale=False,
            sqlite_path=args.sqlite,
            spool_dir=str(tmp / "spool"),
        ),
        rules=RulesSection(state_file=str(tmp / "rules-state.json"), tick_s=args.tick),
    )
    t0 = time.perf_counter()
    async with open_store(config) as store:
        await store.migrate()
    await provision(args)
    provisioned_s = time.perf_counter() - t0
    writes: list[float] = []
    rows: list[int] = []
    what = _time_rule_writes(writes, rows)
    stalls = Stalls()
    reads: dict[str, int] = {}
    t0 = time.perf_counter()
    async with Gateway(config) as gw:
        start_s = time.perf_counter() - t0
        _count_calls(gw.store, ("get_device", "get_resident", "receiver_accounts"), reads)
        statements = Statements()
        if args.store == "postgres":
            statements.watch_psycopg()
        else:
            await statements.watch_sqlite(gw.store.store)  # type: ignore[attr-defined]
        await gw.mqtt.connected.wait()
        monitor = asyncio.create_task(stalls.run())
        side = Path(__file__)
        publisher = await asyncio.create_subprocess_exec(
            sys.executable,
            str(side),
            "publish",
            *("--port", str(args.port), "--prefix", args.prefix),
            *("--devices", str(args.devices), "--sites", str(args.sites)),
            *("--rate", str(args.rate), "--seconds", str(args.warmup + args.seconds + 300)),
        )
        try:
            await asyncio.sleep(args.warmup)
            # The first rule-state write of the "after" tree writes every row (nothing is
            # in the store yet): reported apart, the window starts after it.
            while not writes and time.perf_counter() - t0 < args.warmup + 120:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            stalls.reset()
            first_writes = list(writes)
            writes.clear()
            rows.clear()
            load0 = os.getloadavg()[0]
            beats0 = gw.pipeline.counters["heartbeats"]
            spooled0 = gw.store.stats().get("items_spooled", 0)  # type: ignore[attr-defined]
            reads0 = sum(reads.values())
            scans0 = await _pg_scans(args)
            statements.counts.clear()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(args.seconds)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            beats = gw.pipeline.counters["heartbeats"] - beats0
            registry_reads = sum(reads.values()) - reads0
            scans1 = await _pg_scans(args)
            longest, over = stalls.longest, stalls.over_50ms
            sent = dict(statements.counts)
            window_writes = list(writes)
            window_rows = list(rows)
            load1 = os.getloadavg()[0]
            dead = gw.pipeline.counters["dead_letters"]
            spooled = gw.store.stats().get("items_spooled", 0) - spooled0  # type: ignore[attr-defined]
        finally:
            with contextlib.suppress(ProcessLookupError):
                publisher.terminate()
            await publisher.wait()
            monitor.cancel()
    state_file = tmp / "rules-state.json"
    return {
        "telecare": str(Path(rule_state.__file__).parent.parent),
        "rule_state": what,
        "provision_s": provisioned_s,
        "gateway_start_s": start_s,
        "seconds": wall,
        "heartbeats": beats,
        "heartbeats_per_s": beats / wall,
        "cpu_share": cpu / wall,
        "cpu_ms_per_heartbeat": 1000 * cpu / max(1, beats),
        "registry_reads_per_heartbeat": registry_reads / max(1, beats),
        "devices_scans_per_heartbeat": (
            None if scans0 is None or scans1 is None else (scans1 - scans0) / max(1, beats)
        ),
        "statements_per_heartbeat": {k: v / max(1, beats) for k, v in sorted(sent.items())},
        "longest_stall_ms": 1000 * longest,
        "stalls_over_50ms": over,
        "rule_writes": len(window_writes),
        "rule_write_max_s": max(window_writes, default=0.0),
        "rule_write_mean_s": sum(window_writes) / max(1, len(window_writes)),
        "rule_write_rows_mean": (sum(window_rows) / len(window_rows) if window_rows else None),
        "warmup_rule_writes": [round(w, 3) for w in first_writes],
        "load_average": f"{load0:.1f} -> {load1:.1f}",
        "state_file_bytes": state_file.stat().st_size if state_file.exists() else None,
        "dead_letters": dead,
        "spooled": spooled,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("gateway", "publish"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--devices", type=int, default=100000)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=333.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=40.0)
    parser.add_argument("--tick", type=float, default=10.0)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--schema", default="bench_fleet")
    parser.add_argument("--sqlite", default="")
    parser.add_argument("--tmp", default=".")
    args = parser.parse_args()
    if args.role == "publish":
        asyncio.run(publish(args))
        return
    result = asyncio.run(gateway(args))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
