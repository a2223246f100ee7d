//! The money loop: one background task that runs settlement ([`super::settlement`]) and then the
//! reconciler ([`super::reconcile`]) whenever an order closes and every few seconds besides, so a
//! crash or a gateway outage only delays them. It lives apart from both so that neither imports
//! the other to be run: the reconciler uses settlement's back-off, and this file uses both.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::PaymentGateway;
use super::reconcile::reconcile;
use super::settlement::settle;
use crate::store::Store;
use crate::tasks::Tasks;

/// How often settlement and the reconciler run even when nothing woke them. Each payment's own
/// back-off decides whether it is tried in a round.
const SETTLEMENT_INTERVAL: Duration = Duration::from_secs(5);
/// Rounds start at least this far apart however often orders close: a round settles up to a
/// batch of payments with three queries whatever their number, so at 100 closes a second one
/// round per close cost PostgreSQL a fifth of a core, and money moves a quarter second later.
const ROUND_MIN_GAP: Duration = Duration::from_millis(250);

/// Starts the money loop — settlement and the reconciler — and returns the handle that wakes it
/// (an order closed; a checkout ended with a hold no order will use).
/// A round in hand is finished when the service stops; the loop ends between rounds.
pub fn spawn(
    tasks: &Tasks,
    store: Store,
    gateway: Arc<dyn PaymentGateway>,
    abandon_after: Duration,
) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let wake = notify.clone();
    tasks.spawn_watching(|stop| async move {
        let mut last_round = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(SETTLEMENT_INTERVAL) => {}
            }
            // Closes that come meanwhile are settled by this round (a wake is kept, not lost).
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(last_round + ROUND_MIN_GAP) => {}
            }
            last_round = tokio::time::Instant::now();
            if !store.is_migrated() {
                continue;
            }
            if let Err(error) = settle(&store, gateway.as_ref()).await {
                tracing::warn!(error = %error, "settlement round failed; will retry");
            }
            if let Err(error) = reconcile(&store, gateway.as_ref(), abandon_after).await {
                tracing::warn!(error = %error, "payment reconciliation failed; will retry");
            }
            match store.count_payments_needing_attention().await {
                Ok(count) => metrics::gauge!("payments_needing_attention").set(count as f64),
                Err(error) => {
                    tracing::debug!(error = %error, "cannot count payments needing attention")
                }
            }
        }
    });
    notify
}
