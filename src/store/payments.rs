//! Payments: one per order (or per declined checkout), its current status, and every change
//! of status with the idempotency key of the gateway call that made it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{KeyHold, Pool, Store, StoreError, on_pool, on_writer};
use crate::domain::{Cents, OrderId, OrderStatus, UserId};

/// Where a payment is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Checkout asked the gateway to authorise and has not recorded its answer yet (it may have
    /// died meanwhile: a retry of the checkout, or the reconciler, asks the gateway again).
    Pending,
    /// Money held on the card, not yet taken.
    Authorised,
    /// The card was refused; no order exists.
    Declined,
    /// Taken, at delivery.
    Captured,
    /// The hold was released (cancelled or rejected before capture).
    Voided,
    /// Taken and given back.
    Refunded,
    /// The gateway reported a later failure (e.g. a capture that did not go through), or
    /// refused the payment method.
    Failed,
    /// The checkout was never finished and the gateway holds nothing for it.
    Abandoned,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Authorised => "authorised",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Captured => "captured",
            PaymentStatus::Voided => "voided",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Abandoned => "abandoned",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        [
            PaymentStatus::Pending,
            PaymentStatus::Authorised,
            PaymentStatus::Declined,
            PaymentStatus::Captured,
            PaymentStatus::Voided,
            PaymentStatus::Refunded,
            PaymentStatus::Failed,
            PaymentStatus::Abandoned,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown payment status {s:?}")))
    }
}

/// A payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: OrderId,
    pub customer_id: UserId,
    pub amount_cents: Cents,
    pub payment_method: String,
    pub status: PaymentStatus,
    /// The gateway's id for the authorisation.
    pub gateway_ref: Option<String>,
    /// Why the card was refused.
    pub decline_code: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Failed settlement attempts since the last change of status.
    pub settle_attempts: i32,
    /// Why the last settlement attempt failed.
    pub last_settle_error: Option<String>,
    /// Settlement kept failing (or the gateway refused it): an operator should look.
    pub needs_attention: bool,
}

impl Payment {
    /// A payment checkout is about to authorise.
    pub fn pending(
        order_id: OrderId,
        customer_id: UserId,
        amount_cents: Cents,
        payment_method: String,
    ) -> Payment {
        let now = super::now();
        Payment {
            id: Uuid::now_v7(),
            order_id,
            customer_id,
            amount_cents,
            payment_method,
            status: PaymentStatus::Pending,
            gateway_ref: None,
            decline_code: None,
            created_at: now,
            updated_at: now,
            settle_attempts: 0,
            last_settle_error: None,
            needs_attention: false,
        }
    }
}

/// One change of a payment's status.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentEvent {
    pub seq: i64,
    pub status: PaymentStatus,
    pub idempotency_key: Option<String>,
    /// `checkout`, `settlement` or `webhook`.
    pub source: String,
    pub at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    id: Uuid,
    order_id: Uuid,
    customer_id: Uuid,
    amount_cents: i64,
    payment_method: String,
    status: String,
    gateway_ref: Option<String>,
    decline_code: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    settle_attempts: i32,
    last_settle_error: Option<String>,
    needs_attention: bool,
}

impl TryFrom<PaymentRow> for Payment {
    type Error = StoreError;

