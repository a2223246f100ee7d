//! Login tokens: the key that signs them and how long they last.

use std::time::Duration;

use clap::Args;

use super::secret::Secret;
use super::values::{secret, secs_text, whole_secs};

/// HMAC-SHA256 keys shorter than the hash output weaken it; refuse them.
pub const JWT_SECRET_MIN_BYTES: usize = 32;
/// A login token's lifetime by default: a working day.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(12 * 3_600);
/// A year: longer-lived tokens are a liability, not a convenience.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 24 * 3_600);

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Authentication")]
pub struct AuthArgs {
    /// Secret for signing tokens (at least 32 bytes). Unset: generated once and kept in the database.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_JWT_SECRET",
        hide_env_values = true,
        value_parser = secret(JWT_SECRET_MIN_BYTES)
    )]
    pub jwt_secret: Option<Secret>,
    /// Lifetime of a login token, in seconds.
    #[arg(
        long = "token-ttl-secs",
        value_name = "SECS",
        global = true,
        env = "MEALKITZ_TOKEN_TTL_SECS",
        value_parser = whole_secs(MAX_TOKEN_TTL),
        default_value = secs_text(DEFAULT_TOKEN_TTL)
    )]
    pub token_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `None`: generate a secret once and keep it in the database.
    pub jwt_secret: Option<Secret>,
    /// How long a login token stays valid.
    pub token_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            token_ttl_secs: DEFAULT_TOKEN_TTL.as_secs(),
        }
    }
}

impl AuthArgs {
    pub fn to_config(&self) -> AuthConfig {
        AuthConfig {
            jwt_secret: self.jwt_secret.clone(),
            token_ttl_secs: self.token_ttl.as_secs(),
        }
    }
}
