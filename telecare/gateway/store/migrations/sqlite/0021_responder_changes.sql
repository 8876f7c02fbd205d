-- Responders join the registry change log (0016): a running gateway keeps its dispatch
-- responder directory in step (gateway/registry_cache.py), so a responder added, moved
-- to another area or removed with the CLI in another process is dispatched as it is now
-- without a restart.
CREATE TRIGGER IF NOT EXISTS responders_changed_insert AFTER INSERT ON responders
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('responder', NEW.responder_id); END;
CREATE TRIGGER IF NOT EXISTS responders_changed_update AFTER UPDATE ON responders
BEGIN
    INSERT INTO registry_changelog (kind, entity_id) VALUES ('responder', NEW.responder_id);
    INSERT INTO registry_changelog (kind, entity_id)
        SELECT 'responder', OLD.responder_id WHERE OLD.responder_id <> NEW.responder_id;
END;
CREATE TRIGGER IF NOT EXISTS responders_changed_delete AFTER DELETE ON responders
BEGIN INSERT INTO registry_changelog (kind, entity_id) VALUES ('responder', OLD.responder_id); END;
