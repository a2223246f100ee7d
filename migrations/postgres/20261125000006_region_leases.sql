-- Region ownership across replicas. One row per region: the replica (node id) that runs its
-- dispatch, until when (Unix ms; renewed every few seconds), and a fencing epoch that grows with
-- every new owner. Journal writes check the writer's epoch in their transaction and are refused
-- for a stale one, so a paused former owner cannot write after losing its lease.
CREATE TABLE region_leases (
    region_id     TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    epoch         BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
