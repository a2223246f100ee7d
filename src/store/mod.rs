//! Persistence behind one interface: [`Store`] runs the same operations on PostgreSQL (production)
//! or an embedded SQLite file (trying it out), chosen by `DATABASE_URL`.
//!
//! Most statements are portable (both backends take `$1` placeholders, `RETURNING` and
//! `ON CONFLICT`), so each operation is written once and [`on_pool!`] runs it against whichever
//! pool is configured; an operation whose SQL differs matches on [`Store::backend`] instead.
//!
//! The pool connects lazily: the process starts even when PostgreSQL is down (a Kubernetes pod
//! must), [`Store::migrate_until_ready`] keeps trying, and until it succeeds every operation
//! fails fast with [`StoreError::Unavailable`].

mod api_keys;
mod audit;
mod captures;
mod checkout_claim;
mod contacts;
mod conversations;
mod eta;
mod fence;
mod group_commit;
mod idempotency;
mod identities;
mod inbox;
mod journal;
mod key_answers;
mod leases;
mod menus;
mod merchants;
mod oauth;
mod orders;
mod outbox;
mod paylinks;
mod payments;
mod sandbox;
mod settings;
mod snapshots;
mod users;
mod webhooks;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::{DatabaseConfig, DatabaseUrl};

pub use api_keys::{ApiKey, NewApiKey};
pub use audit::{AuditEntry, NewAuditEntry};
pub use checkout_claim::PendingCharge;
pub use contacts::CustomerContact;
pub use conversations::{
    ConversationRecord, ConversationSave, INBOUND_MAX_ATTEMPTS, PendingInbound, PendingReply,
    ReplyOutcome,
};
pub use idempotency::{AbandonedKey, IDEMPOTENCY_KEY_TTL_HOURS, KeyClaim, KeyHold, OrphanedAnswer};
pub use identities::{OIDC_LOGIN_TTL_SECS, OidcLogin};
pub use inbox::InboundMessage;
pub use key_answers::KeyAnswer;
pub use leases::{Claim, Lease, unix_ms};
pub use menus::MenuItem;
pub use merchants::Merchant;
pub use oauth::{ClientAccount, NewOauthClient, OauthClient, StoredSigningKey};
pub use orders::OrderFilter;
pub use outbox::{
    AttemptRecord, Channel, NewNotification, NextStep, Notification, NotificationSummary,
    OutboxEntry,
};
pub use paylinks::{NewPayLink, PAY_LINK_TTL_SECS, PayLink, new_pay_token, pay_token_hash};
pub use payments::{Payment, PaymentEvent, PaymentStatus};
pub use sandbox::SandboxAnswer;
pub use snapshots::{Snapshot, SnapshotKind};
pub use users::{NewUser, User, UserWithPassword};
pub use webhooks::{Delivery, DeliveryAttempt, NewWebhookEndpoint, WebhookEndpoint};

/// How long a request waits for a pooled connection before the store counts as unavailable.
/// Short, so a dead database turns into a quick 503 rather than a pile of hung requests.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// A pooled PostgreSQL connection idle this long is pinged before its next use (see [`pg_pool`]).
const IDLE_TEST_AFTER: Duration = Duration::from_secs(1);
/// Planner settings of the journal's PostgreSQL connections. The journal statement is prepared
/// once per connection, and after five executions PostgreSQL may keep a generic plan for good;
/// one chosen while `orders` was small hash-joined a sequential scan of the whole table into
/// every later batch (auto_explain during `dispatch_load`: 2.5 ms a batch at 4,000 orders, and
/// growing with the table). With these, every plan it can choose looks orders up by id, so the
/// plan it keeps stays right as the table grows. And it keeps it: left to choose, PostgreSQL
/// compares the generic plan's cost with the running average of the custom plans' — which
/// follows the batch sizes, whose arrays a custom plan can see — and went on planning the
/// statement afresh for 58 % of the batches (`pg_stat_statements.track_planning` during
/// `dispatch_load`: 0.85 ms of planning each, on the commit's path, ~7 % of a core), flipping
/// between the two as the load moved. Nothing else runs on these connections.
const JOURNAL_PLANNER_OPTIONS: [(&str, &str); 4] = [
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
    ("plan_cache_mode", "force_generic_plan"),
];
/// How long SQLite waits on a locked database before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// PostgreSQL keeps this many bytes of a name (`application_name` among them).
const PG_NAME_MAX_BYTES: usize = 63;
/// Time allowed for a readiness probe's query.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Back-off bounds between attempts to reach and migrate the database at start-up.
const CONNECT_RETRY_MIN: Duration = Duration::from_millis(250);
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(5);

