-- Orders and their write-ahead journal. `order_events` is the source of truth: every transition
-- is appended there, in the same transaction that moves the `orders` row's current status
-- (a projection for queries), before anyone is told. `version` is the seq of the last event.
CREATE TABLE orders (
    id              UUID PRIMARY KEY,
    region_id       TEXT NOT NULL,
    merchant_id     UUID NOT NULL,
    customer_id     UUID NOT NULL REFERENCES users (id),
    items           JSONB NOT NULL,
    total_cents     BIGINT NOT NULL CHECK (total_cents >= 0),
    pickup_lat      DOUBLE PRECISION NOT NULL,
    pickup_lon      DOUBLE PRECISION NOT NULL,
    dropoff_lat     DOUBLE PRECISION NOT NULL,
    dropoff_lon     DOUBLE PRECISION NOT NULL,
    dropoff_address TEXT NOT NULL,
    status          TEXT NOT NULL,
    dispatch_status TEXT NOT NULL,
    driver_id       UUID REFERENCES users (id),
    version         BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE INDEX orders_open_by_region ON orders (region_id)
    WHERE status IN ('placed', 'accepted', 'ready', 'picked_up');
CREATE INDEX orders_by_customer ON orders (customer_id, id);
CREATE INDEX orders_by_merchant ON orders (merchant_id, id);
CREATE INDEX orders_by_driver ON orders (driver_id, id) WHERE driver_id IS NOT NULL;
-- The database itself refuses a second active order for one driver.
CREATE UNIQUE INDEX orders_one_active_order_per_driver ON orders (driver_id)
    WHERE driver_id IS NOT NULL AND status IN ('accepted', 'ready', 'picked_up');

CREATE TABLE order_events (
    order_id UUID NOT NULL REFERENCES orders (id),
    seq      BIGINT NOT NULL,
    event    TEXT NOT NULL,
    detail   JSONB NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, seq)
);

-- Actor state written behind the journal, in batches, to make recovery fast. Never the only
-- copy of an acknowledged fact: for orders, `version` is the last journal seq folded in.
CREATE TABLE actor_snapshots (
    kind       TEXT NOT NULL,
    id         UUID NOT NULL,
    version    BIGINT NOT NULL,
    state      JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, id)
);
