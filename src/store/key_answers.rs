//! Checkout answers kept together: the final answers of the checkouts that ended while the
//! previous write was in flight are recorded for their Idempotency-Keys in one PostgreSQL
//! statement (one SQLite transaction), instead of one write a checkout.

use std::collections::HashSet;

use super::{Pool, Store, StoreError, on_writer};
use crate::domain::UserId;

/// A checkout's final answer, to keep for its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAnswer {
    pub user: UserId,
    pub key: String,
    pub status: u16,
    pub body: String,
}

/// [`Store::complete_idempotency_key`] for a batch ($1 users, $2 keys, $3 statuses, $4
/// bodies): each key still in progress is completed with its answer. Answers the keys
/// completed.
const COMPLETE_ALL_POSTGRES: &str = "UPDATE idempotency_keys k SET state = 'completed', \
    response_status = a.status, response_body = a.body, holder = NULL \
    FROM unnest($1::uuid[], $2::text[], $3::int4[], $4::text[]) AS a(user_id, key, status, body) \
    WHERE k.user_id = a.user_id AND k.key = a.key AND k.state = 'in_progress' \
    RETURNING k.user_id, k.key";

impl Store {
    /// [`Store::complete_idempotency_key`] for every answer of `answers` at once: all recorded
    /// or none. Answers, in the order of `answers`, whether each key was still in progress and
    /// is now completed (false: it had been completed or given up meanwhile, and keeps that).
    pub async fn complete_idempotency_keys(
        &self,
        answers: &[KeyAnswer],
    ) -> Result<Vec<bool>, StoreError> {
        match answers {
            [] => return Ok(Vec::new()),
            // Alone (the rule at a low rate): the one-key statement, prepared once.
            [answer] => {
                let completed = self
                    .complete_idempotency_key(answer.user, &answer.key, answer.status, &answer.body)
                    .await?;
                return Ok(vec![completed]);
            }
            _ => {}
        }
        if let Pool::Postgres(pool) = self.writer()? {
            let users: Vec<uuid::Uuid> = answers.iter().map(|a| a.user.as_uuid()).collect();
            let keys: Vec<&str> = answers.iter().map(|a| a.key.as_str()).collect();
            let statuses: Vec<i32> = answers.iter().map(|a| i32::from(a.status)).collect();
            let bodies: Vec<&str> = answers.iter().map(|a| a.body.as_str()).collect();
            // Planned at each execution, as the captures are: a plan kept from when the table
            // was small could scan all of it in every later batch. (~0.5 ms of planning, paid
            // once for the whole batch; a key alone takes the prepared statement above.)
            let completed: Vec<(uuid::Uuid, String)> = sqlx::query_as(COMPLETE_ALL_POSTGRES)
                .bind(&users)
                .bind(&keys)
                .bind(&statuses)
                .bind(&bodies)
                .persistent(false)
                .fetch_all(pool)
                .await?;
            let completed: HashSet<(uuid::Uuid, String)> = completed.into_iter().collect();
            return Ok(answers
                .iter()
                .map(|a| completed.contains(&(a.user.as_uuid(), a.key.clone())))
                .collect());
        }
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut completed = Vec::with_capacity(answers.len());
            for answer in answers {
                let rows = sqlx::query(super::idempotency::COMPLETE_KEY)
                    .bind(i32::from(answer.status))
                    .bind(&answer.body)
                    .bind(answer.user.as_uuid())
                    .bind(&answer.key)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                completed.push(rows == 1);
            }
            tx.commit().await?;
            Ok(completed)
        })
    }
}
