-- NEWS2 scores. Idempotency key (resident_id, observation_id, ts).
CREATE TABLE IF NOT EXISTS news2_scores (
    ts             TEXT NOT NULL,
    resident_id    TEXT NOT NULL,
    observation_id TEXT NOT NULL,
    total          INTEGER NOT NULL CHECK (total BETWEEN 0 AND 20),
    risk           TEXT NOT NULL,
    red_flag       INTEGER NOT NULL,
    spo2_scale     INTEGER NOT NULL CHECK (spo2_scale IN (1, 2)),
    components     TEXT NOT NULL DEFAULT '{}',
    UNIQUE (resident_id, observation_id, ts)
);
CREATE INDEX IF NOT EXISTS news2_scores_resident_ts ON news2_scores (resident_id, ts DESC);