/// The current time at the precision both backends store (microseconds), so a value written
/// and read back compares equal to the one kept in memory.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    to_micros(chrono::Utc::now())
}

/// `at` without sub-microsecond precision.
pub fn to_micros(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// Which database engine a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, or is not migrated yet. Retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule refused the write; names the rule.
    #[error("duplicate value for {0}")]
    Duplicate(String),
    /// The write lost a race with another writer (the journal moved on); nothing was written.
    #[error("conflicting write: {0}")]
    Conflict(String),
    /// This replica no longer holds the lease of the order's region (another took it over):
    /// nothing was written. The new owner serves the order.
    #[error("region lease lost: {0}")]
    LeaseLost(String),
    /// A stored value cannot be read back into our types.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            // A broken wire conversation (a proxy or a server shutting down that accepts and
            // closes, an answer cut short) is the database being unreachable, not a bug.
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
            sqlx::Error::Database(ref db) if db.is_unique_violation() => {
                StoreError::Duplicate(db.constraint().unwrap_or("unique key").to_owned())
            }
            // SQLite's SQLITE_BUSY (5) and SQLITE_LOCKED (6): another writer held the database
            // past the busy timeout. Passing, like a pool timeout: the caller may retry.
            sqlx::Error::Database(ref db)
                if matches!(db.code().as_deref(), Some("5" | "6" | "517" | "262")) =>
            {
                StoreError::Unavailable(error.to_string())
            }
            other => StoreError::Database(other),
        }
    }
}

pub(crate) enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

struct Inner {
    /// Reads (and, on PostgreSQL, everything).
    pool: Pool,
    /// Writes. On PostgreSQL the same pool. On SQLite one connection: SQLite takes one writer at
    /// a time, and writers that race for its lock sleep in its busy handler (1 ms growing to
    /// 100 ms a try), which put ~100 ms on the p99 of every write under load; queued on one
    /// connection, they run back to back instead.
    writer: Pool,
    /// Journal writes. On PostgreSQL connections of their own, two per commit in flight, whose
    /// planner may not scan `orders` sequentially or hash- or merge-join it (see
    /// [`JOURNAL_PLANNER_OPTIONS`]); on SQLite the writer.
    journal_pool: Pool,
    migrated: AtomicBool,
    /// Order journal writes waiting for the next group commit.
    journal: group_commit::GroupQueue<Result<(), StoreError>>,
    /// Set once this process holds region leases: every journal write is checked against it.
    fence: std::sync::RwLock<Option<Arc<fence::Fence>>>,
    /// Woken after a journal write that put work in the outbox, so the notifier sends at once.
    outbox_signal: Arc<tokio::sync::Notify>,
    /// Woken when a WhatsApp message (or a paid link) lands in the inbox, so the conversation
    /// worker takes it at once.
    inbox_signal: Arc<tokio::sync::Notify>,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Runs `$body` with `$pool` bound to the pool for reads. The body is compiled once per backend,
/// so the same query text type-checks against each driver. On SQLite these connections refuse
/// writes (`query_only`): a write belongs in [`on_writer!`].
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.pool()? {
            $crate::store::Pool::Postgres($pool) => $body,
            $crate::store::Pool::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Like [`on_pool!`], with `$pool` bound to the pool for writes (and reads that must happen in
/// the same transaction as a write).
macro_rules! on_writer {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.writer()? {
            $crate::store::Pool::Postgres($pool) => $body,
            $crate::store::Pool::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_writer;

/// A PostgreSQL pool of at most `max` connections. A connection in use is handed out untested (a
/// test query cost a round trip on every operation, and a broken connection fails the operation
/// anyway: callers see `store_unavailable` and retry); one idle for [`IDLE_TEST_AFTER`] or more
/// is pinged first and replaced if dead, so that after an outage the first operations do not
/// meet the connections the outage killed.
fn pg_pool(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_TEST_AFTER {
                    use sqlx::Connection;
                    return Ok(connection.ping().await.is_ok());
                }
                Ok(true)
            })
        })
        .acquire_timeout(ACQUIRE_TIMEOUT)
}

impl Store {
    /// Sets up the pool without connecting: the first query, or [`Store::migrate`], connects.
    pub fn open(config: &DatabaseConfig) -> Result<Store, StoreError> {
        Store::open_as(config, "mealkitz")
    }

