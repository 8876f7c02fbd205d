-- Fleet scale (issue 11 part 2).
--
-- rule_state: the rule engine's state, one row per key (an open alarm, a device's
-- heartbeat watch, a resident's activity / NEWS2 / SpO2 state, a device's clock fault),
-- so a tick writes only the rows that changed (gateway/rule_state.py). ``value`` is
-- the row as JSON text (opaque to SQL; text, so both dialects pass it as is).
CREATE TABLE IF NOT EXISTS rule_state (
    section text NOT NULL,
    key     text NOT NULL,
    value   text NOT NULL,
    PRIMARY KEY (section, key)
);

-- registry_changelog: which registry entry changed, in commit order, written by the
-- triggers below whoever writes (the CLI in another process, an import, the API). A
-- running gateway polls it (gateway/registry_cache.py) and drops or reloads what it has
-- cached.
--
-- Commit order: an identity value is taken when a row is inserted, not when its
-- transaction commits, so with two writers seq 6 could become visible before seq 5 and a
-- poller that has read up to 6 would never see 5. Every statement that changes a
-- registry table therefore first takes a transaction-scoped advisory lock (one per
-- schema; registry writes are rare and short): writers take seq values one transaction
-- at a time, in commit order.
CREATE TABLE IF NOT EXISTS registry_changelog (
    seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    kind      text NOT NULL,
    entity_id text NOT NULL
);

CREATE OR REPLACE FUNCTION registry_changelog_lock() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(TG_TABLE_SCHEMA || '.registry_changelog'));
    RETURN NULL;
END $$;

-- TG_ARGV[0]: the kind logged; TG_ARGV[1]: the column holding the entity id.
CREATE OR REPLACE FUNCTION registry_changelog_log() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    new_id text;
    old_id text;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        new_id := to_jsonb(NEW) ->> TG_ARGV[1];
        INSERT INTO registry_changelog (kind, entity_id) VALUES (TG_ARGV[0], new_id);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_id := to_jsonb(OLD) ->> TG_ARGV[1];
        IF old_id IS DISTINCT FROM new_id THEN
            INSERT INTO registry_changelog (kind, entity_id) VALUES (TG_ARGV[0], old_id);
        END IF;
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('devices', 'device', 'device_id'),
        ('residents', 'resident', 'resident_id'),
        -- a resident's clinical settings and responder cascade are part of the cached
        -- resident
        ('resident_clinical', 'resident', 'resident_id'),
        ('resident_responders', 'resident', 'resident_id'),
        ('sites', 'site', 'site_id'),
        -- receiver accounts (DC-09, SCAIP, serial Contact ID), by account number
        ('receiver_accounts', 'account', 'account')
    ) AS v (tbl, kind, col)
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t.tbl || '_changes_lock', t.tbl);
        EXECUTE format(
            'CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE ON %I'
            ' FOR EACH STATEMENT EXECUTE FUNCTION registry_changelog_lock()',
            t.tbl || '_changes_lock', t.tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t.tbl || '_changes_log', t.tbl);
        EXECUTE format(
            'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I'
            ' FOR EACH ROW EXECUTE FUNCTION registry_changelog_log(%L, %L)',
            t.tbl || '_changes_log', t.tbl, t.kind, t.col);
    END LOOP;
END $$;
