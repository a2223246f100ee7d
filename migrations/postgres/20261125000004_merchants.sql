-- Merchants (kitchens) and who owns them. An owner has the merchant role.
CREATE TABLE merchants (
    id         UUID PRIMARY KEY,
    owner_id   UUID NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL,
    address    TEXT NOT NULL,
    lat        DOUBLE PRECISION NOT NULL,
    lon        DOUBLE PRECISION NOT NULL,
    is_open    BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX merchants_by_owner ON merchants (owner_id, id);
