//! Settings: the command line, its environment twins, defaults, and the checks that turn them
//! into one validated [`Config`]. A wrong setting fails here, naming the setting.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

/// The embedded store used when no `DATABASE_URL` is given: a SQLite file in the working
/// directory, created on first start.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://mealkitz.db";
/// HMAC-SHA256 keys shorter than the hash output weaken it; refuse them.
pub const JWT_SECRET_MIN_BYTES: usize = 32;

/// `mealkitz`: the MealKitz Dispatch engine.
#[derive(Debug, Parser)]
#[command(name = "mealkitz", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine: HTTP API, WebSockets and dispatch (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Administrative tasks.
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user with the admin role (the only way to make one).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, env = "MEALKITZ_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long, default_value = "Administrator")]
        name: String,
    },
}

/// Every setting, as given on the command line or in the environment. Values stay text here so
/// that [`Settings::to_config`] can name the setting in its error instead of clap's usage dump.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address and port to listen on.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_BIND",
        default_value = "0.0.0.0:8000"
    )]
    pub bind: String,
    /// postgres://… for PostgreSQL; unset for the embedded SQLite file mealkitz.db.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Largest number of pooled database connections.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_DB_MAX_CONNECTIONS",
        default_value = "10"
    )]
    pub db_max_connections: String,
    /// redis://… ; optional. When set, /ready checks it.
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Secret for signing tokens (at least 32 bytes). Unset: generated once and kept in the database.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Lifetime of a login token, in seconds.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_TOKEN_TTL_SECS",
        default_value = "43200"
    )]
    pub token_ttl_secs: String,
    /// Log format: pretty or json. Levels come from RUST_LOG.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_LOG_FORMAT",
        default_value = "pretty"
    )]
    pub log_format: String,
    /// HTTP worker threads; defaults to the number of CPU cores.
    #[arg(long, global = true, env = "MEALKITZ_HTTP_WORKERS")]
    pub http_workers: Option<String>,
}

/// A value that must never reach a log line. `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The validated configuration of one process.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub redis: Option<RedisConfig>,
    pub auth: AuthConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    /// Worker threads serving HTTP and WebSockets.
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    /// Bounds the pool so a burst of requests queues instead of exhausting the server.
    pub max_connections: u32,
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

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Secret,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `None`: generate a secret once and keep it in the database.
    pub jwt_secret: Option<Secret>,
    /// How long a login token stays valid.
    pub token_ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// A setting that cannot be used. Displays as one line naming the setting and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        problem: problem.into(),
    }
}

impl Settings {
    /// Checks every setting and builds the configuration.
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        let bind = SocketAddr::from_str(self.bind.trim()).map_err(|_| {
            invalid(
                "--bind / MEALKITZ_BIND",
                format!(
                    "{:?} is not an IP address and port such as 0.0.0.0:8000",
                    self.bind
                ),
            )
        })?;
        let workers = match &self.http_workers {
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
            Some(raw) => parse_positive("--http-workers / MEALKITZ_HTTP_WORKERS", raw, 1024)?,
        };
        let database = DatabaseConfig {
            url: parse_database_url(self.database_url.as_deref())?,
            max_connections: parse_positive(
                "--db-max-connections / MEALKITZ_DB_MAX_CONNECTIONS",
                &self.db_max_connections,
                10_000,
            )?,
        };
        let redis = self.redis_url.as_deref().map(parse_redis_url).transpose()?;
        let jwt_secret = match &self.jwt_secret {
            Some(secret) if secret.len() < JWT_SECRET_MIN_BYTES => {
                return Err(invalid(
                    "--jwt-secret / MEALKITZ_JWT_SECRET",
                    format!("must be at least {JWT_SECRET_MIN_BYTES} bytes long"),
                ));
            }
            Some(secret) => Some(Secret::new(secret.clone())),
            None => None,
        };
        let token_ttl_secs = parse_positive(
            "--token-ttl-secs / MEALKITZ_TOKEN_TTL_SECS",
            &self.token_ttl_secs,
            // A year: longer-lived tokens are a liability, not a convenience.
            366 * 24 * 3600,
        )?;
        let format = match self.log_format.trim() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "--log-format / MEALKITZ_LOG_FORMAT",
                    format!("{other:?} is not one of: pretty, json"),
                ));
            }
        };
        Ok(Config {
            http: HttpConfig { bind, workers },
            database,
            redis,
            auth: AuthConfig {
                jwt_secret,
                token_ttl_secs,
            },
            log: LogConfig { format },
        })
    }
}

