-- Process-wide settings the engine generates once and must keep across restarts and replicas
-- (the token-signing secret when none is configured).
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
