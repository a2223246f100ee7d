//! The reconciler: releases money that no order will use. A checkout that never finished — its
//! client gave up, its server died and nobody retried — is given up once its key has been
//! untouched for the abandon time (default 15 min), and only then: while its key can still be
//! retried into an order, its hold is left alone. Every payment whose order was never placed
//! and whose key can no longer make one (given up, completed with an error, or expired) is then
//! voided at the gateway, once (the void carries its own idempotency key), with a metric and a
//! log line for each. A placed checkout whose server died before keeping its answer has its key
//! completed with its order once the order has closed, as a retry would have been answered.

use std::time::Duration;

use super::{Authorisation, PaymentGateway, authorise_key, settlement, void_key};
use crate::store::{Payment, PaymentStatus, Store, StoreError};

/// Keys given up and payments voided per round at most.
const RECONCILE_BATCH: i64 = 200;
/// Never give a key up sooner than this, whatever is configured: a request that holds it may
/// be placing its order, which can wait out a region's failover (lease TTL plus recovery).
pub const ABANDON_AFTER_MIN: Duration = Duration::from_secs(20);
/// The status a placed checkout is answered with.
const PLACED_STATUS: u16 = 201;
/// The answer a retry of a given-up checkout gets.
pub const ABANDONED_STATUS: u16 = 410;
pub const ABANDONED_BODY: &str = r#"{"error":{"code":"checkout_abandoned","message":"This checkout was not finished in time and was given up; any hold on the card was released. Check out again with a new Idempotency-Key."}}"#;

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Checkout keys given up.
    pub abandoned_keys: usize,
    /// Holds released at the gateway.
    pub voided: usize,
    /// Pending payments the gateway held nothing for (or had declined).
    pub closed_without_hold: usize,
    /// Placed checkouts' keys completed with their order for a server that died first.
    pub answers_kept: usize,
}

/// One round: gives up checkouts untouched for `abandon_after`, then releases every orphan
/// payment. (The server never passes less than [`ABANDON_AFTER_MIN`].)
pub async fn reconcile(
    store: &Store,
    gateway: &dyn PaymentGateway,
    abandon_after: Duration,
) -> Result<Reconciled, StoreError> {
    let mut done = Reconciled::default();
    let before = crate::store::now()
        - chrono::Duration::from_std(abandon_after).unwrap_or(chrono::Duration::minutes(15));
    for key in store
        .abandon_idempotency_keys(before, ABANDONED_STATUS, ABANDONED_BODY, RECONCILE_BATCH)
        .await?
    {
        metrics::counter!("checkout_keys_abandoned_total").increment(1);
        tracing::info!(order_id = %key.order_id, customer_id = %key.user_id, "unfinished checkout given up");
        done.abandoned_keys += 1;
    }
    done.answers_kept = keep_orphaned_answers(store).await?;
    for payment in store.orphan_payments(RECONCILE_BATCH).await? {
        match release(store, gateway, &payment).await {
            Ok(Released::Voided) => done.voided += 1,
            Ok(Released::NothingHeld) => done.closed_without_hold += 1,
            Err(error) => settlement::record_failure(store, &payment, "void", &error).await?,
        }
    }
    Ok(done)
}

/// Completes the keys of placed checkouts whose server died before keeping the answer (its
/// answers are kept off the answer's path, `api::key_answers`), once their order closed: with
/// `201` and the order, as a retry would have been answered. Returns how many.
async fn keep_orphaned_answers(store: &Store) -> Result<usize, StoreError> {
    let mut kept = 0;
    for orphaned in store.orphaned_answers(RECONCILE_BATCH).await? {
        let Some(order) = store.load_order(orphaned.order_id).await? else {
            continue;
        };
        let body = serde_json::to_string(&order.view())
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        if store
            .complete_orphaned_answer(&orphaned, PLACED_STATUS, &body)
            .await?
        {
            metrics::counter!("checkout_answers_kept_by_reconciler_total").increment(1);
            tracing::info!(order_id = %orphaned.order_id, customer_id = %orphaned.user_id, "a placed checkout's answer kept for a server that died");
            kept += 1;
        }
    }
    Ok(kept)
}

enum Released {
    Voided,
    NothingHeld,
}

/// Releases one orphan payment: voids its hold, first asking the gateway what a pending one's
/// authorisation did (its checkout died before recording the answer).
async fn release(
    store: &Store,
    gateway: &dyn PaymentGateway,
    payment: &Payment,
) -> anyhow::Result<Released> {
    let reference = match (payment.status, payment.gateway_ref.clone()) {
        (PaymentStatus::Authorised, Some(reference)) => reference,
        (PaymentStatus::Pending, _) => {
            let key = authorise_key(payment.order_id);
            match gateway.authorisation(&key).await? {
                Some(Authorisation::Authorised { reference }) => reference,
                Some(Authorisation::Declined(code)) => {
                    store
                        .record_authorisation(
                            payment.id,
                            PaymentStatus::Declined,
                            None,
                            Some(code.as_str()),
                            &key,
                            "reconciler",
                        )
                        .await?;
                    return Ok(Released::NothingHeld);
                }
                None => {
                    store
                        .record_authorisation(
                            payment.id,
                            PaymentStatus::Abandoned,
                            None,
                            None,
                            &key,
                            "reconciler",
                        )
                        .await?;
                    tracing::info!(payment_id = %payment.id, order_id = %payment.order_id, "abandoned checkout held nothing");
                    return Ok(Released::NothingHeld);
                }
            }
        }
        (status, _) => anyhow::bail!("cannot release a payment that is {status}"),
    };
    let key = void_key(payment.id);
    gateway.void(&key, &reference).await?;
    let recorded = if payment.status == PaymentStatus::Pending {
        store
            .record_authorisation(
                payment.id,
                PaymentStatus::Voided,
                Some(&reference),
                None,
                &key,
                "reconciler",
            )
            .await?
    } else {
        store
            .set_payment_status(
                payment.id,
                &[PaymentStatus::Authorised],
                PaymentStatus::Voided,
                Some(&key),
                "reconciler",
            )
            .await?
    };
    if recorded {
        metrics::counter!("payments_voided_total", "reason" => "no_order").increment(1);
        tracing::info!(
            payment_id = %payment.id,
            order_id = %payment.order_id,
            amount_cents = payment.amount_cents.0,
            "hold released: its checkout never placed an order"
        );
    }
    Ok(Released::Voided)
}
