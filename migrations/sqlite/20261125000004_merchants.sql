-- Merchants (kitchens) and who owns them. An owner has the merchant role.
CREATE TABLE merchants (
    id         BLOB PRIMARY KEY NOT NULL,
    owner_id   BLOB NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL,
    address    TEXT NOT NULL,
    lat        REAL NOT NULL,
    lon        REAL NOT NULL,
    is_open    INTEGER NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

CREATE INDEX merchants_by_owner ON merchants (owner_id, id);
