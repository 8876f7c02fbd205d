-- Grouped (storm) dispatches: one dispatch for many identical technical alerts of an
-- area. The group's key names the open dispatch later alerts of the same kind join; each
-- member alert is recorded (so the orphan sweeper never re-submits it) with the time
-- its condition cleared (the group auto-clears only when every member has).
CREATE TABLE IF NOT EXISTS dispatch_groups (
    dispatch_id TEXT PRIMARY KEY REFERENCES dispatches (dispatch_id),
    group_key   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dispatch_groups_key ON dispatch_groups (group_key);

CREATE TABLE IF NOT EXISTS dispatch_members (
    alert_id    TEXT PRIMARY KEY,
    dispatch_id TEXT NOT NULL REFERENCES dispatches (dispatch_id),
    cleared_at  TEXT
);
CREATE INDEX IF NOT EXISTS dispatch_members_dispatch ON dispatch_members (dispatch_id);

-- Multi-user BLE devices (a blood-pressure cuff shared by a couple): which resident each
-- of the device's user ids is. Readings for a user id not listed are dead letters.
CREATE TABLE IF NOT EXISTS device_users (
    device_id   TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL CHECK (user_id BETWEEN 0 AND 254),
    resident_id TEXT NOT NULL REFERENCES residents (resident_id),
    PRIMARY KEY (device_id, user_id)
);
