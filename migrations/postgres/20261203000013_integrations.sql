-- Integrations and identity (issue 18): API keys, the audit log, OAuth2 clients, the keys that
-- sign integration tokens, and sign-in with an OpenID provider.

-- An API key acts for its owner, limited to its scopes and, when set, to one merchant. Only the
-- SHA-256 of the whole key is kept; `lookup` (the random public id inside the key) finds it.
CREATE TABLE api_keys (
    id           UUID PRIMARY KEY,
    owner_id     UUID NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    mode         TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    lookup       TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    key_hash     BYTEA NOT NULL,
    scopes       TEXT NOT NULL,
    merchant_id  UUID REFERENCES merchants (id),
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
CREATE INDEX api_keys_owner ON api_keys (owner_id, created_at);

-- Who did what with credentials: keys created and revoked, every use of an admin-scoped key,
-- OAuth clients registered, signing keys rotated. Append-only; read newest first.
CREATE TABLE audit_log (
    seq         BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor_id    UUID,
    via         TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    detail      TEXT NOT NULL
);

-- OAuth2 clients (client credentials grant). The secret (256 random bits) is kept as its SHA-256; tokens
-- act for `user_id` (the client's own account, or a merchant's owner when `merchant_id` is set).
CREATE TABLE oauth_clients (
    client_id    TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    user_id      UUID NOT NULL REFERENCES users (id),
    merchant_id  UUID REFERENCES merchants (id),
    created_by   UUID NOT NULL REFERENCES users (id),
    created_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);

-- The asymmetric keys that sign integration tokens. The newest key not retired signs; every key
-- verifies until `verify_until` (its last token's expiry) has passed.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    private_der   BYTEA NOT NULL,
    public_jwk    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    retired_at    TIMESTAMPTZ,
    verify_until  TIMESTAMPTZ
);

-- Accounts signed in through an OpenID provider: (issuer, subject) names the person there.
CREATE TABLE user_identities (
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     UUID NOT NULL REFERENCES users (id),
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (issuer, subject)
);

-- A sign-in in flight: the state sent to the provider, with the nonce and PKCE verifier to
-- check its answer, so that any replica can finish it. Single use, short-lived.
CREATE TABLE oidc_logins (
    state          TEXT PRIMARY KEY,
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    return_to      TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);
