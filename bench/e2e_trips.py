"""``python -m bench e2e_trips``: PostgreSQL statements and round trips per dispatch opened.

What the dispatch intake costs the alarm lane, counted rather than timed: the real
``DispatchService.open`` (cascade, audit chain, timers) on PostgreSQL (own schema,
dropped afterwards), ``--alarms`` times, one after the other, through a TCP proxy that
holds every chunk ``--delay-ms`` each way. Statements are counted by wrapping psycopg's
cursor (not the pool's empty liveness check; ``BEGIN``/``COMMIT`` only where sent as
statements, so the round trips tell more); round trips are the median time per open divided by the
proxy's round trip (``2 x --delay-ms``): at 20 ms each way the machine's own latency is
noise. The resident is read through the store here (the gateway reads it from its warm
registry cache: one round trip less, printed apart).

    python -m bench e2e_trips [--dsn ...] [--alarms 20] [--delay-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from telecare.devices.model import Alert, AlertKind, EventType, Resident, Site, SiteKind
from telecare.dispatch import DispatchService
from telecare.gateway.logging import configure_logging
from telecare.gateway.store.postgres import PostgresStore
from telecare.rules.clock import SystemClock

__all__ = ["main"]


class DelayProxy:
    """Forwards TCP to ``target``, holding each chunk ``delay`` seconds (order kept)."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.target = (host, port)
        self.delay = delay
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            while data := await r.read(65536):
                await queue.put((loop.time() + self.delay, data))
            await queue.put((loop.time() + self.delay, b""))

        reader = asyncio.create_task(read())
        try:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    break
                w.write(data)
                await w.drain()
        finally:
            reader.cancel()
            w.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(cr, sw), self._pipe(sr, cw), return_exceptions=True)

    async def start(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)


def _count_statements(counter: list[int]) -> None:
    execute = psycopg.AsyncCursor.execute
    execute_many = psycopg.AsyncCursor.executemany

    async def counted(self: Any, query: Any, *a: Any, **k: Any) -> Any:
        counter[0] += query not in ("", b"")  # "" is the pool's liveness check
        return await execute(self, query, *a, **k)

    async def counted_many(self: Any, query: Any, rows: Any, **k: Any) -> None:
        rows = list(rows)
        counter[0] += len(rows)
        await execute_many(self, query, rows, **k)

    psycopg.AsyncCursor.execute = counted  # type: ignore[method-assign]
    psycopg.AsyncCursor.executemany = counted_many  # type: ignore[method-assign,assignment]


def _timed(
    fn: Callable[..., Awaitable[Any]], spent: list[float], statements: list[int], used: list[int]
) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*a: Any, **k: Any) -> Any:
        start, before = time.perf_counter(), statements[0]
        try:
            return await fn(*a, **k)
        finally:
            spent.append(time.perf_counter() - start)
            used.append(statements[0] - before)

    return wrapper


def _via(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))


async def run(args: argparse.Namespace) -> None:
    target = urlsplit(args.dsn)
    proxy = DelayProxy(target.hostname or "127.0.0.1", target.port or 5432, args.delay_ms / 1000)
    server = await proxy.start()
    port = server.sockets[0].getsockname()[1]
    schema = f"bench_trips_{uuid.uuid4().hex[:8]}"
    statements = [0]
    _count_statements(statements)
    try:
        async with server, PostgresStore(_via(args.dsn, port), schema=schema) as store:
            await store.migrate()
            await store.upsert_site(Site("s1", SiteKind.HOME, area="north"))
            await store.upsert_resident(Resident("r1", "s1"))
            resident_s: list[float] = []
            resident_n: list[int] = []
            store.get_resident = _timed(store.get_resident, resident_s, statements, resident_n)  # type: ignore[method-assign,assignment]
            async with DispatchService(store.dispatches, store, SystemClock()) as service:
                per_open, counts = [], []
                for n in range(args.alarms):
                    alert = Alert(
                        f"a{n}", AlertKind.ALARM, 1, "pendant", datetime.now(UTC), "s1", "r1",
                        "p1", EventType.PENDANT,
                    )  # fmt: skip
                    await store.write_alerts([alert])
                    before, start = statements[0], time.perf_counter()
                    await service.open(alert)
                    per_open.append(time.perf_counter() - start)
                    counts.append(statements[0] - before)
    finally:
        async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    trip = 2 * args.delay_ms / 1000
    opened, resident = statistics.median(per_open), statistics.median(resident_s)
    print(
        f"  dispatch open: {statistics.median(counts):.0f} statements"
        f" ({statistics.median(resident_n):.0f} of them the resident read),"
        f" {opened / trip:.1f} round trips ({opened * 1000:.0f} ms at"
        f" {trip * 1000:.0f} ms a round trip), of which the resident read"
        f" {resident / trip:.1f}; in the gateway (resident from the cache):"
        f" {(opened - resident) / trip:.1f} round trips"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench e2e_trips", description=__doc__)
    parser.add_argument(
        "--dsn",
        default=os.environ.get("TELECARE_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--alarms", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=20.0, help="proxy delay each way")
    args = parser.parse_args(argv)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"e2e_trips: PostgreSQL work per dispatch opened; load average {load}")
    configure_logging("error", "console")
    asyncio.run(run(args))
    return 0
