-- The WhatsApp inbox (issue 17): every inbound message, stored before the webhook answers 200
-- and keyed by WhatsApp's message id, so a redelivery (Meta retries for days) never acts twice.
-- `state` is `received` until the conversation worker takes it; `ignored` for what cannot be read.
CREATE TABLE whatsapp_inbox (
    id           TEXT PRIMARY KEY NOT NULL,
    phone        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    message      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('received', 'processed', 'ignored')),
    received_at  TEXT NOT NULL,
    processed_at TEXT
) STRICT;
CREATE INDEX whatsapp_inbox_waiting ON whatsapp_inbox (received_at) WHERE state = 'received';
