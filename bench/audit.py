"""``python -m bench audit``: audit appends per second through the hash-chained
``insert_audit`` (advisory lock, read of the chain head, hash, insert) against the plain
one-statement insert it replaced, into a table of the pre-chain shape, in the same run.

Each append is its own transaction (as a dispatch transition is), from ``--writers``
concurrent connections; runs alternate (baseline, chained, ...) and the median of each
is reported with the ratio. The chained path serialises appenders per schema, so the
ratio shows what that lock costs at the given concurrency.

Needs a PostgreSQL (``--dsn``, default ``postgresql://postgres@127.0.0.1:5432/test``);
uses its own schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from telecare.devices.model import Alert, AlertKind, Dispatch, DispatchState
from telecare.dispatch.audit_chain import Anchor
from telecare.dispatch.records import AuditRecord
from telecare.gateway.store.dispatch import append_audit
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sql import Sql
from telecare.gateway.store.tables import AUDIT, DISPATCHES

__all__ = ["main"]

_BASELINE_DDL = (
    "CREATE TABLE audit_plain (audit_id bigserial PRIMARY KEY,"
    " dispatch_id text NOT NULL REFERENCES dispatches (dispatch_id), at timestamptz NOT NULL,"
    " from_state text, to_state text NOT NULL, actor text NOT NULL,"
    " reason text NOT NULL DEFAULT '', detail jsonb NOT NULL DEFAULT '{}');"
    " CREATE INDEX ON audit_plain (dispatch_id, audit_id)"
)


def _records(dispatch_ids: list[str], n: int) -> list[AuditRecord]:
    start = datetime.now(UTC)
    return [
        AuditRecord(
            dispatch_id=dispatch_ids[i % len(dispatch_ids)],
            at=start + timedelta(milliseconds=i),
            from_state=DispatchState.RAISED,
            to_state=DispatchState.RAISED,  # the dispatches stay raised: state matches
            actor=f"op{i % 7}",
            reason="answered",
            detail={"step": i, "note": "bench"},
        )
        for i in range(n)
    ]


async def _run(sql: Sql, records: list[AuditRecord], writers: int, chained: bool) -> float:
    async def writer(part: list[AuditRecord]) -> None:
        for record in part:
            async with sql.transaction() as tx:
                if chained:
                    await append_audit(sql, tx, record)
                else:
                    await tx.execute(
                        f"INSERT INTO audit_plain ({AUDIT.names}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        *AUDIT.params(record),
                    )

    parts = [records[i::writers] for i in range(writers)]
    t0 = time.perf_counter()
    await asyncio.gather(*(writer(p) for p in parts))
    return len(records) / (time.perf_counter() - t0)


async def _bench(args: argparse.Namespace) -> int:
    schema = f"bench_audit_{uuid.uuid4().hex[:8]}"
    try:
        async with PostgresStore(args.dsn, schema=schema, max_size=args.writers) as store:
            await store.migrate()
            now = datetime.now(UTC)
            ids = [f"d-bench-{i}" for i in range(50)]
            await store.write_alerts(
                [
                    Alert(f"a-{did}", AlertKind.ALARM, 1, "bench", now, None, None, None)
                    for did in ids
                ]
            )
            async with store.pool.connection() as conn:
                await conn.execute(_BASELINE_DDL.encode())
            for did in ids:
                d = Dispatch(did, f"a-{did}", DispatchState.RAISED, 1, now, now)
                await store.sql.execute(DISPATCHES.insert(), *DISPATCHES.params(d))
            plain, chained = [], []
            for _ in range(args.rounds):
                records = _records(ids, args.appends)
                plain.append(await _run(store.sql, records, args.writers, chained=False))
                chained.append(await _run(store.sql, records, args.writers, chained=True))
            report = await store.dispatches.verify_audit()
            assert report.ok, report.problems
            head: Anchor | None = report.head
    finally:
        async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
    p, c = statistics.median(plain), statistics.median(chained)
    print(
        f"audit appends, {args.appends} per round, {args.writers} writers,"
        f" {args.rounds} rounds (chain verified, {report.rows} rows, head seq"
        f" {head.seq if head else 0})"
    )
    print(f"  baseline (plain INSERT)      {p:10,.0f} appends/s")
    print(f"  chained  (lock+head+INSERT)  {c:10,.0f} appends/s")
    pairs = ", ".join(f"{b / a:.2f}" for a, b in zip(plain, chained, strict=True))
    print(f"  ratio chained/baseline       {c / p:10.2f}  (per round: {pairs})")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench audit", description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    return asyncio.run(_bench(parser.parse_args(argv)))
