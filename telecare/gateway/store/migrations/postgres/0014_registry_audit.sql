-- Who changed the registry (sites, residents, responders, devices) and when: every
-- `telecare ... set|remove|pair|unpair` and import writes one row. Append-only.
CREATE TABLE IF NOT EXISTS registry_audit (
    audit_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('site', 'resident', 'responder', 'device')),
    entity_id text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS registry_audit_entity ON registry_audit (kind, entity_id, audit_id);

CREATE OR REPLACE FUNCTION registry_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'registry_audit is append-only';
END $$;
DROP TRIGGER IF EXISTS registry_audit_no_change ON registry_audit;
CREATE TRIGGER registry_audit_no_change BEFORE UPDATE OR DELETE ON registry_audit
    FOR EACH ROW EXECUTE FUNCTION registry_audit_append_only();
