"""Versioned SQL migrations, applied in order and recorded in ``schema_migrations``.

Files are named ``NNNN_name.sql``; a file may come in variants for one storage mode,
``NNNN_name.<mode>.sql`` (for PostgreSQL: ``timescale`` or ``plain``), of which only the
one matching the running mode is applied. The version is the number ``NNNN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "migrations_for"]


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
        if not name.endswith(".sql"):
            continue
        stem = name[: -len(".sql")]
        variant = None
        if "." in stem:
            stem, variant = stem.split(".", 1)
        if variant is not None and variant != mode:
            continue
        version = int(stem.split("_", 1)[0])
        if version in found:
            raise RuntimeError(f"two migrations with version {version} in {dialect}: {name}")
        found[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]
