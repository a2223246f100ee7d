//! API keys in the store: the row of each key (never the key itself: its SHA-256), found by the
//! public id inside the key, listed for their owner, revoked, and stamped with their last use.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError, on_pool, on_writer};
use crate::domain::{MerchantId, Role, Scopes, UserId};

/// A key as stored, with its owner's current role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub owner_id: UserId,
    pub owner_role: Role,
    pub name: String,
    /// A sandbox (`mk_test_`) key.
    pub test: bool,
    /// The public id inside the key that finds the row.
    pub lookup: String,
    /// The key's first characters, to recognise it in lists (`mk_live_AbC1`).
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub key_hash: Vec<u8>,
    pub scopes: Scopes,
    pub merchant_id: Option<MerchantId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What it takes to store a new key.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub id: Uuid,
    pub owner_id: UserId,
    pub name: &'a str,
    pub test: bool,
    pub lookup: &'a str,
    pub prefix: &'a str,
    pub key_hash: &'a [u8],
    pub scopes: Scopes,
    pub merchant_id: Option<MerchantId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: Uuid,
    owner_id: Uuid,
    owner_role: String,
    name: String,
    mode: String,
    lookup: String,
    prefix: String,
    key_hash: Vec<u8>,
    scopes: String,
    merchant_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(row: ApiKeyRow) -> Result<Self, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("api key {}: {what}", row.id));
        let owner_role = row
            .owner_role
            .parse::<Role>()
            .map_err(|e| corrupt(e.to_string()))?;
        let scopes =
            Scopes::parse_space_separated(&row.scopes).map_err(|e| corrupt(e.to_string()))?;
        Ok(ApiKey {
            id: row.id,
            owner_id: UserId(row.owner_id),
            owner_role,
            name: row.name,
            test: row.mode == "test",
            lookup: row.lookup,
            prefix: row.prefix,
            key_hash: row.key_hash,
            scopes,
            merchant_id: row.merchant_id.map(MerchantId),
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            last_used_at: row.last_used_at,
        })
    }
}

const API_KEY_COLUMNS: &str = "k.id, k.owner_id, u.role AS owner_role, k.name, k.mode, k.lookup, \
    k.prefix, k.key_hash, k.scopes, k.merchant_id, k.created_at, k.expires_at, k.revoked_at, \
    k.last_used_at";

impl Store {
    /// Stores a new key.
    pub async fn create_api_key(&self, new: &NewApiKey<'_>) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO api_keys (id, owner_id, name, mode, lookup, prefix, key_hash, scopes, \
                 merchant_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(new.id)
            .bind(new.owner_id.as_uuid())
            .bind(new.name)
            .bind(if new.test { "test" } else { "live" })
            .bind(new.lookup)
            .bind(new.prefix)
            .bind(new.key_hash)
            .bind(new.scopes.to_space_separated())
            .bind(new.merchant_id.map(|m| m.as_uuid()))
            .bind(new.created_at)
            .bind(new.expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The key whose public id is `lookup`.
    pub async fn api_key_by_lookup(&self, lookup: &str) -> Result<Option<ApiKey>, StoreError> {
        let row: Option<ApiKeyRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys k JOIN users u ON u.id = k.owner_id \
                 WHERE k.lookup = $1"
            )))
            .bind(lookup)
            .fetch_optional(pool)
            .await?
        });
        row.map(ApiKey::try_from).transpose()
    }

    /// The key `id`.
    pub async fn api_key(&self, id: Uuid) -> Result<Option<ApiKey>, StoreError> {
        let row: Option<ApiKeyRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys k JOIN users u ON u.id = k.owner_id \
                 WHERE k.id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(ApiKey::try_from).transpose()
    }

    /// The keys `owner` made, newest first (revoked ones too).
    pub async fn api_keys_of(&self, owner: UserId) -> Result<Vec<ApiKey>, StoreError> {
        let rows: Vec<ApiKeyRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys k JOIN users u ON u.id = k.owner_id \
                 WHERE k.owner_id = $1 ORDER BY k.created_at DESC, k.id DESC"
            )))
            .bind(owner.as_uuid())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    /// Revokes the key `id` at `at`; `false` when it was revoked before.
    pub async fn revoke_api_key(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let revoked = on_writer!(self, |pool| {
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(revoked == 1)
    }

    /// Records that the key `id` was used at `at` (only ever moving the time forward).
    pub async fn touch_api_key(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(id)
            .bind(at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
