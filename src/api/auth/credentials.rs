//! Credentials: argon2id password hashing and HS256 login tokens, and [`Auth`] that holds both
//! for the HTTP workers. Apart from the [`super::AuthUser`] extractor because the shared state
//! holds an [`Auth`] while the extractor reads the shared state.

use std::sync::{Arc, OnceLock};

use actix_web::web;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, decode, encode};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::api::error::{ApiError, ErrorCode};
use crate::config::{AuthConfig, Secret};
use crate::domain::{Role, UserId};
use crate::store::{Store, StoreError};

/// Where the generated signing secret is kept when none is configured.
const JWT_SECRET_SETTING_KEY: &str = "jwt_secret";
/// Bytes of randomness in a generated signing secret.
const GENERATED_SECRET_BYTES: usize = 32;
/// Password hashes computed at once. Each argon2id hash holds ~19 MiB for ~30 ms; unbounded,
/// a login burst could exhaust memory and the blocking pool.
const MAX_CONCURRENT_HASHES: usize = 4;
/// Shortest password accepted at sign-up (NIST SP 800-63B minimum).
pub const PASSWORD_MIN_CHARS: usize = 8;
/// Longest password accepted: enough for any passphrase, bounded so hashing cost is too.
pub const PASSWORD_MAX_CHARS: usize = 1024;

/// Hashes and checks passwords with argon2id (OWASP parameters: 19 MiB, 2 passes).
pub struct Passwords {
    permits: Semaphore,
    /// A hash of a random password, checked when a login names an unknown email so that both
    /// failures take about the same time and do not reveal which accounts exist.
    dummy_hash: String,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

fn hash_blocking(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    Ok(argon2().hash_password(password)?.to_string())
}

impl Passwords {
    pub fn new() -> Self {
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        Passwords {
            permits: Semaphore::new(MAX_CONCURRENT_HASHES),
            dummy_hash: hash_blocking(&random).expect("argon2 hashes a 32-byte input"),
        }
    }

    /// The PHC string (`$argon2id$v=19$…`) of `password`, computed off the async threads.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        web::block(move || hash_blocking(password.as_bytes()))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::internal(anyhow::anyhow!("argon2: {e}")))
    }

    /// Whether `password` matches `stored`. With no stored hash (unknown account) it still does
    /// the work of a check, against the dummy hash, and answers false.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let matches = web::block(move || {
            let parsed = PasswordHash::new(&hash).ok()?;
            Some(
                argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(ApiError::internal)?;
        Ok(known && matches.unwrap_or(false))
    }
}

/// The claims of a login token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: UserId,
    pub role: Role,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// This token's own id (random), so that two sign-ins within one second get two tokens.
    /// Absent from tokens issued before it existed.
    #[serde(default)]
    pub jti: Uuid,
}

/// A freshly issued token.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    fn new(secret: &[u8]) -> Self {
        // The allowlist is HS256 alone: `alg: none`, RS256-with-our-secret and the rest are refused.
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }
}

/// Issues and checks login tokens. The signing key is configured, or loaded from the store once
/// it answers; until then token operations fail with `store_unavailable`.
pub struct Tokens {
    keys: OnceLock<TokenKeys>,
    ttl_secs: i64,
}

impl Tokens {
    pub fn new(config: &AuthConfig) -> Self {
        let tokens = Tokens {
            keys: OnceLock::new(),
            ttl_secs: i64::try_from(config.token_ttl_secs).unwrap_or(i64::MAX),
        };
        if let Some(secret) = &config.jwt_secret {
            tokens.install(secret);
        }
        tokens
    }

    fn install(&self, secret: &Secret) {
        let _ = self.keys.set(TokenKeys::new(secret.expose().as_bytes()));
    }

    pub fn is_ready(&self) -> bool {
        self.keys.get().is_some()
    }