    fn try_from(row: PaymentRow) -> Result<Self, StoreError> {
        Ok(Payment {
            id: row.id,
            order_id: OrderId(row.order_id),
            customer_id: UserId(row.customer_id),
            amount_cents: Cents(row.amount_cents),
            payment_method: row.payment_method,
            status: row.status.parse()?,
            gateway_ref: row.gateway_ref,
            decline_code: row.decline_code,
            created_at: row.created_at,
            updated_at: row.updated_at,
            settle_attempts: row.settle_attempts,
            last_settle_error: row.last_settle_error,
            needs_attention: row.needs_attention,
        })
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    status: String,
    idempotency_key: Option<String>,
    source: String,
    at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct SettleRow {
    #[sqlx(flatten)]
    payment: PaymentRow,
    order_status: Option<String>,
}

const PAYMENT_COLUMNS: &str = "p.id, p.order_id, p.customer_id, p.amount_cents, p.payment_method, \
    p.status, p.gateway_ref, p.decline_code, p.created_at, p.updated_at, p.settle_attempts, \
    p.last_settle_error, p.needs_attention";

/// A move of a payment from one of `from` to `to`, and what is written with it.
struct Move<'a> {
    from: &'a [PaymentStatus],
    to: PaymentStatus,
    /// What the gateway answered an authorisation: its reference (kept if `None`) and the
    /// decline code.
    answer: Option<(Option<&'a str>, Option<&'a str>)>,
    idempotency_key: Option<&'a str>,
    source: &'a str,
    /// The payment is settled for good (settlement never reads it again).
    settled: bool,
    /// On PostgreSQL, a checkout's key claim renewed in the same statement.
    renew: Option<KeyHold<'a>>,
}

impl<'a> Move<'a> {
    /// From one of `from` to `to`, recorded as done by `source`; nothing else written.
    fn new(from: &'a [PaymentStatus], to: PaymentStatus, source: &'a str) -> Self {
        Move {
            from,
            to,
            answer: None,
            idempotency_key: None,
            source,
            settled: false,
            renew: None,
        }
    }
}

/// The insert of one payment's row, bound for either backend (executed by the caller).
macro_rules! insert_payment {
    ($payment:expr) => {
        sqlx::query(
            "INSERT INTO payments (id, order_id, customer_id, amount_cents, payment_method, \
             status, gateway_ref, decline_code, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind($payment.id)
        .bind($payment.order_id.as_uuid())
        .bind($payment.customer_id.as_uuid())
        .bind($payment.amount_cents.0)
        .bind(&$payment.payment_method)
        .bind($payment.status.as_str())
        .bind(&$payment.gateway_ref)
        .bind(&$payment.decline_code)
        .bind($payment.created_at)
        .bind($payment.updated_at)
    };
}
pub(super) use insert_payment;

impl Store {
    /// Records a new payment and its first event (none for a pending one).
    pub async fn create_payment(
        &self,
        payment: &Payment,
        idempotency_key: &str,
        source: &str,
    ) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            // A pending payment is bookkeeping, not a change the customer sees: its history
            // starts with the gateway's answer, so it is one row, written on its own.
            if payment.status == PaymentStatus::Pending {
                insert_payment!(payment).execute(pool).await?;
                return Ok(());
            }
            let mut tx = pool.begin().await?;
            insert_payment!(payment).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO payment_events (payment_id, seq, status, idempotency_key, source, at) \
                 VALUES ($1, 1, $2, $3, $4, $5)",
            )
            .bind(payment.id)
            .bind(payment.status.as_str())
            .bind(idempotency_key)
            .bind(source)
            .bind(payment.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Moves a payment to `to` if it is in one of `from`; records the change. False when the
    /// payment was not in any of `from` (someone else moved it first): nothing is written.
    pub async fn set_payment_status(
        &self,
        id: Uuid,
        from: &[PaymentStatus],
        to: PaymentStatus,
        idempotency_key: Option<&str>,
        source: &str,
    ) -> Result<bool, StoreError> {
        self.move_payment(
            id,
            Move {
                idempotency_key,
                ..Move::new(from, to, source)
            },
        )
        .await
        .map(|(moved, _)| moved)
    }

    /// Records the capture of an authorised payment whose order was delivered, under gateway
    /// key `idempotency_key`: the end of that payment's way, so settlement never reads it again.
    /// False when it was no longer authorised.
    pub async fn capture_delivered(
        &self,
        id: Uuid,
        idempotency_key: &str,
    ) -> Result<bool, StoreError> {
        self.move_payment(
            id,
            Move {
                idempotency_key: Some(idempotency_key),
                settled: true,
                ..Move::new(
                    &[PaymentStatus::Authorised],
                    PaymentStatus::Captured,
                    "settlement",
                )
            },
        )
        .await
        .map(|(moved, _)| moved)
    }

    /// Moves payment `id` as `change` says and records the move as its next event: whether it
    /// moved, and whether `change.renew`'s key is still held (`None` when the claim was not
    /// renewed here — no `renew`, or the move took the transaction path — so that the caller
    /// renews it on its own).
    async fn move_payment(
        &self,
        id: Uuid,
        change: Move<'_>,
    ) -> Result<(bool, Option<bool>), StoreError> {
        let Move {
            from,
            to,
            answer,
            idempotency_key,
            source,
            settled,
            renew,
        } = change;
        let now = super::now();
        // The UPDATE that moves the payment (`WHERE` its id and one of `from`), onto a builder.
        macro_rules! push_update {
            ($update:ident) => {{
                $update.push("UPDATE payments SET status = ");
                $update.push_bind(to.as_str());
                if let Some((gateway_ref, decline_code)) = answer {
                    $update
                        .push(", gateway_ref = COALESCE(")
                        .push_bind(gateway_ref)
                        .push(", gateway_ref), decline_code = ")
                        .push_bind(decline_code);
                }
                // A move ends the settlement of the old status: its retries and alarm go with it.
                $update
                    .push(", settle_attempts = 0, next_settle_at = NULL, last_settle_error = NULL")
                    .push(", needs_attention = ")
                    .push_bind(false)
                    .push(", settled = ")
                    .push_bind(settled)
                    .push(", updated_at = ")
                    .push_bind(now)
                    .push(" WHERE id = ")
                    .push_bind(id)
                    .push(" AND status IN (");
                let mut statuses = $update.separated(", ");
                for status in from {
                    statuses.push_bind(status.as_str());
                }
                $update.push(")");
            }};
        }
        if let Pool::Postgres(pool) = self.writer()? {
            // One statement, so no transaction: the move and its event commit together. The
            // event's number is read from the statement's snapshot; a racing move of the same
            // payment that committed after it (only possible when `from` takes in the other
            // move's status) makes the insert collide, the whole statement fails, and the
            // transaction below does it again with a fresh look.
            let mut statement = sqlx::QueryBuilder::new("WITH moved AS (");
            push_update!(statement);
            statement
                .push(" RETURNING id), event AS (INSERT INTO payment_events (payment_id, seq, status, idempotency_key, source, at) SELECT id, COALESCE((SELECT MAX(seq) FROM payment_events WHERE payment_id = ")
                .push_bind(id)
                .push("), 0) + 1, ")
                .push_bind(to.as_str())
                .push(", ")
                .push_bind(idempotency_key)
                .push(", ")
                .push_bind(source)
                .push(", ")
                .push_bind(now)
                .push(" FROM moved RETURNING 1)");
            if let Some(hold) = renew {
                statement
                    .push(", renewed AS (UPDATE idempotency_keys SET locked_at = ")
                    .push_bind(now)
                    .push(" WHERE user_id = ")
                    .push_bind(hold.user.as_uuid())
                    .push(" AND key = ")
                    .push_bind(hold.key)
                    .push(" AND holder = ")
                    .push_bind(hold.holder)
                    .push(" AND state = 'in_progress' RETURNING 1)")
                    .push(" SELECT (SELECT COUNT(*) FROM event), (SELECT COUNT(*) FROM renewed)");
            } else {
                statement.push(" SELECT (SELECT COUNT(*) FROM event), 0::bigint");
            }
            match statement
                .build_query_as::<(i64, i64)>()
                .fetch_one(pool)
                .await
                .map_err(StoreError::from)
            {
                Ok((moved, renewed)) => {
                    return Ok((moved == 1, renew.map(|_| renewed == 1)));
                }
                Err(StoreError::Duplicate(_)) => {}
                Err(error) => return Err(error),
            }
        }
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut update = sqlx::QueryBuilder::new("");
            push_update!(update);
            let moved = update.build().execute(&mut *tx).await?.rows_affected();
            if moved != 1 {
                return Ok((false, None));
            }
            sqlx::query(
                "INSERT INTO payment_events (payment_id, seq, status, idempotency_key, source, at) \
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 FROM payment_events WHERE payment_id = $1",
            )
            .bind(id)
            .bind(to.as_str())
            .bind(idempotency_key)
            .bind(source)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((true, None))
        })
    }

