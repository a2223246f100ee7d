-- Menus, checkout idempotency, payments and their history, processed webhook events.
ALTER TABLE orders ADD COLUMN delivery_fee_cents BIGINT NOT NULL DEFAULT 0;

CREATE TABLE menu_items (
    id          UUID PRIMARY KEY,
    merchant_id UUID NOT NULL REFERENCES merchants (id),
    name        TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    -- Replaced items stay for the orders that reference them; only active ones are on the menu.
    active      BOOLEAN NOT NULL,
    position    INTEGER NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX menu_items_active_by_merchant ON menu_items (merchant_id, position) WHERE active;

CREATE INDEX merchants_by_location ON merchants (lat, lon);

-- Checkout requests by (user, Idempotency-Key): the first request's hash and, once it finished,
-- its response, replayed for 24 h.
CREATE TABLE idempotency_keys (
    user_id         UUID NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    order_id        UUID NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
    response_status INTEGER,
    response_body   TEXT,
    locked_at       TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);

-- One payment per order (or per declined checkout, whose order never existed).
CREATE TABLE payments (
    id             UUID PRIMARY KEY,
    order_id       UUID NOT NULL UNIQUE,
    customer_id    UUID NOT NULL REFERENCES users (id),
    amount_cents   BIGINT NOT NULL CHECK (amount_cents >= 0),
    payment_method TEXT NOT NULL,
    status         TEXT NOT NULL,
    gateway_ref    TEXT,
    decline_code   TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX payments_to_settle ON payments (status) WHERE status IN ('authorised', 'captured');

-- Every state change of every payment, with the idempotency key of the gateway call.
CREATE TABLE payment_events (
    payment_id      UUID NOT NULL REFERENCES payments (id),
    seq             BIGINT NOT NULL,
    status          TEXT NOT NULL,
    idempotency_key TEXT,
    source          TEXT NOT NULL,
    at              TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (payment_id, seq)
);

-- Webhook events already applied: a replayed event id changes nothing.
CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);
