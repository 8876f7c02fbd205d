-- Core registry, events, alerts, dispatches, dead letters.
CREATE TABLE IF NOT EXISTS sites (
    site_id     text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('home', 'care_home')),
    name        text NOT NULL DEFAULT '',
    address     text NOT NULL DEFAULT '',
    area        text NOT NULL DEFAULT 'default',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS responders (
    responder_id text PRIMARY KEY,
    kind         text NOT NULL,
    name         text NOT NULL DEFAULT '',
    phone        text NOT NULL DEFAULT '',
    area         text NOT NULL DEFAULT 'default',
    skills       text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS residents (
    resident_id            text PRIMARY KEY,
    site_id                text NOT NULL REFERENCES sites (site_id),
    name                   text NOT NULL DEFAULT '',
    nhs_number             text,
    spo2_scale             smallint NOT NULL DEFAULT 1 CHECK (spo2_scale IN (1, 2)),
    spo2_scale_set_by      text,
    spo2_scale_set_at      timestamptz,
    baseline_consciousness text NOT NULL DEFAULT 'A',
    notes                  text NOT NULL DEFAULT '',
    created_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS resident_responders (
    resident_id  text NOT NULL REFERENCES residents (resident_id) ON DELETE CASCADE,
    position     smallint NOT NULL,
    responder_id text NOT NULL REFERENCES responders (responder_id),
    PRIMARY KEY (resident_id, position)
);

CREATE TABLE IF NOT EXISTS devices (
    device_id            text PRIMARY KEY,
    site_id              text NOT NULL REFERENCES sites (site_id),
    resident_id          text REFERENCES residents (resident_id),
    kind                 text NOT NULL,
    format               text NOT NULL DEFAULT 'json_v1',
    location             text NOT NULL DEFAULT '',
    heartbeat_interval_s integer NOT NULL DEFAULT 0,
    secret_hash          text,
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS device_status (
    device_id      text PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    online         boolean NOT NULL,
    changed_at     timestamptz NOT NULL,
    last_heartbeat timestamptz,
    battery        real
);

CREATE TABLE IF NOT EXISTS alarm_events (
    event_id    bigserial PRIMARY KEY,
    device_id   text NOT NULL,
    msg_id      text NOT NULL,
    type        text NOT NULL,
    phase       text NOT NULL CHECK (phase IN ('alarm', 'restore')),
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    site_id     text,
    resident_id text,
    zone        text,
    source      text NOT NULL,
    code        integer,
    UNIQUE (device_id, msg_id)
);
CREATE INDEX IF NOT EXISTS alarm_events_resident_ts ON alarm_events (resident_id, ts DESC);

CREATE TABLE IF NOT EXISTS alerts (
    alert_id    text PRIMARY KEY,
    kind        text NOT NULL,
    priority    smallint NOT NULL CHECK (priority BETWEEN 1 AND 5),
    reason      text NOT NULL,
    ts          timestamptz NOT NULL,
    site_id     text,
    resident_id text,
    device_id   text,
    event_type  text,
    source_key  text,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_source_key ON alerts (source_key, kind)
    WHERE source_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts DESC);

CREATE TABLE IF NOT EXISTS dispatches (
    dispatch_id  text PRIMARY KEY,
    alert_id     text NOT NULL UNIQUE REFERENCES alerts (alert_id),
    state        text NOT NULL,
    priority     smallint NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    site_id      text,
    resident_id  text,
    responder_id text,
    cascade_step smallint NOT NULL DEFAULT 0,
    outcome      text,
    version      integer NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS dispatches_open ON dispatches (priority, created_at)
    WHERE state NOT IN ('resolved', 'cancelled');

-- Append-only: the application never updates or deletes these rows.
CREATE TABLE IF NOT EXISTS dispatch_audit (
    audit_id    bigserial PRIMARY KEY,
    dispatch_id text NOT NULL REFERENCES dispatches (dispatch_id),
    at          timestamptz NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    actor       text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS dispatch_audit_dispatch ON dispatch_audit (dispatch_id, audit_id);

CREATE TABLE IF NOT EXISTS dead_letters (
    dead_letter_id bigserial PRIMARY KEY,
    received_at    timestamptz NOT NULL,
    source         text NOT NULL,
    origin         text NOT NULL,
    device_id      text,
    reason         text NOT NULL,
    payload        bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_at DESC);

CREATE OR REPLACE FUNCTION dispatch_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dispatch_audit is append-only';
END $$;
DROP TRIGGER IF EXISTS dispatch_audit_append_only ON dispatch_audit;
CREATE TRIGGER dispatch_audit_append_only BEFORE UPDATE OR DELETE ON dispatch_audit
    FOR EACH ROW EXECUTE FUNCTION dispatch_audit_append_only();
