//! Payment links of WhatsApp conversations: a random single-use token (only its SHA-256 kept)
//! for one basket, expiring after 30 minutes; the link's checkout attempt (moved on only by a
//! declined card) and the order it placed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Store, StoreError, on_pool, on_writer};
use crate::domain::chat::Basket;
use crate::domain::{OrderId, UserId};
use crate::payments::webhook::encode_hex;

/// How long a payment link can be paid.
pub const PAY_LINK_TTL_SECS: i64 = 30 * 60;

/// A payment link as stored (never with its token).
#[derive(Debug, Clone, PartialEq)]
pub struct PayLink {
    pub id: Uuid,
    /// The conversation's phone (E.164).
    pub phone: String,
    pub customer_id: UserId,
    pub basket: Basket,
    /// The conversation and basket revision it pays for (unique).
    pub basket_key: String,
    /// Moves on after a declined card, so the next card is a new checkout.
    pub attempt: i32,
    /// Set once paid.
    pub order_id: Option<OrderId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// What it takes to issue a link.
#[derive(Debug, Clone)]
pub struct NewPayLink<'a> {
    pub phone: &'a str,
    pub customer_id: UserId,
    pub basket: &'a Basket,
    pub basket_key: &'a str,
    pub token_hash: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// Random bytes in a token.
const PAY_TOKEN_BYTES: usize = 32;

/// A new token: 32 random bytes, base64url without padding.
pub fn new_pay_token() -> String {
    let mut bytes = [0u8; PAY_TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What a token is stored and found by: its SHA-256, hex.
pub fn pay_token_hash(token: &str) -> String {
    encode_hex(&Sha256::digest(token.as_bytes()))
}

#[derive(sqlx::FromRow)]
struct PayLinkRow {
    id: Uuid,
    phone: String,
    customer_id: Uuid,
    basket: Json<serde_json::Value>,
    basket_key: String,
    attempt: i32,
    order_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

impl TryFrom<PayLinkRow> for PayLink {
    type Error = StoreError;

    fn try_from(row: PayLinkRow) -> Result<Self, StoreError> {
        let basket = serde_json::from_value(row.basket.0)
            .map_err(|e| StoreError::Corrupt(format!("pay link {}: basket: {e}", row.id)))?;
        Ok(PayLink {
            id: row.id,
            phone: row.phone,
            customer_id: UserId(row.customer_id),
            basket,
            basket_key: row.basket_key,
            attempt: row.attempt,
            order_id: row.order_id.map(OrderId),
            created_at: row.created_at,
            expires_at: row.expires_at,
            used_at: row.used_at,
        })
    }
}

const PAY_LINK_COLUMNS: &str = "id, phone, customer_id, basket, basket_key, attempt, order_id, \
    created_at, expires_at, used_at";

impl Store {
    /// Issues the link of `new.basket_key` under `new.token_hash`: a new link, or the one issued
    /// for it before (unused) with its token replaced and its expiry renewed — a conversation
    /// that crashed after issuing sends the new token. `None` when that link was used already.
    pub async fn issue_pay_link(
        &self,
        new: &NewPayLink<'_>,
    ) -> Result<Option<PayLink>, StoreError> {
        let basket = serde_json::to_value(new.basket)
            .map_err(|e| StoreError::Corrupt(format!("basket: {e}")))?;
        // The basket stays as first issued: its key names the basket revision.
        let row: Option<PayLinkRow> = on_writer!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "INSERT INTO pay_links (id, token_hash, basket_key, phone, customer_id, basket, \
                 attempt, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8) \
                 ON CONFLICT (basket_key) DO UPDATE SET token_hash = excluded.token_hash, \
                 expires_at = excluded.expires_at WHERE pay_links.order_id IS NULL \
                 RETURNING {PAY_LINK_COLUMNS}"
            )))
            .bind(Uuid::now_v7())
            .bind(new.token_hash)
            .bind(new.basket_key)
            .bind(new.phone)
            .bind(new.customer_id.as_uuid())
            .bind(Json(&basket))
            .bind(super::now())
            .bind(new.expires_at)
            .fetch_optional(pool)
            .await?
        });
        row.map(PayLink::try_from).transpose()
    }

    /// The link a token opens.
    pub async fn pay_link(&self, token_hash: &str) -> Result<Option<PayLink>, StoreError> {
        let row: Option<PayLinkRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {PAY_LINK_COLUMNS} FROM pay_links WHERE token_hash = $1"
            )))
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        row.map(PayLink::try_from).transpose()
    }

    /// After a declined card: the link's next checkout gets a new key. `false` when `attempt`
    /// is no longer the link's (another request moved it on).
    pub async fn advance_pay_link_attempt(
        &self,
        id: Uuid,
        attempt: i32,
    ) -> Result<bool, StoreError> {
        let moved = on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE pay_links SET attempt = attempt + 1 \
                 WHERE id = $1 AND attempt = $2 AND order_id IS NULL",
            )
            .bind(id)
            .bind(attempt)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(moved == 1)
    }

    /// Marks the link paid by `order`; `false` when it was marked before.
    pub async fn use_pay_link(
        &self,
        id: Uuid,
        order: OrderId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let marked = on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE pay_links SET order_id = $2, used_at = $3 \
                 WHERE id = $1 AND order_id IS NULL",
            )
            .bind(id)
            .bind(order.as_uuid())
            .bind(at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(marked == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_never_repeat() {
        let a = new_pay_token();
        let b = new_pay_token();
        assert_eq!(a.len(), 43, "{a}");
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn a_token_is_found_by_its_sha256_in_hex() {
        assert_eq!(
            pay_token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(pay_token_hash("abc"), pay_token_hash("abd"));
    }
}
