-- Dispatch: resolved cascades, persisted timers (they survive a restart), delivery receipts.
CREATE TABLE IF NOT EXISTS dispatch_cascade (
    dispatch_id  TEXT NOT NULL REFERENCES dispatches (dispatch_id),
    position     INTEGER NOT NULL,
    responder_id TEXT NOT NULL,
    timeout_s    INTEGER NOT NULL CHECK (timeout_s > 0),
    PRIMARY KEY (dispatch_id, position)
);

CREATE TABLE IF NOT EXISTS dispatch_timers (
    dispatch_id TEXT NOT NULL REFERENCES dispatches (dispatch_id),
    kind        TEXT NOT NULL CHECK (kind IN ('ack', 'step', 'attend')),
    due_at      TEXT NOT NULL,
    step        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dispatch_id, kind)
);
CREATE INDEX IF NOT EXISTS dispatch_timers_due ON dispatch_timers (due_at);

CREATE TABLE IF NOT EXISTS notification_receipts (
    receipt_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    dispatch_id TEXT NOT NULL REFERENCES dispatches (dispatch_id),
    channel     TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('delivered', 'failed')),
    attempts    INTEGER NOT NULL,
    at          TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS notification_receipts_dispatch
    ON notification_receipts (dispatch_id, receipt_id);
CREATE INDEX IF NOT EXISTS dispatches_created ON dispatches (created_at);
