-- 0008: the audit trail is hash-chained and cannot be truncated.
-- seq: 1, 2, 3 ... without gaps; prev_hash: the previous row's row_hash (64 zeros for
-- seq 1); row_hash: sha256 over prev_hash and the row's canonical content (computed by
-- the gateway, dispatch/audit_chain.py). Rows from before this migration keep NULLs and
-- are reported by `telecare audit verify` as unchained; every new row must be chained.
ALTER TABLE dispatch_audit ADD COLUMN IF NOT EXISTS seq bigint;
ALTER TABLE dispatch_audit ADD COLUMN IF NOT EXISTS prev_hash text;
ALTER TABLE dispatch_audit ADD COLUMN IF NOT EXISTS row_hash text;
CREATE UNIQUE INDEX IF NOT EXISTS dispatch_audit_seq ON dispatch_audit (seq);
ALTER TABLE dispatch_audit DROP CONSTRAINT IF EXISTS dispatch_audit_chained;
ALTER TABLE dispatch_audit ADD CONSTRAINT dispatch_audit_chained CHECK (
    seq IS NOT NULL AND seq > 0
    AND prev_hash IS NOT NULL AND prev_hash ~ '^[0-9a-f]{64}$'
    AND row_hash IS NOT NULL AND row_hash ~ '^[0-9a-f]{64}$'
) NOT VALID;

CREATE OR REPLACE FUNCTION dispatch_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dispatch_audit is append-only: % refused', TG_OP;
END $$;
DROP TRIGGER IF EXISTS dispatch_audit_no_truncate ON dispatch_audit;
CREATE TRIGGER dispatch_audit_no_truncate BEFORE TRUNCATE ON dispatch_audit
    FOR EACH STATEMENT EXECUTE FUNCTION dispatch_audit_append_only();
