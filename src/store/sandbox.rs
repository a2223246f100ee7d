//! The sandbox payment gateway's books: the holds it made and the answer it gave to every
//! idempotency key. They live in the store so that capture, void and refund work after a restart
//! and on every replica, as they would at a real provider.

use super::{Pool, Store, StoreError, on_writer};
use crate::domain::Cents;

/// PostgreSQL: records the answer to an authorisation (`$1` key, `$2` outcome, `$3` reference,
/// `$4` now) unless the key was answered already, and the hold of `$5` cents when there is a
/// reference, in one statement; yields how many answers it recorded (0: the key's first stands).
const AUTHORISE_POSTGRES: &str = "WITH call AS ( \
    INSERT INTO sandbox_calls (idempotency_key, operation, outcome, reference, created_at) \
    VALUES ($1, 'authorise', $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING \
    RETURNING reference), \
    hold AS (INSERT INTO sandbox_holds (reference, amount_cents, status, created_at, updated_at) \
    SELECT reference, $5, 'authorised', $4, $4 FROM call WHERE reference IS NOT NULL RETURNING 1) \
    SELECT COUNT(*) FROM call";

/// PostgreSQL: moves hold `$3` from `$6` to `$5` and records `ok` for key `$1` (operation `$2`,
/// at `$4`) in one statement, only when the key was never used and the hold is in `$6`; yields
/// the holds moved (0: nothing written). A racing first use of the key makes the record's insert
/// fail, and with it the move: the statement is all or nothing.
const TRANSITION_POSTGRES: &str = "WITH moved AS ( \
    UPDATE sandbox_holds SET status = $5, updated_at = $4 WHERE reference = $3 AND status = $6 \
    AND NOT EXISTS (SELECT 1 FROM sandbox_calls WHERE idempotency_key = $1) RETURNING reference), \
    call AS (INSERT INTO sandbox_calls (idempotency_key, operation, outcome, reference, created_at) \
    SELECT $1, $2, 'ok', reference, $4 FROM moved RETURNING 1) \
    SELECT COUNT(*) FROM call";

/// What the sandbox answered (or answers again) for one idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxAnswer {
    /// A hold was made: the gateway's reference.
    Authorised { reference: String },
    /// No hold; the decline code.
    Declined { code: String },
    /// A capture, void or refund that went through.
    Done,
    /// A capture, void or refund the sandbox refused, and why.
    Refused { reason: String },
}

impl SandboxAnswer {
    fn from_row(outcome: String, reference: Option<String>, detail: Option<String>) -> Self {
        match (outcome.as_str(), reference) {
            ("authorised", Some(reference)) => SandboxAnswer::Authorised { reference },
            ("ok", _) => SandboxAnswer::Done,
            ("refused", _) => SandboxAnswer::Refused {
                reason: detail.unwrap_or_default(),
            },
            _ => SandboxAnswer::Declined { code: outcome },
        }
    }
}

