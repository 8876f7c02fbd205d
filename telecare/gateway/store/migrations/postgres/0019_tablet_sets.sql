-- Observation sets entered on the care-home tablet page (gateway/web/tablet_store.py),
-- keyed by the site and the tablet's Idempotency-Key so a set retried after bad Wi-Fi is
-- stored and scored once: the first request reserves the key (answer NULL), the answer
-- it gave is kept and returned to every retry. The vitals themselves are readings and
-- news2_scores like any other set; this row adds the RESTORE2 soft signs recorded with
-- the set, who entered it, and the teletriage request raised from it.
CREATE TABLE IF NOT EXISTS tablet_sets (
    site_id             text NOT NULL,
    idem_key            text NOT NULL,
    body_hash           text NOT NULL,
    resident_id         text NOT NULL,
    observation_id      text NOT NULL,
    entered_by          text NOT NULL,
    soft_signs          jsonb NOT NULL DEFAULT '[]',
    answer              jsonb,
    created_at          timestamptz NOT NULL,
    teletriage_alert_id text,
    PRIMARY KEY (site_id, idem_key)
);
CREATE INDEX IF NOT EXISTS tablet_sets_resident ON tablet_sets (resident_id, created_at);
