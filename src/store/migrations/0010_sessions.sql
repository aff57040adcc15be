-- Browser sessions (login form -> cookie) and API tokens (`nvr-edge user token`). Both
-- are 256-bit random values the client is shown once; only their SHA-256 is stored. A
-- random 256-bit value cannot be found by search, so a slow hash would buy nothing and
-- cost argon2 on every request (passwords, which people choose, are argon2id).
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    token_sha256 BLOB NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- Sent back in X-CSRF-Token by the page on every change it asks for.
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    token_sha256 BLOB NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);
