//! Idempotency keys for checkout, with Stripe's semantics: the first request with a key is
//! processed; a repeat with the same body replays its response; a different body is refused;
//! a repeat while the first still runs is refused as in progress. Keys live 24 hours.
//!
//! A key is bound to its order id from the first attempt and never forgotten while money may
//! be held for it: a request that failed in passing only *unlocks* its key, and the retry
//! continues the same order id (and so the same authorisation). A key held by a process that
//! is gone — its row in `cluster_members` expired, or on PostgreSQL no connection of it left —
//! is taken over at once; a key held by a live process is in progress.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError, on_writer};
use crate::domain::{OrderId, UserId};

/// How long a key and its response are kept.
pub const IDEMPOTENCY_KEY_TTL_HOURS: i64 = 24;
/// A request holding a key this long without finishing is taken to be stuck even though its
/// process lives; a retry may take the key over (it continues the same order id, so nothing is
/// done twice). A key whose process is gone is taken over at once.
pub const IDEMPOTENCY_LOCK_TIMEOUT_SECS: i64 = 60;

/// Whether the process that holds a key lives: its row in `cluster_members` is fresh and, on
/// PostgreSQL, it still has a connection open (each process names its connections with its node
/// id, [`Store::open_as`]; a killed process's connections close with it, at once, where its
/// membership row would take a lease TTL to expire).
const HOLDER_ALIVE_POSTGRES: &str =
    concat!(member_fresh_sql!("$1", "$2"), member_connected_sql!("$1"));
const HOLDER_ALIVE_SQLITE: &str = member_fresh_sql!("$1", "$2");

/// The first half of the holder-alive test, for statements built around it: `$holder`'s
/// membership row is fresh at `$now_ms`.
macro_rules! member_fresh_sql {
    ($holder:literal, $now_ms:literal) => {
        concat!(
            "SELECT 1 FROM cluster_members m WHERE m.node = ",
            $holder,
            " AND m.expires_at_ms > ",
            $now_ms
        )
    };
}
use member_fresh_sql;

/// The second half, on PostgreSQL: `$holder` still has a connection open.
macro_rules! member_connected_sql {
    ($holder:literal) => {
        concat!(
            " AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = left(",
            $holder,
            ", 63))"
        )
    };
}
use member_connected_sql;

/// The text of [`CLAIM_NEW_KEY`], for statements built around it: takes a key nobody holds,
/// inserting it, or replacing it when it expired (an expired key is free again, with a new
/// order id: its checkout ended a day ago). Touches no live key: one that exists and has not
/// expired affects no row, and the caller decides in a transaction.
macro_rules! claim_new_key_sql {
    () => {
        "INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, \
        state, locked_at, created_at, expires_at, holder) \
        VALUES ($1, $2, $3, $4, 'in_progress', $5, $5, $6, $7) \
        ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash, \
        order_id = excluded.order_id, state = excluded.state, response_status = NULL, \
        response_body = NULL, locked_at = excluded.locked_at, created_at = excluded.created_at, \
        expires_at = excluded.expires_at, holder = excluded.holder \
        WHERE idempotency_keys.expires_at < excluded.locked_at"
    };
}
pub(super) use claim_new_key_sql;

/// Takes a key nobody holds ($1 user, $2 key, $3 request hash, $4 proposed order id, $5 now,
/// $6 expiry, $7 holder): one row affected when taken, none when the key exists.
pub(super) const CLAIM_NEW_KEY: &str = claim_new_key_sql!();

/// What a request may do with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// Go ahead; the order (if one is made) must use this id. `resumed`: an earlier attempt
    /// with this key ran, so money or the order may exist already.
    Proceed { order_id: OrderId, resumed: bool },
    /// Already answered: send this again.
    Replay { status: u16, body: String },
    /// The first request with this key is still running.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: String,
    order_id: Uuid,
    state: String,
    response_status: Option<i32>,
    response_body: Option<String>,
    locked_at: DateTime<Utc>,
    holder: Option<String>,
}

/// The key of a placed checkout whose server died before keeping its answer: left in progress,
/// its order closed since (delivered, cancelled or rejected). The reconciler completes it with
/// the order, as a retry would have been answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanedAnswer {
    pub user_id: UserId,
    pub key: String,
    pub order_id: OrderId,
    /// The dead server that held it: the key is completed only while it still holds it.
    pub holder: String,
}

/// Keys left in progress by a holder that is not alive (see [`HOLDER_ALIVE_POSTGRES`]) whose
/// order exists and is closed ($1 now in ms, $2 the most to list). An open order's key is left
/// to its retry, which hands the order to dispatch again (its placement may have committed
/// with nobody told).
macro_rules! orphaned_answers_sql {
    ($($connected:expr)?) => {
        concat!(
            "SELECT k.user_id, k.key, k.order_id, k.holder FROM idempotency_keys k \
             WHERE k.state = 'in_progress' AND k.holder IS NOT NULL \
             AND EXISTS (SELECT 1 FROM orders o WHERE o.id = k.order_id \
                 AND o.status IN ('delivered', 'cancelled', 'rejected')) \
             AND NOT EXISTS (",
            member_fresh_sql!("k.holder", "$1"),
            $($connected,)?
            ") ORDER BY k.locked_at LIMIT $2"
        )
    };
}
const ORPHANED_ANSWERS_POSTGRES: &str = orphaned_answers_sql!(member_connected_sql!("k.holder"));
const ORPHANED_ANSWERS_SQLITE: &str = orphaned_answers_sql!();

