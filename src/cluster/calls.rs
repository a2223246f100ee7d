//! Commands between replicas: the caller resends the same command id until it is answered (by
//! whichever replica owns the region by then) or its deadline passes; the owner runs it once
//! and answers a repeated id from its table of recent answers (`answers.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::executor::Kind;
use super::router::{Answered, Forget, Router};
use super::wire::{Envelope, RemoteError};
use crate::actors::EngineError;
use crate::actors::router::Resolve;

/// How long one attempt waits for an answer before the command is sent again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(2_000);
/// Pause before the next attempt when the owner is unknown, restarting or not listening.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

impl Router {
    /// Runs `call` on the replica `resolve` names (asked again before every attempt), resending
    /// it under the same id until it is answered or the deadline passes.
    pub async fn call(&self, call: Value, mut resolve: Resolve<'_>) -> Result<Value, EngineError> {
        let id = Uuid::new_v4();
        // A caller that gives up (its request or socket went) leaves no waiting entry behind.
        let _forget = Forget {
            on_drop: || self.forget(id),
        };
        let started = Instant::now();
        let mut last_problem = String::from("no replica owns it");
        // Whether an attempt reached the owner: it may have run the command, and only a
        // repeat of the same id can bring its answer back.
        let mut delivered = false;
        metrics::counter!("route_calls_total").increment(1);
        while started.elapsed() < self.deadline {
            let node = match resolve().await? {
                Some(node) => node,
                None => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            let (tx, rx) = oneshot::channel();
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, tx);
            let envelope = Envelope::Call {
                id,
                from: self.node.clone(),
                call: call.clone(),
            };
            let sent = self.publish(&node, &envelope).await;
            let outcome = match sent {
                // Never sent: nothing ran, so the caller hears at once that Redis is away.
                Err(error) if !delivered => {
                    metrics::counter!("route_failures_total", "reason" => "redis").increment(1);
                    return Err(error);
                }
                // An earlier attempt was delivered: its answer is kept by the owner, and is
                // asked for again until the deadline rather than lost.
                Err(error) => {
                    last_problem = error.to_string();
                    None
                }
                Ok(0) => {
                    last_problem = format!("replica {node} is not listening");
                    None
                }
                Ok(_) => {
                    delivered = true;
                    // No attempt outlives the deadline by more than a pause.
                    let wait = ATTEMPT_TIMEOUT
                        .min(self.deadline.saturating_sub(started.elapsed()))
                        .max(RETRY_PAUSE);
                    match tokio::time::timeout(wait, rx).await {
                        Ok(Ok(result)) => Some(result),
                        _ => {
                            last_problem = format!("replica {node} did not answer");
                            None
                        }
                    }
                }
            };
            // The entry stays for the next attempt (same id): a late answer to this one is as
            // good; the guard removes it when the call returns.
            let took = started.elapsed().as_secs_f64();
            match outcome {
                Some(Ok(reply)) => {
                    metrics::histogram!("route_call_seconds").record(took);
                    return Ok(reply);
                }
                Some(Err(error)) if !error.retry => {
                    metrics::histogram!("route_call_seconds").record(took);
                    return Err(error.into());
                }
                Some(Err(error)) => last_problem = error.message,
                None => {}
            }
            metrics::counter!("route_retries_total").increment(1);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        metrics::counter!("route_failures_total", "reason" => "deadline").increment(1);
        Err(EngineError::Unavailable(format!(
            "no answer from the owning replica within {} s: {last_problem}",
            self.deadline.as_secs()
        )))
    }

    pub(super) fn forget(&self, id: Uuid) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Runs a command from replica `from` and answers it; a repeated id is answered from the
    /// table of recent answers (or not at all while the first run is still going).
    pub(super) async fn answer(self: Arc<Self>, id: Uuid, from: String, call: Value) {
        let remember = match self.executor.kind(&call) {
            Some(Kind::Command { changes_state }) => changes_state,
            Some(Kind::Subscription) | None => false,
        };
        if remember {
            let seen = {
                let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
                match answers.table.get(&id) {
                    Some(Answered::Running) => Some(None),
                    Some(Answered::Done(result)) => Some(Some((**result).clone())),
                    None => {
                        answers.table.insert(id, Answered::Running);
                        answers.order.push_back((id, Instant::now()));
                        None
                    }
                }
            };
            // Not answered here: perhaps by the region's previous owner, before it stopped.
            let seen = match seen {
                None => self.kept_answer(id).await.map(Some),
                seen => seen,
            };
            match seen {
                // Still running: its answer goes out when it is done.
                Some(None) => return,
                Some(Some(result)) => {
                    metrics::counter!("route_repeats_answered_total").increment(1);
                    self.remember(id, &result);
                    let _ = self.publish(&from, &Envelope::Reply { id, result }).await;
                    return;
                }
                None => {}
            }
        }
        let started = Instant::now();
        let result = self.run(call, &from).await;
        metrics::histogram!("route_answer_seconds").record(started.elapsed().as_secs_f64());
        if remember {
            self.remember(id, &result);
            if !matches!(&result, Err(error) if error.retry) {
                self.keep_answer(id, &result).await;
            }
        }
        let _ = self.publish(&from, &Envelope::Reply { id, result }).await;
    }

    /// Runs a command here; a subscription also starts forwarding its updates to `from`.
    async fn run(self: &Arc<Self>, call: Value, from: &str) -> Result<Value, RemoteError> {
        if self.executor.kind(&call) != Some(Kind::Subscription) {
            return self
                .executor
                .run(call)
                .await
                .map_err(|e| RemoteError::from(&e));
        }
        let sub = call
            .get("sub")
            .and_then(|sub| serde_json::from_value::<Uuid>(sub.clone()).ok());
        let served = self
            .executor
            .open(call)
            .await
            .map_err(|e| RemoteError::from(&e))?;
        match sub {
            Some(sub) => {
                self.spawn_forward(sub, from, served.items, served.on_unsubscribe);
                Ok(served.answer)
            }
            None => Err(RemoteError::from(&EngineError::Unavailable(
                "a subscription without its id".to_owned(),
            ))),
        }
    }
}
