-- NEWS2 scores: one row per scored observation set. Idempotency key
-- (resident_id, observation_id, ts): re-submitting the same observation stores nothing.
-- TimescaleDB variant: a hypertable with 30-day chunks (a few scores per resident a day
-- is a small volume; one-day chunks would be mostly empty). @extschema@: see 0002.
CREATE TABLE IF NOT EXISTS news2_scores (
    ts             timestamptz NOT NULL,
    resident_id    text NOT NULL,
    observation_id text NOT NULL,
    total          smallint NOT NULL CHECK (total BETWEEN 0 AND 20),
    risk           text NOT NULL,
    red_flag       boolean NOT NULL,
    spo2_scale     smallint NOT NULL CHECK (spo2_scale IN (1, 2)),
    components     jsonb NOT NULL DEFAULT '{}'
);
SELECT @extschema@.create_hypertable('news2_scores',
                                     @extschema@.by_range('ts', interval '30 days'),
                                     if_not_exists => true);
CREATE UNIQUE INDEX IF NOT EXISTS news2_scores_idem ON news2_scores (resident_id, observation_id, ts);
CREATE INDEX IF NOT EXISTS news2_scores_resident_ts ON news2_scores (resident_id, ts DESC);
