//! Settings: the command line, its environment twins, defaults, and the checks that turn them
//! into one validated [`Config`]. A wrong setting fails at start in one line naming the flag and
//! its environment variable ([`ConfigError`]).
//!
//! One file per component. Each declares a clap [`Args`] struct of typed fields, the constants
//! its defaults are written in once (clap's `default_value` and the runtime struct's `Default`
//! both read them), its runtime config, and the conversion from one to the other. [`Settings`]
//! flattens them all; [`Config`] holds what they become:
//! - [`http`]: the listener; [`database`]: the store; [`redis`]: the link between replicas;
//! - [`auth`]: login tokens; [`log`]: the log format;
//! - [`dispatch`]: the service area, searching and the actors, with [`matching`] and this
//!   replica's [`lease`];
//! - [`gateway`]: WebSockets; [`checkout`]: payments and abuse limits; [`maps`]: OSRM, the map
//!   extract and tiles; [`notify`]: WhatsApp, merchants' webhooks and the public address;
//!   [`oidc`]: sign-in with an OpenID provider;
//! - [`values`]: the value parsers they share; [`secret`] and [`error`]: the types they share.

pub mod auth;
pub mod checkout;
pub mod database;
pub mod dispatch;
pub mod error;
pub mod gateway;
pub mod http;
pub mod lease;
pub mod log;
pub mod maps;
pub mod matching;
pub mod notify;
pub mod oidc;
pub mod redis;
pub mod secret;
pub mod values;

use std::ffi::OsString;

use clap::{Args, Command, FromArgMatches};

pub use auth::{AuthArgs, AuthConfig, JWT_SECRET_MIN_BYTES};
pub use checkout::{CheckoutArgs, CheckoutConfig};
pub use database::{DEFAULT_SQLITE_URL, DatabaseArgs, DatabaseConfig, DatabaseUrl};
pub use dispatch::{DispatchArgs, DispatchConfig};
pub use error::ConfigError;
pub use gateway::{GatewayArgs, GatewayConfig};
pub use http::{HttpArgs, HttpConfig, cpu_cores};
pub use lease::generated_node_id;
pub use log::{LogArgs, LogConfig, LogFormat};
pub use maps::{MapsArgs, MapsConfig};
pub use matching::Matching;
pub use notify::{NotifyArgs, NotifyConfig};
pub use oidc::{OidcArgs, OidcConfig};
pub use redis::{RedisArgs, RedisConfig};
pub use secret::Secret;

/// Every setting, as given on the command line or in the environment, typed and each value
/// checked by clap; [`Settings::to_config`] adds the checks that need a file or two settings.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub dispatch: DispatchArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub checkout: CheckoutArgs,
    #[command(flatten)]
    pub maps: MapsArgs,
    #[command(flatten)]
    pub notify: NotifyArgs,
    #[command(flatten)]
    pub oidc: OidcArgs,
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
    pub maps: MapsConfig,
    pub notify: NotifyConfig,
    /// Sign-in with an OpenID provider, when configured.
    pub oidc: Option<OidcConfig>,
}

impl Settings {
    /// The settings in `args` (flags without the program name) and the defaults, ignoring the
    /// environment: what tests build their configuration from, whatever the shell exports.
    pub fn from_args<I, T>(args: I) -> Result<Settings, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let described = Settings::augment_args(Command::new("mealkitz"));
        let without_env = described.clone().mut_args(|arg| arg.env(None));
        let argv =
            std::iter::once(OsString::from("mealkitz")).chain(args.into_iter().map(Into::into));
        let refused = |error: clap::Error| {
            ConfigError::from_clap(&error, &described)
                .unwrap_or_else(|| ConfigError::from_usage(&error))
        };
        let matches = without_env.try_get_matches_from(argv).map_err(refused)?;
        Settings::from_arg_matches(&matches).map_err(refused)
    }

    /// Checks what clap could not check value by value and builds the configuration.
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        Ok(Config {
            http: self.http.to_config(),
            database: self.database.to_config(),
            redis: self.redis.to_config(),
            auth: self.auth.to_config(),
            log: self.log.to_config(),
            dispatch: self.dispatch.to_config()?,
            gateway: self.gateway.to_config(),
            checkout: self.checkout.to_config(),
            maps: self.maps.to_config(),
            notify: self.notify.to_config(),
            oidc: self.oidc.to_config(&self.notify.public_url)?,
        })
    }
}

impl Config {
    /// The configuration `args` give on top of the defaults, ignoring the environment (see
    /// [`Settings::from_args`]). Tests start here and override a few fields.
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Settings::from_args(args)?.to_config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        Config::from_args(args.iter().copied())
    }

    #[test]
    fn defaults_serve_on_port_8000_with_the_embedded_store() {
        let config = config(&["--database-url", ""]).unwrap();
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
                &["--osrm-url", "osrm:5000"],
                "--osrm-url / MEALKITZ_OSRM_URL",
            ),
            (
                &["--osrm-timeout-ms", "0"],
                "--osrm-timeout-ms / MEALKITZ_OSRM_TIMEOUT_MS",
            ),
            (
                &["--map-data", "/no/such/city.osm.pbf"],
                "--map-data / MEALKITZ_MAP_DATA",
            ),
            (
                &["--payment-abandon-after-secs", "soon"],
                "--payment-abandon-after-secs / MEALKITZ_PAYMENT_ABANDON_AFTER_SECS",
            ),
        ];
        for (args, setting) in cases {
            let err = config(args).expect_err(&format!("case {args:?}"));
            assert_eq!(err.setting, *setting, "case {args:?}");
            let line = err.to_string();
            assert!(!line.contains('\n'), "case {args:?}: {line}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = config(&[
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef-top-secret",
            "--database-url",
            "postgres://u:hunter2@localhost/db",
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("top-secret"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn an_unknown_flag_is_refused_in_one_line() {
        let settings = Settings::from_args(["--bind", "127.0.0.1:0"]).unwrap();
        assert_eq!(settings.http.bind, "127.0.0.1:0".parse().unwrap());
        let err = Settings::from_args(["--no-such-flag"]).unwrap_err();
        assert_eq!(err.setting, "arguments");
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}