    /// [`Store::open`], naming every PostgreSQL connection `node` (its `application_name`, cut
    /// to PostgreSQL's 63 bytes): another replica then sees at once, in `pg_stat_activity`,
    /// whether this process still lives — a checkout key it held is taken over as soon as it
    /// died.
    pub fn open_as(config: &DatabaseConfig, node: &str) -> Result<Store, StoreError> {
        let name = &node[..node.floor_char_boundary(PG_NAME_MAX_BYTES)];
        let (pool, writer, journal_pool) = match &config.url {
            DatabaseUrl::Postgres(url) => {
                let options = PgConnectOptions::from_str(url.expose())?.application_name(name);
                // Grouped, two connections per commit in flight: sqlx hands a used connection
                // back to its pool from a task spawned on the thread that used it, so one may
                // be late back while that thread is busy, and the next commit must not wait
                // for it. A transaction per transition (the comparison mode) may use as many
                // as the main pool.
                let journal_connections = if config.journal_batch_max > 1 {
                    2 * config.journal_commits_in_flight.max(1) as u32
                } else {
                    config.max_connections
                };
                let journal = pg_pool(journal_connections)
                    .connect_lazy_with(options.clone().options(JOURNAL_PLANNER_OPTIONS));
                let pool = pg_pool(config.max_connections).connect_lazy_with(options);
                (
                    Pool::Postgres(pool.clone()),
                    Pool::Postgres(pool),
                    Pool::Postgres(journal),
                )
            }
            DatabaseUrl::Sqlite(url) => {
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a committed transition survives power loss, not only a crash.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true);
                let readers = SqlitePoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options.clone().pragma("query_only", "ON"));
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options);
                (
                    Pool::Sqlite(readers),
                    Pool::Sqlite(writer.clone()),
                    Pool::Sqlite(writer),
                )
            }
        };
        let journal = group_commit::GroupQueue::new(
            config.journal_batch_max,
            // SQLite has one writer connection: a second commit in flight would only
            // queue for it, holding writes that could have joined the next batch.
            match &writer {
                Pool::Postgres(_) => config.journal_commits_in_flight,
                Pool::Sqlite(_) => 1,
            },
        );
        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                writer,
                journal_pool,
                migrated: AtomicBool::new(false),
                journal,
                fence: std::sync::RwLock::new(None),
                outbox_signal: Arc::new(tokio::sync::Notify::new()),
                inbox_signal: Arc::new(tokio::sync::Notify::new()),
            }),
        })
    }

    pub fn backend(&self) -> Backend {
        match self.inner.pool {
            Pool::Postgres(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The pool, once the schema is in place.
    pub(crate) fn pool(&self) -> Result<&Pool, StoreError> {
        if self.is_migrated() {
            Ok(&self.inner.pool)
        } else {
            Err(StoreError::Unavailable(
                "not connected and migrated yet".to_owned(),
            ))
        }
    }

    /// The pool for writes, once the schema is in place (see [`on_writer!`]).
    pub(crate) fn writer(&self) -> Result<&Pool, StoreError> {
        self.pool().map(|_| &self.inner.writer)
    }

    /// The connections journal writes go through (see [`Inner::journal_pool`]).
    pub(crate) fn journal_pool(&self) -> Result<&Pool, StoreError> {
        self.pool().map(|_| &self.inner.journal_pool)
    }

    /// Woken whenever this process journals an entry that notifies (the notifier waits on it).
    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.inner.outbox_signal.clone()
    }

    /// Woken whenever this process keeps an inbound WhatsApp message to act on.
    pub fn inbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.inner.inbox_signal.clone()
    }

    fn outbox_written(&self, written: bool) {
        if written {
            self.inner.outbox_signal.notify_one();
        }
    }

    /// Whether migrations have run in this process.
    pub fn is_migrated(&self) -> bool {
        self.inner.migrated.load(Ordering::Acquire)
    }

    /// Applies pending migrations (embedded in the binary). Safe to run from several replicas at
    /// once: PostgreSQL serialises them with an advisory lock.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let result = match &self.inner.writer {
            Pool::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await,
            Pool::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await,
        };
        result.map_err(|error| match error {
            sqlx::migrate::MigrateError::Execute(error) => StoreError::from(error),
            other => StoreError::Unavailable(other.to_string()),
        })?;
        self.inner.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// Keeps trying to reach and migrate the database, backing off between attempts, until it
    /// succeeds. Logs each failure so an operator sees why the pod is not ready.
    pub async fn migrate_until_ready(&self) {
        let mut delay = CONNECT_RETRY_MIN;
        loop {
            match self.migrate().await {
                Ok(()) => {
                    tracing::info!(backend = self.backend().as_str(), "database migrated");
                    return;
                }
                Err(error) => {
                    tracing::warn!(
                        backend = self.backend().as_str(),
                        error = %error,
                        retry_in_ms = delay.as_millis() as u64,
                        "database not reachable yet"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(CONNECT_RETRY_MAX);
                }
            }
        }
    }

    /// A round trip to the database, for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let query = async {
            on_pool!(self, |pool| sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(drop))
            .map_err(StoreError::from)
        };
        tokio::time::timeout(PING_TIMEOUT, query)
            .await
            .map_err(|_| StoreError::Unavailable("no answer within 2 s".to_owned()))?
    }

    /// Closes every connection, waiting for queries in flight. Part of graceful shutdown.
    pub async fn close(&self) {
        for pool in [
            &self.inner.pool,
            &self.inner.writer,
            &self.inner.journal_pool,
        ] {
            match pool {
                Pool::Postgres(pool) => pool.close().await,
                Pool::Sqlite(pool) => pool.close().await,
            }
        }
    }
}