    /// Without a configured secret: reads the generated one from the store, creating it on the
    /// very first start. Every replica ends up with the same secret.
    pub async fn load_or_create_secret(&self, store: &Store) -> Result<(), StoreError> {
        if self.is_ready() {
            return Ok(());
        }
        let mut bytes = [0u8; GENERATED_SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let proposed: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let secret = store
            .setting_or_insert(JWT_SECRET_SETTING_KEY, &proposed)
            .await?;
        if secret == proposed {
            tracing::warn!(
                "MEALKITZ_JWT_SECRET is not set: generated a token-signing secret and stored it in \
                 the database; production deployments must set MEALKITZ_JWT_SECRET"
            );
        } else {
            tracing::warn!(
                "MEALKITZ_JWT_SECRET is not set: using the token-signing secret stored in the \
                 database; production deployments must set MEALKITZ_JWT_SECRET"
            );
        }
        self.install(&Secret::new(secret));
        Ok(())
    }

    fn keys(&self) -> Result<&TokenKeys, ApiError> {
        self.keys
            .get()
            .ok_or_else(|| ApiError::new(ErrorCode::StoreUnavailable).retry_after(1))
    }

    /// A token for `user` with `role`, valid for the configured lifetime.
    pub fn issue(&self, user: UserId, role: Role) -> Result<IssuedToken, ApiError> {
        let now = Utc::now().timestamp();
        let exp = now.saturating_add(self.ttl_secs);
        let claims = Claims {
            sub: user,
            role,
            exp,
            iat: now,
            jti: Uuid::new_v4(),
        };
        let token = encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.keys()?.encoding,
        )
        .map_err(ApiError::internal)?;
        let expires_at = Utc
            .timestamp_opt(exp, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        Ok(IssuedToken { token, expires_at })
    }

    /// The claims of a valid token: HS256, signed with our secret, not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let keys = self.keys()?;
        decode::<Claims>(token, &keys.decoding, &keys.validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => ApiError::new(ErrorCode::TokenExpired),
                _ => ApiError::new(ErrorCode::InvalidToken),
            })
    }
}

/// Password hashing, login tokens, API keys and integration tokens, shared by the HTTP workers.
pub struct Auth {
    pub passwords: Passwords,
    pub tokens: Tokens,
    pub keys: super::keys::ApiKeys,
    pub signing: super::signing::SigningKeys,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Arc<Auth> {
        Arc::new(Auth {
            passwords: Passwords::new(),
            tokens: Tokens::new(config),
            keys: super::keys::ApiKeys::new(config),
            signing: super::signing::SigningKeys::new(config),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(secret: &str) -> Tokens {
        Tokens::new(&AuthConfig {
            jwt_secret: Some(Secret::new(secret)),
            token_ttl_secs: 3600,
            ..AuthConfig::default()
        })
    }

    const SECRET: &str = "unit-test-secret-unit-test-secret-0001";

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let tokens = tokens(SECRET);
        let user = UserId::new();
        let issued = tokens.issue(user, Role::Driver).unwrap();
        let claims = tokens.verify(&issued.token).unwrap();
        assert_eq!(claims.sub, user);
        assert_eq!(claims.role, Role::Driver);
        assert_eq!(claims.exp, issued.expires_at.timestamp());
    }

    #[test]
    fn two_tokens_for_one_user_within_a_second_differ() {
        let tokens = tokens(SECRET);
        let user = UserId::new();
        let first = tokens.issue(user, Role::Customer).unwrap();
        let second = tokens.issue(user, Role::Customer).unwrap();
        assert_ne!(first.token, second.token);
        let (a, b) = (
            tokens.verify(&first.token).unwrap(),
            tokens.verify(&second.token).unwrap(),
        );
        assert_eq!((a.sub, a.iat), (b.sub, b.iat));
        assert_ne!(a.jti, b.jti);
    }

    #[test]
    fn a_token_issued_before_tokens_had_an_id_still_verifies() {
        #[derive(Serialize)]
        struct Before {
            sub: UserId,
            role: Role,
            exp: i64,
            iat: i64,
        }
        let user = UserId::new();
        let now = Utc::now().timestamp();
        let token = encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &Before {
                sub: user,
                role: Role::Merchant,
                exp: now + 60,
                iat: now,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let claims = tokens(SECRET).verify(&token).unwrap();
        assert_eq!((claims.sub, claims.role), (user, Role::Merchant));
        assert!(claims.jti.is_nil());
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let issued = tokens("another-secret-another-secret-000002")
            .issue(UserId::new(), Role::Customer)
            .unwrap();
        let error = tokens(SECRET).verify(&issued.token).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidToken);
    }

    #[test]
    fn tokens_are_unavailable_until_a_secret_is_known() {
        let tokens = Tokens::new(&AuthConfig {
            jwt_secret: None,
            token_ttl_secs: 60,
            ..AuthConfig::default()
        });
        assert!(!tokens.is_ready());
        let error = tokens.issue(UserId::new(), Role::Customer).err().unwrap();
        assert_eq!(error.code(), ErrorCode::StoreUnavailable);
    }

    #[actix_web::test]
    async fn passwords_verify_only_against_their_own_hash() {
        let passwords = Passwords::new();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(hash))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("correct horse".into(), None)
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("x".into(), Some("not a phc string".into()))
                .await
                .unwrap()
        );
    }
}
