//! Credentials' settings: the key that signs login tokens and how long they last, the keys that
//! sign integration tokens and their rotation, and the per-key request limit.

use std::path::PathBuf;
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
/// An integration access token's lifetime by default (OAuth2 client credentials): an hour.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3_600);
/// A day: integrations fetch a new token when theirs runs out, so short is cheap.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(24 * 3_600);
/// How long a generated signing key signs before a new one takes over: 30 days.
pub const DEFAULT_SIGNING_KEY_ROTATE: Duration = Duration::from_secs(30 * 24 * 3_600);
/// Requests one API key may make per minute, across replicas, by default.
pub const DEFAULT_API_KEY_REQUESTS_PER_MINUTE: u32 = 600;

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
    /// Lifetime of an integration access token (OAuth2 client credentials), in seconds.
    #[arg(
        long = "access-token-ttl-secs",
        value_name = "SECS",
        global = true,
        env = "MEALKITZ_ACCESS_TOKEN_TTL_SECS",
        value_parser = whole_secs(MAX_ACCESS_TOKEN_TTL),
        default_value = secs_text(DEFAULT_ACCESS_TOKEN_TTL)
    )]
    pub access_token_ttl: Duration,
    /// PEM file of the Ed25519 private keys that sign integration tokens; the first signs, the
    /// others verify. Unset: keys are generated, kept in the database and rotated.
    #[arg(
        long,
        value_name = "PATH",
        global = true,
        env = "MEALKITZ_SIGNING_KEYS_FILE"
    )]
    pub signing_keys_file: Option<PathBuf>,
    /// How long a generated signing key signs before a new one takes over, in seconds.
    #[arg(
        long = "signing-key-rotate-secs",
        value_name = "SECS",
        global = true,
        env = "MEALKITZ_SIGNING_KEY_ROTATE_SECS",
        value_parser = whole_secs(MAX_TOKEN_TTL),
        default_value = secs_text(DEFAULT_SIGNING_KEY_ROTATE)
    )]
    pub signing_key_rotate: Duration,
    /// Requests one API key may make per minute (counted across replicas with Redis).
    #[arg(
        long,
        value_name = "N",
        global = true,
        env = "MEALKITZ_API_KEY_REQUESTS_PER_MINUTE",
        default_value_t = DEFAULT_API_KEY_REQUESTS_PER_MINUTE
    )]
    pub api_key_requests_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `None`: generate a secret once and keep it in the database.
    pub jwt_secret: Option<Secret>,
    /// How long a login token stays valid.
    pub token_ttl_secs: u64,
    /// How long an integration access token stays valid.
    pub access_token_ttl_secs: u64,
    /// Signing keys from a file instead of the store.
    pub signing_keys_file: Option<PathBuf>,
    /// Age at which a generated signing key is replaced.
    pub signing_key_rotate_secs: u64,
    pub api_key_requests_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            token_ttl_secs: DEFAULT_TOKEN_TTL.as_secs(),
            access_token_ttl_secs: DEFAULT_ACCESS_TOKEN_TTL.as_secs(),
            signing_keys_file: None,
            signing_key_rotate_secs: DEFAULT_SIGNING_KEY_ROTATE.as_secs(),
            api_key_requests_per_minute: DEFAULT_API_KEY_REQUESTS_PER_MINUTE,
        }
    }
}

impl AuthArgs {
    pub fn to_config(&self) -> AuthConfig {
        AuthConfig {
            jwt_secret: self.jwt_secret.clone(),
            token_ttl_secs: self.token_ttl.as_secs(),
            access_token_ttl_secs: self.access_token_ttl.as_secs(),
            signing_keys_file: self.signing_keys_file.clone(),
            signing_key_rotate_secs: self.signing_key_rotate.as_secs(),
            api_key_requests_per_minute: self.api_key_requests_per_minute,
        }
    }
}
