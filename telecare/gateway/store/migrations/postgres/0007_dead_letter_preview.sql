-- Dead letters keep a bounded preview of the payload (DEAD_LETTER_PREVIEW bytes) and the
-- size of the whole payload; older rows are cut down to the same preview.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS payload_bytes integer;
UPDATE dead_letters SET payload_bytes = length(payload) WHERE payload_bytes IS NULL;
UPDATE dead_letters SET payload = substring(payload FROM 1 FOR 1024) WHERE length(payload) > 1024;
