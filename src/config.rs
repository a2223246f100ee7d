//! Settings: the command line, its environment twins, defaults, and the checks that turn them
//! into one validated [`Config`]. A wrong setting fails here, naming the setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::geo::RegionMap;

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
    /// Run a simulated city (merchants, drivers, customers) against a running engine.
    Simulate(SimulateArgs),
    /// Serve on the embedded store with a simulated fleet running, for a first look.
    Demo(DemoArgs),
}

/// `mealkitz simulate`: a fleet and its customers as real clients of the engine at `--url`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// The engine to load.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    #[arg(long, default_value = "200")]
    pub drivers: String,
    #[arg(long, default_value = "20")]
    pub merchants: String,
    /// Customers placing the orders (default: one per 5 orders a minute, at least 10).
    #[arg(long)]
    pub customers: Option<String>,
    #[arg(long, default_value = "60")]
    pub orders_per_minute: String,
    /// How long customers keep ordering, e.g. 120s, 5m; then open orders are finished.
    #[arg(long, default_value = "60s")]
    pub duration: String,
    /// Same seed, same city and same demand.
    #[arg(long, default_value = "7")]
    pub seed: String,
    /// Share of offers drivers accept, 0 to 1.
    #[arg(long, default_value = "0.9")]
    pub accept_rate: String,
    /// Simulated seconds per real second, for driving and cooking.
    #[arg(long, default_value = "30")]
    pub time_scale: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mealkitz demo`: the engine plus a small simulated fleet, in one process.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[arg(long, default_value = "40")]
    pub drivers: String,
    #[arg(long, default_value = "6")]
    pub merchants: String,
    #[arg(long, default_value = "6")]
    pub orders_per_minute: String,
    #[arg(long, default_value = "10")]
    pub time_scale: String,
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
    /// redis://… ; optional. When set, replicas share the regions and route commands to each
    /// other through it, rate limits are shared through it, every order transition is appended
    /// to its order-event stream, and /ready reports it.
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key the engine uses (lets several deployments share one Redis).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_REDIS_KEY_PREFIX",
        default_value = "mealkitz:"
    )]
    pub redis_key_prefix: String,
    /// Entries the order-event stream keeps, about (older ones are trimmed).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_ORDER_EVENTS_MAXLEN",
        default_value = "100000"
    )]
    pub order_events_maxlen: String,
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
    /// GeoJSON FeatureCollection of region polygons (each with an `id`); unset: the demo city.
    #[arg(long, global = true, env = "MEALKITZ_REGIONS")]
    pub regions: Option<PathBuf>,
    /// How far outside its polygon a region still indexes drivers, in metres.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_BORDER_BAND_M",
        default_value = "3000"
    )]
    pub border_band_m: String,
    /// First search radius around the pickup, in metres.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_SEARCH_RADIUS_M",
        default_value = "3000"
    )]
    pub search_radius_m: String,
    /// Largest search radius, in metres.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_MAX_SEARCH_RADIUS_M",
        default_value = "12000"
    )]
    pub max_search_radius_m: String,
    /// How much the radius grows after a search that found nobody, in metres.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_SEARCH_RADIUS_STEP_M",
        default_value = "3000"
    )]
    pub search_radius_step_m: String,
    /// Pause between searches while nobody is found, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_SEARCH_RETRY_MS",
        default_value = "3000"
    )]
    pub search_retry_ms: String,
    /// Nearest drivers considered per search.
    #[arg(long, global = true, env = "MEALKITZ_CANDIDATES", default_value = "10")]
    pub candidates: String,
    /// Average driving speed for pickup-time estimates, in km/h.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_AVERAGE_SPEED_KMH",
        default_value = "25"
    )]
    pub average_speed_kmh: String,
    /// How long a driver has to answer an offer, in seconds (fractions allowed).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_OFFER_TIMEOUT_SECS",
        default_value = "30"
    )]
    pub offer_timeout_secs: String,
    /// This replica's name in region leases. Unset: the host name (a pod's name) and a random
    /// suffix, new at every start.
    #[arg(long, global = true, env = "MEALKITZ_NODE_ID")]
    pub node_id: Option<String>,
    /// Seconds a region lease lasts unless renewed (every third of it): how long regions of a
    /// replica that died stay without an owner.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_LEASE_TTL_SECS",
        default_value = "10"
    )]
    pub lease_ttl_secs: String,
    /// An order still searching after this many seconds is counted as stale.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_STALE_SEARCH_SECS",
        default_value = "600"
    )]
    pub stale_search_secs: String,
    /// Snapshots written per batch at most; a full batch is written at once.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_SNAPSHOT_BATCH",
        default_value = "256"
    )]
    pub snapshot_batch: String,
    /// Longest a snapshot waits before its batch is written, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_SNAPSHOT_INTERVAL_MS",
        default_value = "1000"
    )]
    pub snapshot_interval_ms: String,
    /// Restarts of one actor within the window after which it is marked failed.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_RESTART_LIMIT",
        default_value = "5"
    )]
    pub restart_limit: String,
    /// The window for counting restarts, in seconds.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_RESTART_WINDOW_SECS",
        default_value = "60"
    )]
    pub restart_window_secs: String,
    /// How long a driver whose socket dropped stays matchable, waiting for it to reconnect.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_DRIVER_GRACE_SECS",
        default_value = "60"
    )]
    pub driver_grace_secs: String,
    /// Origins allowed to open WebSockets from a browser, comma-separated (e.g.
    /// https://app.example.com); unset: the same origin only; `*`: any.
    #[arg(long, global = true, env = "MEALKITZ_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Messages per second one socket may send; the excess is dropped.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_WS_RATE_PER_SEC",
        default_value = "20"
    )]
    pub ws_rate_per_sec: String,
    /// Secret that signs payment webhooks (Mealkitz-Signature); unset: webhooks are refused.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// Farthest a dropoff may be from the merchant, in metres.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_MAX_DELIVERY_DISTANCE_M",
        default_value = "10000"
    )]
    pub max_delivery_distance_m: String,
    /// Login attempts per minute for one email address.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_LOGIN_ATTEMPTS_PER_MINUTE",
        default_value = "10"
    )]
    pub login_attempts_per_minute: String,
    /// Failed login attempts per minute from one client address.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE",
        default_value = "60"
    )]
    pub login_failures_per_address_per_minute: String,
    /// Checkouts per minute for one customer.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_CHECKOUTS_PER_MINUTE",
        default_value = "20"
    )]
    pub checkouts_per_minute: String,
    /// Seconds after which a checkout that never finished is given up and its payment hold
    /// released (never while a live request still runs it).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_PAYMENT_ABANDON_AFTER_SECS",
        default_value = "900"
    )]
    pub payment_abandon_after_secs: String,
    /// How orders are matched to drivers: greedy (each order takes the best free driver at
    /// once) or batched (orders collected for a window, then assigned together).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_MATCHING",
        default_value = "greedy"
    )]
    pub matching: String,
    /// The batching window, in milliseconds (batched matching only).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_BATCH_WINDOW_MS",
        default_value = "2000"
    )]
    pub batch_window_ms: String,
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
    pub dispatch: DispatchConfig,
    pub gateway: GatewayConfig,
    pub checkout: CheckoutConfig,
}

/// Checkout, payments and abuse limits.
#[derive(Debug, Clone)]
pub struct CheckoutConfig {
    /// Farthest a dropoff may be from the merchant.
    pub max_delivery_distance_m: f64,
    /// Signs payment webhooks; `None` refuses every webhook.
    pub webhook_secret: Option<Secret>,
    /// Login attempts per minute per email address, against password guessing.
    pub login_attempts_per_minute: u32,
    /// Failed login attempts per minute per client address, against credential stuffing.
    /// Only failures count, so many people behind one address (or a load tool) can log in.
    pub login_failures_per_address_per_minute: u32,
    /// Checkouts per minute per customer, against card testing.
    pub checkouts_per_minute: u32,
    /// A checkout unfinished this long is given up and its payment hold released, so that a
    /// customer whose app died is not left with money held on the card.
    pub payment_abandon_after: Duration,
}

/// How long an unfinished checkout keeps its payment hold, by default.
pub const PAYMENT_ABANDON_AFTER_SECS: u64 = 900;

impl Default for CheckoutConfig {
    fn default() -> Self {
        CheckoutConfig {
            max_delivery_distance_m: 10_000.0,
            webhook_secret: None,
            login_attempts_per_minute: 10,
            login_failures_per_address_per_minute: 60,
            checkouts_per_minute: 20,
            payment_abandon_after: Duration::from_secs(PAYMENT_ABANDON_AFTER_SECS),
        }
    }
}

/// Interval between the server's pings on every WebSocket.
pub const HEARTBEAT_INTERVAL_SECS: u64 = 15;
/// A WebSocket silent (no frame, not even a pong) for this long is closed.
pub const CLIENT_TIMEOUT_SECS: u64 = 45;

/// The WebSocket gateway's policies.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Browser origins allowed to connect. Empty: only the origin the request was sent to.
    pub allowed_origins: Vec<String>,
    /// Any origin (`*`).
    pub any_origin: bool,
    /// Messages per second one socket may send before the excess is dropped.
    pub rate_per_sec: u32,
    /// Ping interval ([`HEARTBEAT_INTERVAL_SECS`]; shorter only in tests).
    pub heartbeat_interval: Duration,
    /// Silence after which a socket is closed ([`CLIENT_TIMEOUT_SECS`]; shorter only in tests).
    pub client_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            allowed_origins: Vec::new(),
            any_origin: false,
            rate_per_sec: 20,
            heartbeat_interval: Duration::from_secs(HEARTBEAT_INTERVAL_SECS),
            client_timeout: Duration::from_secs(CLIENT_TIMEOUT_SECS),
        }
    }
}

/// How orders find drivers, and how the actors behind them persist and recover.
#[derive(Clone)]
pub struct DispatchConfig {
    /// The service area, split into regions.
    pub regions: Arc<RegionMap>,
    /// A region indexes drivers this far outside its polygon, so a driver near a border can
    /// serve the neighbouring region.
    pub border_band_m: f64,
    pub search_radius_m: f64,
    pub max_search_radius_m: f64,
    pub search_radius_step_m: f64,
    /// Pause between searches while nobody is found.
    pub search_retry: Duration,
    /// Nearest drivers considered per search (k).
    pub candidates: usize,
    pub average_speed_kmh: f64,
    /// How long a driver has to answer an offer.
    pub offer_timeout: Duration,
    /// An order searching longer than this is counted as stale (it keeps searching).
    pub stale_search: Duration,
    /// Snapshots per batch write at most.
    pub snapshot_batch: usize,
    /// Longest a snapshot waits before it is written.
    pub snapshot_interval: Duration,
    /// More restarts than this within `restart_window` mark an actor failed instead of looping.
    pub restart_limit: u32,
    pub restart_window: Duration,
    /// A driver whose socket dropped stays matchable this long, waiting for it to come back.
    pub driver_grace: Duration,
    /// How orders are matched to drivers.
    pub matching: Matching,
    /// This replica's name in region leases; unique per process start.
    pub node_id: String,
    /// How long a region lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// Lets tests make actors panic on purpose. Never set from the command line.
    pub fault_injection: bool,
}

impl std::fmt::Debug for DispatchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatchConfig")
            .field("regions", &self.regions.regions().len())
            .field("border_band_m", &self.border_band_m)
            .field("search_radius_m", &self.search_radius_m)
            .field("max_search_radius_m", &self.max_search_radius_m)
            .field("offer_timeout", &self.offer_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for DispatchConfig {
    /// The documented defaults, on the demo city.
    fn default() -> Self {
        DispatchConfig {
            regions: Arc::new(RegionMap::demo_city()),
            border_band_m: 3_000.0,
            search_radius_m: 3_000.0,
            max_search_radius_m: 12_000.0,
            search_radius_step_m: 3_000.0,
            search_retry: Duration::from_secs(3),
            candidates: 10,
            average_speed_kmh: 25.0,
            offer_timeout: Duration::from_secs(30),
            stale_search: Duration::from_secs(600),
            snapshot_batch: 256,
            snapshot_interval: Duration::from_secs(1),
            restart_limit: 5,
            restart_window: Duration::from_secs(60),
            driver_grace: Duration::from_secs(60),
            matching: Matching::Greedy,
            node_id: generated_node_id(),
            lease_ttl: Duration::from_secs(10),
            fault_injection: false,
        }
    }
}

/// A node id for this process: the host name (in Kubernetes, the pod's name) and a random
/// suffix, so a restarted process never mistakes its predecessor's leases for its own.
pub fn generated_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "mealkitz".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

/// How orders are matched to drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matching {
    /// Each order, when it needs a driver, takes the best free one at once.
    Greedy,
    /// Orders that need a driver are collected for `window`, then assigned together to minimise
    /// the total estimated pickup time.
    Batched { window: Duration },
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
    /// Put before every key, e.g. `mealkitz:` gives `mealkitz:order-events`.
    pub key_prefix: String,
    /// Length the order-event stream is trimmed to (approximately, as `MAXLEN ~`).
    pub order_events_maxlen: usize,
}

impl RedisConfig {
    /// The defaults for a Redis at `url` (assumed valid).
    pub fn new(url: &str) -> RedisConfig {
        RedisConfig {
            url: Secret::new(url),
            key_prefix: "mealkitz:".to_owned(),
            order_events_maxlen: 100_000,
        }
    }
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
        let redis = match self.redis_url.as_deref() {
            None => None,
            Some(raw) => Some(RedisConfig {
                url: parse_redis_url(raw)?,
                key_prefix: parse_key_prefix(&self.redis_key_prefix)?,
                order_events_maxlen: parse_positive(
                    "--order-events-maxlen / MEALKITZ_ORDER_EVENTS_MAXLEN",
                    &self.order_events_maxlen,
                    100_000_000,
                )?,
            }),
        };
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
        let dispatch = self.dispatch_config()?;
        let gateway = self.gateway_config()?;
        let checkout = CheckoutConfig {
            max_delivery_distance_m: parse_positive_f64(
                "--max-delivery-distance-m / MEALKITZ_MAX_DELIVERY_DISTANCE_M",
                &self.max_delivery_distance_m,
                1_000_000.0,
            )?,
            webhook_secret: match &self.webhook_secret {
                Some(secret) if secret.len() < 16 => {
                    return Err(invalid(
                        "--webhook-secret / MEALKITZ_WEBHOOK_SECRET",
                        "must be at least 16 bytes long",
                    ));
                }
                Some(secret) => Some(Secret::new(secret.clone())),
                None => None,
            },
            login_attempts_per_minute: parse_positive(
                "--login-attempts-per-minute / MEALKITZ_LOGIN_ATTEMPTS_PER_MINUTE",
                &self.login_attempts_per_minute,
                1_000_000,
            )?,
            login_failures_per_address_per_minute: parse_positive(
                "--login-failures-per-address-per-minute / MEALKITZ_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE",
                &self.login_failures_per_address_per_minute,
                1_000_000,
            )?,
            checkouts_per_minute: parse_positive(
                "--checkouts-per-minute / MEALKITZ_CHECKOUTS_PER_MINUTE",
                &self.checkouts_per_minute,
                1_000_000,
            )?,
            payment_abandon_after: Duration::from_secs(parse_positive(
                "--payment-abandon-after-secs / MEALKITZ_PAYMENT_ABANDON_AFTER_SECS",
                &self.payment_abandon_after_secs,
                7 * 24 * 3_600,
            )?),
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
            dispatch,
            gateway,
            checkout,
        })
    }

    fn dispatch_config(&self) -> Result<DispatchConfig, ConfigError> {
        let regions = match &self.regions {
            None => RegionMap::demo_city(),
            Some(path) => {
                const SETTING: &str = "--regions / MEALKITZ_REGIONS";
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(SETTING, format!("cannot read {}: {e}", path.display()))
                })?;
                RegionMap::from_geojson(&text)
                    .map_err(|e| invalid(SETTING, format!("{}: {e}", path.display())))?
            }
        };
        const EARTH_M: f64 = 40_000_000.0;
        let search_radius_m = parse_positive_f64(
            "--search-radius-m / MEALKITZ_SEARCH_RADIUS_M",
            &self.search_radius_m,
            EARTH_M,
        )?;
        let max_search_radius_m = parse_positive_f64(
            "--max-search-radius-m / MEALKITZ_MAX_SEARCH_RADIUS_M",
            &self.max_search_radius_m,
            EARTH_M,
        )?;
        if max_search_radius_m < search_radius_m {
            return Err(invalid(
                "--max-search-radius-m / MEALKITZ_MAX_SEARCH_RADIUS_M",
                "must not be smaller than the search radius",
            ));
        }
        Ok(DispatchConfig {
            regions: Arc::new(regions),
            border_band_m: parse_positive_f64(
                "--border-band-m / MEALKITZ_BORDER_BAND_M",
                &self.border_band_m,
                1_000_000.0,
            )?,
            search_radius_m,
            max_search_radius_m,
            search_radius_step_m: parse_positive_f64(
                "--search-radius-step-m / MEALKITZ_SEARCH_RADIUS_STEP_M",
                &self.search_radius_step_m,
                EARTH_M,
            )?,
            search_retry: Duration::from_millis(parse_positive(
                "--search-retry-ms / MEALKITZ_SEARCH_RETRY_MS",
                &self.search_retry_ms,
                3_600_000,
            )?),
            candidates: parse_positive(
                "--candidates / MEALKITZ_CANDIDATES",
                &self.candidates,
                1_000,
            )?,
            average_speed_kmh: parse_positive_f64(
                "--average-speed-kmh / MEALKITZ_AVERAGE_SPEED_KMH",
                &self.average_speed_kmh,
                500.0,
            )?,
            offer_timeout: Duration::from_secs_f64(parse_positive_f64(
                "--offer-timeout-secs / MEALKITZ_OFFER_TIMEOUT_SECS",
                &self.offer_timeout_secs,
                86_400.0,
            )?),
            stale_search: Duration::from_secs(parse_positive(
                "--stale-search-secs / MEALKITZ_STALE_SEARCH_SECS",
                &self.stale_search_secs,
                86_400 * 7,
            )?),
            snapshot_batch: parse_positive(
                "--snapshot-batch / MEALKITZ_SNAPSHOT_BATCH",
                &self.snapshot_batch,
                100_000,
            )?,
            snapshot_interval: Duration::from_millis(parse_positive(
                "--snapshot-interval-ms / MEALKITZ_SNAPSHOT_INTERVAL_MS",
                &self.snapshot_interval_ms,
                3_600_000,
            )?),
            restart_limit: parse_positive(
                "--restart-limit / MEALKITZ_RESTART_LIMIT",
                &self.restart_limit,
                1_000_000,
            )?,
            restart_window: Duration::from_secs(parse_positive(
                "--restart-window-secs / MEALKITZ_RESTART_WINDOW_SECS",
                &self.restart_window_secs,
                86_400,
            )?),
            driver_grace: Duration::from_secs(parse_positive(
                "--driver-grace-secs / MEALKITZ_DRIVER_GRACE_SECS",
                &self.driver_grace_secs,
                86_400,
            )?),
            matching: match self.matching.trim() {
                "greedy" => Matching::Greedy,
                "batched" => Matching::Batched {
                    window: Duration::from_millis(parse_positive(
                        "--batch-window-ms / MEALKITZ_BATCH_WINDOW_MS",
                        &self.batch_window_ms,
                        60_000,
                    )?),
                },
                other => {
                    return Err(invalid(
                        "--matching / MEALKITZ_MATCHING",
                        format!("{other:?} is not one of: greedy, batched"),
                    ));
                }
            },
            node_id: match self.node_id.as_deref().map(str::trim) {
                None | Some("") => generated_node_id(),
                Some(id) if id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic()) => {
                    // A fixed name must still differ between starts: a restarted process must
                    // not take its predecessor's leases for its own.
                    format!("{id}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
                }
                Some(_) => {
                    return Err(invalid(
                        "--node-id / MEALKITZ_NODE_ID",
                        "must be at most 128 printable ASCII characters without spaces",
                    ));
                }
            },
            lease_ttl: Duration::from_secs(parse_positive(
                "--lease-ttl-secs / MEALKITZ_LEASE_TTL_SECS",
                &self.lease_ttl_secs,
                3_600,
            )?),
            fault_injection: false,
        })
    }

    fn gateway_config(&self) -> Result<GatewayConfig, ConfigError> {
        const ORIGINS: &str = "--allowed-origins / MEALKITZ_ALLOWED_ORIGINS";
        let mut config = GatewayConfig {
            rate_per_sec: parse_positive(
                "--ws-rate-per-sec / MEALKITZ_WS_RATE_PER_SEC",
                &self.ws_rate_per_sec,
                100_000,
            )?,
            ..GatewayConfig::default()
        };
        for origin in self
            .allowed_origins
            .iter()
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            if origin == "*" {
                config.any_origin = true;
                continue;
            }
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin
                    .trim_end_matches('/')
                    .contains(|c: char| c.is_whitespace())
                && origin.splitn(4, '/').nth(3).is_none_or(str::is_empty);
            if !valid {
                return Err(invalid(
                    ORIGINS,
                    format!("{origin:?} is not an origin such as https://app.example.com"),
                ));
            }
            config
                .allowed_origins
                .push(origin.trim_end_matches('/').to_ascii_lowercase());
        }
        Ok(config)
    }
}

/// A duration such as `90`, `90s`, `5m` or `1h`.
pub fn parse_duration(setting: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    let raw = raw.trim();
    let (number, unit_secs) = match raw.char_indices().last() {
        Some((i, 's')) => (&raw[..i], 1.0),
        Some((i, 'm')) => (&raw[..i], 60.0),
        Some((i, 'h')) => (&raw[..i], 3_600.0),
        _ => (raw, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n * unit_secs <= 7.0 * 86_400.0 => {
            Ok(Duration::from_secs_f64(n * unit_secs))
        }
        _ => Err(invalid(
            setting,
            format!("{raw:?} is not a duration such as 120s, 5m or 1h"),
        )),
    }
}

impl SimulateArgs {
    /// Checks the arguments and builds the simulation settings.
    pub fn to_sim(&self) -> Result<crate::sim::SimConfig, ConfigError> {
        let orders_per_minute =
            parse_positive_f64("--orders-per-minute", &self.orders_per_minute, 100_000.0)?;
        let accept_rate = match self.accept_rate.trim().parse::<f64>() {
            Ok(rate) if (0.0..=1.0).contains(&rate) => rate,
            _ => {
                return Err(invalid(
                    "--accept-rate",
                    format!("{:?} is not a number from 0 to 1", self.accept_rate),
                ));
            }
        };
        let url = self.url.trim().trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "--url",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        let customers = match &self.customers {
            Some(raw) => parse_positive("--customers", raw, 1_000_000)?,
            None => ((orders_per_minute / 5.0).ceil() as usize).max(10),
        };
        Ok(crate::sim::SimConfig {
            url,
            drivers: parse_positive("--drivers", &self.drivers, 1_000_000)?,
            merchants: parse_positive("--merchants", &self.merchants, 100_000)?,
            customers,
            orders_per_minute,
            duration: parse_duration("--duration", &self.duration)?,
            seed: self
                .seed
                .trim()
                .parse()
                .map_err(|_| invalid("--seed", format!("{:?} is not a whole number", self.seed)))?,
            accept_rate,
            time_scale: parse_positive_f64("--time-scale", &self.time_scale, 10_000.0)?,
            progress: !self.json,
        })
    }
}

impl DemoArgs {
    /// The demo's simulation, against the engine at `url`; it runs until stopped.
    pub fn to_sim(&self, url: String) -> Result<crate::sim::SimConfig, ConfigError> {
        let orders_per_minute =
            parse_positive_f64("--orders-per-minute", &self.orders_per_minute, 10_000.0)?;
        Ok(crate::sim::SimConfig {
            url,
            drivers: parse_positive("--drivers", &self.drivers, 100_000)?,
            merchants: parse_positive("--merchants", &self.merchants, 10_000)?,
            customers: 5,
            orders_per_minute,
            duration: Duration::from_secs(7 * 86_400),
            seed: 1,
            accept_rate: 0.9,
            time_scale: parse_positive_f64("--time-scale", &self.time_scale, 1_000.0)?,
            progress: false,
        })
    }
}

fn parse_positive_f64(setting: &'static str, raw: &str, max: f64) -> Result<f64, ConfigError> {
    match raw.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n <= max => Ok(n),
        _ => Err(invalid(
            setting,
            format!("{raw:?} is not a positive number up to {max}"),
        )),
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

fn parse_key_prefix(raw: &str) -> Result<String, ConfigError> {
    let ok = raw.len() <= 64 && raw.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(invalid(
            "--redis-key-prefix / MEALKITZ_REDIS_KEY_PREFIX",
            "must be at most 64 printable ASCII characters without spaces",
        ))
    }
}

fn parse_redis_url(raw: &str) -> Result<Secret, ConfigError> {
    const SETTING: &str = "--redis-url / REDIS_URL";
    let raw = raw.trim();
    if !(raw.starts_with("redis://") || raw.starts_with("rediss://")) {
        return Err(invalid(SETTING, "must start with redis:// or rediss://"));
    }
    redis::Client::open(raw).map_err(|_| invalid(SETTING, "is not a valid redis:// URL"))?;
    Ok(Secret::new(raw))
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
            (
                &["--regions", "/no/such/regions.geojson"],
                "--regions / MEALKITZ_REGIONS",
            ),
            (
                &["--offer-timeout-secs", "0"],
                "--offer-timeout-secs / MEALKITZ_OFFER_TIMEOUT_SECS",
            ),
            (
                &["--search-radius-m", "NaN"],
                "--search-radius-m / MEALKITZ_SEARCH_RADIUS_M",
            ),
            (
                &["--max-search-radius-m", "1000"],
                "--max-search-radius-m / MEALKITZ_MAX_SEARCH_RADIUS_M",
            ),
            (&["--candidates", "0"], "--candidates / MEALKITZ_CANDIDATES"),
            (&["--matching", "random"], "--matching / MEALKITZ_MATCHING"),
            (
                &["--matching", "batched", "--batch-window-ms", "0"],
                "--batch-window-ms / MEALKITZ_BATCH_WINDOW_MS",
            ),
            (
                &["--allowed-origins", "example.com"],
                "--allowed-origins / MEALKITZ_ALLOWED_ORIGINS",
            ),
            (
                &["--allowed-origins", "https://a.com/path"],
                "--allowed-origins / MEALKITZ_ALLOWED_ORIGINS",
            ),
            (
                &["--ws-rate-per-sec", "0"],
                "--ws-rate-per-sec / MEALKITZ_WS_RATE_PER_SEC",
            ),
            (
                &["--driver-grace-secs", "x"],
                "--driver-grace-secs / MEALKITZ_DRIVER_GRACE_SECS",
            ),
            (
                &["--payment-abandon-after-secs", "0"],
                "--payment-abandon-after-secs / MEALKITZ_PAYMENT_ABANDON_AFTER_SECS",
            ),
            (
                &["--payment-abandon-after-secs", "soon"],
                "--payment-abandon-after-secs / MEALKITZ_PAYMENT_ABANDON_AFTER_SECS",
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
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(
            parse_duration("x", "120s").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(parse_duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("x", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("x", "1h").unwrap(),
            Duration::from_secs(3_600)
        );
        for bad in ["", "s", "-5s", "abc", "10d", "0"] {
            assert!(parse_duration("x", bad).is_err(), "case {bad:?}");
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