/// A checkout key given up by the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedKey {
    pub user_id: UserId,
    pub order_id: OrderId,
}

/// A checkout's claim on its Idempotency-Key: whose key it is, the key, and the replica
/// running the checkout.
#[derive(Debug, Clone, Copy)]
pub struct KeyHold<'a> {
    pub user: UserId,
    pub key: &'a str,
    pub holder: &'a str,
}

/// Completes a key still in progress with its answer ($1 status, $2 body, $3 user, $4 key).
/// Shared with the answers kept together (`key_answers.rs`).
pub(super) const COMPLETE_KEY: &str = "UPDATE idempotency_keys SET state = 'completed', \
    response_status = $1, response_body = $2, holder = NULL \
    WHERE user_id = $3 AND key = $4 AND state = 'in_progress'";

impl Store {
    /// Claims `key` for `user`'s request with `request_hash`, on behalf of process `holder`,
    /// which must run no other request with this key (it is taken over if the store says
    /// `holder` has it).
    pub async fn claim_idempotency_key(
        &self,
        user: UserId,
        key: &str,
        request_hash: &str,
        holder: &str,
    ) -> Result<KeyClaim, StoreError> {
        let now = super::now();
        let proposed = OrderId::new();
        // The common case in one statement, outside a transaction: a key never seen (or
        // expired, which is as good as never seen) is taken. Only a key that exists needs the
        // decision after.
        let taken = on_writer!(self, |pool| {
            sqlx::query(CLAIM_NEW_KEY)
                .bind(user.as_uuid())
                .bind(key)
                .bind(request_hash)
                .bind(proposed.as_uuid())
                .bind(now)
                .bind(now + chrono::Duration::hours(IDEMPOTENCY_KEY_TTL_HOURS))
                .bind(holder)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if taken == 1 {
            return Ok(KeyClaim::Proceed {
                order_id: proposed,
                resumed: false,
            });
        }
        self.decide_existing_key(user, key, request_hash, holder, now)
            .await
    }

    /// What a request may do with a key that exists (it was not taken fresh at `now`): in a
    /// transaction that locks the key's row.
    pub(super) async fn decide_existing_key(
        &self,
        user: UserId,
        key: &str,
        request_hash: &str,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<KeyClaim, StoreError> {
        let backend = self.backend();
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            // FOR UPDATE: a racing claim or the reconciler waits for this decision.
            let lock = if backend == super::Backend::Postgres {
                " FOR UPDATE"
            } else {
                ""
            };
            let row: Option<KeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT request_hash, order_id, state, response_status, response_body, locked_at, \
                 holder FROM idempotency_keys WHERE user_id = $1 AND key = $2{lock}"
            )))
            .bind(user.as_uuid())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            // Gone since the insert found it: a racing request with this key released it just
            // now. That request was running: this one is told so, and its retry takes the key.
            let Some(row) = row else {
                return Ok(KeyClaim::InProgress);
            };
            let claim = if row.request_hash != request_hash {
                KeyClaim::Mismatch
            } else if row.state == "completed" {
                KeyClaim::Replay {
                    status: row.response_status.unwrap_or(500) as u16,
                    body: row.response_body.unwrap_or_default(),
                }
            } else {
                let stuck = (now - row.locked_at).num_seconds() >= IDEMPOTENCY_LOCK_TIMEOUT_SECS;
                let free = match row.holder.as_deref() {
                    None => true,
                    // This process: the caller made sure no request of ours runs it now (a
                    // request of ours that held it could not record how it ended).
                    Some(current) if current == holder => true,
                    Some(current) => {
                        let alive: Option<(i32,)> =
                            sqlx::query_as(if backend == super::Backend::Postgres {
                                HOLDER_ALIVE_POSTGRES
                            } else {
                                HOLDER_ALIVE_SQLITE
                            })
                            .bind(current)
                            .bind(super::unix_ms())
                            .fetch_optional(&mut *tx)
                            .await?;
                        stuck || alive.is_none()
                    }
                };
                if free {
                    sqlx::query(
                        "UPDATE idempotency_keys SET locked_at = $1, holder = $2 \
                         WHERE user_id = $3 AND key = $4 AND state = 'in_progress'",
                    )
                    .bind(now)
                    .bind(holder)
                    .bind(user.as_uuid())
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                    KeyClaim::Proceed {
                        order_id: OrderId(row.order_id),
                        resumed: true,
                    }
                } else {
                    KeyClaim::InProgress
                }
            };
            tx.commit().await?;
            Ok(claim)
        })
    }

    /// Renews `holder`'s claim on `key` just before a step that must not run once the key was
    /// given up (authorising, placing the order). False: the key is no longer ours to run.
    pub async fn refresh_idempotency_key(
        &self,
        user: UserId,
        key: &str,
        holder: &str,
    ) -> Result<bool, StoreError> {
        let now = super::now();
        let refreshed = on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE idempotency_keys SET locked_at = $1 \
                 WHERE user_id = $2 AND key = $3 AND holder = $4 AND state = 'in_progress'",
            )
            .bind(now)
            .bind(user.as_uuid())
            .bind(key)
            .bind(holder)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(refreshed == 1)
    }

    /// Lets go of `key` after a passing failure: it stays bound to its order id, and the next
    /// request with it continues at once.
    pub async fn unlock_idempotency_key(
        &self,
        user: UserId,
        key: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE idempotency_keys SET holder = NULL \
                 WHERE user_id = $1 AND key = $2 AND holder = $3 AND state = 'in_progress'",
            )
            .bind(user.as_uuid())
            .bind(key)
            .bind(holder)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Gives up in-progress checkout keys untouched since `before` whose order was never
    /// placed: each is completed with the final answer `status`/`body`, so that no retry can
    /// turn it into an order any more, and its payment becomes the reconciler's to void.
    pub async fn abandon_idempotency_keys(
        &self,
        before: DateTime<Utc>,
        status: u16,
        body: &str,
        limit: i64,
    ) -> Result<Vec<AbandonedKey>, StoreError> {
        let rows: Vec<(Uuid, Uuid)> = on_writer!(self, |pool| {
            sqlx::query_as(
                "UPDATE idempotency_keys SET state = 'completed', response_status = $1, \
                 response_body = $2, holder = NULL \
                 WHERE (user_id, key) IN (SELECT k.user_id, k.key FROM idempotency_keys k \
                     WHERE k.state = 'in_progress' AND k.locked_at < $3 \
                     AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = k.order_id) \
                     ORDER BY k.locked_at LIMIT $4) \
                 AND state = 'in_progress' AND locked_at < $3 \
                 RETURNING user_id, order_id",
            )
            .bind(i32::from(status))
            .bind(body)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(user, order)| AbandonedKey {
                user_id: UserId(user),
                order_id: OrderId(order),
            })
            .collect())
    }

    /// Placed checkouts' keys whose server died before keeping the answer, their orders closed
    /// since ([`OrphanedAnswer`]), oldest first, at most `limit`.
    pub async fn orphaned_answers(&self, limit: i64) -> Result<Vec<OrphanedAnswer>, StoreError> {
        let sql = match self.backend() {
            super::Backend::Postgres => ORPHANED_ANSWERS_POSTGRES,
            super::Backend::Sqlite => ORPHANED_ANSWERS_SQLITE,
        };
        let rows: Vec<(Uuid, String, Uuid, String)> = on_writer!(self, |pool| {
            sqlx::query_as(sql)
                .bind(super::unix_ms())
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(user, key, order, holder)| OrphanedAnswer {
                user_id: UserId(user),
                key,
                order_id: OrderId(order),
                holder,
            })
            .collect())
    }

    /// Completes `orphaned`'s key with `status`/`body` while its dead holder still holds it;
    /// false when it no longer does (a retry took it over, or it was completed).
    pub async fn complete_orphaned_answer(
        &self,
        orphaned: &OrphanedAnswer,
        status: u16,
        body: &str,
    ) -> Result<bool, StoreError> {
        let completed = on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE idempotency_keys SET state = 'completed', response_status = $1, \
                 response_body = $2, holder = NULL \
                 WHERE user_id = $3 AND key = $4 AND holder = $5 AND state = 'in_progress'",
            )
            .bind(i32::from(status))
            .bind(body)
            .bind(orphaned.user_id.as_uuid())
            .bind(&orphaned.key)
            .bind(&orphaned.holder)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(completed == 1)
    }

    /// Records the response to replay for `key`. False when the key was completed already
    /// (the reconciler gave it up first).
    pub async fn complete_idempotency_key(
        &self,
        user: UserId,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<bool, StoreError> {
        let completed = on_writer!(self, |pool| {
            sqlx::query(COMPLETE_KEY)
                .bind(i32::from(status))
                .bind(body)
                .bind(user.as_uuid())
                .bind(key)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(completed == 1)
    }

    /// Frees `key` when nothing was done for it (the request was invalid before any money
    /// moved): the next request with it is processed afresh. A key with a payment is never
    /// freed, and false is returned: complete it instead.
    pub async fn release_idempotency_key(
        &self,
        user: UserId,
        key: &str,
    ) -> Result<bool, StoreError> {
        let released = on_writer!(self, |pool| {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 \
                 AND state = 'in_progress' AND NOT EXISTS (SELECT 1 FROM payments p \
                     WHERE p.order_id = idempotency_keys.order_id)",
            )
            .bind(user.as_uuid())
            .bind(key)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(released == 1)
    }

    /// Deletes expired keys; returns how many.
    pub async fn purge_expired_idempotency_keys(&self) -> Result<u64, StoreError> {
        let now = super::now();
        let purged = on_writer!(self, |pool| {
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at < $1")
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(purged)
    }
}
