"""``python -m bench quality_check``: CPU of ``SqliteStore.write_readings`` with the
``readings.quality`` CHECK as migration 0020 writes it (ORs) against the ``IN (list)`` it
replaces (migration 0015) and against no CHECK at all, in the same run.

Three database files, each migrated to the current schema; two then get the table's text
edited back (``IN`` list; CHECK removed) by the same documented ``sqlite_schema``
procedure 0020 uses. Rounds alternate the order (in, or, none / none, or, in); each round
empties the table and writes the same number of fresh rows in one ``write_readings``
call. CPU is this process's (every thread: the store's worker thread included). Medians
and the per-round ratio OR / IN are printed; each database's ``integrity_check`` last.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from telecare.devices.model import Metric, Reading
from telecare.gateway.store.sqlite import SqliteStore

__all__ = ["main"]

_OR = "CHECK (quality = 'ok' OR quality = 'invalid' OR quality = 'demo')"
_CHECKS = {"in": "CHECK (quality IN ('ok', 'invalid', 'demo'))", "or": _OR, "none": ""}


def _rows(n: int, tag: str) -> list[Reading]:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    ms = [Metric.SPO2, Metric.PULSE, Metric.PERFUSION_INDEX]
    return [
        Reading(
            f"ox{i % 500}",
            ms[i % 3],
            5 + i % 20,
            ms[i % 3].unit,
            t0 + timedelta(milliseconds=i),
            f"{tag}{i}",
            f"res{i % 500}",
        )
        for i in range(n)
    ]


async def _set_check(store: SqliteStore, check: str) -> None:
    def edit(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ?, ?)"
            " WHERE type = 'table' AND name = 'readings'",
            (_OR, check),
        )
        (version,) = conn.execute("PRAGMA schema_version").fetchone()
        conn.execute(f"PRAGMA schema_version = {int(version) + 1}")
        conn.execute("PRAGMA writable_schema = OFF")
        conn.execute("COMMIT")

    await store.sql.run(edit)


async def _run(n: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    stores = {name: SqliteStore(folder / f"{name}.sqlite3") for name in _CHECKS}
    for name, store in stores.items():
        await store.__aenter__()
        await store.migrate()
        if name != "or":
            await _set_check(store, _CHECKS[name])
    cpu: dict[str, list[float]] = {name: [] for name in _CHECKS}
    print(f"{n} rows a call, {rounds} rounds; load average {os.getloadavg()}")
    for r in range(rounds):
        for name in list(_CHECKS) if r % 2 == 0 else list(reversed(_CHECKS)):
            store = stores[name]
            await store.sql.execute("DELETE FROM readings")
            batch = _rows(n, f"r{r}.")
            start = time.process_time()
            assert await store.write_readings(batch) == n
            cpu[name].append(time.process_time() - start)
    print(f"load average after {os.getloadavg()}")
    for name, values in cpu.items():
        rounded = [round(v, 3) for v in values]
        print(f"{name:>4}: median {statistics.median(values):.3f} s CPU {rounded}")
    ratios = [o / i for o, i in zip(cpu["or"], cpu["in"], strict=True)]
    print(
        f"or / in per round {[round(x, 2) for x in ratios]}, median {statistics.median(ratios):.2f}"
    )
    for name, store in stores.items():
        print(name, "integrity_check", await store.sql.fetch_all("PRAGMA integrity_check"))
        await store.__aexit__(None, None, None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench quality_check")
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    asyncio.run(_run(args.rows, args.rounds))
    return 0
