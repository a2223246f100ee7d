//! Orders and the write-ahead journal as read back: one order rebuilt from its snapshot and
//! journal, pages of orders, every open order of a region for recovery (snapshot plus the
//! journal after it, in three bulk queries), and bulk imports. Writing the journal is
//! [`super::journal`]'s.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::snapshots::SnapshotKind;
use super::{Store, StoreError, on_pool, on_writer};
use crate::domain::{
    Cents, Change, HistoryEntry, JournalEntry, MerchantId, Order, OrderId, OrderItem, OrderState,
    OrderStatus, Position, UserId,
};

/// Whose orders a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderFilter {
    Customer(UserId),
    Driver(UserId),
    /// Orders of every merchant this user owns.
    MerchantOwner(UserId),
    /// Every order (admins).
    All,
}

/// Statuses of orders that are still open, as SQL.
const OPEN_STATUSES_SQL: &str = "('placed', 'accepted', 'ready', 'picked_up')";

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    region_id: String,
    merchant_id: Uuid,
    customer_id: Uuid,
    items: Json<Vec<OrderItem>>,
    delivery_fee_cents: i64,
    total_cents: i64,
    pickup_lat: f64,
    pickup_lon: f64,
    dropoff_lat: f64,
    dropoff_lon: f64,
    dropoff_address: String,
    pickup_address: String,
    created_at: DateTime<Utc>,
}

