-- Receiver accounts: (protocol, account, zone) -> provisioned device. Zone '' = any zone.
CREATE TABLE IF NOT EXISTS receiver_accounts (
    kind       text NOT NULL CHECK (kind IN ('contact_id', 'sia', 'scaip')),
    account    text NOT NULL,
    zone       text NOT NULL DEFAULT '',
    device_id  text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, account, zone)
);
CREATE INDEX IF NOT EXISTS receiver_accounts_device ON receiver_accounts (device_id);
