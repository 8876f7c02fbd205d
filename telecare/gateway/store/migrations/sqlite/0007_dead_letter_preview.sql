-- Dead letters keep a bounded preview of the payload (DEAD_LETTER_PREVIEW bytes) and the
-- size of the whole payload; older rows are cut down to the same preview.
ALTER TABLE dead_letters ADD COLUMN payload_bytes INTEGER;
UPDATE dead_letters SET payload_bytes = length(payload) WHERE payload_bytes IS NULL;
UPDATE dead_letters SET payload = substr(payload, 1, 1024) WHERE length(payload) > 1024;
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_at);
