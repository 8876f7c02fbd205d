-- Web accounts (gateway/store/accounts.py): console users with argon2 password hashes,
-- their sessions (only a SHA-256 of the cookie is stored), per-care-home API tokens
-- (only a SHA-256 of the secret; each token is bound to one site) and the answers kept
-- for Idempotency-Key retries of the care-home API.
CREATE TABLE IF NOT EXISTS web_users (
    user_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL
                  CHECK (role IN ('operator', 'supervisor', 'installer', 'care_home')),
    site_id       TEXT,
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    CHECK (role <> 'care_home' OR site_id IS NOT NULL)
);
CREATE TABLE IF NOT EXISTS web_sessions (
    token_hash   TEXT PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES web_users (user_id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions (user_id);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id    TEXT PRIMARY KEY,
    site_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX IF NOT EXISTS api_tokens_site ON api_tokens (site_id);
CREATE TABLE IF NOT EXISTS api_idempotency (
    scope      TEXT NOT NULL,
    idem_key   TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    status     INTEGER NOT NULL,
    response   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX IF NOT EXISTS api_idempotency_created ON api_idempotency (created_at);
