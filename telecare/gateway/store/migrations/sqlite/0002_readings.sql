CREATE TABLE IF NOT EXISTS readings (
    ts          TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    metric      INTEGER NOT NULL,
    value       REAL NOT NULL,
    msg_id      TEXT NOT NULL,
    resident_id TEXT,
    UNIQUE (device_id, metric, msg_id, ts)
);
CREATE INDEX IF NOT EXISTS readings_resident ON readings (resident_id, metric, ts DESC);
