-- A reading's quality: 'ok', or 'invalid' / 'demo' when the device flagged the value
-- (BLE measurement status bits), so reports and rules can leave it out.
ALTER TABLE readings ADD COLUMN IF NOT EXISTS quality text NOT NULL DEFAULT 'ok';
