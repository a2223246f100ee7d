-- Learned ETA corrections (issue 15): per region and UTC hour, the moving average of observed
-- over predicted pickup and delivery durations. Small (regions x 24 rows), rewritten in place.
CREATE TABLE eta_corrections (
    region_id TEXT NOT NULL,
    hour INTEGER NOT NULL CHECK (hour >= 0 AND hour < 24),
    factor REAL NOT NULL,
    samples BIGINT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (region_id, hour)
);

-- Where the driver picks up, as people read it (the merchant's address when the order was
-- placed): offers and the driver app show it instead of coordinates.
ALTER TABLE orders ADD COLUMN pickup_address TEXT NOT NULL DEFAULT '';
