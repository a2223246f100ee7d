-- Checkout as a recoverable saga, a sandbox gateway that survives restarts, settlement with
-- back-off.

-- The process instance (node id) running the request that holds an in-progress key; NULL once
-- that request ended with a passing failure, so that a retry takes the key over at once. A key
-- is never deleted while a payment exists for its order id: a retry continues that order.
ALTER TABLE idempotency_keys ADD COLUMN holder TEXT;
CREATE INDEX idempotency_keys_in_progress ON idempotency_keys (locked_at) WHERE state = 'in_progress';
CREATE INDEX idempotency_keys_by_order ON idempotency_keys (order_id);

-- Settlement retries back off per payment; one that keeps failing is marked for attention.
ALTER TABLE payments ADD COLUMN settle_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN next_settle_at TIMESTAMPTZ;
ALTER TABLE payments ADD COLUMN last_settle_error TEXT;
ALTER TABLE payments ADD COLUMN needs_attention BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX payments_open ON payments (created_at) WHERE status IN ('pending', 'authorised');
CREATE INDEX payments_needing_attention ON payments (updated_at) WHERE needs_attention;

-- The sandbox gateway's own books (it stands for the payment provider, so it keeps them apart
-- from ours): every hold it made, and the answer to every idempotency key it was called with.
CREATE TABLE sandbox_holds (
    reference    TEXT PRIMARY KEY,
    amount_cents BIGINT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('authorised', 'captured', 'voided', 'refunded')),
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE TABLE sandbox_calls (
    idempotency_key TEXT PRIMARY KEY,
    operation       TEXT NOT NULL,
    -- authorise: 'authorised' (reference set) or a decline code; others: 'ok' or 'refused'.
    outcome         TEXT NOT NULL,
    reference       TEXT,
    detail          TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
