//! Settlement: makes the money follow the order. Delivered orders are captured; cancelled and
//! rejected ones are voided (or refunded if already captured). It runs when an order closes and
//! every half minute besides, so a crash or a gateway outage only delays it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::PaymentGateway;
use crate::domain::OrderStatus;
use crate::store::{Payment, PaymentStatus, Store, StoreError};

/// How often settlement runs even when no order closed (retries after failures).
const SETTLEMENT_INTERVAL_SECS: u64 = 30;
/// Payments settled per round at most.
const SETTLEMENT_BATCH: i64 = 200;

/// Starts the settlement task; notify the returned handle when an order closes.
pub fn spawn(store: Store, gateway: Arc<dyn PaymentGateway>) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let wake = notify.clone();
    actix_web::rt::spawn(async move {
        loop {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(SETTLEMENT_INTERVAL_SECS)) => {}
            }
            if store.is_migrated()
                && let Err(error) = settle(&store, gateway.as_ref()).await
            {
                tracing::warn!(error = %error, "settlement round failed; will retry");
            }
        }
    });
    notify
}

/// One round: every payment whose order has closed is captured, voided or refunded.
pub async fn settle(store: &Store, gateway: &dyn PaymentGateway) -> Result<usize, StoreError> {
    let pending = store.payments_to_settle(SETTLEMENT_BATCH).await?;
    let mut settled = 0;
    for (payment, order_status) in pending {
        match settle_one(store, gateway, &payment, order_status).await {
            Ok(()) => settled += 1,
            Err(error) => tracing::warn!(
                payment_id = %payment.id,
                order_id = %payment.order_id,
                error = %error,
                "payment not settled yet"
            ),
        }
    }
    Ok(settled)
}

async fn settle_one(
    store: &Store,
    gateway: &dyn PaymentGateway,
    payment: &Payment,
    order_status: OrderStatus,
) -> anyhow::Result<()> {
    let reference = payment
        .gateway_ref
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("payment has no gateway reference"))?;
    let (from, to, key) = match (payment.status, order_status) {
        (PaymentStatus::Authorised, OrderStatus::Delivered) => {
            let key = format!("capture:{}", payment.id);
            gateway
                .capture(&key, reference, payment.amount_cents)
                .await?;
            (PaymentStatus::Authorised, PaymentStatus::Captured, key)
        }
        (PaymentStatus::Authorised, _) => {
            let key = format!("void:{}", payment.id);
            gateway.void(&key, reference).await?;
            (PaymentStatus::Authorised, PaymentStatus::Voided, key)
        }
        (PaymentStatus::Captured, _) => {
            let key = format!("refund:{}", payment.id);
            gateway
                .refund(&key, reference, payment.amount_cents)
                .await?;
            (PaymentStatus::Captured, PaymentStatus::Refunded, key)
        }
        _ => return Ok(()),
    };
    store
        .set_payment_status(payment.id, &[from], to, Some(&key), "settlement")
        .await?;
    tracing::info!(payment_id = %payment.id, order_id = %payment.order_id, status = %to, "payment settled");
    Ok(())
}
