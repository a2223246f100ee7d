//! The store: which database (PostgreSQL, or the embedded SQLite file by default), how many
//! connections the pool may hold, and how the journal commits (grouped, or one by one).

use std::str::FromStr;

use clap::Args;

use super::secret::Secret;
use super::values::whole;

/// The embedded store used when no `DATABASE_URL` is given: a SQLite file in the working
/// directory, created on first start.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://mealkitz.db";
/// Pooled connections per process, by default.
pub const DEFAULT_DB_MAX_CONNECTIONS: u32 = 10;
/// Largest accepted pool.
pub const MAX_DB_MAX_CONNECTIONS: u32 = 10_000;
/// Most order transitions one journal commit carries, by default: at 500 orders/s (~3,000
/// transitions/s) a commit of a few milliseconds carries a few dozen, so the bound only matters
/// after a stall, where it keeps one statement's arrays and locks moderate.
pub const DEFAULT_JOURNAL_BATCH_MAX_TRANSITIONS: u32 = 256;
/// Largest accepted batch bound.
pub const MAX_JOURNAL_BATCH_MAX_TRANSITIONS: u32 = 10_000;
/// Journal commits in flight at once on PostgreSQL, by default: two keep both cores of a small
/// machine's PostgreSQL busy while one batch's round trip is on the wire (one commit at a time
/// let batches grow until each took tens of milliseconds under load).
pub const DEFAULT_JOURNAL_COMMITS_IN_FLIGHT: u32 = 2;
/// Largest accepted number of commits in flight.
pub const MAX_JOURNAL_COMMITS_IN_FLIGHT: u32 = 64;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// postgres://… for PostgreSQL; unset for the embedded SQLite file mealkitz.db.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_parser = database_url
    )]
    pub database_url: Option<DatabaseUrl>,
    /// Largest number of pooled database connections.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_DB_MAX_CONNECTIONS",
        value_parser = whole(MAX_DB_MAX_CONNECTIONS),
        default_value_t = DEFAULT_DB_MAX_CONNECTIONS
    )]
    pub db_max_connections: u32,
    /// Group commit: order transitions waiting while a journal commit is in flight go together
    /// in the next one. false: one transaction per transition (kept for comparison).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_JOURNAL_GROUP_COMMIT",
        action = clap::ArgAction::Set,
        value_parser = clap::value_parser!(bool),
        default_value_t = true
    )]
    pub journal_group_commit: bool,
    /// Most order transitions in one grouped journal commit.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_JOURNAL_BATCH_MAX",
        value_parser = whole(MAX_JOURNAL_BATCH_MAX_TRANSITIONS),
        default_value_t = DEFAULT_JOURNAL_BATCH_MAX_TRANSITIONS
    )]
    pub journal_batch_max: u32,
    /// Most grouped journal commits in flight at once (PostgreSQL; SQLite runs one).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_JOURNAL_COMMITS_IN_FLIGHT",
        value_parser = whole(MAX_JOURNAL_COMMITS_IN_FLIGHT),
        default_value_t = DEFAULT_JOURNAL_COMMITS_IN_FLIGHT
    )]
    pub journal_commits_in_flight: u32,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    /// Bounds the pool so a burst of requests queues instead of exhausting the server.
    pub max_connections: u32,
    /// Most order transitions one journal commit carries; 1 is a transaction per transition.
    pub journal_batch_max: usize,
    /// Most grouped journal commits in flight at once (PostgreSQL).
    pub journal_commits_in_flight: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: DatabaseUrl::Sqlite(DEFAULT_SQLITE_URL.to_owned()),
            max_connections: DEFAULT_DB_MAX_CONNECTIONS,
            journal_batch_max: DEFAULT_JOURNAL_BATCH_MAX_TRANSITIONS as usize,
            journal_commits_in_flight: DEFAULT_JOURNAL_COMMITS_IN_FLIGHT as usize,
        }
    }
}

/// Which store backs the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(Secret),
    Sqlite(String),
}

impl DatabaseUrl {
    pub fn backend_name(&self) -> &'static str {
        match self {
            DatabaseUrl::Postgres(_) => "postgres",
            DatabaseUrl::Sqlite(_) => "sqlite",
        }
    }
}

impl DatabaseArgs {
    pub fn to_config(&self) -> DatabaseConfig {
        let defaults = DatabaseConfig::default();
        DatabaseConfig {
            url: self.database_url.clone().unwrap_or(defaults.url),
            max_connections: self.db_max_connections,
            journal_batch_max: if self.journal_group_commit {
                self.journal_batch_max as usize
            } else {
                1
            },
            journal_commits_in_flight: self.journal_commits_in_flight as usize,
        }
    }
}

/// A postgres:// or sqlite: URL, checked now so a typo fails at start; an empty one is the
/// embedded store. The message never repeats the URL, which may carry a password.
fn database_url(raw: &str) -> Result<DatabaseUrl, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(DatabaseUrl::Sqlite(DEFAULT_SQLITE_URL.to_owned()));
    }
    let scheme = raw.split_once(':').map(|(scheme, _)| scheme).unwrap_or("");
    match scheme {
        "postgres" | "postgresql" => {
            sqlx::postgres::PgConnectOptions::from_str(raw)
                .map_err(|_| "is not a valid postgres://user@host:port/database URL".to_owned())?;
            Ok(DatabaseUrl::Postgres(Secret::new(raw)))
        }
        "sqlite" => {
            sqlx::sqlite::SqliteConnectOptions::from_str(raw)
                .map_err(|_| "is not a valid sqlite:path URL".to_owned())?;
            Ok(DatabaseUrl::Sqlite(raw.to_owned()))
        }
        _ => Err(format!(
            "unknown scheme {scheme:?}; use postgres://… or sqlite:…, or leave it unset for the embedded store"
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn settings(args: &[&str]) -> Config {
        Config::from_args(args.iter().copied()).expect("valid settings")
    }

    #[test]
    fn database_url_errors_never_echo_the_password() {
        let err = Config::from_args(["--database-url", "postgres://u:hunter2@h:notaport/db"])
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn postgres_urls_select_postgres() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/x",
            "postgresql://localhost/x",
        ] {
            let config = settings(&["--database-url", url]);
            assert_eq!(config.database.url.backend_name(), "postgres", "case {url}");
        }
    }
}
