CREATE TABLE IF NOT EXISTS sites (
    site_id     TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('home', 'care_home')),
    name        TEXT NOT NULL DEFAULT '',
    address     TEXT NOT NULL DEFAULT '',
    area        TEXT NOT NULL DEFAULT 'default',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS responders (
    responder_id TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL DEFAULT '',
    phone        TEXT NOT NULL DEFAULT '',
    area         TEXT NOT NULL DEFAULT 'default',
    skills       TEXT NOT NULL DEFAULT '[]',
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS residents (
    resident_id            TEXT PRIMARY KEY,
    site_id                TEXT NOT NULL REFERENCES sites (site_id),
    name                   TEXT NOT NULL DEFAULT '',
    nhs_number             TEXT,
    spo2_scale             INTEGER NOT NULL DEFAULT 1 CHECK (spo2_scale IN (1, 2)),
    spo2_scale_set_by      TEXT,
    spo2_scale_set_at      TEXT,
    baseline_consciousness TEXT NOT NULL DEFAULT 'A',
    notes                  TEXT NOT NULL DEFAULT '',
    created_at             TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS resident_responders (
    resident_id  TEXT NOT NULL REFERENCES residents (resident_id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    responder_id TEXT NOT NULL REFERENCES responders (responder_id),
    PRIMARY KEY (resident_id, position)
);

CREATE TABLE IF NOT EXISTS devices (
    device_id            TEXT PRIMARY KEY,
    site_id              TEXT NOT NULL REFERENCES sites (site_id),
    resident_id          TEXT REFERENCES residents (resident_id),
    kind                 TEXT NOT NULL,
    format               TEXT NOT NULL DEFAULT 'json_v1',
    location             TEXT NOT NULL DEFAULT '',
    heartbeat_interval_s INTEGER NOT NULL DEFAULT 0,
    secret_hash          TEXT,
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS device_status (
    device_id      TEXT PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    online         INTEGER NOT NULL,
    changed_at     TEXT NOT NULL,
    last_heartbeat TEXT,
    battery        REAL
);

CREATE TABLE IF NOT EXISTS alarm_events (
    event_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   TEXT NOT NULL,
    msg_id      TEXT NOT NULL,
    type        TEXT NOT NULL,
    phase       TEXT NOT NULL CHECK (phase IN ('alarm', 'restore')),
    ts          TEXT NOT NULL,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    site_id     TEXT,
    resident_id TEXT,
    zone        TEXT,
    source      TEXT NOT NULL,
    code        INTEGER,
    UNIQUE (device_id, msg_id)
);
CREATE INDEX IF NOT EXISTS alarm_events_resident_ts ON alarm_events (resident_id, ts DESC);

CREATE TABLE IF NOT EXISTS alerts (
    alert_id    TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    priority    INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    reason      TEXT NOT NULL,
    ts          TEXT NOT NULL,
    site_id     TEXT,
    resident_id TEXT,
    device_id   TEXT,
    event_type  TEXT,
    source_key  TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_source_key ON alerts (source_key, kind)
    WHERE source_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts DESC);

CREATE TABLE IF NOT EXISTS dispatches (
    dispatch_id  TEXT PRIMARY KEY,
    alert_id     TEXT NOT NULL UNIQUE REFERENCES alerts (alert_id),
    state        TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    site_id      TEXT,
    resident_id  TEXT,
    responder_id TEXT,
    cascade_step INTEGER NOT NULL DEFAULT 0,
    outcome      TEXT,
    version      INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS dispatches_open ON dispatches (priority, created_at)
    WHERE state NOT IN ('resolved', 'cancelled');

CREATE TABLE IF NOT EXISTS dispatch_audit (
    audit_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    dispatch_id TEXT NOT NULL REFERENCES dispatches (dispatch_id),
    at          TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS dispatch_audit_dispatch ON dispatch_audit (dispatch_id, audit_id);
CREATE TRIGGER IF NOT EXISTS dispatch_audit_no_update BEFORE UPDATE ON dispatch_audit
BEGIN SELECT RAISE(ABORT, 'dispatch_audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS dispatch_audit_no_delete BEFORE DELETE ON dispatch_audit
BEGIN SELECT RAISE(ABORT, 'dispatch_audit is append-only'); END;

CREATE TABLE IF NOT EXISTS dead_letters (
    dead_letter_id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at    TEXT NOT NULL,
    source         TEXT NOT NULL,
    origin         TEXT NOT NULL,
    device_id      TEXT,
    reason         TEXT NOT NULL,
    payload        BLOB NOT NULL
);
