-- Notifications (issue 16): customers' phone numbers and consent, the outbox written in the
-- journal's transaction, one row per message to send (to a customer on WhatsApp or to a
-- merchant's webhook endpoint) with its attempts, and merchants' webhook endpoints.

-- A customer's phone (E.164) and whether they agreed to order updates on WhatsApp.
ALTER TABLE users ADD COLUMN phone TEXT;
ALTER TABLE users ADD COLUMN notify_whatsapp BOOLEAN NOT NULL DEFAULT FALSE;

-- A phone and a consent given at checkout for one order; they win over the account's.
CREATE TABLE order_contacts (
    order_id        UUID PRIMARY KEY,
    phone           TEXT,
    notify_whatsapp BOOLEAN,
    created_at      TIMESTAMPTZ NOT NULL
);

-- The last message a WhatsApp user sent us: inside 24 hours of it free text may be sent, after
-- it approved templates only (the customer-service window).
CREATE TABLE whatsapp_contacts (
    phone           TEXT PRIMARY KEY,
    last_inbound_at TIMESTAMPTZ NOT NULL
);

-- One row per journal entry that notifies anyone, inserted in the journal's own transaction.
-- The notifier fans it out into `notifications` and stamps `fanned_out_at`.
CREATE TABLE outbox (
    id            UUID PRIMARY KEY,
    order_id      UUID NOT NULL,
    seq           BIGINT NOT NULL,
    event         TEXT NOT NULL,
    at            TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    claimed_by    TEXT,
    claimed_until TIMESTAMPTZ,
    fanned_out_at TIMESTAMPTZ,
    UNIQUE (order_id, seq)
);
CREATE INDEX outbox_waiting ON outbox (created_at) WHERE fanned_out_at IS NULL;

CREATE TABLE webhook_endpoints (
    id                    UUID PRIMARY KEY,
    merchant_id           UUID NOT NULL REFERENCES merchants (id),
    url                   TEXT NOT NULL,
    events                JSONB NOT NULL,
    secret                TEXT NOT NULL,
    previous_secret       TEXT,
    previous_secret_until TIMESTAMPTZ,
    failing_since         TIMESTAMPTZ,
    disabled_at           TIMESTAMPTZ,
    disabled_reason       TEXT,
    created_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_endpoints_by_merchant ON webhook_endpoints (merchant_id, created_at);

-- One message to one destination: `destination` is the phone (WhatsApp) or the endpoint id
-- (webhook). `payload` is frozen when the outbox row is fanned out, so every attempt sends the
-- same message; `attempts` counts the attempts of the current schedule (a replay restarts it).
CREATE TABLE notifications (
    id                 UUID PRIMARY KEY,
    outbox_id          UUID NOT NULL REFERENCES outbox (id),
    order_id           UUID NOT NULL,
    seq                BIGINT NOT NULL,
    event              TEXT NOT NULL,
    channel            TEXT NOT NULL CHECK (channel IN ('whatsapp', 'webhook')),
    destination        TEXT NOT NULL,
    endpoint_id        UUID REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    payload            JSONB NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'cancelled')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    TIMESTAMPTZ NOT NULL,
    claimed_by         TEXT,
    claimed_until      TIMESTAMPTZ,
    last_error         TEXT,
    sent_as            TEXT,
    provider_id        TEXT,
    provider_status    TEXT,
    provider_status_at TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL,
    sent_at            TIMESTAMPTZ,
    UNIQUE (outbox_id, destination)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_by_order ON notifications (order_id, destination, seq);
CREATE INDEX notifications_by_endpoint ON notifications (endpoint_id, created_at);
CREATE INDEX notifications_by_provider_id ON notifications (provider_id);

-- Every attempt to send a notification: what came back and how long it took.
CREATE TABLE notification_attempts (
    id              UUID PRIMARY KEY,
    notification_id UUID NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    at              TIMESTAMPTZ NOT NULL,
    outcome         TEXT NOT NULL,
    status_code     INTEGER,
    latency_ms      BIGINT NOT NULL,
    error           TEXT
);
CREATE INDEX notification_attempts_by_notification ON notification_attempts (notification_id, at);
