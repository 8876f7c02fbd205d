"""Finding, or creating, the TimescaleDB extension for the PostgreSQL store: where it
lives (never in an application schema: found where it is, or created in a schema of its
own, every reference to its functions qualified with that schema by
``Extension.qualified``) and the checks made before anything is tried (installed,
preloaded, recent enough) are described in docs/storage.md, "Modes (PostgreSQL)".
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import takewhile

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import TupleRow

from telecare.gateway.store.errors import is_unavailable

__all__ = ["MIN_VERSION", "Extension", "ExtensionStatus", "extension_status", "prepare"]

log = structlog.get_logger(__name__)

#: ``create_hypertable(..., by_range(...))``, used by the migrations, is 2.13's API.
MIN_VERSION = (2, 13)
#: Defined by TimescaleDB's loader, and only when it was loaded by shared_preload_libraries.
_LOADER_SETTING = "timescaledb.bgw_launcher_poll_time"
PRELOAD_FIX = (
    "add 'timescaledb' to shared_preload_libraries in postgresql.conf and restart"
    " PostgreSQL (or set store.timescale = false)"
)

_PROBE = """
SELECT a.default_version, n.nspname, e.extversion,
       current_setting(%s, true) IS NOT NULL,
       (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries')
FROM (SELECT 1) AS one
LEFT JOIN pg_available_extensions a ON a.name = 'timescaledb'
LEFT JOIN pg_extension e ON e.extname = 'timescaledb'
LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
"""


@dataclass(frozen=True, slots=True)
class Extension:
    """An installed, loadable TimescaleDB: the schema it lives in and its version."""

    schema: str
    version: str

    def qualified(self, name: str) -> str:
        """``name`` (a function of the extension) qualified with the extension's schema,
        quoted, ready to be put into SQL text."""
        return sql.Identifier(self.schema, name).as_string()

    def render(self, text: str) -> str:
        """A migration's SQL with ``@extschema@`` replaced by the quoted schema."""
        return text.replace("@extschema@", sql.Identifier(self.schema).as_string())


@dataclass(frozen=True, slots=True)
class ExtensionStatus:
    """What the server says about TimescaleDB (``telecare doctor`` reports it)."""

    available: str | None  # default version of the installed files, if any
    schema: str | None  # where it is created in this database, if it is
    version: str | None  # created version, if it is
    preloaded: bool
    preload_setting: str | None


async def extension_status(conn: psycopg.AsyncConnection[TupleRow]) -> ExtensionStatus:
    """The server's TimescaleDB: installed, created, preloaded (read-only)."""
    cur = await conn.execute(_PROBE, (_LOADER_SETTING,))
    [row] = await cur.fetchall()
    return ExtensionStatus(*row)


async def prepare(conn: psycopg.AsyncConnection[TupleRow], schema: str) -> Extension | None:
    """The usable TimescaleDB of this database, created in ``schema`` if it is not
    installed yet; ``None`` (with a log line saying why and what to do) when it cannot
    be used. It never raises for that, only when the database is unreachable.

    ``conn`` must be in autocommit mode. Give it a connection of its own: if a server
    closes the session anyway, only that connection is lost.
    """
    st = await extension_status(conn)
    version = st.version or st.available
    if version is None:
        log.info(
            "timescaledb_unavailable",
            reason="the extension is not installed on this PostgreSQL server",
            fix="install TimescaleDB for this PostgreSQL (or set store.timescale = false)",
        )
    elif not st.preloaded:
        log.warning(
            "timescaledb_not_preloaded",
            reason="the extension's files are installed but its library is not preloaded",
            shared_preload_libraries=st.preload_setting,
            fix=PRELOAD_FIX,
            fallback="plain PostgreSQL partitions",
        )
    elif _version(version) < MIN_VERSION:
        log.warning(
            "timescaledb_too_old",
            version=version,
            needed=".".join(map(str, MIN_VERSION)),
            fix="update TimescaleDB (ALTER EXTENSION timescaledb UPDATE)",
            fallback="plain PostgreSQL partitions",
        )
    elif st.schema is not None:
        return Extension(st.schema, version)
    else:
        return await _create(conn, schema)
    return None


async def _create(conn: psycopg.AsyncConnection[TupleRow], schema: str) -> Extension | None:
    try:
        async with conn.transaction():
            # One creator at a time per database (several gateways or tests may start
            # together); whoever comes second finds it created.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('telecare:timescaledb'))")
            ident = sql.Identifier(schema)
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            await conn.execute(
                sql.SQL("CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA {}").format(ident)
            )
            st = await extension_status(conn)
    except psycopg.Error as exc:
        if is_unavailable(exc):
            raise
        log.warning(
            "timescaledb_not_created",
            schema=schema,
            error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            fix="create it as a superuser or the database owner:"
            f" CREATE EXTENSION timescaledb WITH SCHEMA {schema}",
            fallback="plain PostgreSQL partitions",
        )
        return None
    if st.schema is None or st.version is None:
        return None  # dropped again by someone else in between: try again at next start
    log.info("timescaledb_created", schema=st.schema, version=st.version)
    return Extension(st.schema, st.version)


def _version(text: str) -> tuple[int, ...]:
    """``2.15.1-dev`` as ``(2, 15, 1)``: the numbers up to the first piece that is not one."""
    return tuple(map(int, takewhile(str.isdigit, text.split("-")[0].split("."))))
