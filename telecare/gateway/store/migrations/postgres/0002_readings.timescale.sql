-- Readings: narrow rows, compact metric code, idempotency key (device, metric, msg_id, ts).
-- TimescaleDB variant: a hypertable with one-day chunks. @extschema@ is the schema the
-- extension lives in (never this one: see gateway/store/timescale.py); the store fills it in.
CREATE TABLE IF NOT EXISTS readings (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    metric      smallint NOT NULL,
    value       double precision NOT NULL,
    msg_id      text NOT NULL,
    resident_id text
);
SELECT @extschema@.create_hypertable('readings', @extschema@.by_range('ts', interval '1 day'),
                                     if_not_exists => true);
CREATE UNIQUE INDEX IF NOT EXISTS readings_idem ON readings (device_id, metric, msg_id, ts);
CREATE INDEX IF NOT EXISTS readings_resident ON readings (resident_id, metric, ts DESC);
