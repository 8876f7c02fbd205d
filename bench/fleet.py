"""``python -m bench fleet``: a provisioned fleet heartbeating through the real gateway,
before and after a change, side by side in one run.

100,000 devices (1,000 sites) are provisioned; one publisher process sends heartbeats
for devices 0, 1, 2, ... at 333 a second, what 100,000 devices heartbeating every
5 minutes send, through a private Mosquitto to the real
:class:`~telecare.gateway.app.Gateway` (MQTT ingest, decode and provisioning check,
rules, durable store, dispatch service, rule ticks every 10 s) in a process of its own.
After ``--warmup`` seconds (longer than the old 30 s registry cache, and past the first
rule-state write, which writes everything) it measures for ``--seconds``:

* the gateway process's CPU time (all threads) over wall time: the share of one core;
* registry reads per heartbeat that reached the store (``get_device``, ``get_resident``,
  ``receiver_accounts`` calls counted on the store instance) and, on PostgreSQL, scans
  of the ``devices`` table per heartbeat from ``pg_stat_user_tables`` (these include the
  status upsert's own existence check on ``devices``);
* every rule-state write of a tick (the whole-state JSON file before; the changed
  ``rule_state`` rows after): the longest and the mean;
* the longest event-loop stall (how late a 10 ms sleep woke up) and stalls over 50 ms;
* every SQL statement the gateway process sent (psycopg's cursor, or SQLite's trace
  callback), by kind, per heartbeat: registry reads, status upserts, the pool's
  connection checks (empty queries), rule-state writes, change-log polls.

The window starts after the first rule-state write (the "after" tree's first write has
every row: nothing is in the store yet; it is listed under warm-up). On a shared,
loaded machine the gateway may not keep up with 333/s: compare CPU per heartbeat and
statements per heartbeat first, and the load average printed with each side.

**Before** is the tree of ``--before`` (default ``6e8b851``, main before this change),
exported with ``git archive``; **after** is this checkout. Each side runs the same driver
(``bench/_fleet_side.py``) with ``PYTHONPATH`` naming its tree, one after the other, on
a fresh schema (or SQLite file) each.

    python -m bench fleet [--store postgres|sqlite] [--dsn ...] [--devices 100000]
                          [--rate 333] [--warmup 40] [--seconds 60] [--before 6e8b851]
                          [--sides before,after]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.ingest import private_broker

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
SIDE = Path(__file__).resolve().parent / "_fleet_side.py"


def export_tree(rev: str, into: Path) -> Path:
    """The ``telecare`` package of commit ``rev``, exported into ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "telecare"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_side(
    name: str, tree: Path, port: int, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    schema = f"bench_fleet_{name}_{uuid.uuid4().hex[:6]}"
    run_dir = tmp / f"{name}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir()
    command = [
        sys.executable,
        str(SIDE),
        "gateway",
        *("--port", str(port), "--prefix", f"fleet-{uuid.uuid4().hex[:6]}/telecare/v1"),
        *("--devices", str(args.devices), "--sites", str(args.sites)),
        *("--rate", str(args.rate), "--warmup", str(args.warmup)),
        *("--seconds", str(args.seconds), "--tick", str(args.tick)),
        *("--store", args.store, "--dsn", args.dsn, "--schema", schema),
        *("--sqlite", str(run_dir / "fleet.sqlite3"), "--tmp", str(run_dir)),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    finally:
        if args.store == "postgres":
            import psycopg

            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{name} side failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


_ROWS: tuple[tuple[str, str, str], ...] = (
    ("rule state kept in", "rule_state", "{}"),
    ("heartbeats handled /s", "heartbeats_per_s", "{:.0f}"),
    ("gateway CPU, share of one core", "cpu_share", "{:.1%}"),
    ("gateway CPU ms per heartbeat", "cpu_ms_per_heartbeat", "{:.2f}"),
    ("registry reads per heartbeat", "registry_reads_per_heartbeat", "{:.3f}"),
    ("devices-table scans per heartbeat", "devices_scans_per_heartbeat", "{:.3f}"),
    ("rule-state writes in window", "rule_writes", "{}"),
    ("rule-state write, longest s", "rule_write_max_s", "{:.3f}"),
    ("rule-state write, mean s", "rule_write_mean_s", "{:.3f}"),
    ("rule-state rows per write, mean", "rule_write_rows_mean", "{:.0f}"),
    ("rule-state writes in warm-up, s", "warmup_rule_writes", "{}"),
    ("state file bytes", "state_file_bytes", "{}"),
    ("longest event-loop stall ms", "longest_stall_ms", "{:.0f}"),
    ("event-loop stalls > 50 ms", "stalls_over_50ms", "{}"),
    ("dead letters", "dead_letters", "{}"),
    ("writes spooled (database too slow)", "spooled", "{}"),
    ("gateway start s (registry primed)", "gateway_start_s", "{:.1f}"),
    ("machine load average (1 min)", "load_average", "{}"),
)


def _cell(fmt: str, value: Any) -> str:
    return "-" if value is None else fmt.format(value)


def report(results: dict[str, dict[str, Any]]) -> None:
    names = list(results)
    print(f"{'':36}" + "".join(f"{n:>32}" for n in names))
    for label, key, fmt in _ROWS:
        print(f"{label:36}" + "".join(f"{_cell(fmt, results[n].get(key)):>32}" for n in names))
    kinds = sorted({k for r in results.values() for k in r["statements_per_heartbeat"]})
    print("SQL statements sent per heartbeat, by kind:")
    for kind in kinds:
        cells = "".join(
            f"{_cell('{:.3f}', results[n]['statements_per_heartbeat'].get(kind, 0.0)):>32}"
            for n in names
        )
        print(f"  {kind:34}{cells}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fleet", description=__doc__)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("TELECARE_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--devices", type=int, default=100000)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=333.0, help="heartbeats per second")
    parser.add_argument("--warmup", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tick", type=float, default=10.0, help="rules.tick_s")
    parser.add_argument("--before", default="6e8b851", help="the commit measured as before")
    parser.add_argument("--sides", default="before,after")
    args = parser.parse_args(argv)
    print(
        f"fleet benchmark: {args.devices} devices heartbeating at {args.rate:g}/s through the"
        f" gateway on {args.store}; warm-up {args.warmup:g} s, measured {args.seconds:g} s;"
        " before = " + args.before + ", after = this checkout"
    )
    results: dict[str, dict[str, Any]] = {}
    with private_broker() as port, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for side in args.sides.split(","):
            tree = ROOT if side == "after" else export_tree(args.before, tmp / "tree-before")
            results[f"{side} ({args.before if side == 'before' else 'checkout'})"] = run_side(
                side, tree, port, args, tmp
            )
    report(results)
    return 0
