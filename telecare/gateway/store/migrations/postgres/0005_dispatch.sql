-- Dispatch: resolved cascades, persisted timers (they survive a restart), delivery receipts.
CREATE TABLE IF NOT EXISTS dispatch_cascade (
    dispatch_id  text NOT NULL REFERENCES dispatches (dispatch_id),
    position     smallint NOT NULL,
    responder_id text NOT NULL,
    timeout_s    integer NOT NULL CHECK (timeout_s > 0),
    PRIMARY KEY (dispatch_id, position)
);

CREATE TABLE IF NOT EXISTS dispatch_timers (
    dispatch_id text NOT NULL REFERENCES dispatches (dispatch_id),
    kind        text NOT NULL CHECK (kind IN ('ack', 'step', 'attend')),
    due_at      timestamptz NOT NULL,
    step        smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (dispatch_id, kind)
);
CREATE INDEX IF NOT EXISTS dispatch_timers_due ON dispatch_timers (due_at);

CREATE TABLE IF NOT EXISTS notification_receipts (
    receipt_id  bigserial PRIMARY KEY,
    dispatch_id text NOT NULL REFERENCES dispatches (dispatch_id),
    channel     text NOT NULL,
    recipient   text NOT NULL,
    status      text NOT NULL CHECK (status IN ('delivered', 'failed')),
    attempts    integer NOT NULL,
    at          timestamptz NOT NULL,
    detail      text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS notification_receipts_dispatch
    ON notification_receipts (dispatch_id, receipt_id);
CREATE INDEX IF NOT EXISTS dispatches_created ON dispatches (created_at);