impl Store {
    /// The answer the sandbox gave `key`, known to exist.
    async fn answer_given(&self, key: &str) -> Result<SandboxAnswer, StoreError> {
        self.sandbox_answer(key).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("the sandbox answered {key:?} and lost the answer"))
        })
    }

    /// The sandbox's answer to `key`, if it was called with it.
    pub async fn sandbox_answer(&self, key: &str) -> Result<Option<SandboxAnswer>, StoreError> {
        let row: Option<(String, Option<String>, Option<String>)> = on_writer!(self, |pool| {
            sqlx::query_as(
                "SELECT outcome, reference, detail FROM sandbox_calls WHERE idempotency_key = $1",
            )
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(outcome, reference, detail)| {
            SandboxAnswer::from_row(outcome, reference, detail)
        }))
    }

    /// Records the answer to an authorisation under `key` — a new hold of `amount` when
    /// `answer` is [`SandboxAnswer::Authorised`] — unless `key` was answered already; returns
    /// the answer that stands (the first one).
    pub async fn sandbox_authorise(
        &self,
        key: &str,
        amount: Cents,
        answer: SandboxAnswer,
    ) -> Result<SandboxAnswer, StoreError> {
        let now = super::now();
        let (outcome, reference) = match &answer {
            SandboxAnswer::Authorised { reference } => ("authorised", Some(reference.clone())),
            SandboxAnswer::Declined { code } => (code.as_str(), None),
            SandboxAnswer::Done | SandboxAnswer::Refused { .. } => {
                return Err(StoreError::Corrupt(
                    "an authorisation answers authorised or declined".into(),
                ));
            }
        };
        if let Pool::Postgres(pool) = self.writer()? {
            // One statement: the answer and its hold commit together, or neither.
            let (inserted,): (i64,) = sqlx::query_as(AUTHORISE_POSTGRES)
                .bind(key)
                .bind(outcome)
                .bind(&reference)
                .bind(now)
                .bind(amount.0)
                .fetch_one(pool)
                .await?;
            if inserted == 0 {
                return self.answer_given(key).await;
            }
            return Ok(answer);
        }
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            // A concurrent call with the same key waits here for the first to commit.
            let inserted = sqlx::query(
                "INSERT INTO sandbox_calls (idempotency_key, operation, outcome, reference, created_at) \
                 VALUES ($1, 'authorise', $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(key)
            .bind(outcome)
            .bind(&reference)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                // Answered already (a racing call with the key committed first): that stands.
                tx.rollback().await?;
                return self.answer_given(key).await;
            }
            if let Some(reference) = &reference {
                sqlx::query(
                    "INSERT INTO sandbox_holds (reference, amount_cents, status, created_at, updated_at) \
                     VALUES ($1, $2, 'authorised', $3, $3)",
                )
                .bind(reference)
                .bind(amount.0)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(answer)
        })
    }

    /// Moves the hold `reference` from `from` to `to` under `key`: the first call with a key
    /// decides, a repeat returns the same answer and moves nothing again.
    pub async fn sandbox_transition(
        &self,
        operation: &str,
        key: &str,
        reference: &str,
        from: &str,
        to: &str,
    ) -> Result<SandboxAnswer, StoreError> {
        let now = super::now();
        if let Pool::Postgres(pool) = self.writer()? {
            // The common case in one statement: a first call that finds the hold where it
            // expects it moves it and records `ok`, together. Anything else (a repeated key, a
            // hold elsewhere) changes nothing here and is decided below.
            let moved = sqlx::query_as::<_, (i64,)>(TRANSITION_POSTGRES)
                .bind(key)
                .bind(operation)
                .bind(reference)
                .bind(now)
                .bind(to)
                .bind(from)
                .fetch_one(pool)
                .await
                .map_err(StoreError::from);
            match moved {
                Ok((1,)) => return Ok(SandboxAnswer::Done),
                Ok(_) | Err(StoreError::Duplicate(_)) => {}
                Err(error) => return Err(error),
            }
        }
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO sandbox_calls (idempotency_key, operation, outcome, reference, created_at) \
                 VALUES ($1, $2, 'ok', $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(key)
            .bind(operation)
            .bind(reference)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                // Answered already (a racing call with the key committed first): that stands.
                tx.rollback().await?;
                return self.answer_given(key).await;
            }
            let moved = sqlx::query(
                "UPDATE sandbox_holds SET status = $1, updated_at = $2 \
                 WHERE reference = $3 AND status = $4",
            )
            .bind(to)
            .bind(now)
            .bind(reference)
            .bind(from)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let answer = if moved == 1 {
                SandboxAnswer::Done
            } else {
                let status: Option<(String,)> =
                    sqlx::query_as("SELECT status FROM sandbox_holds WHERE reference = $1")
                        .bind(reference)
                        .fetch_optional(&mut *tx)
                        .await?;
                let reason = match status {
                    Some((status,)) => format!("cannot {operation} a payment that is {status}"),
                    None => format!("no payment {reference}"),
                };
                sqlx::query(
                    "UPDATE sandbox_calls SET outcome = 'refused', detail = $1 WHERE idempotency_key = $2",
                )
                .bind(&reason)
                .bind(key)
                .execute(&mut *tx)
                .await?;
                SandboxAnswer::Refused { reason }
            };
            tx.commit().await?;
            Ok(answer)
        })
    }

    /// The sandbox's holds by state (for tests and the demo's books).
    pub async fn sandbox_hold_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        on_writer!(self, |pool| {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status, COUNT(*) FROM sandbox_holds GROUP BY status ORDER BY status",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows)
        })
    }
}
