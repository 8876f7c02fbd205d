-- Readings: narrow rows, compact metric code, idempotency key (device, metric, msg_id, ts).
-- TimescaleDB variant: a hypertable with one-day chunks.
CREATE TABLE IF NOT EXISTS readings (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    metric      smallint NOT NULL,
    value       double precision NOT NULL,
    msg_id      text NOT NULL,
    resident_id text
);
SELECT create_hypertable('readings', 'ts', chunk_time_interval => interval '1 day',
                         if_not_exists => true);
CREATE UNIQUE INDEX IF NOT EXISTS readings_idem ON readings (device_id, metric, msg_id, ts);
CREATE INDEX IF NOT EXISTS readings_resident ON readings (resident_id, metric, ts DESC);
