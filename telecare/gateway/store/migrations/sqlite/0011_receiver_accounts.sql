-- Receiver accounts: (protocol, account, zone) -> provisioned device. Zone '' = any zone.
CREATE TABLE IF NOT EXISTS receiver_accounts (
    kind       TEXT NOT NULL CHECK (kind IN ('contact_id', 'sia', 'scaip')),
    account    TEXT NOT NULL,
    zone       TEXT NOT NULL DEFAULT '',
    device_id  TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (kind, account, zone)
);
CREATE INDEX IF NOT EXISTS receiver_accounts_device ON receiver_accounts (device_id);
