-- The operator console's own state (gateway/web/console_store.py, docs/console.md).
-- Who owns a resident's alarms: the operator who opened one. Released by handing back,
-- by a hold, or when an acknowledged alarm is left without progress.
CREATE TABLE IF NOT EXISTS console_owners (
    owner_key   text PRIMARY KEY,          -- resident id, or 'dispatch:<id>' without one
    operator    text NOT NULL,
    dispatch_id text NOT NULL,
    since       timestamptz NOT NULL
);

-- Console timers: a hold's recall, an ambulance handover's re-check.
CREATE TABLE IF NOT EXISTS console_timers (
    dispatch_id text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('hold', 'recheck')),
    due_at      timestamptz NOT NULL,
    set_by      text NOT NULL,
    set_at      timestamptz NOT NULL,
    reason      text NOT NULL DEFAULT '',
    reference   text,
    PRIMARY KEY (dispatch_id, kind)
);
CREATE INDEX IF NOT EXISTS console_timers_due ON console_timers (due_at);

-- Notices an operator must acknowledge before the alarm can be closed (a recall, a
-- repeat press, a restore at the device, an escalation by a timer).
CREATE TABLE IF NOT EXISTS console_notices (
    notice_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dispatch_id text NOT NULL,
    kind        text NOT NULL,
    text        text NOT NULL,
    created_at  timestamptz NOT NULL,
    acked_by    text,
    acked_at    timestamptz
);
CREATE INDEX IF NOT EXISTS console_notices_open ON console_notices (dispatch_id)
    WHERE acked_at IS NULL;

-- Resident notes for the console banner: key safe and medical notes (shown on demand,
-- each view audited), risk, language and hearing notes; any may expire.
CREATE TABLE IF NOT EXISTS console_notes (
    note_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resident_id text NOT NULL,
    kind        text NOT NULL
        CHECK (kind IN ('key_safe', 'medical', 'risk', 'language', 'hearing', 'note')),
    text        text NOT NULL,
    expires_at  timestamptz,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS console_notes_resident ON console_notes (resident_id, kind);

-- Who looked at a resident's key safe or medical notes, and when. Append-only.
CREATE TABLE IF NOT EXISTS console_views (
    view_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resident_id text NOT NULL,
    what        text NOT NULL,
    operator    text NOT NULL,
    at          timestamptz NOT NULL,
    dispatch_id text
);
CREATE INDEX IF NOT EXISTS console_views_resident ON console_views (resident_id, view_id);
CREATE OR REPLACE FUNCTION console_views_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'console_views is append-only';
END $$;
DROP TRIGGER IF EXISTS console_views_no_change ON console_views;
CREATE TRIGGER console_views_no_change BEFORE UPDATE OR DELETE ON console_views
    FOR EACH ROW EXECUTE FUNCTION console_views_append_only();

-- How an alarm was closed beyond its outcome code: the false-alarm flag and a note.
CREATE TABLE IF NOT EXISTS console_closures (
    dispatch_id text PRIMARY KEY,
    outcome     text NOT NULL,
    false_alarm boolean NOT NULL,
    note        text NOT NULL DEFAULT '',
    closed_by   text NOT NULL,
    closed_at   timestamptz NOT NULL
);