/// Stores for unit tests of the layers above.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A fresh SQLite store in a directory of its own (remove the directory when done).
    pub(crate) fn sqlite_store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("mealkitz-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("store.db").display());
        let store = Store::open(&DatabaseConfig {
            url: DatabaseUrl::Sqlite(url),
            max_connections: 4,
            ..DatabaseConfig::default()
        })
        .unwrap();
        (store, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::sqlite_store;
    use super::*;

    #[test]
    fn a_broken_connection_is_unavailable_and_a_refused_write_is_not() {
        for passing in [
            sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into()),
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            sqlx::Error::PoolTimedOut,
        ] {
            let shown = passing.to_string();
            assert!(
                matches!(StoreError::from(passing), StoreError::Unavailable(_)),
                "{shown}"
            );
        }
        assert!(matches!(
            StoreError::from(sqlx::Error::RowNotFound),
            StoreError::Database(_)
        ));
    }

    #[tokio::test]
    async fn sqlite_reads_refuse_writes_and_the_writer_takes_them() {
        let (store, dir) = sqlite_store();
        store.migrate().await.unwrap();
        let insert = "INSERT INTO settings (key, value, created_at) VALUES ('k', 'v', 'now')";
        let through_reader = async {
            Ok::<_, StoreError>(on_pool!(store, |pool| sqlx::query(insert)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())))
        };
        let error = through_reader
            .await
            .unwrap()
            .expect_err("a read connection wrote");
        assert!(error.to_string().contains("readonly"), "{error}");
        let through_writer = async {
            Ok::<_, StoreError>(on_writer!(store, |pool| sqlx::query(insert)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())))
        };
        assert_eq!(through_writer.await.unwrap().unwrap(), 1);
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
