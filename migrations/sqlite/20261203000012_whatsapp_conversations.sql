-- WhatsApp ordering (issue 17): the conversation of each number, the bot's replies waiting to
-- be sent, payment links, and phones proven by WhatsApp itself.

-- A number WhatsApp vouched for (the sender of a message) is verified; only a verified phone
-- links a WhatsApp conversation to an existing account.
ALTER TABLE users ADD COLUMN phone_verified_at TEXT;
CREATE INDEX users_verified_phone ON users (phone) WHERE phone_verified_at IS NOT NULL;

-- The inbox is worked per phone, oldest first; a message that keeps failing is set aside.
ALTER TABLE whatsapp_inbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX whatsapp_inbox_phone_waiting ON whatsapp_inbox (phone, received_at, id)
    WHERE state = 'received';

-- One conversation per phone: the state machine's state (domain::conversation), the account it
-- orders for, and a claim so that one worker on one replica moves it at a time. The row is made
-- by the first claim; `user_id` and `state` are set when its first message is read.
CREATE TABLE whatsapp_conversations (
    phone          TEXT PRIMARY KEY NOT NULL,
    user_id        BLOB REFERENCES users (id),
    state          TEXT,
    version        INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    last_active_at TEXT NOT NULL,
    -- When the idle sweep should look at it (NULL: nothing to expire).
    expires_at     TEXT,
    claimed_by     TEXT,
    claimed_until  TEXT
) STRICT;
CREATE INDEX whatsapp_conversations_expiring ON whatsapp_conversations (expires_at)
    WHERE expires_at IS NOT NULL;

-- The bot's replies, written in the transaction that moves the conversation and sent in order
-- per phone (seq) by the worker holding its claim. `id` is WhatsApp's biz_opaque_callback_data.
CREATE TABLE whatsapp_outbound (
    id              TEXT PRIMARY KEY NOT NULL,
    phone           TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    sent_at         TEXT,
    provider_id     TEXT,
    error           TEXT,
    UNIQUE (phone, seq)
) STRICT;
CREATE INDEX whatsapp_outbound_pending ON whatsapp_outbound (next_attempt_at)
    WHERE state = 'pending';

-- Payment links: a random token (only its SHA-256 kept) for one basket of one conversation,
-- single-use, expiring. `basket_key` is the conversation and basket revision: one link, one
-- checkout (`attempt` moves on only after a declined card), one order.
CREATE TABLE pay_links (
    id          BLOB PRIMARY KEY NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    basket_key  TEXT NOT NULL UNIQUE,
    phone       TEXT NOT NULL,
    customer_id BLOB NOT NULL REFERENCES users (id),
    basket      TEXT NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    order_id    BLOB,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
) STRICT;

-- Codes that link a WhatsApp number to an existing account: shown to the signed-in customer
-- (only the SHA-256 kept), sent by them from their phone as "link <code>", single-use, ten
-- minutes. The message proves the number; the code proves the account.
CREATE TABLE whatsapp_link_codes (
    code_hash  TEXT PRIMARY KEY NOT NULL,
    user_id    BLOB NOT NULL REFERENCES users (id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
) STRICT;
