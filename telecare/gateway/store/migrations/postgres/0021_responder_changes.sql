-- Responders join the registry change log (0016, same lock and log functions): a running
-- gateway keeps its dispatch responder directory in step (gateway/registry_cache.py), so
-- a responder added, moved to another area or removed with the CLI in another process is
-- dispatched as it is now without a restart.
DROP TRIGGER IF EXISTS responders_changes_lock ON responders;
CREATE TRIGGER responders_changes_lock BEFORE INSERT OR UPDATE OR DELETE ON responders
    FOR EACH STATEMENT EXECUTE FUNCTION registry_changelog_lock();
DROP TRIGGER IF EXISTS responders_changes_log ON responders;
CREATE TRIGGER responders_changes_log AFTER INSERT OR UPDATE OR DELETE ON responders
    FOR EACH ROW EXECUTE FUNCTION registry_changelog_log('responder', 'responder_id');
