-- Less work for each order transition (issue 19; see the PostgreSQL migration). The checkout's
-- heartbeat moves `locked_at`; the reconciler's index of in-progress keys is keyed by what the
-- heartbeat leaves alone. SQLite keeps the journal's foreign key: it checks it with one lookup
-- in the page cache and has no row locks to take.
DROP INDEX idempotency_keys_in_progress;
CREATE INDEX idempotency_keys_in_progress ON idempotency_keys (created_at)
    WHERE state = 'in_progress';
