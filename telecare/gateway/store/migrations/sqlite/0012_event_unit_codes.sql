-- SCAIP (issue 14): the unit's device type (dty) and location code (lco), kept as sent.
ALTER TABLE alarm_events ADD COLUMN device_type TEXT;
ALTER TABLE alarm_events ADD COLUMN location TEXT;
