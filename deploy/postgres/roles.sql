-- telecare: database roles. Run once as a superuser (or a role with CREATEROLE):
--   psql -d telecare -f roles.sql        (or: telecare db roles --apply --admin-dsn ...)
-- Then give both roles a password (never in this file): \password telecare_owner, \password telecare_app
-- Owner: owns the schema and its tables, runs `telecare db migrate` (store.migrate_dsn).
-- Runtime: the gateway (store.dsn); after every migration the owner grants it
-- SELECT/INSERT/UPDATE/DELETE on the operational tables but only SELECT and INSERT on the
-- records of who did what (dispatch_audit, resident_clinical_history). Neither role is a
-- superuser.
DO $$ BEGIN
    CREATE ROLE telecare_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
    CREATE ROLE telecare_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
ALTER ROLE telecare_app NOINHERIT;
REVOKE ALL ON DATABASE telecare FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE telecare TO telecare_owner, telecare_app;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS telecare AUTHORIZATION telecare_owner;
ALTER SCHEMA telecare OWNER TO telecare_owner;
REVOKE ALL ON SCHEMA telecare FROM PUBLIC;
GRANT USAGE ON SCHEMA telecare TO telecare_app;
-- TimescaleDB (when installed) is created by the administrator, not by the owner role:
-- CREATE EXTENSION IF NOT EXISTS timescaledb;
