//! API keys: `mk_live_…` / `mk_test_…` secrets that act for their owner within their scopes and,
//! when set, one merchant. Only a SHA-256 hash is stored; the random public id inside the key
//! finds its row; rows are cached for half a second, so a revocation reaches every replica within
//! a second without a store read per request, and the last use is written at most once a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::caller::{AuthUser, Grant, Via};
use crate::api::error::{ApiError, ErrorCode};
use crate::api::limits::RateLimiter;
use crate::config::AuthConfig;
use crate::domain::{Scope, Scopes};
use crate::store::{ApiKey, NewAuditEntry, Store, StoreError};

/// Live keys start so; secret scanners match it.
pub const LIVE_PREFIX: &str = "mk_live_";
/// Sandbox keys start so.
pub const TEST_PREFIX: &str = "mk_test_";
/// Characters of the public id after the prefix (base62: ~95 bits, unique per key).
const LOOKUP_CHARS: usize = 16;
/// Characters of the secret after the public id (base62: ~190 bits).
const SECRET_CHARS: usize = 32;
/// Characters of the public id shown in lists beside the prefix (`mk_live_AbC1`).
const SHOWN_LOOKUP_CHARS: usize = 4;
/// How long a key's row read from the store is trusted: a revocation takes effect everywhere
/// within this.
const CACHE_FRESH_MS: u64 = 500;
/// While the store cannot be read, a cached row this recent still answers (a revocation made
/// during an outage could not be written either).
const CACHE_STALE_MAX_SECS: u64 = 30;
/// Rows cached before old ones are swept out.
const CACHE_SWEEP_AT_ENTRIES: usize = 10_000;
/// The last-use time is written when the stored one is older than this.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// Whether `credential` is shaped like an API key (rather than a JWT).
pub fn looks_like_key(credential: &str) -> bool {
    credential.starts_with(LIVE_PREFIX) || credential.starts_with(TEST_PREFIX)
}

/// A freshly made key: the secret (shown once) and what is stored of it.
pub struct MadeKey {
    pub key: String,
    pub lookup: String,
    pub prefix: String,
    pub hash: Vec<u8>,
}

fn random_base62(chars: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(chars)
        .map(char::from)
        .collect()
}

/// SHA-256 of a whole key: what is stored and compared.
pub fn key_hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// A new random key, live or sandbox.
pub fn make_key(test: bool) -> MadeKey {
    let prefix = if test { TEST_PREFIX } else { LIVE_PREFIX };
    let lookup = random_base62(LOOKUP_CHARS);
    let key = format!("{prefix}{lookup}{}", random_base62(SECRET_CHARS));
    MadeKey {
        hash: key_hash(&key),
        prefix: format!("{prefix}{}", &lookup[..SHOWN_LOOKUP_CHARS]),
        lookup,
        key,
    }
}

/// The public id inside a key, if it has the shape of one.
fn lookup_of(key: &str) -> Option<&str> {
    let rest = key
        .strip_prefix(LIVE_PREFIX)
        .or_else(|| key.strip_prefix(TEST_PREFIX))?;
    let well_formed = rest.len() == LOOKUP_CHARS + SECRET_CHARS
        && rest.bytes().all(|b| b.is_ascii_alphanumeric());
    well_formed.then(|| &rest[..LOOKUP_CHARS])
}

struct Cached {
    key: Option<ApiKey>,
    fetched: Instant,
}

/// Finds and checks API keys.
pub struct ApiKeys {
    cache: Mutex<HashMap<String, Cached>>,
}

fn unknown_key() -> ApiError {
    ApiError::new(ErrorCode::InvalidToken).with_message("The API key is unknown or revoked.")
}

impl ApiKeys {
    pub fn new(_config: &AuthConfig) -> Self {
        ApiKeys {
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, lookup: &str, max_age: Duration) -> Option<Option<ApiKey>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(lookup)
            .filter(|c| c.fetched.elapsed() <= max_age)
            .map(|c| c.key.clone())
    }

    fn remember(&self, lookup: &str, key: Option<ApiKey>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_SWEEP_AT_ENTRIES {
            let stale = Duration::from_secs(CACHE_STALE_MAX_SECS);
            cache.retain(|_, c| c.fetched.elapsed() <= stale);
        }
        cache.insert(
            lookup.to_owned(),
            Cached {
                key,
                fetched: Instant::now(),
            },
        );
    }

    /// Forgets a key here at once (this replica revoked it; the others follow within
    /// [`CACHE_FRESH_MS`]).
    pub fn forget(&self, lookup: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(lookup);
    }

    /// The row of `lookup`: cached if fresh, else from the store (a recent cached row while the
    /// store is down).
    async fn row(&self, store: &Store, lookup: &str) -> Result<Option<ApiKey>, StoreError> {
        if let Some(key) = self.cached(lookup, Duration::from_millis(CACHE_FRESH_MS)) {
            return Ok(key);
        }
        match store.api_key_by_lookup(lookup).await {
            Ok(key) => {
                self.remember(lookup, key.clone());
                Ok(key)
            }
            Err(error) => self
                .cached(lookup, Duration::from_secs(CACHE_STALE_MAX_SECS))
                .ok_or(error),
        }
    }

