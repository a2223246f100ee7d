-- Process-wide settings the engine generates once and must keep across restarts
-- (the token-signing secret when none is configured).
CREATE TABLE settings (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;
