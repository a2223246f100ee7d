//! Merchants' menus. Replacing a menu retires the old items rather than deleting them, so past
//! orders still name what they bought.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::merchants::MerchantRow;
use super::{Merchant, Store, StoreError, on_pool, on_writer};
use crate::domain::{Cents, MerchantId};

/// One item on a menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    pub id: Uuid,
    pub merchant_id: MerchantId,
    pub name: String,
    pub price_cents: Cents,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct MenuItemRow {
    id: Uuid,
    merchant_id: Uuid,
    name: String,
    price_cents: i64,
    created_at: DateTime<Utc>,
}

/// A merchant's row and one of its active items (none when its menu is empty).
#[derive(sqlx::FromRow)]
struct MerchantMenuRow {
    #[sqlx(flatten)]
    merchant: MerchantRow,
    item_id: Option<Uuid>,
    item_name: Option<String>,
    item_price_cents: Option<i64>,
    item_created_at: Option<DateTime<Utc>>,
}

impl From<MenuItemRow> for MenuItem {
    fn from(row: MenuItemRow) -> Self {
        MenuItem {
            id: row.id,
            merchant_id: MerchantId(row.merchant_id),
            name: row.name,
            price_cents: Cents(row.price_cents),
            created_at: row.created_at,
        }
    }
}

impl Store {
    /// Replaces the merchant's menu with `items` (name, price), in that order.
    pub async fn replace_menu(
        &self,
        merchant: MerchantId,
        items: &[(String, Cents)],
    ) -> Result<Vec<MenuItem>, StoreError> {
        let now = super::now();
        let menu: Vec<MenuItem> = items
            .iter()
            .map(|(name, price)| MenuItem {
                id: Uuid::now_v7(),
                merchant_id: merchant,
                name: name.clone(),
                price_cents: *price,
                created_at: now,
            })
            .collect();
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE menu_items SET active = $1 WHERE merchant_id = $2 AND active = $3")
                .bind(false)
                .bind(merchant.as_uuid())
                .bind(true)
                .execute(&mut *tx)
                .await?;
            if !menu.is_empty() {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO menu_items (id, merchant_id, name, price_cents, active, position, created_at) ",
                );
                insert.push_values(menu.iter().enumerate(), |mut row, (position, item)| {
                    row.push_bind(item.id)
                        .push_bind(merchant.as_uuid())
                        .push_bind(&item.name)
                        .push_bind(item.price_cents.0)
                        .push_bind(true)
                        .push_bind(position as i32)
                        .push_bind(item.created_at);
                });
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(menu)
    }

    /// The merchant's current menu, in menu order.
    pub async fn menu(&self, merchant: MerchantId) -> Result<Vec<MenuItem>, StoreError> {
        let rows: Vec<MenuItemRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, merchant_id, name, price_cents, created_at FROM menu_items \
                 WHERE merchant_id = $1 AND active ORDER BY position",
            )
            .bind(merchant.as_uuid())
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(MenuItem::from).collect())
    }

    /// A merchant and its active menu in one query (a checkout reads both for every order).
    /// `active` is written bare, not compared with a parameter: the partial index on active
    /// items is then usable by the generic plan PostgreSQL keeps for the prepared statement (with
    /// `active = $2` it planned every execution afresh, 0.12–0.18 ms each).
    pub async fn merchant_with_menu(
        &self,
        id: MerchantId,
    ) -> Result<Option<(Merchant, Vec<MenuItem>)>, StoreError> {
        let rows: Vec<MerchantMenuRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT m.id, m.owner_id, m.name, m.address, m.lat, m.lon, m.is_open, \
                 m.created_at, i.id AS item_id, i.name AS item_name, \
                 i.price_cents AS item_price_cents, i.created_at AS item_created_at \
                 FROM merchants m LEFT JOIN menu_items i ON i.merchant_id = m.id AND i.active \
                 WHERE m.id = $1 ORDER BY i.position",
            )
            .bind(id.as_uuid())
            .fetch_all(pool)
            .await?
        });
        let mut rows = rows.into_iter().peekable();
        let Some(first) = rows.peek() else {
            return Ok(None);
        };
        let merchant = Merchant::from(first.merchant.clone());
        let menu = rows
            .filter_map(|row| {
                Some(MenuItem::from(MenuItemRow {
                    id: row.item_id?,
                    merchant_id: merchant.id.0,
                    name: row.item_name?,
                    price_cents: row.item_price_cents?,
                    created_at: row.item_created_at?,
                }))
            })
            .collect();
        Ok(Some((merchant, menu)))
    }
}
