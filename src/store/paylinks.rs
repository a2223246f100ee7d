//! Payment links of WhatsApp conversations: a random single-use token (only its SHA-256 kept)
//! for one basket, expiring after 30 minutes; the link's checkout attempt (moved on only by a
//! declined card) and the order it placed.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::domain::chat::Basket;
use crate::domain::{OrderId, UserId};

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

/// A new token: 32 random bytes, base64url without padding.
pub fn new_pay_token() -> String {
    todo!("helper")
}

/// What a token is stored and found by: its SHA-256, hex.
pub fn pay_token_hash(token: &str) -> String {
    todo!("helper {token}")
}

impl Store {
    /// Issues the link of `new.basket_key` under `new.token_hash`: a new link, or the one issued
    /// for it before (unused) with its token replaced and its expiry renewed — a conversation
    /// that crashed after issuing sends the new token. `None` when that link was used already.
    pub async fn issue_pay_link(
        &self,
        new: &NewPayLink<'_>,
    ) -> Result<Option<PayLink>, StoreError> {
        todo!("helper {new:?}")
    }

    /// The link a token opens.
    pub async fn pay_link(&self, token_hash: &str) -> Result<Option<PayLink>, StoreError> {
        todo!("helper {token_hash}")
    }

    /// After a declined card: the link's next checkout gets a new key. `false` when `attempt`
    /// is no longer the link's (another request moved it on).
    pub async fn advance_pay_link_attempt(
        &self,
        id: Uuid,
        attempt: i32,
    ) -> Result<bool, StoreError> {
        todo!("helper {id} {attempt}")
    }

    /// Marks the link paid by `order`; `false` when it was marked before.
    pub async fn use_pay_link(
        &self,
        id: Uuid,
        order: OrderId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        todo!("helper {id} {order} {at}")
    }
}
