"""The receivers benchmark's ``[store]`` section, and for PostgreSQL roles as deployed.

:func:`store_section`: SQLite in the run's directory; PostgreSQL in a fresh database
with an owner and a runtime role made by the administrator script ``telecare db roles
--apply`` runs (``store.roles.setup_script``, as ``tests/store/test_db_roles.py`` does):
the gateway connects as the runtime role (neither superuser nor the tables' owner, so
no ``store_role_too_powerful`` warning) and migrates through the owner's connection
(``store.migrate_dsn``). Roles are cluster-wide: each run has its own names; the
database and both roles are dropped afterwards (with the administrator's ``--dsn``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from telecare.gateway.config import Secret, StoreConfig
from telecare.gateway.store.roles import setup_script

__all__ = ["store_section"]


@contextlib.asynccontextmanager
async def store_section(backend: str, admin_dsn: str, run_dir: Path) -> AsyncIterator[StoreConfig]:
    if backend != "postgres":
        yield StoreConfig(
            backend=backend,
            sqlite_path=str(run_dir / "bench.sqlite3"),
            spool_dir=str(run_dir / "spool"),
        )
        return
    import psycopg
    from psycopg.conninfo import make_conninfo

    tag = uuid.uuid4().hex[:8]
    database, owner, runtime = f"bench_{tag}", f"bench_owner_{tag}", f"bench_app_{tag}"
    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as c:
        await c.execute(f"CREATE DATABASE {database}".encode())
    admin = make_conninfo(admin_dsn, dbname=database)
    try:
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as c:
            await c.execute(setup_script(database, "telecare", owner, runtime).encode())
        yield StoreConfig(
            backend="postgres",
            dsn=Secret(make_conninfo(admin, user=runtime)),
            migrate_dsn=Secret(make_conninfo(admin, user=owner)),
            schema="telecare",
            timescale=False,
            spool_dir=str(run_dir / "spool"),
        )
    finally:
        async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as c:
            await c.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)".encode())
            await c.execute(f"DROP ROLE IF EXISTS {owner}".encode())
            await c.execute(f"DROP ROLE IF EXISTS {runtime}".encode())
