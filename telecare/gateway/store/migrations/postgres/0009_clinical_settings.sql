-- Clinical settings (SpO2 scale, consciousness baseline) kept apart from the registry
-- record, so that only `telecare resident clinical` changes them (never `resident add`),
-- with an append-only history: who, when, the previous value.
-- The residents.spo2_scale* and residents.baseline_consciousness columns are legacy: they
-- held 1 / 'A' whether or not anyone had prescribed anything, and are no longer read.
CREATE TABLE IF NOT EXISTS resident_clinical (
    resident_id            text PRIMARY KEY REFERENCES residents (resident_id) ON DELETE CASCADE,
    spo2_scale             smallint CHECK (spo2_scale IN (1, 2)),
    spo2_scale_set_by      text,
    spo2_scale_set_at      timestamptz,
    baseline_consciousness text CHECK (baseline_consciousness IN ('A', 'C', 'V', 'P', 'U')),
    updated_by             text NOT NULL,
    updated_at             timestamptz NOT NULL,
    CHECK (spo2_scale IS DISTINCT FROM 2
           OR (spo2_scale_set_by IS NOT NULL AND spo2_scale_set_at IS NOT NULL))
);

CREATE TABLE IF NOT EXISTS resident_clinical_history (
    history_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resident_id   text NOT NULL REFERENCES residents (resident_id),
    setting       text NOT NULL CHECK (setting IN ('spo2_scale', 'baseline_consciousness')),
    value         text NOT NULL,
    previous      text,
    prescribed_by text,
    prescribed_at timestamptz,
    recorded_by   text NOT NULL,
    recorded_at   timestamptz NOT NULL,
    reason        text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS resident_clinical_history_resident
    ON resident_clinical_history (resident_id, history_id);

-- Carry over what the legacy columns held that cannot have been a mere default.
INSERT INTO resident_clinical (resident_id, spo2_scale, spo2_scale_set_by, spo2_scale_set_at,
                               baseline_consciousness, updated_by, updated_at)
SELECT resident_id,
       CASE WHEN spo2_scale = 2 THEN 2 END,
       CASE WHEN spo2_scale = 2 THEN spo2_scale_set_by END,
       CASE WHEN spo2_scale = 2 THEN spo2_scale_set_at END,
       CASE WHEN baseline_consciousness <> 'A' THEN baseline_consciousness END,
       'migration-0009', now()
FROM residents
WHERE spo2_scale = 2 OR baseline_consciousness <> 'A'
ON CONFLICT (resident_id) DO NOTHING;

INSERT INTO resident_clinical_history (resident_id, setting, value, prescribed_by,
                                       prescribed_at, recorded_by, recorded_at, reason)
SELECT resident_id, 'spo2_scale', '2', spo2_scale_set_by, spo2_scale_set_at,
       'migration-0009', now(), 'carried over from the resident record'
FROM residents WHERE spo2_scale = 2;

INSERT INTO resident_clinical_history (resident_id, setting, value, recorded_by, recorded_at,
                                       reason)
SELECT resident_id, 'baseline_consciousness', baseline_consciousness,
       'migration-0009', now(), 'carried over from the resident record'
FROM residents WHERE baseline_consciousness <> 'A';
