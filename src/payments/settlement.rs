//! Settlement: makes the money follow the order. Delivered orders are captured; cancelled and
//! rejected ones are voided (or refunded if already captured). The money loop
//! ([`super::money_loop`]) runs it when an order closes and every few seconds besides, so a crash
//! or a gateway outage only delays it. A payment whose settlement fails is retried with exponential
//! back-off and jitter, and after a few failures (or at once when the gateway refuses it) it is
//! marked for an operator's attention — never retried in a tight loop.

use std::time::Duration;

use rand::Rng;

use super::{GatewayError, PaymentGateway, void_key};
use crate::domain::OrderStatus;
use crate::store::{Payment, PaymentStatus, Store, StoreError};

/// Payments settled per round at most.
const SETTLEMENT_BATCH: i64 = 200;
/// The first retry waits about this long; each further one twice as long…
const SETTLE_RETRY_BASE: Duration = Duration::from_secs(2);
/// …up to this.
const SETTLE_RETRY_CAP: Duration = Duration::from_secs(300);
/// Failed attempts after which a payment is marked for attention (it is still retried, at the
/// capped pace): about a minute of trying.
pub const SETTLE_ATTENTION_AFTER_ATTEMPTS: i32 = 5;

/// How long to wait before the next attempt after `attempts` failed ones: exponential from
/// [`SETTLE_RETRY_BASE`], capped at [`SETTLE_RETRY_CAP`], with "equal jitter" (half
/// fixed, half random) so that payments failing together do not retry together.
pub fn retry_delay(attempts: i32, random: f64) -> Duration {
    let exponent = attempts.clamp(0, 16) as u32;
    let full = SETTLE_RETRY_BASE
        .saturating_mul(1 << exponent)
        .min(SETTLE_RETRY_CAP)
        .as_secs_f64();
    Duration::from_secs_f64(full / 2.0 + full / 2.0 * random.clamp(0.0, 1.0))
}

/// Records that settling `payment` failed with `error`: counted, backed off, and marked for
/// attention once it keeps failing or the gateway refused it outright.
pub async fn record_failure(
    store: &Store,
    payment: &Payment,
    operation: &'static str,
    error: &anyhow::Error,
) -> Result<(), StoreError> {
    let attempts = payment.settle_attempts + 1;
    let refused = matches!(
        error.downcast_ref::<GatewayError>(),
        Some(GatewayError::Refused(_))
    );
    let attention = refused || attempts >= SETTLE_ATTENTION_AFTER_ATTEMPTS;
    let delay = retry_delay(attempts, rand::rng().random::<f64>());
    metrics::counter!("payment_settlement_retries_total", "operation" => operation).increment(1);
    if attention && !payment.needs_attention {
        tracing::error!(
            payment_id = %payment.id,
            order_id = %payment.order_id,
            attempts,
            error = %error,
            "payment needs attention: settlement keeps failing"
        );
    } else {
        tracing::warn!(
            payment_id = %payment.id,
            order_id = %payment.order_id,
            attempts,
            retry_in_secs = delay.as_secs(),
            error = %error,
            "payment not settled yet"
        );
    }
    let next = crate::store::now()
        + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(60));
    store
        .record_settlement_failure(payment.id, &error.to_string(), next, attention)
        .await
}

/// One round: every payment whose order has closed, and whose back-off has passed, is
/// captured, voided or refunded. Captures are recorded together once the gateway has taken them
/// all (one write a round); a crash in between only repeats them at the gateway under the same
/// keys, which answers as before.
pub async fn settle(store: &Store, gateway: &dyn PaymentGateway) -> Result<usize, StoreError> {
    let pending = store.payments_to_settle(SETTLEMENT_BATCH).await?;
    let mut settled = 0;
    let mut captured = Vec::new();
    for (payment, order_status) in pending {
        match settle_one(store, gateway, &payment, order_status).await {
            Ok(Settled::Recorded) => settled += 1,
            Ok(Settled::Captured(key)) => captured.push((payment, key)),
            Err((operation, error)) => record_failure(store, &payment, operation, &error).await?,
        }
    }
    let batch: Vec<_> = captured
        .iter()
        .map(|(payment, key)| (payment.id, key.clone()))
        .collect();
    match store.capture_delivered_all(&batch).await {
        Ok(moved) => {
            for (payment, _) in captured.iter().filter(|(p, _)| moved.contains(&p.id)) {
                tracing::info!(payment_id = %payment.id, order_id = %payment.order_id, status = %PaymentStatus::Captured, "payment settled");
            }
            settled += moved.len();
        }
        Err(error) => {
            let error = anyhow::Error::from(error);
            for (payment, _) in &captured {
                record_failure(store, payment, "capture", &error).await?;
            }
        }
    }
    Ok(settled)
}

/// How one payment's settlement went.
enum Settled {
    /// Moved and recorded (or nothing to do).
    Recorded,
    /// Captured at the gateway under this key; to be recorded with the round's others.
    Captured(String),
}

async fn settle_one(
    store: &Store,
    gateway: &dyn PaymentGateway,
    payment: &Payment,
    order_status: OrderStatus,
) -> Result<Settled, (&'static str, anyhow::Error)> {
    let Some(reference) = payment.gateway_ref.as_deref() else {
        return Err((
            "settle",
            anyhow::anyhow!("payment has no gateway reference"),
        ));
    };
    let (operation, from, to, key) = match (payment.status, order_status) {
        (PaymentStatus::Authorised, OrderStatus::Delivered) => {
            let key = format!("capture:{}", payment.id);
            return match gateway.capture(&key, reference, payment.amount_cents).await {
                Ok(()) => Ok(Settled::Captured(key)),
                Err(error) => Err(("capture", error.into())),
            };
        }
        (PaymentStatus::Authorised, _) => (
            "void",
            PaymentStatus::Authorised,
            PaymentStatus::Voided,
            void_key(payment.id),
        ),
        (PaymentStatus::Captured, _) => (
            "refund",
            PaymentStatus::Captured,
            PaymentStatus::Refunded,
            format!("refund:{}", payment.id),
        ),
        _ => return Ok(Settled::Recorded),
    };
    let moved = match operation {
        "void" => gateway.void(&key, reference).await,
        _ => gateway.refund(&key, reference, payment.amount_cents).await,
    };
    moved.map_err(|error| (operation, anyhow::Error::from(error)))?;
    store
        .set_payment_status(payment.id, &[from], to, Some(&key), "settlement")
        .await
        .map_err(|error| (operation, anyhow::Error::from(error)))?;
    tracing::info!(payment_id = %payment.id, order_id = %payment.order_id, status = %to, "payment settled");
    Ok(Settled::Recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cap in seconds, as the assertions were first written.
    const SETTLE_RETRY_CAP_SECS: u64 = SETTLE_RETRY_CAP.as_secs();

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_the_cap() {
        // Equal jitter: between half and all of the exponential step.
        assert_eq!(retry_delay(0, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(0, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(1, 1.0), Duration::from_secs(4));
        assert_eq!(retry_delay(3, 0.5), Duration::from_secs(12));
        // Capped, however many attempts.
        assert_eq!(
            retry_delay(20, 1.0),
            Duration::from_secs(SETTLE_RETRY_CAP_SECS)
        );
        assert_eq!(
            retry_delay(i32::MAX, 0.0),
            Duration::from_secs(SETTLE_RETRY_CAP_SECS / 2)
        );
        // Never negative or zero, even for nonsense input.
        assert!(retry_delay(-5, -1.0) >= Duration::from_secs(1));
    }
}
