"""Shared fixtures: real PostgreSQL and Mosquitto (see tests/services.py), one schema and
one topic prefix per test, both store backends behind one parametrised fixture."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from telecare.gateway.store.postgres import PostgresStore
from telecare.gateway.store.sqlite import SqliteStore
from tests.schema_pool import SchemaPool
from tests.services import (
    MqttServer,
    PgServer,
    ServiceUnavailable,
    drop_pg_schema,
    mosquitto_server,
    postgres_server,
)

# Threads that libraries start once per process and keep on purpose.
_LONG_LIVED_THREADS = ("asyncio_", "ThreadPoolExecutor", "pytest_timeout")


def _stray_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith(_LONG_LIVED_THREADS)
    ]


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (a serial reader, a broker, a server).
    Threads get a short grace period to finish their shutdown."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while (stray := _stray_threads(before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stray, f"test left threads running: {[t.name for t in stray]}"


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail an async test that leaves tasks behind on its event loop (added to every
    coroutine test by ``pytest_collection_modifyitems``). Runs last, after the fixtures
    that stop gateways and stores."""
    yield
    me = asyncio.current_task()
    deadline = time.monotonic() + 5.0
    while True:
        stray = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not stray or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert not stray, f"test left tasks running: {sorted(t.get_name() for t in stray)}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and asyncio.iscoroutinefunction(item.obj):
            # First in the list: set up first, torn down last.
            item.fixturenames.insert(0, "_no_leaked_tasks")


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory, so the gateway's relative default paths
    (``data/spool-<schema>``, rule state) never touch the checkout or another test."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        with postgres_server() as server:
            yield server
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def mqtt_server() -> Iterator[MqttServer]:
    try:
        with mosquitto_server() as server:
            yield server
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> str:
    return pg_server.dsn


#: The schema of the test's ``store`` fixture, when it took one from ``pg_schema_pool``.
_POOLED_SCHEMA = pytest.StashKey[str]()


@pytest.fixture
def pg_schema(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh schema for this test, dropped afterwards; or, asked for after the test's
    ``store`` or ``pg_store`` took a schema from the pool, that schema (one store, one
    schema)."""
    if (pooled := request.node.stash.get(_POOLED_SCHEMA, None)) is not None:
        yield pooled
        return
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    drop_pg_schema(pg_server.dsn, name)


@pytest.fixture
async def pg_store(request: pytest.FixtureRequest) -> AsyncIterator[PostgresStore]:
    """A migrated PostgreSQL store (its schema as the ``store`` fixture's)."""
    async with _postgres_store(request) as store:
        yield store


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "telecare.sqlite3") as store:
        await store.migrate()
        yield store


@pytest.fixture(scope="session")
def pg_schema_pool(pg_server: PgServer) -> Iterator[SchemaPool]:
    """Migrated schemas reused from one ``store`` test to the next (tests/schema_pool.py)."""
    pool = SchemaPool(pg_server.dsn)
    yield pool
    pool.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqliteStore | PostgresStore]:
    """Both backends: a test using this runs once against each. The PostgreSQL schema is
    fresh or an emptied one exactly as fresh (``pg_schema_pool``)."""
    if request.param == "sqlite":
        async with SqliteStore(tmp_path / "telecare.sqlite3") as s:
            await s.migrate()
            yield s
        return
    async with _postgres_store(request) as p:
        yield p


@asynccontextmanager
async def _postgres_store(request: pytest.FixtureRequest) -> AsyncIterator[PostgresStore]:
    """A migrated store on a fresh schema when the test names ``pg_schema`` itself, else
    on one from ``pg_schema_pool`` (which a later ``pg_schema`` request then returns)."""
    if "pg_schema" in request.fixturenames:
        dsn, name = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
        async with PostgresStore(dsn, schema=name) as p:
            await p.migrate()
            yield p
        return
    pool: SchemaPool = request.getfixturevalue("pg_schema_pool")
    schema, known = pool.take()
    request.node.stash[_POOLED_SCHEMA] = schema
    structure = None
    try:
        async with PostgresStore(pool.dsn, schema=schema) as p:
            await p.migrate()
            if p.timescale is None:  # TimescaleDB keeps state outside the schema
                structure = known or await asyncio.to_thread(pool.structure, schema, fresh=True)
            yield p
    finally:
        await asyncio.to_thread(pool.give_back, schema, structure)


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic prefix so concurrent tests on one broker never see each other."""
    return f"test-{uuid.uuid4().hex[:10]}/telecare/v1"
