-- Notifications (issue 16): customers' phone numbers and consent, the outbox written in the
-- journal's transaction, one row per message to send (to a customer on WhatsApp or to a
-- merchant's webhook endpoint) with its attempts, and merchants' webhook endpoints.

-- A customer's phone (E.164) and whether they agreed to order updates on WhatsApp.
ALTER TABLE users ADD COLUMN phone TEXT;
ALTER TABLE users ADD COLUMN notify_whatsapp INTEGER NOT NULL DEFAULT 0;

-- A phone and a consent given at checkout for one order; they win over the account's.
CREATE TABLE order_contacts (
    order_id        BLOB PRIMARY KEY NOT NULL,
    phone           TEXT,
    notify_whatsapp INTEGER,
    created_at      TEXT NOT NULL
) STRICT;

-- The last message a WhatsApp user sent us: inside 24 hours of it free text may be sent, after
-- it approved templates only (the customer-service window).
CREATE TABLE whatsapp_contacts (
    phone           TEXT PRIMARY KEY NOT NULL,
    last_inbound_at TEXT NOT NULL
) STRICT;

-- One row per journal entry that notifies anyone, inserted in the journal's own transaction.
-- The notifier fans it out into `notifications` and stamps `fanned_out_at`.
CREATE TABLE outbox (
    id            BLOB PRIMARY KEY NOT NULL,
    order_id      BLOB NOT NULL,
    seq           INTEGER NOT NULL,
    event         TEXT NOT NULL,
    at            TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    claimed_by    TEXT,
    claimed_until TEXT,
    fanned_out_at TEXT,
    UNIQUE (order_id, seq)
) STRICT;
CREATE INDEX outbox_waiting ON outbox (created_at) WHERE fanned_out_at IS NULL;

CREATE TABLE webhook_endpoints (
    id                    BLOB PRIMARY KEY NOT NULL,
    merchant_id           BLOB NOT NULL REFERENCES merchants (id),
    url                   TEXT NOT NULL,
    events                TEXT NOT NULL,
    secret                TEXT NOT NULL,
    previous_secret       TEXT,
    previous_secret_until TEXT,
    failing_since         TEXT,
    disabled_at           TEXT,
    disabled_reason       TEXT,
    created_at            TEXT NOT NULL
) STRICT;
CREATE INDEX webhook_endpoints_by_merchant ON webhook_endpoints (merchant_id, created_at);

-- One message to one destination: `destination` is the phone (WhatsApp) or the endpoint id
-- (webhook). `payload` is frozen when the outbox row is fanned out, so every attempt sends the
-- same message; `attempts` counts the attempts of the current schedule (a replay restarts it).
CREATE TABLE notifications (
    id                 BLOB PRIMARY KEY NOT NULL,
    outbox_id          BLOB NOT NULL REFERENCES outbox (id),
    order_id           BLOB NOT NULL,
    seq                INTEGER NOT NULL,
    event              TEXT NOT NULL,
    channel            TEXT NOT NULL CHECK (channel IN ('whatsapp', 'webhook')),
    destination        TEXT NOT NULL,
    endpoint_id        BLOB REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    payload            TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'cancelled')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    TEXT NOT NULL,
    claimed_by         TEXT,
    claimed_until      TEXT,
    last_error         TEXT,
    sent_as            TEXT,
    provider_id        TEXT,
    provider_status    TEXT,
    provider_status_at TEXT,
    created_at         TEXT NOT NULL,
    sent_at            TEXT,
    UNIQUE (outbox_id, destination)
) STRICT;
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_by_order ON notifications (order_id, destination, seq);
CREATE INDEX notifications_by_endpoint ON notifications (endpoint_id, created_at);
CREATE INDEX notifications_by_provider_id ON notifications (provider_id);

-- Every attempt to send a notification: what came back and how long it took.
CREATE TABLE notification_attempts (
    id              BLOB PRIMARY KEY NOT NULL,
    notification_id BLOB NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    at              TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    status_code     INTEGER,
    latency_ms      INTEGER NOT NULL,
    error           TEXT
) STRICT;
CREATE INDEX notification_attempts_by_notification ON notification_attempts (notification_id, at);
