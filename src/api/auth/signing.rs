//! Integration access tokens: EdDSA-signed JWTs with a `kid`, the key set that signs and verifies
//! them (from a file, or generated, kept in the store and rotated), and the public keys as a JWKS.
//! (Issue 18, part 3: being built.)

use super::caller::AuthUser;
use crate::api::error::{ApiError, ErrorCode};
use crate::config::AuthConfig;
use crate::store::{Store, StoreError};

/// Whether `token` is an integration access token (a JWT whose header names EdDSA), rather
/// than a login token.
pub fn is_integration_token(token: &str) -> bool {
    jsonwebtoken::decode_header(token)
        .is_ok_and(|header| header.alg == jsonwebtoken::Algorithm::EdDSA)
}

/// The keys that sign and verify integration access tokens.
pub struct SigningKeys {}

impl SigningKeys {
    pub fn new(_config: &AuthConfig) -> Self {
        SigningKeys {}
    }

    /// Loads the key set (from the file, or the store, generating the first key).
    pub async fn load(&self, _store: &Store) -> Result<(), StoreError> {
        Ok(())
    }

    /// The caller an access token proves.
    pub async fn authenticate(&self, _store: &Store, _token: &str) -> Result<AuthUser, ApiError> {
        Err(ApiError::new(ErrorCode::InvalidToken))
    }
}
