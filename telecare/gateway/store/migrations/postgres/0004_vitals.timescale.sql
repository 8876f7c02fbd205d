-- TimescaleDB: compression settings for readings, the hourly continuous aggregate and
-- its refresh policy, and the report indexes. The compression and retention *policies*
-- take ages from the store's configuration (compress_after, retain_for), so the store
-- applies them after migrating (PostgresStore._apply_policies), not this file.
-- @extschema@ is the extension's schema (see 0002).

-- Segment by what queries filter on (resident, metric) and by the rest of the
-- idempotency key (device); order by time so a segment's min/max metadata prunes ranges.
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'resident_id, device_id, metric',
    timescaledb.compress_orderby = 'ts DESC, msg_id'
);

-- Hourly vitals per resident. WITH NO DATA: allowed inside the migration's transaction;
-- the policy below fills it. materialized_only = false: queries also see the newest,
-- not yet materialised hour (real-time aggregation).
CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT resident_id,
       metric,
       @extschema@.time_bucket(INTERVAL '1 hour', ts) AS bucket,
       min(value) AS min_value,
       max(value) AS max_value,
       avg(value) AS avg_value,
       count(*)   AS n
FROM readings
WHERE resident_id IS NOT NULL
GROUP BY resident_id, metric, @extschema@.time_bucket(INTERVAL '1 hour', ts)
WITH NO DATA;

-- Re-materialise the last three days every 30 minutes, leaving the current hour to
-- real-time aggregation. Late readings (replayed from a spool) up to three days old are
-- picked up; keep retain_for well above three days.
SELECT @extschema@.add_continuous_aggregate_policy('vitals_hourly',
    start_offset => INTERVAL '3 days',
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes',
    if_not_exists => true);

CREATE INDEX IF NOT EXISTS dispatches_created ON dispatches (created_at);
CREATE INDEX IF NOT EXISTS dispatch_audit_state ON dispatch_audit (dispatch_id, to_state, at);
