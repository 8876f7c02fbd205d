-- Readings: narrow rows, compact metric code, idempotency key (device, metric, msg_id, ts).
-- Plain PostgreSQL variant: declarative range partitioning by month; the store creates
-- partitions ahead (see gateway/store/postgres.py) and a default partition catches strays.
CREATE TABLE IF NOT EXISTS readings (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    metric      smallint NOT NULL,
    value       double precision NOT NULL,
    msg_id      text NOT NULL,
    resident_id text
) PARTITION BY RANGE (ts);
CREATE TABLE IF NOT EXISTS readings_default PARTITION OF readings DEFAULT;
CREATE UNIQUE INDEX IF NOT EXISTS readings_idem ON readings (device_id, metric, msg_id, ts);
CREATE INDEX IF NOT EXISTS readings_resident ON readings (resident_id, metric, ts DESC);
