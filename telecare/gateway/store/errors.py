"""Storage errors, split by what the caller does next::

    StorageError            base; never raised itself
    ├── SchemaNotReady      the runtime role found the schema missing or behind the code:
    │                       run ``telecare db migrate`` with the owner DSN, then restart
    ├── SpoolFull           the database is away AND the local spool is full: do not
    │                       acknowledge the message; the sender (MQTT QoS 1, HTTP client)
    │                       must redeliver later
    └── TimescaleRequired   at start: the schema holds hypertables but TimescaleDB cannot
                            be used (not preloaded, removed); fix the server, then restart

``is_unavailable(exc)`` says whether an exception from a backend means "the database
cannot be reached right now" (spool and retry) rather than "this input is wrong" (let it
propagate: a bug or bad data must not be hidden in the spool).
"""

from __future__ import annotations

import psycopg
import psycopg_pool

__all__ = ["SchemaNotReady", "SpoolFull", "StorageError", "TimescaleRequired", "is_unavailable"]


class StorageError(Exception):
    """Base class of the storage layer's own errors (see the module docstring)."""


class SchemaNotReady(StorageError):
    def __init__(self, schema: str, problem: str) -> None:
        super().__init__(
            f"PostgreSQL schema {schema!r} {problem}: run 'telecare db migrate' with the owner"
            " role (store.migrate_dsn), then start the gateway again"
        )


class SpoolFull(StorageError):
    def __init__(self, directory: str, used: int, limit: int, needed: int) -> None:
        super().__init__(
            f"spool {directory} is full ({used} of {limit} bytes used, {needed} more needed)"
            ": PostgreSQL has been unreachable too long; raise spool_max_bytes or restore the"
            " database"
        )


class TimescaleRequired(StorageError):
    def __init__(self, schema: str) -> None:
        super().__init__(
            f"schema {schema} was created with TimescaleDB hypertables, but TimescaleDB"
            " cannot be used on this server now (see the timescaledb_* log line before this):"
            " add 'timescaledb' to shared_preload_libraries and restart PostgreSQL, or"
            " install the extension again"
        )


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database is unreachable (connection refused, lost,
    server shutting down, pool exhausted waiting for a connection)."""
    return isinstance(
        exc, psycopg.OperationalError | psycopg_pool.PoolTimeout | ConnectionError
    ) and not isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable)
