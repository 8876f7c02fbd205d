-- A reading's quality: 'ok', or 'invalid' / 'demo' when the device flagged the value
-- (BLE measurement status bits), so reports and rules can leave it out.
ALTER TABLE readings ADD COLUMN quality TEXT NOT NULL DEFAULT 'ok'
    CHECK (quality IN ('ok', 'invalid', 'demo'));
