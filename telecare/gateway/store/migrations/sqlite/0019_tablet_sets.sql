-- Observation sets entered on the care-home tablet page (gateway/web/tablet_store.py),
-- keyed by the site and the tablet's Idempotency-Key so a set retried after bad Wi-Fi is
-- stored and scored once: the first request reserves the key (answer NULL), the answer
-- it gave is kept and returned to every retry. The vitals themselves are readings and
-- news2_scores like any other set; this row adds the RESTORE2 soft signs recorded with
-- the set, who entered it, and the teletriage request raised from it.
CREATE TABLE IF NOT EXISTS tablet_sets (
    site_id             TEXT NOT NULL,
    idem_key            TEXT NOT NULL,
    body_hash           TEXT NOT NULL,
    resident_id         TEXT NOT NULL,
    observation_id      TEXT NOT NULL,
    entered_by          TEXT NOT NULL,
    soft_signs          TEXT NOT NULL DEFAULT '[]',
    answer              TEXT,
    created_at          TEXT NOT NULL,
    teletriage_alert_id TEXT,
    PRIMARY KEY (site_id, idem_key)
);
CREATE INDEX IF NOT EXISTS tablet_sets_resident ON tablet_sets (resident_id, created_at);
