//! Idempotency keys for checkout, with Stripe's semantics: the first request with a key is
//! processed; a repeat with the same body replays its response; a different body is refused;
//! a repeat while the first still runs is refused as in progress. Keys live 24 hours.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError, on_writer};
use crate::domain::{OrderId, UserId};

/// How long a key and its response are kept.
pub const IDEMPOTENCY_KEY_TTL_HOURS: i64 = 24;
/// A request holding a key this long without finishing is taken to have died with its process;
/// a retry may take the key over (and reuses the same order id, so nothing is done twice).
pub const IDEMPOTENCY_LOCK_TIMEOUT_SECS: i64 = 60;

/// What a request may do with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// Go ahead; the order (if one is made) must use this id.
    Proceed { order_id: OrderId },
    /// Already answered: send this again.
    Replay { status: u16, body: String },
    /// The first request with this key is still running.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: String,
    order_id: Uuid,
    state: String,
    response_status: Option<i32>,
    response_body: Option<String>,
    locked_at: DateTime<Utc>,
}

impl Store {
    /// Claims `key` for `user`'s request with `request_hash`.
    pub async fn claim_idempotency_key(
        &self,
        user: UserId,
        key: &str,
        request_hash: &str,
    ) -> Result<KeyClaim, StoreError> {
        let now = super::now();
        let proposed = OrderId::new();
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            // An expired key is free again.
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND expires_at < $3",
            )
            .bind(user.as_uuid())
            .bind(key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, state, \
                 locked_at, created_at, expires_at) VALUES ($1, $2, $3, $4, 'in_progress', $5, $5, $6) \
                 ON CONFLICT (user_id, key) DO NOTHING",
            )
            .bind(user.as_uuid())
            .bind(key)
            .bind(request_hash)
            .bind(proposed.as_uuid())
            .bind(now)
            .bind(now + chrono::Duration::hours(IDEMPOTENCY_KEY_TTL_HOURS))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                tx.commit().await?;
                return Ok(KeyClaim::Proceed { order_id: proposed });
            }
            let row: KeyRow = sqlx::query_as(
                "SELECT request_hash, order_id, state, response_status, response_body, locked_at \
                 FROM idempotency_keys WHERE user_id = $1 AND key = $2",
            )
            .bind(user.as_uuid())
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            let claim = if row.request_hash != request_hash {
                KeyClaim::Mismatch
            } else if row.state == "completed" {
                KeyClaim::Replay {
                    status: row.response_status.unwrap_or(500) as u16,
                    body: row.response_body.unwrap_or_default(),
                }
            } else if (now - row.locked_at).num_seconds() >= IDEMPOTENCY_LOCK_TIMEOUT_SECS {
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET locked_at = $1 \
                     WHERE user_id = $2 AND key = $3 AND locked_at = $4 AND state = 'in_progress'",
                )
                .bind(now)
                .bind(user.as_uuid())
                .bind(key)
                .bind(row.locked_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if taken == 1 {
                    KeyClaim::Proceed {
                        order_id: OrderId(row.order_id),
                    }
                } else {
                    KeyClaim::InProgress
                }
            } else {
                KeyClaim::InProgress
            };
            tx.commit().await?;
            Ok(claim)
        })
    }

    /// Records the response to replay for `key`.
    pub async fn complete_idempotency_key(
        &self,
        user: UserId,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE idempotency_keys SET state = 'completed', response_status = $1, response_body = $2 \
                 WHERE user_id = $3 AND key = $4",
            )
            .bind(i32::from(status))
            .bind(body)
            .bind(user.as_uuid())
            .bind(key)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Frees `key` (the request failed before anything happened, or transiently): the next
    /// request with it is processed afresh.
    pub async fn release_idempotency_key(&self, user: UserId, key: &str) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND state = 'in_progress'")
                .bind(user.as_uuid())
                .bind(key)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Deletes expired keys; returns how many.
    pub async fn purge_expired_idempotency_keys(&self) -> Result<u64, StoreError> {
        let now = super::now();
        let purged = on_writer!(self, |pool| {
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at < $1")
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(purged)
    }
}
