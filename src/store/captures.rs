//! Settlement's captures recorded together: every delivered order's payment captured at the
//! gateway in one settlement round is moved to `captured`, with its event, in one PostgreSQL
//! statement (one SQLite transaction) — one write a round instead of one a payment.

use uuid::Uuid;

use super::{Pool, Store, StoreError, on_writer};

/// The moves of [`Store::capture_delivered`] for a batch ($1 payment ids, $2 their capture
/// keys, $3 now): each payment still authorised becomes captured and settled, and gets its
/// next event. Answers the ids that moved.
const CAPTURE_ALL_POSTGRES: &str = "WITH batch AS (SELECT * FROM unnest($1::uuid[], $2::text[]) \
    AS b(id, capture_key)), \
    moved AS (UPDATE payments p SET status = 'captured', settle_attempts = 0, \
    next_settle_at = NULL, last_settle_error = NULL, needs_attention = false, settled = true, \
    updated_at = $3 FROM batch b WHERE p.id = b.id AND p.status = 'authorised' \
    RETURNING p.id, b.capture_key), \
    event AS (INSERT INTO payment_events (payment_id, seq, status, idempotency_key, source, at) \
    SELECT m.id, COALESCE((SELECT MAX(e.seq) FROM payment_events e WHERE e.payment_id = m.id), 0) + 1, \
    'captured', m.capture_key, 'settlement', $3 FROM moved m RETURNING payment_id) \
    SELECT payment_id FROM event";

const CAPTURE_ONE_SQLITE: &str = "UPDATE payments SET status = 'captured', settle_attempts = 0, \
    next_settle_at = NULL, last_settle_error = NULL, needs_attention = $1, settled = $2, \
    updated_at = $3 WHERE id = $4 AND status = 'authorised'";

const CAPTURE_EVENT_SQLITE: &str = "INSERT INTO payment_events \
    (payment_id, seq, status, idempotency_key, source, at) \
    SELECT $1, COALESCE(MAX(seq), 0) + 1, 'captured', $2, 'settlement', $3 \
    FROM payment_events WHERE payment_id = $1";

impl Store {
    /// [`Store::capture_delivered`] for every `(payment id, capture key)` of `captures` at once:
    /// all recorded or none. Answers the payments that moved (a payment no longer authorised
    /// is left as it is, and not answered).
    pub async fn capture_delivered_all(
        &self,
        captures: &[(Uuid, String)],
    ) -> Result<Vec<Uuid>, StoreError> {
        if captures.is_empty() {
            return Ok(Vec::new());
        }
        let now = super::now();
        if let Pool::Postgres(pool) = self.writer()? {
            let (ids, keys): (Vec<Uuid>, Vec<&str>) =
                captures.iter().map(|(id, key)| (*id, key.as_str())).unzip();
            // Planned at each execution: a plan kept from a round when `payments` was small
            // could scan the whole table in every later round.
            let moved = sqlx::query_scalar(CAPTURE_ALL_POSTGRES)
                .bind(&ids)
                .bind(&keys)
                .bind(now)
                .persistent(false)
                .fetch_all(pool)
                .await
                .map_err(StoreError::from);
            match moved {
                Ok(moved) => return Ok(moved),
                // A racing move of one of them took the event number this statement read:
                // record them one by one, each with a fresh look.
                Err(StoreError::Duplicate(_)) => {
                    let mut moved = Vec::new();
                    for (id, key) in captures {
                        if self.capture_delivered(*id, key).await? {
                            moved.push(*id);
                        }
                    }
                    return Ok(moved);
                }
                Err(error) => return Err(error),
            }
        }
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut moved = Vec::new();
            for (id, key) in captures {
                let rows = sqlx::query(CAPTURE_ONE_SQLITE)
                    .bind(false)
                    .bind(true)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if rows == 1 {
                    sqlx::query(CAPTURE_EVENT_SQLITE)
                        .bind(id)
                        .bind(key)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    moved.push(*id);
                }
            }
            tx.commit().await?;
            Ok(moved)
        })
    }
}
