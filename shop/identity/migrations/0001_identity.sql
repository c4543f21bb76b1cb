-- Accounts, refresh tokens and signing keys of the identity service. Times are milliseconds
-- since the Unix epoch; the same SQL runs on SQLite and PostgreSQL.
CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL,
    created_ms    BIGINT NOT NULL
);

-- Only a hash of each refresh token is kept. A token is used once: using it marks it and
-- issues the next of its family; using a used one again revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family     TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms    BIGINT,
    revoked_ms BIGINT
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

-- Ed25519 keys (PKCS#8, base64). The newest unretired key signs; retired keys stay in the
-- JWKS until every token they signed has expired.
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    pkcs8      TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    retired_ms BIGINT
);
