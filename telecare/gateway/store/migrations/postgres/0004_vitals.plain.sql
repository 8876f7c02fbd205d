-- Indexes for the console and report queries (plain PostgreSQL).
-- * latest vitals / metric history use readings_resident (resident_id, metric, ts DESC)
--   from 0002: one index probe per (resident, metric), one range scan per history.
-- * response-time figures: dispatches by creation time, audit steps by state.
-- * no continuous aggregate here: history is downsampled at query time with date_bin.
CREATE INDEX IF NOT EXISTS dispatches_created ON dispatches (created_at);
CREATE INDEX IF NOT EXISTS dispatch_audit_state ON dispatch_audit (dispatch_id, to_state, at);
