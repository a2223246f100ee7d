//! The writer of checkout answers: a placed checkout is answered as soon as its order is placed,
//! and hands its answer here, to be kept for its Idempotency-Key together with the answers of
//! the other checkouts that end within a short gathering window after it, or while the previous
//! write is in flight — one write for all of them ([`Store::complete_idempotency_keys`])
//! instead of one on every checkout's answer path.
//!
//! Until its write lands, the key's place in [`CheckoutsInFlight`](super::state::CheckoutsInFlight)
//! holds the answer, so a retry to this replica gets it from memory; a retry to another replica
//! meets the key in progress (409 `request_in_progress`, retry shortly). A write that fails is
//! retried with backoff, the answers held, until it lands or the server stops. A crash before
//! it lands leaves the key in progress with its order placed: the next attempt with the key
//! answers with that order, the reconciler never gives up a key whose order exists, and once
//! that order has closed the reconciler keeps it as the answer (`payments::reconcile`).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::OrderId;
use crate::store::{KeyAnswer, Store};
use crate::tasks::Tasks;

/// Answers waiting for the writer at most; a checkout that finds the queue full waits for room.
const KEY_ANSWERS_QUEUE_CAPACITY: usize = 4_096;
/// Answers written in one statement at most.
const KEY_ANSWERS_BATCH_MAX: usize = 256;
/// How long the writer gathers answers after the first one before it writes them. No client
/// waits for this write (each has its answer), so gathering costs only a retry at another
/// replica meeting the key in progress that much longer; without it, at 200 checkouts/s the
/// writer found one answer waiting nearly every time (5,528 single writes against 217 batches
/// in a run, docs/performance.md, "Machine L"): one statement an order.
const KEY_ANSWERS_GATHER_MS: u64 = 25;
/// The first wait after a failed write, doubled after each further failure up to the most.
const KEY_ANSWERS_RETRY_FIRST_MS: u64 = 100;
const KEY_ANSWERS_RETRY_MAX_MS: u64 = 5_000;

/// One answer on its way, with the key's place in this process (given back, by dropping it,
/// once the answer is kept).
struct Pending {
    answer: KeyAnswer,
    order_id: OrderId,
    _place: Box<dyn Send>,
}

/// Hands answers to the writer.
#[derive(Clone)]
pub struct KeyAnswers {
    store: Store,
    tx: mpsc::Sender<Pending>,
}

impl KeyAnswers {
    /// Starts the writer under `tasks`: when they stop, it writes what it holds and ends.
    pub fn spawn(tasks: &Tasks, store: Store) -> KeyAnswers {
        let (tx, rx) = mpsc::channel(KEY_ANSWERS_QUEUE_CAPACITY);
        let writer = store.clone();
        tasks.spawn_watching(|stop| run(writer, rx, stop));
        KeyAnswers { store, tx }
    }

    /// Keeps `answer` for its key; `place` (the key's place in `CheckoutsInFlight`, holding the
    /// answer in memory) is dropped once the store has it. Once the writer has stopped (the
    /// server is stopping), writes it here.
    pub(super) async fn keep(
        &self,
        answer: KeyAnswer,
        order_id: OrderId,
        place: impl Send + 'static,
    ) {
        let pending = Pending {
            answer,
            order_id,
            _place: Box::new(place),
        };
        if let Err(mpsc::error::SendError(pending)) = self.tx.send(pending).await
            && let Err(error) = write(&self.store, std::slice::from_ref(&pending)).await
        {
            tracing::warn!(order_id = %pending.order_id, error = %error, "a checkout's answer was not kept; its next attempt answers from the order");
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Pending>, stop: CancellationToken) {
    let mut batch: Vec<Pending> = Vec::new();
    let mut retry = Duration::from_millis(KEY_ANSWERS_RETRY_FIRST_MS);
    loop {
        if batch.is_empty() {
            tokio::select! {
                received = rx.recv() => match received {
                    Some(pending) => batch.push(pending),
                    None => return,
                },
                () = stop.cancelled() => return last_write(&store, batch, rx).await,
            }
            let gathered_by = Instant::now() + Duration::from_millis(KEY_ANSWERS_GATHER_MS);
            while batch.len() < KEY_ANSWERS_BATCH_MAX {
                tokio::select! {
                    received = rx.recv() => match received {
                        Some(pending) => batch.push(pending),
                        None => break,
                    },
                    () = tokio::time::sleep_until(gathered_by) => break,
                    () = stop.cancelled() => return last_write(&store, batch, rx).await,
                }
            }
        }
        while batch.len() < KEY_ANSWERS_BATCH_MAX {
            match rx.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        match write(&store, &batch).await {
            Ok(()) => {
                batch.clear();
                retry = Duration::from_millis(KEY_ANSWERS_RETRY_FIRST_MS);
            }
            Err(error) => {
                metrics::counter!("checkout_answer_write_failures_total").increment(1);
                tracing::warn!(error = %error, answers = batch.len(), "checkout answers not kept yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = stop.cancelled() => return last_write(&store, batch, rx).await,
                }
                retry = (retry * 2).min(Duration::from_millis(KEY_ANSWERS_RETRY_MAX_MS));
            }
        }
        metrics::gauge!("checkout_answers_pending").set((batch.len() + rx.len()) as f64);
    }
}

/// Writes what is held and queued, once, as the server stops.
async fn last_write(store: &Store, mut batch: Vec<Pending>, mut rx: mpsc::Receiver<Pending>) {
    rx.close();
    while let Some(pending) = rx.recv().await {
        batch.push(pending);
    }
    for chunk in batch.chunks(KEY_ANSWERS_BATCH_MAX) {
        if let Err(error) = write(store, chunk).await {
            tracing::warn!(error = %error, answers = chunk.len(), "checkout answers not kept at stop; their next attempts answer from their orders");
        }
    }
}

async fn write(store: &Store, batch: &[Pending]) -> Result<(), crate::store::StoreError> {
    let answers: Vec<KeyAnswer> = batch.iter().map(|p| p.answer.clone()).collect();
    let completed = store.complete_idempotency_keys(&answers).await?;
    for (pending, completed) in batch.iter().zip(completed) {
        if !completed {
            tracing::warn!(order_id = %pending.order_id, "checkout placed its order after its key was completed elsewhere");
        }
    }
    Ok(())
}
