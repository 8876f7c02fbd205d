-- Who changed the registry (sites, residents, responders, devices) and when: every
-- `telecare ... set|remove|pair|unpair` and import writes one row. Append-only.
CREATE TABLE IF NOT EXISTS registry_audit (
    audit_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('site', 'resident', 'responder', 'device')),
    entity_id TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS registry_audit_entity ON registry_audit (kind, entity_id, audit_id);
CREATE TRIGGER IF NOT EXISTS registry_audit_no_update BEFORE UPDATE ON registry_audit
BEGIN SELECT RAISE(ABORT, 'registry_audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS registry_audit_no_delete BEFORE DELETE ON registry_audit
BEGIN SELECT RAISE(ABORT, 'registry_audit is append-only'); END;