    /// The payment of an order, if any.
    pub async fn payment_for_order(&self, order: OrderId) -> Result<Option<Payment>, StoreError> {
        let row: Option<PaymentRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments p WHERE p.order_id = $1"
            )))
            .bind(order.as_uuid())
            .fetch_optional(pool)
            .await?
        });
        row.map(Payment::try_from).transpose()
    }

    /// A payment by our id or by the gateway's.
    pub async fn payment_by_ref(&self, reference: &str) -> Result<Option<Payment>, StoreError> {
        let id = Uuid::parse_str(reference).ok();
        let row: Option<PaymentRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments p WHERE p.gateway_ref = $1 OR p.id = $2"
            )))
            .bind(reference)
            .bind(id.unwrap_or(Uuid::nil()))
            .fetch_optional(pool)
            .await?
        });
        row.map(Payment::try_from).transpose()
    }

    /// Every change of a payment, oldest first.
    pub async fn payment_events(&self, payment: Uuid) -> Result<Vec<PaymentEvent>, StoreError> {
        let rows: Vec<EventRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT seq, status, idempotency_key, source, at FROM payment_events \
                 WHERE payment_id = $1 ORDER BY seq",
            )
            .bind(payment)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|row| {
                Ok(PaymentEvent {
                    seq: row.seq,
                    status: row.status.parse()?,
                    idempotency_key: row.idempotency_key,
                    source: row.source,
                    at: row.at,
                })
            })
            .collect()
    }

    /// Payments whose order has ended but whose money has not followed yet, and whose back-off
    /// has passed: authorised for a delivered order (to capture), authorised or captured for a
    /// cancelled or rejected one (to void or refund). Authorisations whose order was never
    /// placed are the reconciler's ([`Store::orphan_payments`]).
    pub async fn payments_to_settle(
        &self,
        limit: i64,
    ) -> Result<Vec<(Payment, OrderStatus)>, StoreError> {
        let rows: Vec<SettleRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {PAYMENT_COLUMNS}, o.status AS order_status FROM payments p \
                 JOIN orders o ON o.id = p.order_id \
                 WHERE p.status IN ('authorised', 'captured') AND NOT p.settled \
                 AND ((p.status = 'authorised' AND o.status IN ('delivered', 'cancelled', 'rejected')) \
                 OR (p.status = 'captured' AND o.status IN ('cancelled', 'rejected'))) \
                 AND (p.next_settle_at IS NULL OR p.next_settle_at <= $2) \
                 ORDER BY p.updated_at LIMIT $1"
            )))
            .bind(limit)
            .bind(super::now())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|row| {
                let status = match row.order_status.as_deref() {
                    Some("delivered") => OrderStatus::Delivered,
                    Some("rejected") => OrderStatus::Rejected,
                    _ => OrderStatus::Cancelled,
                };
                Ok((Payment::try_from(row.payment)?, status))
            })
            .collect()
    }

    /// Records a failed settlement attempt: when to try again, why it failed, and whether an
    /// operator should now look.
    pub async fn record_settlement_failure(
        &self,
        id: Uuid,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        needs_attention: bool,
    ) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE payments SET settle_attempts = settle_attempts + 1, last_settle_error = $1, \
                 next_settle_at = $2, needs_attention = (needs_attention OR $3) WHERE id = $4",
            )
            .bind(error)
            .bind(next_attempt_at)
            .bind(needs_attention)
            .bind(id)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Payments an operator should look at (settlement kept failing), oldest change first.
    pub async fn payments_needing_attention(&self, limit: i64) -> Result<Vec<Payment>, StoreError> {
        let rows: Vec<PaymentRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments p WHERE p.needs_attention \
                 ORDER BY p.updated_at LIMIT $1"
            )))
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Payment::try_from).collect()
    }

    /// How many payments need an operator.
    pub async fn count_payments_needing_attention(&self) -> Result<i64, StoreError> {
        on_pool!(self, |pool| {
            let (count,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM payments WHERE needs_attention")
                    .fetch_one(pool)
                    .await?;
            Ok(count)
        })
    }

    /// Records the gateway's answer to a pending authorisation: `to` (authorised, declined,
    /// failed, voided or abandoned) with the gateway's reference or decline code. False when
    /// the payment was no longer pending (a racing retry or the reconciler recorded it first).
    pub async fn record_authorisation(
        &self,
        id: Uuid,
        to: PaymentStatus,
        gateway_ref: Option<&str>,
        decline_code: Option<&str>,
        idempotency_key: &str,
        source: &str,
    ) -> Result<bool, StoreError> {
        self.move_payment(
            id,
            Move {
                answer: Some((gateway_ref, decline_code)),
                idempotency_key: Some(idempotency_key),
                ..Move::new(&[PaymentStatus::Pending], to, source)
            },
        )
        .await
        .map(|(moved, _)| moved)
    }

    /// [`Store::record_authorisation`] for a checkout, which then renews its claim on its
    /// Idempotency-Key (as [`Store::refresh_idempotency_key`]) before placing the order — on
    /// PostgreSQL in the same statement, one round trip and one commit fewer an order. The
    /// payment moves whatever becomes of the key. Returns whether the key is still held.
    pub async fn record_checkout_authorisation(
        &self,
        id: Uuid,
        to: PaymentStatus,
        gateway_ref: Option<&str>,
        decline_code: Option<&str>,
        gateway_key: &str,
        hold: KeyHold<'_>,
    ) -> Result<bool, StoreError> {
        let (_, renewed) = self
            .move_payment(
                id,
                Move {
                    answer: Some((gateway_ref, decline_code)),
                    idempotency_key: Some(gateway_key),
                    renew: Some(hold),
                    ..Move::new(&[PaymentStatus::Pending], to, "checkout")
                },
            )
            .await?;
        match renewed {
            Some(renewed) => Ok(renewed),
            None => {
                self.refresh_idempotency_key(hold.user, hold.key, hold.holder)
                    .await
            }
        }
    }

    /// Pending or authorised payments that no order will use: their order was never placed
    /// and no checkout can still be retried into it (its key ended with an error, was given up
    /// by the reconciler, or expired). The reconciler voids them.
    pub async fn orphan_payments(&self, limit: i64) -> Result<Vec<Payment>, StoreError> {
        let rows: Vec<PaymentRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments p \
                 WHERE p.status IN ('pending', 'authorised') \
                 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = p.order_id) \
                 AND NOT EXISTS (SELECT 1 FROM idempotency_keys k \
                     WHERE k.order_id = p.order_id AND k.state = 'in_progress') \
                 AND (p.next_settle_at IS NULL OR p.next_settle_at <= $2) \
                 ORDER BY p.created_at LIMIT $1"
            )))
            .bind(limit)
            .bind(super::now())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Payment::try_from).collect()
    }

    /// Records a webhook event id; false when it was seen before.
    pub async fn record_webhook_event(
        &self,
        id: &str,
        event_type: &str,
    ) -> Result<bool, StoreError> {
        let now = super::now();
        let inserted = on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO webhook_events (id, event_type, received_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(event_type)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Forgets a webhook event id (its processing failed; the sender will retry).
    pub async fn forget_webhook_event(&self, id: &str) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query("DELETE FROM webhook_events WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
