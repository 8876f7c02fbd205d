-- The ACVPU level a NEWS2 score was computed from (the FHIR export reports it with its
-- SNOMED value; the consciousness sub-score alone cannot tell C, V, P and U apart).
-- NULL for scores stored before this migration.
ALTER TABLE news2_scores ADD COLUMN IF NOT EXISTS consciousness text
    CHECK (consciousness IN ('A', 'C', 'V', 'P', 'U'));