fn parse_positive<T>(setting: &'static str, raw: &str, max: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Default + fmt::Display + Copy,
{
    match raw.trim().parse::<T>() {
        Ok(n) if n > T::default() && n <= max => Ok(n),
        _ => Err(invalid(
            setting,
            format!("{raw:?} is not a whole number from 1 to {max}"),
        )),
    }
}

fn parse_database_url(raw: Option<&str>) -> Result<DatabaseUrl, ConfigError> {
    const SETTING: &str = "--database-url / DATABASE_URL";
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(DatabaseUrl::Sqlite(DEFAULT_SQLITE_URL.to_owned()));
    };
    let scheme = raw.split_once(':').map(|(scheme, _)| scheme).unwrap_or("");
    match scheme {
        "postgres" | "postgresql" => {
            // Parse now so a typo fails at start; the message never repeats the URL, which
            // may carry a password.
            sqlx::postgres::PgConnectOptions::from_str(raw).map_err(|_| {
                invalid(
                    SETTING,
                    "is not a valid postgres://user@host:port/database URL",
                )
            })?;
            Ok(DatabaseUrl::Postgres(Secret::new(raw)))
        }
        "sqlite" => {
            sqlx::sqlite::SqliteConnectOptions::from_str(raw)
                .map_err(|_| invalid(SETTING, "is not a valid sqlite:path URL"))?;
            Ok(DatabaseUrl::Sqlite(raw.to_owned()))
        }
        _ => Err(invalid(
            SETTING,
            format!(
                "unknown scheme {scheme:?}; use postgres://… or sqlite:…, or leave it unset for the embedded store"
            ),
        )),
    }
}

fn parse_redis_url(raw: &str) -> Result<RedisConfig, ConfigError> {
    const SETTING: &str = "--redis-url / REDIS_URL";
    let raw = raw.trim();
    if !(raw.starts_with("redis://") || raw.starts_with("rediss://")) {
        return Err(invalid(SETTING, "must start with redis:// or rediss://"));
    }
    redis::Client::open(raw).map_err(|_| invalid(SETTING, "is not a valid redis:// URL"))?;
    Ok(RedisConfig {
        url: Secret::new(raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["mealkitz"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("arguments parse").settings
    }

    #[test]
    fn defaults_serve_on_port_8000_with_the_embedded_store() {
        let config = settings(&["--database-url", ""]).to_config().unwrap();
        assert_eq!(config.http.bind, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(
            config.database.url,
            DatabaseUrl::Sqlite(DEFAULT_SQLITE_URL.into())
        );
        assert_eq!(config.auth.token_ttl_secs, 12 * 3600);
        assert_eq!(config.log.format, LogFormat::Pretty);
    }

    #[test]
    fn each_bad_setting_is_named_in_a_single_line() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bind", "nonsense"], "--bind / MEALKITZ_BIND"),
            (
                &["--database-url", "mysql://x/y"],
                "--database-url / DATABASE_URL",
            ),
            (
                &["--database-url", "postgres://u:hunter2@h:notaport/db"],
                "--database-url / DATABASE_URL",
            ),
            (
                &["--redis-url", "http://localhost"],
                "--redis-url / REDIS_URL",
            ),
            (
                &["--jwt-secret", "short"],
                "--jwt-secret / MEALKITZ_JWT_SECRET",
            ),
            (
                &["--token-ttl-secs", "0"],
                "--token-ttl-secs / MEALKITZ_TOKEN_TTL_SECS",
            ),
            (
                &["--log-format", "xml"],
                "--log-format / MEALKITZ_LOG_FORMAT",
            ),
            (
                &["--http-workers", "0"],
                "--http-workers / MEALKITZ_HTTP_WORKERS",
            ),
            (
                &["--db-max-connections", "lots"],
                "--db-max-connections / MEALKITZ_DB_MAX_CONNECTIONS",
            ),
        ];
        for (args, setting) in cases {
            let err = settings(args)
                .to_config()
                .expect_err(&format!("case {args:?}"));
            assert_eq!(err.setting, *setting, "case {args:?}");
            let line = err.to_string();
            assert!(!line.contains('\n'), "case {args:?}: {line}");
        }
    }

    #[test]
    fn database_url_errors_never_echo_the_password() {
        let err = settings(&["--database-url", "postgres://u:hunter2@h:notaport/db"])
            .to_config()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn postgres_urls_select_postgres() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/x",
            "postgresql://localhost/x",
        ] {
            let config = settings(&["--database-url", url]).to_config().unwrap();
            assert_eq!(config.database.url.backend_name(), "postgres", "case {url}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = settings(&[
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef-top-secret",
            "--database-url",
            "postgres://u:hunter2@localhost/db",
        ])
        .to_config()
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("top-secret"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