impl OrderRow {
    /// The order as it was when placed: the base the journal folds onto.
    fn genesis(self) -> Order {
        Order {
            id: OrderId(self.id),
            region_id: self.region_id,
            merchant_id: MerchantId(self.merchant_id),
            customer_id: UserId(self.customer_id),
            items: self.items.0,
            delivery_fee_cents: Cents(self.delivery_fee_cents),
            total_cents: Cents(self.total_cents),
            pickup: Position {
                lat: self.pickup_lat,
                lon: self.pickup_lon,
            },
            dropoff: Position {
                lat: self.dropoff_lat,
                lon: self.dropoff_lon,
            },
            dropoff_address: self.dropoff_address,
            pickup_address: self.pickup_address,
            state: OrderState::PLACED,
            driver_id: None,
            offer: None,
            prep_minutes: None,
            passed_over: Vec::new(),
            created_at: self.created_at,
            updated_at: self.created_at,
            version: 1,
            history: vec![HistoryEntry {
                status: Some(OrderStatus::Placed),
                dispatch_status: None,
                at: self.created_at,
            }],
        }
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    order_id: Uuid,
    seq: i64,
    detail: Json<Change>,
    at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    id: Uuid,
    state: Json<Order>,
}

const ORDER_COLUMNS: &str = "o.id, o.region_id, o.merchant_id, o.customer_id, o.items, \
    o.delivery_fee_cents, o.total_cents, o.pickup_lat, o.pickup_lon, o.dropoff_lat, o.dropoff_lon, o.dropoff_address, \
    o.pickup_address, o.created_at";

/// Folds journal rows (sorted by order, then seq) onto their orders.
fn fold(orders: &mut HashMap<Uuid, Order>, events: Vec<EventRow>) -> Result<(), StoreError> {
    for row in events {
        let Some(order) = orders.get_mut(&row.order_id) else {
            continue;
        };
        if row.seq <= order.version {
            continue;
        }
        let entry = JournalEntry {
            seq: row.seq,
            change: row.detail.0,
            at: row.at,
        };
        order.apply(&entry).map_err(|error| {
            StoreError::Corrupt(format!("order {} entry {}: {error}", row.order_id, row.seq))
        })?;
    }
    Ok(())
}

/// The head of an `orders` insert; [`push_order_row!`] binds one row's values in this order.
pub(super) const INSERT_ORDERS: &str = "INSERT INTO orders (id, region_id, merchant_id, customer_id, items, \
     total_cents, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, dropoff_address, status, \
     dispatch_status, driver_id, version, created_at, updated_at, delivery_fee_cents, pickup_address) ";

/// Binds an order's columns (see [`INSERT_ORDERS`]) to a `push_values` row; a macro because the
/// row's type differs per backend.
macro_rules! push_order_row {
    ($row:ident, $order:expr) => {{
        let order: &Order = $order;
        $row.push_bind(order.id.as_uuid())
            .push_bind(&order.region_id)
            .push_bind(order.merchant_id.as_uuid())
            .push_bind(order.customer_id.as_uuid())
            .push_bind(Json(&order.items))
            .push_bind(order.total_cents.0)
            .push_bind(order.pickup.lat)
            .push_bind(order.pickup.lon)
            .push_bind(order.dropoff.lat)
            .push_bind(order.dropoff.lon)
            .push_bind(&order.dropoff_address)
            .push_bind(order.state.status.as_str())
            .push_bind(order.state.dispatch.as_str())
            .push_bind(order.driver_id.map(|d| d.as_uuid()))
            .push_bind(order.version)
            .push_bind(order.created_at)
            .push_bind(order.updated_at)
            .push_bind(order.delivery_fee_cents.0)
            .push_bind(&order.pickup_address);
    }};
}
pub(super) use push_order_row;

impl Store {
    /// An order's row as placed, if it exists.
    async fn order_row(&self, id: OrderId) -> Result<Option<OrderRow>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLUMNS} FROM orders o WHERE o.id = $1"
            )))
            .bind(id.as_uuid())
            .fetch_optional(pool)
            .await?
        }))
    }

    /// One order, rebuilt from its newest snapshot and the journal after it.
    pub async fn load_order(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        let Some(row) = self.order_row(id).await? else {
            return Ok(None);
        };
        let snapshot = self
            .snapshot_state::<Order>(SnapshotKind::Order, id.as_uuid())
            .await?;
        let mut order = snapshot.unwrap_or_else(|| row.genesis());
        let events: Vec<EventRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT order_id, seq, detail, at FROM order_events \
                 WHERE order_id = $1 AND seq > $2 ORDER BY seq",
            )
            .bind(id.as_uuid())
            .bind(order.version)
            .fetch_all(pool)
            .await?
        });
        let mut orders = HashMap::from([(id.as_uuid(), order)]);
        fold(&mut orders, events)?;
        order = orders.remove(&id.as_uuid()).expect("inserted above");
        Ok(Some(order))
    }

    /// One order as it was right after its `seq`-th journal entry (what a notification about
    /// that entry shows), with that entry's change; folded from the start: journals are short.
    pub async fn order_at(
        &self,
        id: OrderId,
        seq: i64,
    ) -> Result<Option<(Order, Change)>, StoreError> {
        let Some(row) = self.order_row(id).await? else {
            return Ok(None);
        };
        let events: Vec<EventRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT order_id, seq, detail, at FROM order_events \
                 WHERE order_id = $1 AND seq > 1 AND seq <= $2 ORDER BY seq",
            )
            .bind(id.as_uuid())
            .bind(seq)
            .fetch_all(pool)
            .await?
        });
        let change = events
            .iter()
            .find(|event| event.seq == seq)
            .map_or(Change::Placed, |event| event.detail.0.clone());
        let mut orders = HashMap::from([(id.as_uuid(), row.genesis())]);
        fold(&mut orders, events)?;
        Ok(orders.remove(&id.as_uuid()).map(|order| (order, change)))
    }

    /// Every open order of `region_id`, rebuilt from snapshots and the journal. Three queries
    /// whatever the number of orders, so recovering a busy region takes seconds, not minutes.
    pub async fn open_orders(&self, region_id: &str) -> Result<Vec<Order>, StoreError> {
        let rows: Vec<OrderRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLUMNS} FROM orders o \
                 WHERE o.region_id = $1 AND o.status IN {OPEN_STATUSES_SQL}"
            )))
            .bind(region_id)
            .fetch_all(pool)
            .await?
        });
        let mut orders: HashMap<Uuid, Order> = rows
            .into_iter()
            .map(|row| (row.id, row.genesis()))
            .collect();
        let snapshots: Vec<SnapshotRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT s.id, s.state FROM actor_snapshots s JOIN orders o ON o.id = s.id \
                 WHERE s.kind = 'order' AND o.region_id = $1 AND o.status IN {OPEN_STATUSES_SQL}"
            )))
            .bind(region_id)
            .fetch_all(pool)
            .await?
        });
        for snapshot in snapshots {
            if let Some(order) = orders.get_mut(&snapshot.id)
                && snapshot.state.0.version > order.version
            {
                *order = snapshot.state.0;
            }
        }
        let events: Vec<EventRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT e.order_id, e.seq, e.detail, e.at FROM order_events e \
                 JOIN orders o ON o.id = e.order_id \
                 LEFT JOIN actor_snapshots s ON s.kind = 'order' AND s.id = e.order_id \
                 WHERE o.region_id = $1 AND o.status IN {OPEN_STATUSES_SQL} \
                 AND e.seq > COALESCE(s.version, 1) \
                 ORDER BY e.order_id, e.seq"
            )))
            .bind(region_id)
            .fetch_all(pool)
            .await?
        });
        fold(&mut orders, events)?;
        let mut open: Vec<Order> = orders.into_values().filter(Order::is_open).collect();
        open.sort_by_key(|order| order.id);
        Ok(open)
    }

    /// Writes many orders with their whole journals at once (multi-row inserts in one
    /// transaction). For seeding and load tools: it bypasses the actors, so nothing is
    /// dispatched until the engine recovers these orders.
    pub async fn import_orders(
        &self,
        orders: &[(Order, Vec<JournalEntry>)],
    ) -> Result<(), StoreError> {
        const ORDERS_PER_STATEMENT: usize = 1_000;
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in orders.chunks(ORDERS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::new(INSERT_ORDERS);
                insert.push_values(chunk, |mut row, (order, _)| push_order_row!(row, order));
                insert.build().execute(&mut *tx).await?;
                let entries: Vec<(OrderId, &JournalEntry)> = chunk
                    .iter()
                    .flat_map(|(order, entries)| entries.iter().map(move |e| (order.id, e)))
                    .collect();
                for entries in entries.chunks(ORDERS_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO order_events (order_id, seq, event, detail, at) ",
                    );
                    insert.push_values(entries, |mut row, (id, entry)| {
                        row.push_bind(id.as_uuid())
                            .push_bind(entry.seq)
                            .push_bind(entry.change.name())
                            .push_bind(Json(&entry.change))
                            .push_bind(entry.at);
                    });
                    insert.build().execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// A page of orders, newest first: those with ids below `before` (the cursor), at most
    /// `limit`, of `merchant` only when given (a credential limited to one merchant). Each is
    /// rebuilt from its journal.
    pub async fn orders_page(
        &self,
        filter: OrderFilter,
        merchant: Option<MerchantId>,
        before: Option<OrderId>,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError> {
        let before = before.map_or(Uuid::max(), |id| id.as_uuid());
        let ids: Vec<(Uuid,)> = on_pool!(self, |pool| {
            let mut query = sqlx::QueryBuilder::new("SELECT o.id FROM orders o ");
            match filter {
                OrderFilter::Customer(user) => {
                    query
                        .push("WHERE o.customer_id = ")
                        .push_bind(user.as_uuid());
                }
                OrderFilter::Driver(user) => {
                    query.push("WHERE o.driver_id = ").push_bind(user.as_uuid());
                }
                OrderFilter::MerchantOwner(user) => {
                    query
                        .push("JOIN merchants m ON m.id = o.merchant_id WHERE m.owner_id = ")
                        .push_bind(user.as_uuid());
                }
                OrderFilter::All => {
                    query.push("WHERE 1 = 1");
                }
            }
            if let Some(merchant) = merchant {
                query
                    .push(" AND o.merchant_id = ")
                    .push_bind(merchant.as_uuid());
            }
            query
                .push(" AND o.id < ")
                .push_bind(before)
                .push(" ORDER BY o.id DESC LIMIT ")
                .push_bind(limit);
            query.build_query_as().fetch_all(pool).await?
        });
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = ids.into_iter().map(|(id,)| id).collect();
        let rows: Vec<OrderRow> = on_pool!(self, |pool| {
            let mut query = sqlx::QueryBuilder::new(format!(
                "SELECT {ORDER_COLUMNS} FROM orders o WHERE o.id IN ("
            ));
            let mut list = query.separated(", ");
            for id in &ids {
                list.push_bind(*id);
            }
            query.push(")");
            query.build_query_as().fetch_all(pool).await?
        });
        let events: Vec<EventRow> = on_pool!(self, |pool| {
            let mut query = sqlx::QueryBuilder::new(
                "SELECT order_id, seq, detail, at FROM order_events WHERE seq > 1 AND order_id IN (",
            );
            let mut list = query.separated(", ");
            for id in &ids {
                list.push_bind(*id);
            }
            query.push(") ORDER BY order_id, seq");
            query.build_query_as().fetch_all(pool).await?
        });
        let mut orders: HashMap<Uuid, Order> = rows
            .into_iter()
            .map(|row| (row.id, row.genesis()))
            .collect();
        fold(&mut orders, events)?;
        Ok(ids.iter().filter_map(|id| orders.remove(id)).collect())
    }

    /// The ids of a merchant's open orders, oldest first.
    pub async fn open_order_ids_of_merchant(
        &self,
        merchant: MerchantId,
    ) -> Result<Vec<OrderId>, StoreError> {
        let ids: Vec<(Uuid,)> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM orders WHERE merchant_id = $1 AND status IN {OPEN_STATUSES_SQL} ORDER BY id"
            )))
            .bind(merchant.as_uuid())
            .fetch_all(pool)
            .await?
        });
        Ok(ids.into_iter().map(|(id,)| OrderId(id)).collect())
    }

    /// The open order a driver is assigned to, if any (there is at most one).
    pub async fn active_order_of_driver(
        &self,
        driver: UserId,
    ) -> Result<Option<OrderId>, StoreError> {
        let id: Option<(Uuid,)> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM orders WHERE driver_id = $1 AND status IN {OPEN_STATUSES_SQL}"
            )))
            .bind(driver.as_uuid())
            .fetch_optional(pool)
            .await?
        });
        Ok(id.map(|(id,)| OrderId(id)))
    }

    /// The region of an order (which decides the replica that runs it), if it exists.
    pub async fn order_region(&self, id: OrderId) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = on_pool!(self, |pool| {
            sqlx::query_as("SELECT region_id FROM orders WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(region,)| region))
    }

    /// The journal of one order, oldest first.
    pub async fn journal(&self, id: OrderId) -> Result<Vec<JournalEntry>, StoreError> {
        let rows: Vec<EventRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT order_id, seq, detail, at FROM order_events WHERE order_id = $1 ORDER BY seq",
            )
            .bind(id.as_uuid())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| JournalEntry {
                seq: row.seq,
                change: row.detail.0,
                at: row.at,
            })
            .collect())
    }
}
