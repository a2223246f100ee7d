//! A checkout's first write: its Idempotency-Key claimed and, when the key is new, its pending
//! payment recorded with it — both or neither, in one PostgreSQL statement (one round trip and
//! one commit fewer an order than claim, then payment).

use super::idempotency::{CLAIM_NEW_KEY, IDEMPOTENCY_KEY_TTL_HOURS, KeyClaim, claim_new_key_sql};
use super::payments::insert_payment;
use super::{Payment, Store, StoreError};
use crate::domain::{Cents, OrderId, UserId};

/// The key's claim with its pending payment: the payment row is written only when the key was
/// taken ($8–$12: the payment's id, customer, amount, method and time).
const CLAIM_NEW_KEY_PAYING_POSTGRES: &str = concat!(
    "WITH claimed AS (",
    claim_new_key_sql!(),
    " RETURNING order_id) \
    INSERT INTO payments (id, order_id, customer_id, amount_cents, payment_method, status, \
    created_at, updated_at) SELECT $8, order_id, $9, $10, $11, 'pending', $12, $12 FROM claimed"
);

/// The pending payment a checkout records with its key's first claim.
#[derive(Debug, Clone)]
pub struct PendingCharge {
    pub amount_cents: Cents,
    pub payment_method: String,
}

impl Store {
    /// [`Store::claim_idempotency_key`], and when the key is taken fresh (`Proceed` with
    /// `resumed: false`) the pending payment of `charge` for its new order recorded in the same
    /// statement (PostgreSQL) or transaction (SQLite) — both or neither — and returned. A key
    /// that exists is decided as always, and no payment is written for it.
    pub async fn claim_idempotency_key_paying(
        &self,
        user: UserId,
        key: &str,
        request_hash: &str,
        holder: &str,
        charge: Option<PendingCharge>,
    ) -> Result<(KeyClaim, Option<Payment>), StoreError> {
        let Some(charge) = charge else {
            let claim = self
                .claim_idempotency_key(user, key, request_hash, holder)
                .await?;
            return Ok((claim, None));
        };
        let now = super::now();
        let proposed = OrderId::new();
        let payment = Payment::pending(proposed, user, charge.amount_cents, charge.payment_method);
        let expires_at = now + chrono::Duration::hours(IDEMPOTENCY_KEY_TTL_HOURS);
        macro_rules! claim_new_key {
            ($sql:expr) => {
                sqlx::query($sql)
                    .bind(user.as_uuid())
                    .bind(key)
                    .bind(request_hash)
                    .bind(proposed.as_uuid())
                    .bind(now)
                    .bind(expires_at)
                    .bind(holder)
            };
        }
        let taken = match self.writer()? {
            super::Pool::Postgres(pool) => claim_new_key!(CLAIM_NEW_KEY_PAYING_POSTGRES)
                .bind(payment.id)
                .bind(user.as_uuid())
                .bind(payment.amount_cents.0)
                .bind(&payment.payment_method)
                .bind(payment.created_at)
                .execute(pool)
                .await?
                .rows_affected(),
            // SQLite writes no rows from a WITH clause: the same two inserts in a transaction.
            super::Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let taken = claim_new_key!(CLAIM_NEW_KEY)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if taken == 1 {
                    insert_payment!(payment).execute(&mut *tx).await?;
                    tx.commit().await?;
                }
                taken
            }
        };
        if taken == 1 {
            let claim = KeyClaim::Proceed {
                order_id: proposed,
                resumed: false,
            };
            return Ok((claim, Some(payment)));
        }
        let claim = self
            .decide_existing_key(user, key, request_hash, holder, now)
            .await?;
        Ok((claim, None))
    }
}
