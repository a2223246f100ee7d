//! Redis, when configured: the URL that links the replicas, the prefix of every key, and how
//! long the order-event stream grows.

use clap::Args;

use super::secret::Secret;
use super::values::whole;

/// Prefix of every key by default (`mealkitz:order-events`, `mealkitz:node:<id>`…).
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "mealkitz:";
/// Entries the order-event stream keeps, about, by default.
pub const DEFAULT_ORDER_EVENTS_MAXLEN: usize = 100_000;
/// Largest accepted stream length.
pub const MAX_ORDER_EVENTS_MAXLEN: usize = 100_000_000;
/// Keys are short: a prefix is a name, not a path.
pub const MAX_REDIS_KEY_PREFIX_BYTES: usize = 64;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Redis")]
pub struct RedisArgs {
    /// redis://… ; optional. When set, replicas share the regions and route commands to each
    /// other through it, rate limits are shared through it, every order transition is appended
    /// to its order-event stream, and /ready reports it.
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true, value_parser = redis_url)]
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key the engine uses (lets several deployments share one Redis).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_REDIS_KEY_PREFIX",
        value_parser = key_prefix,
        default_value = DEFAULT_REDIS_KEY_PREFIX
    )]
    pub redis_key_prefix: String,
    /// Entries the order-event stream keeps, about (older ones are trimmed).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_ORDER_EVENTS_MAXLEN",
        value_parser = whole(MAX_ORDER_EVENTS_MAXLEN),
        default_value_t = DEFAULT_ORDER_EVENTS_MAXLEN
    )]
    pub order_events_maxlen: usize,
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
            key_prefix: DEFAULT_REDIS_KEY_PREFIX.to_owned(),
            order_events_maxlen: DEFAULT_ORDER_EVENTS_MAXLEN,
        }
    }
}

impl RedisArgs {
    /// `None` without a Redis URL: one replica, nothing shared.
    pub fn to_config(&self) -> Option<RedisConfig> {
        Some(RedisConfig {
            url: self.redis_url.clone()?,
            key_prefix: self.redis_key_prefix.clone(),
            order_events_maxlen: self.order_events_maxlen,
        })
    }
}

fn redis_url(raw: &str) -> Result<Secret, String> {
    let raw = raw.trim();
    if !(raw.starts_with("redis://") || raw.starts_with("rediss://")) {
        return Err("must start with redis:// or rediss://".to_owned());
    }
    ::redis::Client::open(raw).map_err(|_| "is not a valid redis:// URL".to_owned())?;
    Ok(Secret::new(raw))
}

fn key_prefix(raw: &str) -> Result<String, String> {
    if raw.len() <= MAX_REDIS_KEY_PREFIX_BYTES && raw.chars().all(|c| c.is_ascii_graphic()) {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "must be at most {MAX_REDIS_KEY_PREFIX_BYTES} printable ASCII characters without spaces"
        ))
    }
}
