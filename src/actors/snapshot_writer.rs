//! Writes actor snapshots behind the journal: actors hand snapshots over without waiting, the
//! writer keeps the newest per actor and upserts them in batches — when a batch fills or the
//! interval passes, whichever comes first — and once more when the engine stops (its task is
//! cancelled, writes what it holds, and is waited for).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{Snapshot, SnapshotKind, Store};
use crate::tasks::Tasks;

/// Snapshots waiting to be handed to the writer at most. Snapshots only speed up recovery (the
/// journal holds every fact), so when the writer falls this far behind new ones are dropped and
/// counted rather than queued without bound.
const SNAPSHOT_QUEUE_CAPACITY: usize = 65_536;
/// Snapshots the writer keeps after failed writes at most, for the same reason.
const SNAPSHOT_PENDING_MAX: usize = 200_000;

/// What actors hand the writer: a snapshot to keep, or an actor whose snapshot is no longer
/// worth writing (a closed order: recovery never reads it).
enum Handed {
    Keep(Snapshot),
    Forget(SnapshotKind, Uuid),
}

/// Hands snapshots to the writer.
#[derive(Clone)]
pub struct SnapshotSender {
    tx: mpsc::Sender<Handed>,
    flush_tx: mpsc::Sender<oneshot::Sender<()>>,
}

impl SnapshotSender {
    /// Queues a snapshot; never waits.
    pub fn send(&self, snapshot: Snapshot) {
        if self.tx.try_send(Handed::Keep(snapshot)).is_err() {
            metrics::counter!("snapshot_dropped_total").increment(1);
        }
    }

    /// Drops the snapshot of `id` the writer holds and has not written yet, if any; never
    /// waits. One already written stays: with the journal after it, it still rebuilds the actor.
    pub fn forget(&self, kind: SnapshotKind, id: Uuid) {
        let _ = self.tx.try_send(Handed::Forget(kind, id));
    }

    /// Writes everything queued so far; returns once it is in the store (or the write failed).
    pub async fn flush(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.flush_tx.send(done_tx).await.is_ok() {
            let _ = done_rx.await;
        }
    }
}

/// Starts the writer task under `tasks`: when they stop, it writes what it holds and ends.
pub fn spawn(tasks: &Tasks, store: Store, batch: usize, interval: Duration) -> SnapshotSender {
    let (tx, rx) = mpsc::channel(SNAPSHOT_QUEUE_CAPACITY);
    let (flush_tx, flush_rx) = mpsc::channel(8);
    tasks.spawn_watching(|stop| run(store, batch, interval, rx, flush_rx, stop));
    SnapshotSender { tx, flush_tx }
}

struct Pending {
    snapshots: HashMap<(SnapshotKind, Uuid), Snapshot>,
    oldest: Option<Instant>,
}

impl Pending {
    fn take(&mut self, handed: Handed) {
        match handed {
            Handed::Keep(snapshot) => self.insert(snapshot),
            Handed::Forget(kind, id) => {
                self.snapshots.remove(&(kind, id));
            }
        }
    }

    fn insert(&mut self, snapshot: Snapshot) {
        let key = (snapshot.kind, snapshot.id);
        let newer = self
            .snapshots
            .get(&key)
            .is_none_or(|held| held.version <= snapshot.version);
        if newer
            && (self.snapshots.len() < SNAPSHOT_PENDING_MAX || self.snapshots.contains_key(&key))
        {
            self.snapshots.insert(key, snapshot);
            self.oldest.get_or_insert_with(Instant::now);
        } else if newer {
            metrics::counter!("snapshot_dropped_total").increment(1);
        }
    }
}

async fn run(
    store: Store,
    batch: usize,
    interval: Duration,
    mut rx: mpsc::Receiver<Handed>,
    mut flush_rx: mpsc::Receiver<oneshot::Sender<()>>,
    stop: CancellationToken,
) {
    let mut pending = Pending {
        snapshots: HashMap::new(),
        oldest: None,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = rx.recv() => match received {
                Some(handed) => {
                    pending.take(handed);
                    if pending.snapshots.len() >= batch {
                        write(&store, &mut pending).await;
                    }
                }
                None => {
                    write(&store, &mut pending).await;
                    return;
                }
            },
            _ = ticker.tick() => {
                if !pending.snapshots.is_empty() {
                    write(&store, &mut pending).await;
                }
            }
            () = stop.cancelled() => {
                while let Ok(handed) = rx.try_recv() {
                    pending.take(handed);
                }
                write(&store, &mut pending).await;
                return;
            }
            Some(done) = flush_rx.recv() => {
                while let Ok(handed) = rx.try_recv() {
                    pending.take(handed);
                }
                write(&store, &mut pending).await;
                let _ = done.send(());
            }
        }
        metrics::gauge!("snapshot_pending").set(pending.snapshots.len() as f64);
    }
}

async fn write(store: &Store, pending: &mut Pending) {
    if pending.snapshots.is_empty() {
        return;
    }
    let lag = pending.oldest.map_or(0.0, |at| at.elapsed().as_secs_f64());
    let batch: Vec<Snapshot> = pending.snapshots.drain().map(|(_, s)| s).collect();
    let oldest = pending.oldest.take();
    let started = Instant::now();
    match store.save_snapshots(&batch).await {
        Ok(()) => {
            metrics::gauge!("snapshot_lag_seconds").set(lag);
            metrics::histogram!("snapshot_write_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("snapshots_written_total").increment(batch.len() as u64);
        }
        Err(error) => {
            tracing::warn!(error = %error, count = batch.len(), "snapshot write failed; will retry");
            for snapshot in batch {
                pending.insert(snapshot);
            }
            pending.oldest = oldest;
        }
    }
}
