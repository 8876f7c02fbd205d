-- Web accounts (gateway/store/accounts.py): console users with argon2 password hashes,
-- their sessions (only a SHA-256 of the cookie is stored), per-care-home API tokens
-- (only a SHA-256 of the secret; each token is bound to one site) and the answers kept
-- for Idempotency-Key retries of the care-home API.
CREATE TABLE IF NOT EXISTS web_users (
    user_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    display_name  text NOT NULL,
    role          text NOT NULL
                  CHECK (role IN ('operator', 'supervisor', 'installer', 'care_home')),
    site_id       text,
    password_hash text NOT NULL,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    CHECK (role <> 'care_home' OR site_id IS NOT NULL)
);
CREATE TABLE IF NOT EXISTS web_sessions (
    token_hash   text PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES web_users (user_id) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions (user_id);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id    text PRIMARY KEY,
    site_id     text NOT NULL,
    name        text NOT NULL,
    secret_hash text NOT NULL,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_tokens_site ON api_tokens (site_id);
CREATE TABLE IF NOT EXISTS api_idempotency (
    scope      text NOT NULL,
    idem_key   text NOT NULL,
    body_hash  text NOT NULL,
    status     integer NOT NULL,
    response   text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX IF NOT EXISTS api_idempotency_created ON api_idempotency (created_at);
