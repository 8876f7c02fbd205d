"""Versioned SQL migrations, applied in order and recorded in ``schema_migrations``.

Files are named ``NNNN_name.sql``; a file may come in variants for one storage mode,
``NNNN_name.<mode>.sql`` (for PostgreSQL: ``timescale`` or ``plain``), of which only the
one matching the running mode is applied. The version is the number ``NNNN``.

``apply_pending`` is both backends' runner. PostgreSQL files run through ``store.sql``:
like any SQL there, they hold no ``?`` outside a quoted literal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from telecare.gateway.store.sql import Queries

__all__ = ["RECORD", "Migration", "apply_pending", "migrations_for"]

#: The statement that records an applied migration (parameters: version, name).
RECORD = "INSERT INTO schema_migrations (version, name) VALUES (?, ?)"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_for(dialect: str, mode: str | None = None) -> list[Migration]:
    """The migrations for ``dialect`` (``postgres`` or ``sqlite``) in version order."""
    folder = resources.files(__package__).joinpath(dialect)
    found: dict[int, Migration] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        name = entry.name
        stem, _, variant = name.removesuffix(".sql").partition(".")
        if not name.endswith(".sql") or variant not in ("", mode):
            continue
        version = int(stem.partition("_")[0])
        if version in found:
            raise RuntimeError(f"two migrations with version {version} in {dialect}: {name}")
        found[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def apply_pending(
    q: Queries,
    dialect: Literal["postgres", "sqlite"],
    mode: str | None,
    apply: Callable[[Migration], Awaitable[object]],
) -> list[str]:
    """Make ``schema_migrations`` if missing, then ``apply`` (which runs the migration
    and records it with :data:`RECORD`) each migration of ``dialect`` and ``mode`` it
    does not list, in version order; the names applied (none when up to date)."""
    ts = "timestamptz" if dialect == "postgres" else "TEXT"
    await q.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
        f" name text NOT NULL, applied_at {ts} NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    done = {v for (v,) in await q.fetch_all("SELECT version FROM schema_migrations")}
    todo = [m for m in migrations_for(dialect, mode) if m.version not in done]
    for m in todo:
        await apply(m)
    return [m.name for m in todo]
