-- 0008: the audit trail is hash-chained (see the PostgreSQL 0008 for the columns).
-- SQLite has no TRUNCATE: DELETE (with or without WHERE) is refused by the 0001 trigger.
ALTER TABLE dispatch_audit ADD COLUMN seq INTEGER;
ALTER TABLE dispatch_audit ADD COLUMN prev_hash TEXT;
ALTER TABLE dispatch_audit ADD COLUMN row_hash TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS dispatch_audit_seq ON dispatch_audit (seq);
CREATE TRIGGER IF NOT EXISTS dispatch_audit_chained BEFORE INSERT ON dispatch_audit
WHEN NEW.seq IS NULL OR NEW.seq < 1 OR length(NEW.prev_hash) IS NOT 64
    OR length(NEW.row_hash) IS NOT 64
BEGIN SELECT RAISE(ABORT, 'dispatch_audit rows must carry seq, prev_hash and row_hash'); END;
