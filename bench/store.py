"""``python -m bench store``: rows per second through the store's ingest path against a
raw psycopg binary COPY of the same rows into the same table, in the same run.

Ingest path: ``DurableStore.write_readings`` from many concurrent producers (one call
per MQTT message) -> ``ReadingBatcher`` (bounded queue, 5,000-row / 200 ms batches) ->
``PostgresStore.write_readings`` (binary COPY, idempotency enforced by the unique index).
Baseline: the same rows, pre-chunked into batches of the same size, each one binary
COPY into ``readings`` in its own transaction on one connection, with no queue, no
futures and no pool. The table is emptied before every run; runs alternate (baseline,
store, baseline, store, ...); the median of each is reported, and the ratio of each
round's pair. Also the store path's CPU time (this process, every thread), as rows per CPU
second: it moves much less than wall-clock rates when other work shares the machine
(the database server's own work is not in it).

Needs a PostgreSQL (``--dsn``, default ``postgresql://postgres@127.0.0.1:5432/test``);
uses its own schema, dropped afterwards. Mode: TimescaleDB hypertables where the server
has the extension (``--plain``: monthly partitions anyway, to compare on one server).

``--store sqlite``: the same ingest path on ``SqliteStore`` (a file in a temporary
directory); the baseline is ``sqlite3.executemany`` of the same rows, batches of the same
size, one transaction each, on a connection of its own with the store's journal
(WAL) and ``synchronous=FULL``.

``--against TREE``: the same benchmark on another tree (the code before a change) and on
this checkout, alternating, one round at a time (``bench/_against.py``). ``--emit FILE``:
also write the figures as JSON (what ``--against`` reads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from telecare.devices.model import Metric, Reading
from telecare.gateway.store.durable import DurableStore
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore

__all__ = ["main"]

_COPY = (
    "COPY readings (ts, device_id, metric, value, msg_id, resident_id) FROM STDIN (FORMAT BINARY)"
)
_TYPES = ["timestamptz", "text", "int2", "float8", "text", "text"]


def _messages(n_rows: int, per_message: int) -> list[list[Reading]]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    metrics = [Metric.SPO2, Metric.PULSE, Metric.PERFUSION_INDEX]
    out: list[list[Reading]] = []
    for i in range(n_rows // per_message):
        device = f"ox{i % 500}"
        ts = start + timedelta(milliseconds=i)
        out.append(
            [
                Reading(
                    device,
                    metrics[j % 3],
                    5 + j % 20,
                    metrics[j % 3].unit,
                    ts,
                    f"m{i}.{j // 3}",
                    f"res{i % 500}",
                )
                for j in range(per_message)
            ]
        )
    return out


async def _truncate(dsn: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'TRUNCATE "{schema}".readings')
        await conn.execute(f'VACUUM ANALYZE "{schema}".readings')


async def _raw(dsn: str, schema: str, rows: list[Reading], batch: int) -> float:
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, options=f"-c search_path={schema}"
    ) as conn:
        started = time.perf_counter()
        for k in range(0, len(rows), batch):
            async with conn.transaction(), conn.cursor().copy(_COPY) as copy:
                copy.set_types(_TYPES)
                for r in rows[k : k + batch]:
                    await copy.write_row(
                        (r.ts, r.device_id, int(r.metric), r.value, r.msg_id, r.resident_id)
                    )
        return time.perf_counter() - started


async def _through_store(
    store: PostgresStore | SqliteStore,
    messages: list[list[Reading]],
    producers: int,
    batch: int,
    cpu: list[float],
) -> float:
    """The store path's wall time; its CPU time (this process, every thread) is appended
    to ``cpu``."""
    with tempfile.TemporaryDirectory(prefix="telecare-bench-spool-") as spool:
        async with DurableStore(
            store, spool_dir=spool, batch_rows=batch, maintain_every=None
        ) as durable:

            async def produce(k: int) -> None:
                for m in messages[k::producers]:
                    await durable.write_readings(m)

            started, cpu_started = time.perf_counter(), time.process_time()
            await asyncio.gather(*(produce(k) for k in range(producers)))
            elapsed = time.perf_counter() - started
            cpu.append(time.process_time() - cpu_started)
            if durable.stats()["rows_spooled"]:
                raise RuntimeError("rows were spooled during the benchmark: database away?")
            return elapsed


_SQLITE_INSERT = (
    "INSERT OR IGNORE INTO readings (ts, device_id, metric, value, msg_id, resident_id)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def _sqlite_raw(path: Path, rows: list[Reading], batch: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        started = time.perf_counter()
        for k in range(0, len(rows), batch):
            conn.execute("BEGIN")
            conn.executemany(
                _SQLITE_INSERT,
                [
                    (r.ts.isoformat(), r.device_id, int(r.metric), r.value, r.msg_id, r.resident_id)
                    for r in rows[k : k + batch]
                ],
            )
            conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


def _sqlite_empty(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DELETE FROM readings")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def _run_sqlite(
    args: argparse.Namespace, messages: list[list[Reading]], rows: list[Reading], cpu: list[float]
) -> tuple[list[float], list[float]]:
    raw_times: list[float] = []
    store_times: list[float] = []
    n = len(rows)
    with tempfile.TemporaryDirectory(prefix="telecare-bench-store-") as tmp:
        path = Path(tmp) / "bench.sqlite3"
        async with SqliteStore(path) as store:
            await store.migrate()
            print(
                f"store benchmark: {n} rows in messages of {args.per_message},"
                f" {args.producers} producers, batches of {args.batch}, sqlite,"
                f" {args.rounds} rounds"
            )
            for _ in range(args.rounds):
                await asyncio.to_thread(_sqlite_empty, path)
                raw_times.append(await asyncio.to_thread(_sqlite_raw, path, rows, args.batch))
                await asyncio.to_thread(_sqlite_empty, path)
                store_times.append(
                    await _through_store(store, messages, args.producers, args.batch, cpu)
                )
                if await store.count("readings") != n:
                    raise RuntimeError("the store path did not store every row")
    return raw_times, store_times


async def _run(args: argparse.Namespace) -> dict[str, float]:
    """Run the benchmark, print its figures and return them."""
    messages = _messages(args.rows, args.per_message)
    rows = [r for m in messages for r in m]
    n = len(rows)
    cpu: list[float] = []
    if args.store == "sqlite":
        raw_times, store_times = await _run_sqlite(args, messages, rows, cpu)
        baseline = "raw executemany"
    else:
        raw_times, store_times = await _run_postgres(args, messages, rows, cpu)
        baseline = "raw binary COPY"
    raw_rate = n / statistics.median(raw_times)
    store_rate = n / statistics.median(store_times)
    print(f"{baseline + ' (baseline)':<26}: {raw_rate:12,.0f} rows/s  runs {_fmt(raw_times)}")
    print(f"store ingest path         : {store_rate:12,.0f} rows/s  runs {_fmt(store_times)}")
    print(f"ratio store/raw           : {store_rate / raw_rate:12.2f}  (target >= 0.80)")
    cpu_rate = n / statistics.median(cpu)
    print(f"store path CPU (process)  : {cpu_rate:12,.0f} rows per CPU s  runs {_fmt(cpu)}")
    # Each store run is paired with the baseline run just before it, so slow drift of
    # the machine (another process starting) moves both sides of a pair alike.
    paired = [r / s for r, s in zip(raw_times, store_times, strict=True)]
    print(f"paired ratios per round   : {', '.join(f'{p:.2f}' for p in paired)}")
    return {
        "store rows/s": store_rate,
        "raw rows/s": raw_rate,
        "store/raw": store_rate / raw_rate,
        "store rows per CPU s": cpu_rate,
    }


async def _run_postgres(
    args: argparse.Namespace, messages: list[list[Reading]], rows: list[Reading], cpu: list[float]
) -> tuple[list[float], list[float]]:
    schema = f"bench_store_{uuid.uuid4().hex[:8]}"
    n = len(rows)
    raw_times: list[float] = []
    store_times: list[float] = []
    try:
        async with PostgresStore(
            args.dsn, schema=schema, max_size=4, use_timescale=not args.plain
        ) as store:
            await store.migrate()
            print(
                f"store benchmark: {n} rows in messages of {args.per_message},"
                f" {args.producers} producers, batches of {args.batch}, mode {store.mode},"
                f" {args.rounds} rounds"
            )
            for _ in range(args.rounds):
                await _truncate(args.dsn, schema)
                raw_times.append(await _raw(args.dsn, schema, rows, args.batch))
                await _truncate(args.dsn, schema)
                store_times.append(
                    await _through_store(store, messages, args.producers, args.batch, cpu)
                )
                if await store.count("readings") != n:
                    raise RuntimeError("the store path did not store every row")
    finally:
        async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return raw_times, store_times


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}s" for t in times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench store", description=__doc__)
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--per-message", type=int, default=3, help="readings per message")
    parser.add_argument(
        "--producers", type=int, default=1000, help="messages in flight (concurrent producers)"
    )
    parser.add_argument("--batch", type=int, default=5000, help="rows per COPY batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain PostgreSQL partitions even where TimescaleDB is available",
    )
    parser.add_argument("--against", metavar="TREE", help="compare with the code in TREE")
    parser.add_argument("--emit", metavar="FILE", help="write the figures as JSON to FILE")
    args = parser.parse_args(argv)
    if args.against:
        from bench._against import side_by_side, strip_option

        rest = strip_option(argv, "--against")
        return side_by_side(__file__, args.against, rest, args.rounds)
    figures = asyncio.run(_run(args))
    if args.emit:
        Path(args.emit).write_text(json.dumps(figures))
    return 0
