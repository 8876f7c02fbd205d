"""Rule state that survives a restart, kept in the store: one row per key in
``rule_state`` (migration 0016), and after every tick only the rows that changed are
written.

Why: the whole state used to be serialised to one JSON file after every tick; with
100,000 devices that was 14.6 MB and 0.65 s a tick, and the serialisation stalled the
event loop for 150-436 ms. Now the engine marks what each input and tick changes
(:meth:`RuleEngine.take_changes`): a heartbeat changes its device's row, a tick the rows
of the alerts it raised, so a write costs in proportion to the change, not the fleet.

Consistency: a tick's changes are written in one transaction. Changes that could not be
written (database away) are kept and merged with the next tick's (the newer row wins),
so nothing is skipped once the database is back; a crash while it is away loses the
changes since the last write (as a crash between two file saves did).

The old file (``rules.state_file``, default ``rules-state.json`` next to the SQLite
database): read once, when the table is still empty, written to the table, and renamed
``<name>.migrated``; after that it is ignored.

Resource handling: :class:`RuleRunner` is an async context manager running one supervised
loop, ``rules-tick`` (:mod:`telecare.gateway.tasks`), that runs the time-driven rules every
``tick_s`` seconds on the injected clock and writes the changed rows; leaving it writes
once more. Error handling: a tick that fails because storage is unavailable is logged and
retried with backoff (its changes are kept, see above); anything else (a bug in a rule)
stops the gateway loudly rather than leaving the time-driven rules dead.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from telecare.gateway.backoff import Backoff
from telecare.gateway.failures import is_storage_unavailable
from telecare.gateway.logging import get_logger
from telecare.gateway.pipeline import Pipeline
from telecare.gateway.store.base import Store
from telecare.gateway.tasks import Loop, Loops, Supervisor
from telecare.rules.clock import Clock
from telecare.rules.config import RulesConfig
from telecare.rules.engine import RuleEngine

__all__ = ["RuleRunner", "StateRow", "load_engine", "write_changes"]

log = get_logger("telecare.rules")

#: ``(section, key)`` -> the row's value, or ``None`` when the row is gone.
Changes = dict[tuple[str, str], dict[str, Any] | None]
StateRow = tuple[str, str, dict[str, Any]]

#: Rows per statement: one multi-row statement per chunk instead of one statement per
#: row (a row-by-row ``execute_many`` of a 100,000-row first write kept the event loop
#: busy in the driver for seconds), short enough (< 4 KiB) for psycopg to cache its
#: parsed form (a longer one is re-parsed every time: 64 ms for 500 rows).
CHUNK: Final = 250
_UPSERT = (
    "INSERT INTO rule_state (section, key, value) VALUES {rows}"
    " ON CONFLICT (section, key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM rule_state WHERE (section, key) IN (VALUES {rows})"


async def load_engine(
    store: Store, config: RulesConfig, clock: Clock, legacy_file: Path | None = None
) -> RuleEngine:
    """The engine restored from the store's ``rule_state``; when that is empty, from
    ``legacy_file`` (the JSON file of older versions, then written to the store and
    renamed); else a fresh engine."""
    found = await store.sql.fetch_all("SELECT section, key, value FROM rule_state")
    if found:
        engine = await asyncio.to_thread(_from_rows, found, config, clock)
        if legacy_file is not None and await asyncio.to_thread(legacy_file.exists):
            log.warning("rule_state_file_ignored", path=str(legacy_file), reason="state in store")
        log.info("rule_state_restored", rows=len(found))
        return engine
    if legacy_file is None:
        return RuleEngine(config, clock)
    return await _migrate_file(store, legacy_file, config, clock)


def _from_rows(found: list[tuple[Any, ...]], config: RulesConfig, clock: Clock) -> RuleEngine:
    rows: list[StateRow] = []
    for section, key, value in found:
        try:
            rows.append((str(section), str(key), json.loads(value)))
        except ValueError as exc:
            log.error("rule_state_row_unreadable", section=section, error=str(exc))
    try:
        return RuleEngine.from_rows(rows, config, clock)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("rule_state_unreadable", error=repr(exc))
        return RuleEngine(config, clock)


async def _migrate_file(store: Store, path: Path, config: RulesConfig, clock: Clock) -> RuleEngine:
    """Restore from the old JSON file once, write it to the store, rename the file."""
    try:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        engine = RuleEngine.restore(json.loads(text), config, clock)
    except FileNotFoundError:
        return RuleEngine(config, clock)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("rule_state_unreadable", path=str(path), error=str(exc))
        return RuleEngine(config, clock)
    engine.take_changes()  # everything is written below
    rows = list(engine.rows())
    await write_changes(store, {(s, k): v for s, k, v in rows})
    await asyncio.to_thread(path.replace, path.with_name(path.name + ".migrated"))
    log.info("rule_state_migrated", path=str(path), rows=len(rows))
    return engine


async def write_changes(store: Store, changes: Changes) -> None:
    """Write ``changes`` to ``rule_state`` in one transaction.

    On PostgreSQL :data:`CHUNK` rows a statement, each chunk JSON encoded just before it
    is sent (in the event loop: a few milliseconds a chunk; a worker thread contending
    for the GIL stalled the loop for longer on a loaded machine). On SQLite, whose one
    connection serves every write of the gateway, one ``execute_many`` per kind: one
    worker-thread hop for all rows (encoded there) instead of one per chunk, each
    waiting its turn behind the gateway's other writes."""
    if not changes:
        return
    dumps = json.JSONEncoder(default=str, separators=(",", ":")).encode
    deletes = [key for key, value in changes.items() if value is None]
    upserts = [(key, value) for key, value in changes.items() if value is not None]
    async with store.sql.transaction() as tx:
        if store.sql.dialect.name == "sqlite":
            if deletes:
                await tx.execute_many(_DELETE.format(rows="(?,?)"), deletes)
            if upserts:
                rows = ((section, key, dumps(value)) for (section, key), value in upserts)
                await tx.execute_many(_UPSERT.format(rows="(?,?,?)"), rows)
            return
        for start in range(0, len(deletes), CHUNK):
            chunk = deletes[start : start + CHUNK]
            await tx.execute(
                _DELETE.format(rows=",".join(["(?,?)"] * len(chunk))),
                *(v for key in chunk for v in key),
            )
        for start in range(0, len(upserts), CHUNK):
            params: list[str] = []
            for (section, key), value in upserts[start : start + CHUNK]:
                params += (section, key, dumps(value))
            await tx.execute(
                _UPSERT.format(rows=",".join(["(?,?,?)"] * (len(params) // 3))), *params
            )


class RuleRunner:
    """Runs the time-driven rules and writes the rule state's changes (see the module)."""

    def __init__(
        self,
        pipeline: Pipeline,
        clock: Clock,
        store: Store,
        tick_s: float,
        *,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.clock = clock
        self.store = store
        self.tick_s = tick_s
        self._loops = Loops(supervisor)
        self._pending: Changes = {}
        #: Figures for the benchmark: writes made, rows written, the longest write (s).
        self.writes = 0
        self.rows_written = 0
        self.max_write_s = 0.0

    async def __aenter__(self) -> Self:
        backoff = Backoff(initial=min(1.0, self.tick_s), cap=self.tick_s)
        await self._loops.start(
            Loop("rules-tick", self._step, retry=is_storage_unavailable, backoff=backoff)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._loops.stop()
        try:
            await self.save()
        except Exception as exc:  # the database is away: nothing more can be done here
            log.error("rule_state_not_saved", error=repr(exc), rows=len(self._pending))

    async def save(self) -> None:
        """Write what changed since the last successful write; on failure keep it."""
        self._pending.update(self.pipeline.engine.take_changes())
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        started = time.perf_counter()
        try:
            await write_changes(self.store, pending)
        except BaseException:
            pending.update(self._pending)  # anything newer wins
            self._pending = pending
            raise
        took = time.perf_counter() - started
        self.writes += 1
        self.rows_written += len(pending)
        self.max_write_s = max(self.max_write_s, took)

    async def _step(self) -> None:
        """One tick: wait ``tick_s``, run the time-driven rules, write what changed."""
        await self.clock.sleep_until(self.clock.now() + timedelta(seconds=self.tick_s))
        await self.pipeline.tick()
        await self.save()
