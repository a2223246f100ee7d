-- Integrations and identity (issue 18): API keys, the audit log, OAuth2 clients, the keys that
-- sign integration tokens, and sign-in with an OpenID provider.

-- An API key acts for its owner, limited to its scopes and, when set, to one merchant. Only the
-- SHA-256 of the whole key is kept; `lookup` (the random public id inside the key) finds it.
CREATE TABLE api_keys (
    id           BLOB PRIMARY KEY NOT NULL,
    owner_id     BLOB NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    mode         TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    lookup       TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    key_hash     BLOB NOT NULL,
    scopes       TEXT NOT NULL,
    merchant_id  BLOB REFERENCES merchants (id),
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    last_used_at TEXT
) STRICT;
CREATE INDEX api_keys_owner ON api_keys (owner_id, created_at);

-- Who did what with credentials: keys created and revoked, every use of an admin-scoped key,
-- OAuth clients registered, signing keys rotated. Append-only; read newest first.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor_id    BLOB,
    via         TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    detail      TEXT NOT NULL
) STRICT;

-- OAuth2 clients (client credentials grant). The secret (256 random bits) is kept as its SHA-256; tokens
-- act for `user_id` (the client's own account, or a merchant's owner when `merchant_id` is set).
CREATE TABLE oauth_clients (
    client_id    TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    user_id      BLOB NOT NULL REFERENCES users (id),
    merchant_id  BLOB REFERENCES merchants (id),
    created_by   BLOB NOT NULL REFERENCES users (id),
    created_at   TEXT NOT NULL,
    revoked_at   TEXT
) STRICT;

-- The asymmetric keys that sign integration tokens. The newest key not retired signs; every key
-- verifies until `verify_until` (its last token's expiry) has passed.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    alg           TEXT NOT NULL,
    private_der   BLOB NOT NULL,
    public_jwk    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    retired_at    TEXT,
    verify_until  TEXT
) STRICT;

-- Accounts signed in through an OpenID provider: (issuer, subject) names the person there.
CREATE TABLE user_identities (
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     BLOB NOT NULL REFERENCES users (id),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
) STRICT;

-- A sign-in in flight: the state sent to the provider, with the nonce and PKCE verifier to
-- check its answer, so that any replica can finish it. Single use, short-lived.
CREATE TABLE oidc_logins (
    state          TEXT PRIMARY KEY NOT NULL,
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    return_to      TEXT NOT NULL,
    created_at     TEXT NOT NULL
) STRICT;
