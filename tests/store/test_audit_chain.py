"""The hash-chained audit trail on both backends (issue 9, finding 8): every dispatch
transition's audit row is chained; a changed, removed or truncated row is named by
``verify_audit`` and by ``telecare audit verify``; racing transitions on PostgreSQL still
make one gapless chain."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from telecare.dispatch import DispatchService
from telecare.dispatch.audit_chain import (
    GENESIS,
    Anchor,
    ChainRow,
    canonical,
    row_hash,
    verify_chain,
)
from telecare.gateway.dispatching import dispatch_repository
from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sql import json_value
from telecare.gateway.store.sqlite import SqliteStore
from telecare.rules.clock import FakeClock
from tests.dispatch.conftest import NOW, make_alert, seed
from tests.services import PgServer

Backend = SqliteStore | PostgresStore


async def run_dispatches(store: Backend, opened: int = 3, acknowledged: int = 2) -> list[str]:
    """Open ``opened`` dispatches and acknowledge the first ``acknowledged``: one audit
    row per transition."""
    await seed(store)
    clock = FakeClock(NOW)
    service = DispatchService(dispatch_repository(store), store, clock)
    ids = []
    async with service:
        for _ in range(opened):
            alert = make_alert()
            await store.write_alerts([alert])
            ids.append((await service.open(alert)).dispatch_id)
            clock.advance(1)
        for did in ids[:acknowledged]:
            await service.acknowledge(did, "op1", "answered")
    return ids


def owner_sql(store: Backend, statement: str, params: tuple[object, ...] = ()) -> None:
    """Run SQL as whoever owns the tables, around the append-only triggers: what a
    curious operator with the owner's password (or the SQLite file) could do."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute("DROP TRIGGER IF EXISTS dispatch_audit_no_update")
            conn.execute("DROP TRIGGER IF EXISTS dispatch_audit_no_delete")
            conn.execute(statement.replace("%s", "?"), params)
        return
    with psycopg.connect(store.dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(f"SET LOCAL search_path = {store.schema}")
        conn.execute("ALTER TABLE dispatch_audit DISABLE TRIGGER USER")
        conn.execute(statement.encode(), params)
        conn.execute("ALTER TABLE dispatch_audit ENABLE TRIGGER USER")


async def audit_id_of(store: Backend, seq: int) -> int:
    row = await store.sql.fetch_one("SELECT audit_id FROM dispatch_audit WHERE seq = ?", seq)
    assert row is not None
    return int(row[0])


async def test_every_transition_is_chained_and_verifies(store: Backend) -> None:
    await run_dispatches(store)
    report = await store.dispatches.verify_audit()
    assert report.ok, report.problems
    assert (report.rows, report.unchained) == (5, 0)
    assert report.head is not None
    assert report.head.seq == 5
    # The head is an anchor a later run can be held to.
    assert (await store.dispatches.verify_audit(report.head)).ok


async def test_a_changed_row_fails_verification_naming_it(store: Backend) -> None:
    await run_dispatches(store)
    audit_id = await audit_id_of(store, 2)
    owner_sql(store, "UPDATE dispatch_audit SET reason = %s WHERE seq = 2", ("nothing to see",))
    report = await store.dispatches.verify_audit()
    assert not report.ok
    assert report.problems == [
        f"audit row {audit_id} (seq 2, dispatch {report_dispatch(report.problems[0])}) was"
        " changed: its content no longer matches"
    ]


def report_dispatch(problem: str) -> str:
    return problem.split("dispatch ", 1)[1].split(")", 1)[0]


async def test_a_changed_row_with_its_hash_recomputed_breaks_the_next_link(
    store: Backend,
) -> None:
    await run_dispatches(store)
    rows = await chain_rows(store)
    victim = rows[1]
    content = canonical(
        victim.seq,
        victim.dispatch_id,
        victim.at,
        victim.from_state,
        victim.to_state,
        "somebody-else",
        victim.reason,
        victim.detail,
    )
    owner_sql(
        store,
        "UPDATE dispatch_audit SET actor = %s, row_hash = %s WHERE seq = 2",
        ("somebody-else", row_hash(victim.prev_hash, content)),
    )
    report = await store.dispatches.verify_audit()
    next_id = await audit_id_of(store, 3)
    assert len(report.problems) == 1
    assert report.problems[0].startswith(f"audit row {next_id} (seq 3,")
    assert "seq 2 was changed or replaced" in report.problems[0]


async def chain_rows(store: Backend) -> list[ChainRow]:
    found = await store.sql.fetch_all(
        "SELECT audit_id, seq, prev_hash, row_hash, dispatch_id, at, from_state, to_state,"
        " actor, reason, detail FROM dispatch_audit ORDER BY seq"
    )
    return [ChainRow(*x[:10], json_value(x[10])) for x in found]


async def test_a_removed_row_is_detected(store: Backend) -> None:
    await run_dispatches(store)
    next_id = await audit_id_of(store, 3)
    owner_sql(store, "DELETE FROM dispatch_audit WHERE seq = 2")
    report = await store.dispatches.verify_audit()
    assert not report.ok
    assert any(
        p.startswith(f"seq 2 missing before audit row {next_id} (seq 3,") for p in report.problems
    ), report.problems


async def test_removing_the_last_rows_is_detected(store: Backend) -> None:
    ids = await run_dispatches(store)
    head = (await store.dispatches.verify_audit()).head
    assert head is not None
    # The last row is dispatch 2's acknowledgement: without it the dispatch's state no
    # longer matches its audit trail, and the recorded head is gone.
    owner_sql(store, "DELETE FROM dispatch_audit WHERE seq = 5")
    report = await store.dispatches.verify_audit(head)
    assert "anchor seq 5 is gone: the chain ends at seq 4, rows were removed" in report.problems
    assert any(p.startswith(f"dispatch {ids[1]} is 'acknowledged'") for p in report.problems)


async def test_an_unchained_row_is_refused(store: Backend) -> None:
    ids = await run_dispatches(store, opened=1, acknowledged=0)
    if isinstance(store, SqliteStore):
        with pytest.raises(sqlite3.IntegrityError, match="must carry seq"):
            await store.sql.execute(
                "INSERT INTO dispatch_audit (dispatch_id, at, to_state, actor)"
                " VALUES (?, '2026-01-01T00:00:00.000000Z', 'raised', 'x')",
                ids[0],
            )
    else:
        with pytest.raises(psycopg.errors.CheckViolation):
            await store.sql.execute(
                "INSERT INTO dispatch_audit (dispatch_id, at, to_state, actor)"
                " VALUES (?, now(), 'raised', 'x')",
                ids[0],
            )


@pytest.mark.postgres
async def test_truncate_is_refused_even_for_the_owner(pg_store: PostgresStore) -> None:
    await run_dispatches(pg_store)
    with pytest.raises(psycopg.errors.RaiseException, match="append-only: TRUNCATE refused"):
        await pg_store.sql.execute("TRUNCATE dispatch_audit")
    with pytest.raises(psycopg.errors.RaiseException, match="append-only: TRUNCATE refused"):
        await pg_store.sql.execute("TRUNCATE dispatches CASCADE")
    assert await pg_store.count("dispatch_audit") == 5


@pytest.mark.postgres
async def test_racing_transitions_on_postgres_make_one_valid_chain(
    pg_server: PgServer, pg_schema: str
) -> None:
    async with PostgresStore(pg_server.dsn, schema=pg_schema, max_size=8) as store:
        await store.migrate()
        await seed(store)
        clock = FakeClock(NOW)
        service = DispatchService(dispatch_repository(store), store, clock)
        alerts = [make_alert() for _ in range(24)]
        for alert in alerts:
            await store.write_alerts([alert])
        async with service:
            opened = await asyncio.gather(
                *(service.open(a) for a in alerts), return_exceptions=True
            )
            failed = [repr(d) for d in opened if isinstance(d, BaseException)]
            assert failed == []
            ids = [d.dispatch_id for d in opened if not isinstance(d, BaseException)]
            # Every dispatch acknowledged at once, and each twice over by two operators
            # (one of the two loses the compare-and-set and appends nothing).
            results = await asyncio.gather(
                *(service.acknowledge(did, f"op{n}") for did in ids for n in (1, 2)),
                return_exceptions=True,
            )
        assert sum(not isinstance(r, BaseException) for r in results) >= len(ids)
        report = await store.dispatches.verify_audit()
        assert report.ok, report.problems
        assert report.rows == await store.count("dispatch_audit") == 2 * len(ids)
        seqs = [
            r[0] for r in await store.sql.fetch_all("SELECT seq FROM dispatch_audit ORDER BY seq")
        ]
        assert seqs == list(range(1, 2 * len(ids) + 1))


def test_the_chain_verifier_names_each_kind_of_damage() -> None:
    def link(seq: int, prev: str, reason: str = "") -> ChainRow:
        content = canonical(seq, "d1", NOW, None, "raised", "gw", reason, {"n": seq})
        return ChainRow(
            seq,
            seq,
            prev,
            row_hash(prev, content),
            "d1",
            NOW,
            None,
            "raised",
            "gw",
            reason,
            {"n": seq},
        )

    a = link(1, GENESIS)
    b = link(2, a.row_hash)
    c = link(3, b.row_hash)
    assert verify_chain([a, b, c]).ok
    assert verify_chain([b, c]).problems == [
        "seq 1 missing before audit row 2 (seq 2, dispatch d1): rows were removed"
    ]
    changed = dataclasses.replace(b, reason="edited")
    assert verify_chain([a, changed, c]).problems == [
        "audit row 2 (seq 2, dispatch d1) was changed: its content no longer matches"
    ]
    assert verify_chain([a, b], Anchor(3, c.row_hash)).problems == [
        "anchor seq 3 is gone: the chain ends at seq 2, rows were removed"
    ]
    with pytest.raises(ValueError, match="not '<seq>:<64 hex digits>'"):
        Anchor.parse("3:xyz")


def test_telecare_audit_verify_exits_1_naming_the_changed_row(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\nbackend = "sqlite"\nsqlite_path = "{db}"\n')

    async def prepare() -> None:
        async with SqliteStore(db) as store:
            await store.migrate()
            await run_dispatches(store)

    asyncio.run(prepare())
    cmd = [sys.executable, "-m", "telecare.gateway.cli", "audit", "verify", "--config", str(config)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit trail intact: 5 rows; head 5:" in ok.stdout
    anchor = ok.stdout.split("--anchor ", 1)[1].split()[0]

    with sqlite3.connect(db) as conn:  # the lost laptop: whoever has the file
        conn.execute("DROP TRIGGER dispatch_audit_no_update")
        conn.execute("UPDATE dispatch_audit SET actor = 'nobody' WHERE seq = 3")
        (audit_id,) = conn.execute("SELECT audit_id FROM dispatch_audit WHERE seq = 3").fetchone()
    bad = subprocess.run([*cmd, "--anchor", anchor], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 7, bad.stdout + bad.stderr  # ExitCode.CHECK_FAILED
    assert f"FAIL audit row {audit_id} (seq 3," in bad.stdout
    assert "NOT intact" in bad.stdout
