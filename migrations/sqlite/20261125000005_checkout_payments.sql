-- Menus, checkout idempotency, payments and their history, processed webhook events.
ALTER TABLE orders ADD COLUMN delivery_fee_cents INTEGER NOT NULL DEFAULT 0;

CREATE TABLE menu_items (
    id          BLOB PRIMARY KEY NOT NULL,
    merchant_id BLOB NOT NULL REFERENCES merchants (id),
    name        TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    -- Replaced items stay for the orders that reference them; only active ones are on the menu.
    active      INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;
CREATE INDEX menu_items_active_by_merchant ON menu_items (merchant_id, position) WHERE active;

CREATE INDEX merchants_by_location ON merchants (lat, lon);

-- Checkout requests by (user, Idempotency-Key): the first request's hash and, once it finished,
-- its response, replayed for 24 h.
CREATE TABLE idempotency_keys (
    user_id         BLOB NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    order_id        BLOB NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
    response_status INTEGER,
    response_body   TEXT,
    locked_at       TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT;
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);

-- One payment per order (or per declined checkout, whose order never existed).
CREATE TABLE payments (
    id             BLOB PRIMARY KEY NOT NULL,
    order_id       BLOB NOT NULL UNIQUE,
    customer_id    BLOB NOT NULL REFERENCES users (id),
    amount_cents   INTEGER NOT NULL CHECK (amount_cents >= 0),
    payment_method TEXT NOT NULL,
    status         TEXT NOT NULL,
    gateway_ref    TEXT,
    decline_code   TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
) STRICT;
CREATE INDEX payments_to_settle ON payments (status) WHERE status IN ('authorised', 'captured');

-- Every state change of every payment, with the idempotency key of the gateway call.
CREATE TABLE payment_events (
    payment_id      BLOB NOT NULL REFERENCES payments (id),
    seq             INTEGER NOT NULL,
    status          TEXT NOT NULL,
    idempotency_key TEXT,
    source          TEXT NOT NULL,
    at              TEXT NOT NULL,
    PRIMARY KEY (payment_id, seq)
) STRICT;

-- Webhook events already applied: a replayed event id changes nothing.
CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY NOT NULL,
    event_type  TEXT NOT NULL,
    received_at TEXT NOT NULL
) STRICT;
