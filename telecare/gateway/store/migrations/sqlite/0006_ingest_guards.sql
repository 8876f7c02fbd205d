-- Ingest guards (issue 9): who may forward for whom, and one content per idempotency key.
-- The hub or alarm receiver a device is registered to: the only device that may forward
-- messages for it. NULL: nobody may.
ALTER TABLE devices ADD COLUMN hub_id TEXT;
-- Digest of an event's content, stored with its idempotency key (device_id, msg_id): a
-- redelivery with the same content is a silent duplicate, a reuse with different content
-- is a dead letter. NULL for events stored before this migration.
ALTER TABLE alarm_events ADD COLUMN digest TEXT;