    /// Marks the key used now when the stored time is older than a minute, so a busy key costs
    /// one write a minute, not one per request.
    fn note_use(&self, store: &Store, key: &ApiKey) {
        let now = Utc::now();
        let recent = key
            .last_used_at
            .is_some_and(|at| (now - at).num_seconds() < LAST_USED_RESOLUTION_SECS);
        if recent {
            return;
        }
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(Cached { key: Some(row), .. }) = cache.get_mut(&key.lookup) {
                row.last_used_at = Some(now);
            }
        }
        let store = store.clone();
        let id = key.id;
        actix_web::rt::spawn(async move {
            if let Err(error) = store.touch_api_key(id, now).await {
                tracing::debug!(error = %error, "could not record an API key's last use");
            }
        });
    }

    /// Whether the key with public id `lookup` still works (neither revoked nor expired): what
    /// an open socket asks every second. While the store cannot answer it is taken to.
    pub async fn still_valid(&self, store: &Store, lookup: &str) -> bool {
        match self.row(store, lookup).await {
            Ok(Some(row)) => {
                row.revoked_at.is_none() && row.expires_at.is_none_or(|at| at > Utc::now())
            }
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// The caller a key proves, for a request `method path`: the key must be known, match its
    /// hash, be neither revoked nor expired, and be under its request limit. Every use of a key
    /// holding `admin` is written to the audit log before the request goes on.
    pub async fn authenticate(
        &self,
        store: &Store,
        limiter: &RateLimiter,
        key: &str,
        method: &str,
        path: &str,
    ) -> Result<AuthUser, ApiError> {
        let lookup = lookup_of(key).ok_or_else(unknown_key)?;
        let row = self.row(store, lookup).await?.ok_or_else(unknown_key)?;
        let matches: bool = key_hash(key).ct_eq(&row.key_hash).into();
        if !matches || row.revoked_at.is_some() {
            return Err(unknown_key());
        }
        if row.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(ApiError::new(ErrorCode::TokenExpired)
                .with_message("The API key has expired; make a new one."));
        }
        limiter.check(&row.id.to_string()).await?;
        self.note_use(store, &row);
        // A key never holds more than its owner's role can use today.
        let scopes = row.scopes.intersection(Scopes::for_role(row.owner_role));
        let via = Via::ApiKey {
            id: row.id,
            lookup: row.lookup.clone(),
            test: row.test,
        };
        if scopes.contains(Scope::Admin) {
            store
                .audit(NewAuditEntry {
                    actor: Some(row.owner_id),
                    via: &via.label(),
                    action: "api_key.used",
                    target: Some(&format!("{method} {path}")),
                    detail: serde_json::json!({ "key_prefix": row.prefix }),
                })
                .await?;
        }
        Ok(AuthUser {
            id: row.owner_id,
            role: row.owner_role,
            expires_at: row.expires_at.map_or(i64::MAX, |at| at.timestamp()),
            grant: Grant {
                via,
                scopes,
                merchant: row.merchant_id,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_keys_have_their_prefix_a_findable_public_id_and_enough_randomness() {
        let live = make_key(false);
        assert!(live.key.starts_with("mk_live_"), "{}", live.key);
        assert_eq!(
            live.key.len(),
            LIVE_PREFIX.len() + LOOKUP_CHARS + SECRET_CHARS
        );
        assert_eq!(lookup_of(&live.key), Some(live.lookup.as_str()));
        assert!(live.key.starts_with(&live.prefix));
        assert_eq!(live.prefix.len(), "mk_live_AbC1".len());
        assert_eq!(live.hash, key_hash(&live.key));
        // 32 base62 characters of secret: ~190 bits, well over 128.
        assert!(SECRET_CHARS as f64 * 62f64.log2() >= 128.0);
        let test = make_key(true);
        assert!(test.key.starts_with("mk_test_"));
        assert_ne!(make_key(false).key, make_key(false).key);
    }

    #[test]
    fn malformed_keys_have_no_public_id() {
        let key = make_key(false).key;
        assert_eq!(lookup_of(&key[..key.len() - 1]), None, "too short");
        assert_eq!(lookup_of(&format!("{key}x")), None, "too long");
        assert_eq!(lookup_of(&key.replace("mk_live_", "mk_prod_")), None);
        let mut bad = key.clone();
        bad.replace_range(20..21, "-");
        assert_eq!(lookup_of(&bad), None, "not base62");
        assert!(looks_like_key("mk_test_anything"));
        assert!(!looks_like_key("eyJhbGciOiJIUzI1NiJ9.e30.x"));
    }
}
