-- Fleet scale (issue 11 part 2).
--
-- rule_state: the rule engine's state, one row per key (an open alarm, a device's
-- heartbeat watch, a resident's activity / NEWS2 / SpO2 state, a device's clock fault),
-- so a tick writes only the rows that changed (gateway/rule_state.py). ``value`` is
-- the row as JSON text.
CREATE TABLE IF NOT EXISTS rule_state (
    section TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (section, key)
) WITHOUT ROWID;

-- registry_changelog: which registry entry changed, in commit order, written by the
-- triggers below whoever writes (the CLI in another process, an import, the API). A
-- running gateway polls it (gateway/registry_cache.py) and drops or reloads what it has
-- cached. SQLite has one writer at a time, so ``seq`` order is commit order.
CREATE TABLE IF NOT EXISTS registry_changelog (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    kind      TEXT NOT NULL,
    entity_id TEXT NOT NULL
);

CREATE TRIGGER IF NOT EXISTS devices_changed_insert AFTER INSERT ON devices
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('device', NEW.device_id); END;
CREATE TRIGGER IF NOT EXISTS devices_changed_update AFTER UPDATE ON devices
BEGIN
    INSERT INTO registry_changelog (kind, entity_id) VALUES ('device', NEW.device_id);
    INSERT INTO registry_changelog (kind, entity_id)
        SELECT 'device', OLD.device_id WHERE OLD.device_id <> NEW.device_id;
END;
CREATE TRIGGER IF NOT EXISTS devices_changed_delete AFTER DELETE ON devices
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('device', OLD.device_id); END;

CREATE TRIGGER IF NOT EXISTS residents_changed_insert AFTER INSERT ON residents
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('resident', NEW.resident_id); END;
CREATE TRIGGER IF NOT EXISTS residents_changed_update AFTER UPDATE ON residents
BEGIN
    INSERT INTO registry_changelog (kind, entity_id) VALUES ('resident', NEW.resident_id);
    INSERT INTO registry_changelog (kind, entity_id)
        SELECT 'resident', OLD.resident_id WHERE OLD.resident_id <> NEW.resident_id;
END;
CREATE TRIGGER IF NOT EXISTS residents_changed_delete AFTER DELETE ON residents
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('resident', OLD.resident_id); END;

-- A resident's clinical settings and responder cascade are part of the cached resident.
CREATE TRIGGER IF NOT EXISTS resident_clinical_changed_insert AFTER INSERT ON resident_clinical
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('resident', NEW.resident_id); END;
CREATE TRIGGER IF NOT EXISTS resident_clinical_changed_update AFTER UPDATE ON resident_clinical
BEGIN
    INSERT INTO registry_changelog (kind, entity_id) VALUES ('resident', NEW.resident_id);
    INSERT INTO registry_changelog (kind, entity_id)
        SELECT 'resident', OLD.resident_id WHERE OLD.resident_id <> NEW.resident_id;
END;
CREATE TRIGGER IF NOT EXISTS resident_clinical_changed_delete AFTER DELETE ON resident_clinical
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('resident', OLD.resident_id); END;

CREATE TRIGGER IF NOT EXISTS resident_responders_changed_insert
AFTER INSERT ON resident_responders
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('resident', NEW.resident_id); END;
CREATE TRIGGER IF NOT EXISTS resident_responders_changed_update
AFTER UPDATE ON resident_responders
BEGIN
    INSERT INTO registry_changelog (kind, entity_id) VALUES ('resident', NEW.resident_id);
    INSERT INTO registry_changelog (kind, entity_id)
        SELECT 'resident', OLD.resident_id WHERE OLD.resident_id <> NEW.resident_id;
END;
CREATE TRIGGER IF NOT EXISTS resident_responders_changed_delete
AFTER DELETE ON resident_responders
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('resident', OLD.resident_id); END;

CREATE TRIGGER IF NOT EXISTS sites_changed_insert AFTER INSERT ON sites
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('site', NEW.site_id); END;
CREATE TRIGGER IF NOT EXISTS sites_changed_update AFTER UPDATE ON sites
BEGIN
    INSERT INTO registry_changelog (kind, entity_id) VALUES ('site', NEW.site_id);
    INSERT INTO registry_changelog (kind, entity_id)
        SELECT 'site', OLD.site_id WHERE OLD.site_id <> NEW.site_id;
END;
CREATE TRIGGER IF NOT EXISTS sites_changed_delete AFTER DELETE ON sites
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('site', OLD.site_id); END;

-- Receiver accounts (DC-09, SCAIP, serial Contact ID): logged by account number.
CREATE TRIGGER IF NOT EXISTS receiver_accounts_changed_insert AFTER INSERT ON receiver_accounts
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('account', NEW.account); END;
CREATE TRIGGER IF NOT EXISTS receiver_accounts_changed_update AFTER UPDATE ON receiver_accounts
BEGIN
    INSERT INTO registry_changelog (kind, entity_id) VALUES ('account', NEW.account);
    INSERT INTO registry_changelog (kind, entity_id)
        SELECT 'account', OLD.account WHERE OLD.account <> NEW.account;
END;
CREATE TRIGGER IF NOT EXISTS receiver_accounts_changed_delete AFTER DELETE ON receiver_accounts
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('account', OLD.account); END;
