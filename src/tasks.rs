//! Background tasks that stop when told and are waited for: every long-running loop of ours
//! (the router's listeners, lease and membership rounds, settlement, the event stream) is
//! spawned here with a cancellation token and tracked, so a graceful stop cancels them all and
//! waits until each has finished its step in hand — none is aborted mid-way (mini-redis's
//! `shutdown.rs` habit, with tokio-util's `CancellationToken` and `TaskTracker`).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The owner of the background tasks of one running service. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// The token every task watches: cancelled when the service stops.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Runs `work` until it ends or the service stops, whichever comes first. For loops whose
    /// every await point may be cut (they keep nothing half-done in memory).
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + 'static,
    {
        let token = self.token.clone();
        self.tracker.spawn_local(async move {
            tokio::select! {
                biased;
                () = token.cancelled() => {}
                () = work => {}
            }
        });
    }

    /// Runs `work`, which watches the token itself (a loop that must finish its step in hand,
    /// such as releasing leases).
    pub fn spawn_watching<F>(&self, work: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + 'static,
    {
        self.tracker.spawn_local(work(self.token.clone()));
    }

    /// Cancels every task and waits up to `grace` for them to finish. Returns whether all did.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// How many tasks are still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[actix_web::test]
    async fn stop_cancels_a_loop_and_waits_for_a_task_finishing_its_step() {
        let tasks = Tasks::new();
        tasks.spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        tasks.spawn_watching(|token| async move {
            token.cancelled().await;
            // The step in hand after the signal: still waited for.
            tokio::time::sleep(Duration::from_millis(50)).await;
            done.store(true, Ordering::SeqCst);
        });
        assert_eq!(tasks.running(), 2);
        assert!(tasks.stop(Duration::from_secs(5)).await);
        assert!(finished.load(Ordering::SeqCst));
        assert_eq!(tasks.running(), 0);
        assert!(tasks.token().is_cancelled());
    }

    #[actix_web::test]
    async fn a_task_that_will_not_stop_is_reported_after_the_grace() {
        let tasks = Tasks::new();
        tasks.spawn_watching(|_ignored| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        assert!(!tasks.stop(Duration::from_millis(50)).await);
        assert_eq!(tasks.running(), 1);
    }
}
