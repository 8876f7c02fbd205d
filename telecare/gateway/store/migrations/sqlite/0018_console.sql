-- The operator console's own state (gateway/web/console_store.py, docs/console.md).
-- Who owns a resident's alarms: the operator who opened one. Released by handing back,
-- by a hold, or when an acknowledged alarm is left without progress.
CREATE TABLE IF NOT EXISTS console_owners (
    owner_key   TEXT PRIMARY KEY,          -- resident id, or 'dispatch:<id>' without one
    operator    TEXT NOT NULL,
    dispatch_id TEXT NOT NULL,
    since       TEXT NOT NULL
);

-- Console timers: a hold's recall, an ambulance handover's re-check.
CREATE TABLE IF NOT EXISTS console_timers (
    dispatch_id TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('hold', 'recheck')),
    due_at      TEXT NOT NULL,
    set_by      TEXT NOT NULL,
    set_at      TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    reference   TEXT,
    PRIMARY KEY (dispatch_id, kind)
);
CREATE INDEX IF NOT EXISTS console_timers_due ON console_timers (due_at);

-- Notices an operator must acknowledge before the alarm can be closed (a recall, a
-- repeat press, a restore at the device, an escalation by a timer).
CREATE TABLE IF NOT EXISTS console_notices (
    notice_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    dispatch_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    text        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    acked_by    TEXT,
    acked_at    TEXT
);
CREATE INDEX IF NOT EXISTS console_notices_open ON console_notices (dispatch_id)
    WHERE acked_at IS NULL;

-- Resident notes for the console banner: key safe and medical notes (shown on demand,
-- each view audited), risk, language and hearing notes; any may expire.
CREATE TABLE IF NOT EXISTS console_notes (
    note_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id TEXT NOT NULL,
    kind        TEXT NOT NULL
        CHECK (kind IN ('key_safe', 'medical', 'risk', 'language', 'hearing', 'note')),
    text        TEXT NOT NULL,
    expires_at  TEXT,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS console_notes_resident ON console_notes (resident_id, kind);

-- Who looked at a resident's key safe or medical notes, and when. Append-only.
CREATE TABLE IF NOT EXISTS console_views (
    view_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id TEXT NOT NULL,
    what        TEXT NOT NULL,
    operator    TEXT NOT NULL,
    at          TEXT NOT NULL,
    dispatch_id TEXT
);
CREATE INDEX IF NOT EXISTS console_views_resident ON console_views (resident_id, view_id);
CREATE TRIGGER IF NOT EXISTS console_views_no_update BEFORE UPDATE ON console_views
BEGIN SELECT RAISE(ABORT, 'console_views is append-only'); END;
CREATE TRIGGER IF NOT EXISTS console_views_no_delete BEFORE DELETE ON console_views
BEGIN SELECT RAISE(ABORT, 'console_views is append-only'); END;

-- How an alarm was closed beyond its outcome code: the false-alarm flag and a note.
CREATE TABLE IF NOT EXISTS console_closures (
    dispatch_id TEXT PRIMARY KEY,
    outcome     TEXT NOT NULL,
    false_alarm INTEGER NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    closed_by   TEXT NOT NULL,
    closed_at   TEXT NOT NULL
);
