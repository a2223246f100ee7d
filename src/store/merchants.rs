//! Merchants and their owners.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError, on_pool, on_writer};
use crate::domain::{MerchantId, Position, UserId};

/// A merchant (a restaurant or meal-kit kitchen).
#[derive(Debug, Clone, PartialEq)]
pub struct Merchant {
    pub id: MerchantId,
    pub owner_id: UserId,
    pub name: String,
    pub address: String,
    pub location: Position,
    /// A closed merchant takes no orders.
    pub is_open: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow, Clone)]
pub(super) struct MerchantRow {
    id: Uuid,
    owner_id: Uuid,
    name: String,
    address: String,
    lat: f64,
    lon: f64,
    is_open: bool,
    created_at: DateTime<Utc>,
}

impl From<MerchantRow> for Merchant {
    fn from(row: MerchantRow) -> Self {
        Merchant {
            id: MerchantId(row.id),
            owner_id: UserId(row.owner_id),
            name: row.name,
            address: row.address,
            location: Position {
                lat: row.lat,
                lon: row.lon,
            },
            is_open: row.is_open,
            created_at: row.created_at,
        }
    }
}

impl Store {
    /// Stores a new merchant, open for orders.
    pub async fn create_merchant(
        &self,
        owner: UserId,
        name: &str,
        address: &str,
        location: Position,
    ) -> Result<Merchant, StoreError> {
        let merchant = Merchant {
            id: MerchantId::new(),
            owner_id: owner,
            name: name.to_owned(),
            address: address.to_owned(),
            location,
            is_open: true,
            created_at: super::now(),
        };
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO merchants (id, owner_id, name, address, lat, lon, is_open, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(merchant.id.as_uuid())
            .bind(owner.as_uuid())
            .bind(&merchant.name)
            .bind(&merchant.address)
            .bind(location.lat)
            .bind(location.lon)
            .bind(merchant.is_open)
            .bind(merchant.created_at)
            .execute(pool)
            .await?;
        });
        Ok(merchant)
    }

    /// One merchant, if it exists.
    pub async fn merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StoreError> {
        let row: Option<MerchantRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, owner_id, name, address, lat, lon, is_open, created_at \
                 FROM merchants WHERE id = $1",
            )
            .bind(id.as_uuid())
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(Merchant::from))
    }

    /// Every merchant `owner` owns, oldest first.
    pub async fn merchants_of_owner(&self, owner: UserId) -> Result<Vec<Merchant>, StoreError> {
        let rows: Vec<MerchantRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, owner_id, name, address, lat, lon, is_open, created_at \
                 FROM merchants WHERE owner_id = $1 ORDER BY id",
            )
            .bind(owner.as_uuid())
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(Merchant::from).collect())
    }

    /// Merchants whose location lies in the box `min`..`max` (degrees), at most `limit`.
    pub async fn merchants_in_box(
        &self,
        min: Position,
        max: Position,
        limit: i64,
    ) -> Result<Vec<Merchant>, StoreError> {
        let rows: Vec<MerchantRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, owner_id, name, address, lat, lon, is_open, created_at FROM merchants \
                 WHERE lat BETWEEN $1 AND $2 AND lon BETWEEN $3 AND $4 LIMIT $5",
            )
            .bind(min.lat)
            .bind(max.lat)
            .bind(min.lon)
            .bind(max.lon)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(Merchant::from).collect())
    }

    /// Opens or closes a merchant; false when there is no such merchant.
    pub async fn set_merchant_open(&self, id: MerchantId, open: bool) -> Result<bool, StoreError> {
        let changed = on_writer!(self, |pool| {
            sqlx::query("UPDATE merchants SET is_open = $1 WHERE id = $2")
                .bind(open)
                .bind(id.as_uuid())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }
}
