//! The table of recent answers: a command id answered once is answered the same when it comes
//! again (a caller resends until it hears back), here from memory and, after a hand-off or a
//! failover, from the copy kept in Redis by the region's previous owner.

use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use super::router::{Answered, Answers, Router};
use super::wire::RemoteError;

/// Deadline of reading or writing an answer kept in Redis.
const ANSWER_REDIS_DEADLINE: Duration = Duration::from_millis(250);
/// Answers kept for repeated command ids, and for how long.
const ANSWERS_KEPT: usize = 50_000;
const ANSWER_KEPT: Duration = Duration::from_secs(600);

impl Router {
    /// Notes the answer to command `id` in the table of recent answers.
    pub(super) fn remember(&self, id: Uuid, result: &Result<Value, RemoteError>) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let Answers { table, order } = &mut *answers;
        match result {
            // A refusal to be resent may succeed on the next attempt: not remembered.
            Err(error) if error.retry => {
                table.remove(&id);
            }
            _ => {
                if !table.contains_key(&id) {
                    order.push_back((id, Instant::now()));
                }
                table.insert(id, Answered::Done(Box::new(result.clone())));
            }
        }
        while order.len() > ANSWERS_KEPT
            || order
                .front()
                .is_some_and(|(_, at)| at.elapsed() > ANSWER_KEPT)
        {
            if let Some((old, _)) = order.pop_front() {
                table.remove(&old);
            }
        }
    }

    pub(super) fn answer_key(&self, id: Uuid) -> String {
        self.bus.key(&format!("answer:{id}"))
    }

    /// Keeps the answer in Redis too, before it is sent, so that a repeat that reaches the
    /// region's next owner (this one stopped or handed the region off) is answered the same,
    /// not run again. Best-effort: without it, the domain refuses a second run of the change.
    pub(super) async fn keep_answer(&self, id: Uuid, result: &Result<Value, RemoteError>) {
        let Ok(payload) = serde_json::to_string(result) else {
            return;
        };
        let mut pipeline = redis::pipe();
        pipeline
            .set_ex(self.answer_key(id), payload, ANSWER_KEPT.as_secs())
            .ignore();
        let _ = self.bus.run::<()>(&pipeline, ANSWER_REDIS_DEADLINE).await;
    }

    /// An answer another replica kept for command `id`.
    pub(super) async fn kept_answer(&self, id: Uuid) -> Option<Result<Value, RemoteError>> {
        let mut pipeline = redis::pipe();
        pipeline.get(self.answer_key(id));
        let (payload,): (Option<String>,) =
            self.bus.run(&pipeline, ANSWER_REDIS_DEADLINE).await.ok()?;
        serde_json::from_str(&payload?).ok()
    }
}
