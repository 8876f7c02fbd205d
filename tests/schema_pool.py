"""Migrated PostgreSQL schemas handed from one test to the next (the ``store`` fixture).

Migrating a new schema and dropping it costs about half a second of PostgreSQL's time
per test; emptying a schema that is already migrated costs a tenth of that. So a test of
the ``store`` fixture gets a schema from this pool when one is free (else a new name,
migrated by the fixture as before), and gives it back afterwards. A schema is reused only
when it is *exactly* as a fresh one would be, otherwise it is dropped as before:

- its structure (tables, columns, defaults, indexes, constraints, triggers, functions,
  owners, grants, policies, the ``schema_migrations`` rows) is the one it had right after
  its first ``migrate()``, before any test ran on it: a test that added a trigger
  (``refusing_db``), a grant or a partition gives back a schema that is dropped (the
  structure is taken once per schema and checked at every give-back);
- migrating it left every table but ``schema_migrations`` empty (checked once, on the
  new schema: a migration that seeds rows turns reuse off for it);
- the store ran in plain PostgreSQL mode (TimescaleDB keeps a schema's continuous
  aggregates and jobs outside it, so those schemas are always dropped);
- emptying it succeeds: every table's rows are deleted (``session_replication_role =
  replica`` so the append-only triggers and foreign keys are not consulted, which needs
  a superuser, as the local test server's ``postgres`` is) and every sequence restarts.

Resource handling: one short connection per check; the free schemas are dropped at the
end of the session (``close``). Error handling: any database error while checking or
emptying a schema drops it instead (never fails the test that gave it back).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from tests.services import drop_pg_schema

#: One text per object of the schema; equal texts before and after a test mean the same
#: structure. Names are compared, not OIDs, so nothing that is re-created unchanged trips it.
_STRUCTURE = """
SELECT md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) FROM (
  SELECT format('rel %%s %%s %%s %%s %%s', c.relname, c.relkind, c.relowner::regrole,
                c.relacl, c.relrowsecurity) AS x
    FROM pg_class c WHERE c.relnamespace = %(ns)s::regnamespace
  UNION ALL
  SELECT format('col %%s.%%s %%s %%s %%s', c.relname, a.attname,
                format_type(a.atttypid, a.atttypmod), a.attnotnull,
                pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.relnamespace = %(ns)s::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT format('idx %%s', pg_get_indexdef(i.indexrelid))
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
   WHERE c.relnamespace = %(ns)s::regnamespace
  UNION ALL
  SELECT format('con %%s %%s', conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace = %(ns)s::regnamespace
  UNION ALL
  SELECT format('trg %%s', pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE c.relnamespace = %(ns)s::regnamespace AND NOT t.tgisinternal
  UNION ALL
  SELECT format('fn %%s %%s %%s %%s', p.oid::regprocedure, md5(p.prosrc),
                p.proowner::regrole, p.proacl)
    FROM pg_proc p WHERE p.pronamespace = %(ns)s::regnamespace
  UNION ALL
  SELECT format('pol %%s.%%s', c.relname, p.polname)
    FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
   WHERE c.relnamespace = %(ns)s::regnamespace
  UNION ALL
  SELECT format('nsp %%s %%s', nspowner::regrole, nspacl)
    FROM pg_namespace WHERE oid = %(ns)s::regnamespace
  UNION ALL
  SELECT format('defacl %%s', defaclacl)
    FROM pg_default_acl WHERE defaclnamespace = %(ns)s::regnamespace
) s
"""


def _tables(conn: psycopg.Connection, schema: str) -> list[str]:
    """The schema's tables (partitioned parents, not their partitions), except the
    migrations' own record."""
    cur = conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace"
        " AND relkind IN ('r', 'p') AND NOT relispartition AND relname <> 'schema_migrations'",
        (schema,),
    )
    return [r[0] for r in cur.fetchall()]


@dataclass
class SchemaPool:
    """Migrated schemas of one test process (each test worker has its own)."""

    dsn: str
    #: Emptied schemas with their structure (checked when they were given back).
    free: list[tuple[str, str]] = field(default_factory=list)
    #: Reused schemas handed out, for the session's summary.
    reused: int = 0

    def take(self) -> tuple[str, str | None]:
        """A schema name, and its structure when it is a reused one (``None``: a fresh
        name, to migrate and then to take the structure of)."""
        if self.free:
            self.reused += 1
            return self.free.pop()
        return f"t_{uuid.uuid4().hex[:12]}", None

    def structure(self, schema: str, *, fresh: bool) -> str | None:
        """The schema's structure (see ``_STRUCTURE``) with its migrations' rows; ``None``
        when it must not be reused (a fresh schema that migrating left rows in)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            if fresh and self._has_rows(conn, schema):
                return None
            row = conn.execute(_STRUCTURE, {"ns": schema}).fetchone()
            migrations = conn.execute(
                sql.SQL(
                    "SELECT string_agg(version || ' ' || name, ',' ORDER BY version) FROM {}"
                ).format(sql.Identifier(schema, "schema_migrations"))
            ).fetchone()
        assert row is not None
        assert migrations is not None
        return f"{row[0]} {migrations[0]}"

    def give_back(self, schema: str, structure: str | None) -> None:
        """Empty ``schema`` and keep it for the next test when its structure is still
        ``structure``; drop it otherwise (or on any database error)."""
        try:
            if structure is not None and self.structure(schema, fresh=False) == structure:
                self._empty(schema)
                self.free.append((schema, structure))
                return
        except psycopg.Error:
            pass
        drop_pg_schema(self.dsn, schema)

    def close(self) -> None:
        while self.free:
            drop_pg_schema(self.dsn, self.free.pop()[0])

    @staticmethod
    def _has_rows(conn: psycopg.Connection, schema: str) -> bool:
        probes = [
            sql.SQL("(SELECT 1 FROM {} LIMIT 1)").format(sql.Identifier(schema, t))
            for t in _tables(conn, schema)
        ]
        if not probes:
            return False
        return conn.execute(sql.SQL(" UNION ALL ").join(probes)).fetchone() is not None

    def _empty(self, schema: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '5s'")
            conn.execute("SET LOCAL session_replication_role = replica")
            for table in _tables(conn, schema):
                conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, table)))
            cur = conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace"
                " AND relkind = 'S'",
                (schema,),
            )
            for (seq,) in cur.fetchall():
                conn.execute(
                    sql.SQL("ALTER SEQUENCE {} RESTART").format(sql.Identifier(schema, seq))
                )
