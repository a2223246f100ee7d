-- Live replicas. Each replica upserts its row every few seconds (a third of the lease TTL) and
-- deletes it on a graceful stop; a row whose expiry (Unix ms) has passed is a replica that died.
-- Replicas divide the regions among the live rows: each holds about regions / live replicas.
CREATE TABLE cluster_members (
    node          TEXT PRIMARY KEY,
    expires_at_ms BIGINT NOT NULL
);
