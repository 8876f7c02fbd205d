-- Indexes for the report queries: dispatches by creation time, audit steps by state.
CREATE INDEX IF NOT EXISTS dispatches_created ON dispatches (created_at);
CREATE INDEX IF NOT EXISTS dispatch_audit_state ON dispatch_audit (dispatch_id, to_state, at);
