"""PostgreSQL roles: an owner that runs migrations and a runtime role with only what the
running gateway needs.

- ``setup_script`` is the one-time SQL an administrator runs (``telecare db roles``
  prints it, ``--apply`` runs it; ``deploy/postgres/roles.sql`` is its default output):
  the two login roles, the database's privileges, the schema owned by the owner role.
- ``runtime_grants`` is applied by the owner after every migration
  (``PostgresStore.migrate`` with ``runtime_role``): read and write on the operational
  tables, but on the :data:`APPEND_ONLY` records only ``SELECT`` and ``INSERT`` (no
  ``UPDATE``, ``DELETE``, ``TRUNCATE``, ``TRIGGER``), ``schema_migrations`` read-only,
  nothing owned, so the runtime role can neither rewrite the audit nor disable its triggers.
"""

from __future__ import annotations

import re
from typing import Final

from psycopg import sql

__all__ = ["APPEND_ONLY", "IDENTIFIER", "check_identifier", "runtime_grants", "setup_script"]

#: Records of who did what: the runtime role may read and append, never change or remove.
APPEND_ONLY: Final = ("dispatch_audit", "resident_clinical_history", "registry_audit")

#: A schema or role name we accept: lower case, never needs quoting, and safe inside
#: libpq ``options`` (where a space would start another server setting).
IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_identifier(what: str, value: str) -> str:
    """``value`` when it is a plain identifier, else ``ValueError`` saying which."""
    if not IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a valid identifier: use 1-63 lower-case letters,"
            " digits and underscores, not starting with a digit"
        )
    return value


def runtime_grants(schema: str, role: str) -> list[sql.Composed]:
    """The runtime role's privileges on ``schema`` (re-applied after each migration, so
    tables added later are covered)."""
    s, r = sql.Identifier(schema), sql.Identifier(role)
    statements = [
        "GRANT USAGE ON SCHEMA {s} TO {r}",
        "REVOKE CREATE ON SCHEMA {s} FROM {r}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
        "REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {s} FROM {r}",
        "REVOKE INSERT, UPDATE, DELETE ON {s}.schema_migrations FROM {r}",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        *(f"REVOKE UPDATE, DELETE ON {{s}}.{table} FROM {{r}}" for table in APPEND_ONLY),
    ]
    return [sql.SQL(text).format(s=s, r=r) for text in statements]


def setup_script(database: str, schema: str, owner: str, runtime: str) -> str:
    """One-time administrator SQL (idempotent) creating the two roles and the schema."""
    names = {"database": database, "schema": schema, "owner role": owner, "runtime role": runtime}
    for what, value in names.items():
        check_identifier(what, value)
    return f"""\
-- telecare: database roles. Run once as a superuser (or a role with CREATEROLE):
--   psql -d {database} -f roles.sql        (or: telecare db roles --apply --admin-dsn ...)
-- Then give both roles a password (never in this file): \\password {owner}, \\password {runtime}
-- Owner: owns the schema and its tables, runs `telecare db migrate` (store.migrate_dsn).
-- Runtime: the gateway (store.dsn); after every migration the owner grants it
-- SELECT/INSERT/UPDATE/DELETE on the operational tables but only SELECT and INSERT on the
-- records of who did what (dispatch_audit, resident_clinical_history). Neither role is a
-- superuser.
DO $$ BEGIN
    CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
    CREATE ROLE {runtime} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
ALTER ROLE {runtime} NOINHERIT;
REVOKE ALL ON DATABASE {database} FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {owner}, {runtime};
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner};
ALTER SCHEMA {schema} OWNER TO {owner};
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
GRANT USAGE ON SCHEMA {schema} TO {runtime};
-- TimescaleDB (when installed) is created by the administrator, not by the owner role:
-- CREATE EXTENSION IF NOT EXISTS timescaledb;
"""
