-- NEWS2 scores: one row per scored observation set. Idempotency key
-- (resident_id, observation_id, ts): re-submitting the same observation stores nothing.
-- Plain PostgreSQL variant: monthly range partitions created ahead by the store
-- (PostgresStore.ensure_partitions / maintain); a default partition catches strays.
CREATE TABLE IF NOT EXISTS news2_scores (
    ts             timestamptz NOT NULL,
    resident_id    text NOT NULL,
    observation_id text NOT NULL,
    total          smallint NOT NULL CHECK (total BETWEEN 0 AND 20),
    risk           text NOT NULL,
    red_flag       boolean NOT NULL,
    spo2_scale     smallint NOT NULL CHECK (spo2_scale IN (1, 2)),
    components     jsonb NOT NULL DEFAULT '{}'
) PARTITION BY RANGE (ts);
CREATE TABLE IF NOT EXISTS news2_scores_default PARTITION OF news2_scores DEFAULT;
CREATE UNIQUE INDEX IF NOT EXISTS news2_scores_idem ON news2_scores (resident_id, observation_id, ts);
CREATE INDEX IF NOT EXISTS news2_scores_resident_ts ON news2_scores (resident_id, ts DESC);
