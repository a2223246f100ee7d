//! Integration access tokens: EdDSA-signed JWTs (RFC 9068 `at+jwt`) with a `kid`, the key set
//! that signs and verifies them (from a PEM file, or generated, kept in the store and rotated),
//! the public keys as a JWKS, and whether the client behind a token is still registered.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::caller::{AuthUser, Grant, Via};
use crate::api::error::{ApiError, ErrorCode};
use crate::config::AuthConfig;
use crate::domain::{MerchantId, Role, Scopes, UserId};
use crate::store::{NewAuditEntry, OauthClient, Store, StoreError, StoredSigningKey};

/// The JOSE header `typ` of an access token (RFC 9068 §2.1); checked when verifying, so that
/// no other JWT signed with these keys passes for one.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// The one algorithm these keys sign and verify with.
const ALG_NAME: &str = "EdDSA";
/// Longest time between two reloads of the key set from the store: how late a replica learns
/// of a key another replica made.
const RELOAD_INTERVAL_MAX_SECS: u64 = 30;
/// Shortest: reloads are one small query, but not a loop.
const RELOAD_INTERVAL_MIN_SECS: u64 = 1;
/// A token naming an unknown `kid` reloads the set at most this often, so a flood of forged
/// kids cannot turn into a flood of queries.
const UNKNOWN_KID_RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How long a client's registered-or-revoked state is trusted before it is read again: a
/// revocation reaches every replica's verification within it (the issue asks for a second).
const CLIENT_STATE_TTL: Duration = Duration::from_millis(500);
/// How long a key that no longer verifies stays in the store (for an operator looking into a
/// token of yesterday) before it is deleted.
const RETIRED_KEY_KEPT_SECS: i64 = 7 * 24 * 3_600;
/// `exp` and `iat` are whole seconds.
const EXP_GRANULARITY_SECS: i64 = 1;
/// Client states cached before stale ones are swept out.
const CLIENT_CACHE_SWEEP_AT: usize = 10_000;

/// Whether `token` is an integration access token (a JWT whose header names EdDSA), rather
/// than a login token.
pub fn is_integration_token(token: &str) -> bool {
    jsonwebtoken::decode_header(token).is_ok_and(|header| header.alg == Algorithm::EdDSA)
}

/// The issuer of tokens and metadata: the public URL without a trailing slash.
pub fn issuer_of(public_url: &str) -> String {
    public_url.trim().trim_end_matches('/').to_owned()
}

/// The audience of access tokens: this service's REST API.
pub fn audience_of(issuer: &str) -> String {
    format!("{issuer}/api/v1")
}

/// A public key as a JWK (RFC 8037 OKP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// The RFC 7638 thumbprint of the key.
    pub kid: String,
    /// `EdDSA`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// The keys that verify access tokens (`GET /.well-known/jwks.json`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// The claims of an access token (RFC 9068 §2.2, with `role` and `merchant_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The account the token acts for.
    pub sub: UserId,
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<MerchantId>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// A freshly issued access token.
#[derive(Debug, Clone)]
pub struct IssuedAccessToken {
    pub token: String,
    pub expires_in_secs: i64,
    pub scope: String,
}

/// One key: signs (when it is the set's first) and verifies until `verify_until`.
struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
    created_at: DateTime<Utc>,
    /// `None`: verifies for as long as it is in the set.
    verify_until: Option<DateTime<Utc>>,
}

impl Key {
    fn from_pkcs8_der(
        der: &[u8],
        created_at: DateTime<Utc>,
        verify_until: Option<DateTime<Utc>>,
    ) -> Result<Key, String> {
        let signing = ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map_err(|e| format!("not a PKCS#8 Ed25519 private key: {e}"))?;
        let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        let kid = thumbprint(&x);
        Ok(Key {
            encoding: EncodingKey::from_ed_der(der),
            decoding: DecodingKey::from_ed_components(&x).map_err(|e| e.to_string())?,
            jwk: Jwk {
                kty: "OKP".to_owned(),
                crv: "Ed25519".to_owned(),
                x,
                kid: kid.clone(),
                alg: ALG_NAME.to_owned(),
                use_: "sig".to_owned(),
            },
            kid,
            created_at,
            verify_until,
        })
    }

    fn verifies_at(&self, now: DateTime<Utc>) -> bool {
        self.verify_until.is_none_or(|until| until > now)
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key: SHA-256 of the required members in
/// lexicographic order, base64url.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A new random Ed25519 key, as the store keeps it.
fn generate_key(now: DateTime<Utc>) -> Result<StoredSigningKey, StoreError> {
    let mut seed = [0u8; ed25519_dalek::SECRET_KEY_LENGTH];
    rand::rng().fill_bytes(&mut seed);
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let der = signing
        .to_pkcs8_der()
        .map_err(|e| StoreError::Corrupt(format!("encode a signing key: {e}")))?;
    let key = Key::from_pkcs8_der(der.as_bytes(), now, None).map_err(StoreError::Corrupt)?;
    Ok(StoredSigningKey {
        kid: key.kid,
        alg: ALG_NAME.to_owned(),
        private_der: der.as_bytes().to_vec(),
        public_jwk: serde_json::to_string(&key.jwk).unwrap_or_default(),
        created_at: now,
        retired_at: None,
        verify_until: None,
    })
}

/// The private keys of a PEM file (`-----BEGIN PRIVATE KEY-----` blocks, PKCS#8), in order.
fn parse_pem_keys(text: &str) -> Result<Vec<Vec<u8>>, String> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let end = body
            .find(END)
            .ok_or_else(|| format!("key {} has no {END} line", keys.len() + 1))?;
        let base64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD
            .decode(base64)
            .map_err(|e| format!("key {} is not base64: {e}", keys.len() + 1))?;
        keys.push(der);
        rest = &body[end + END.len()..];
    }
    if keys.is_empty() {
        return Err(format!("no {BEGIN} block"));
    }
    Ok(keys)
}

/// The keys in force: the first signs, every one verifies.
struct KeySet {
    keys: Vec<Arc<Key>>,
    /// From the file: never rotated.
    from_file: bool,
}

impl KeySet {
    fn signer(&self) -> Option<&Arc<Key>> {
        self.keys.first()
    }
}

/// The keys that sign and verify integration access tokens, and the cached state of the
/// clients whose tokens they verify.
pub struct SigningKeys {
    file: Option<std::path::PathBuf>,
    ttl_secs: i64,
    rotate_secs: i64,
    set: RwLock<Option<Arc<KeySet>>>,
    /// When an unknown `kid` last reloaded the set. An async lock, held across the reload on
    /// purpose: requests that arrive meanwhile with the same new kid wait for its result
    /// instead of each reloading.
    unknown_kid_reload: tokio::sync::Mutex<Option<Instant>>,
    /// Held while a load reads the store and installs what it read.
    loading: tokio::sync::Mutex<()>,
    /// client id → (read at, still registered).
    clients: Mutex<HashMap<String, (Instant, bool)>>,
}

impl SigningKeys {
    pub fn new(config: &AuthConfig) -> Self {
        SigningKeys {
            file: config.signing_keys_file.clone(),
            ttl_secs: i64::try_from(config.access_token_ttl_secs).unwrap_or(i64::MAX),
            rotate_secs: i64::try_from(config.signing_key_rotate_secs).unwrap_or(i64::MAX),
            set: RwLock::new(None),
            unknown_kid_reload: tokio::sync::Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// How often replicas reload the key set: at least four times per token lifetime, so a
    /// retired key's grace (see [`Self::retire_grace_secs`]) stays short when tokens are.
    pub fn reload_interval(&self) -> Duration {
        let quarter = u64::try_from(self.ttl_secs / 4).unwrap_or(0);
        Duration::from_secs(quarter.clamp(RELOAD_INTERVAL_MIN_SECS, RELOAD_INTERVAL_MAX_SECS))
    }

    /// How long a retired key keeps verifying: a token's lifetime, plus one reload interval
    /// because the other replicas sign with it until they next reload, plus a second because
    /// `exp` is in whole seconds and a token is still valid during its `exp` second. So a
    /// token it signed is always refused as expired, not as unknown.
    fn retire_grace_secs(&self) -> i64 {
        let reload = i64::try_from(self.reload_interval().as_secs()).unwrap_or(0);
        self.ttl_secs
            .saturating_add(reload)
            .saturating_add(EXP_GRANULARITY_SECS)
    }

    /// The lifetime of an access token.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Reads `MEALKITZ_SIGNING_KEYS_FILE` when it is set: `Ok(false)` without one. A file that
    /// cannot be read or holds no Ed25519 key is an error naming the setting (start-up fails).
    pub fn load_file(&self) -> Result<bool, String> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let keys = read_key_file(path)
            .map_err(|e| format!("MEALKITZ_SIGNING_KEYS_FILE {}: {e}", path.display()))?;
        self.install(KeySet {
            keys,
            from_file: true,
        });
        Ok(true)
    }

    fn install(&self, set: KeySet) {
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(set));
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether keys are loaded (until then issuing and verifying answer 503).
    pub fn is_ready(&self) -> bool {
        self.current().is_some()
    }

    fn loaded(&self) -> Result<Arc<KeySet>, ApiError> {
        self.current()
            .ok_or_else(|| ApiError::new(ErrorCode::StoreUnavailable).retry_after(1))
    }

    /// Loads the key set from the store, generating the first key. When replicas raced and
    /// more than one key may sign, all but the newest are retired, so every replica signs with
    /// the same one. (With a key file: nothing to do.)
    pub async fn load(&self, store: &Store) -> Result<(), StoreError> {
        if self.file.is_some() {
            return Ok(());
        }
        // One load at a time, so a load that read the store earlier never installs its older
        // set over a later one's.
        let _loading = self.loading.lock().await;
        let mut rows = store.signing_keys().await?;
        let now = crate::store::now();
        if rows.iter().all(|k| k.retired_at.is_some()) {
            store.add_first_signing_key(&generate_key(now)?).await?;
            rows = store.signing_keys().await?;
        }
        let mut signing = rows.iter().filter(|k| k.retired_at.is_none());
        if let (Some(newest), Some(_)) = (signing.next(), signing.next()) {
            let until = now + chrono::Duration::seconds(self.retire_grace_secs());
            store
                .retire_signing_keys_except(&newest.kid, now, until)
                .await?;
            rows = store.signing_keys().await?;
        }
        // Newest first; the one that signs leads.
        rows.sort_by_key(|k| k.retired_at.is_some());
        let mut keys = Vec::new();
        for row in rows {
            if row.retired_at.is_some() && row.verify_until.is_none_or(|until| until <= now) {
                continue;
            }
            match Key::from_pkcs8_der(&row.private_der, row.created_at, row.verify_until) {
                Ok(key) => keys.push(Arc::new(key)),
                Err(error) => {
                    return Err(StoreError::Corrupt(format!(
                        "signing key {}: {error}",
                        row.kid
                    )));
                }
            }
        }
        self.install(KeySet {
            keys,
            from_file: false,
        });
        Ok(())
    }

    /// The periodic work of every replica: reload the set, and rotate the signing key once it
    /// is older than `signing_key_rotate_secs` (one replica wins; the audit log names it).
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        self.load(store).await?;
        if self.file.is_none() {
            let before = crate::store::now() - chrono::Duration::seconds(RETIRED_KEY_KEPT_SECS);
            store.purge_signing_keys(before).await?;
        }
        let Some(set) = self.current() else {
            return Ok(());
        };
        let due = set.signer().is_some_and(|key| {
            !set.from_file
                && (crate::store::now() - key.created_at).num_seconds() >= self.rotate_secs
        });
        if due && let Some(kid) = self.rotate(store).await? {
            tracing::info!(kid = %kid, "signing key rotated (it reached its age)");
            store
                .audit(NewAuditEntry {
                    actor: None,
                    via: "system",
                    action: "signing_key.rotated",
                    target: Some(&kid),
                    detail: serde_json::json!({ "reason": "age" }),
                })
                .await?;
        }
        Ok(())
    }

    /// Whether the keys come from the file (they are not rotated then).
    pub fn from_file(&self) -> bool {
        self.file.is_some()
    }

    /// Makes a new key the signing one; the one it replaces verifies until its last token has
    /// expired. The new kid, or `None` when another replica rotated at the same moment (the
    /// set is reloaded either way) or the keys come from the file.
    pub async fn rotate(&self, store: &Store) -> Result<Option<String>, StoreError> {
        if self.from_file() {
            // The file decides; nothing is written to the store.
            return Ok(None);
        }
        self.load(store).await?;
        let Some(current) = self
            .current()
            .and_then(|set| set.signer().map(|k| k.kid.clone()))
        else {
            return Ok(None);
        };
        let now = crate::store::now();
        let new = generate_key(now)?;
        let until = now + chrono::Duration::seconds(self.retire_grace_secs());
        let won = store.rotate_signing_key(&current, &new, until).await?;
        self.load(store).await?;
        Ok(won.then_some(new.kid))
    }

    /// The kid of the key that signs now.
    pub fn signing_kid(&self) -> Option<String> {
        self.current()
            .and_then(|set| set.signer().map(|k| k.kid.clone()))
    }

    /// The public keys that verify now.
    pub fn jwks(&self) -> Result<Jwks, ApiError> {
        let set = self.loaded()?;
        let now = Utc::now();
        Ok(Jwks {
            keys: set
                .keys
                .iter()
                .filter(|k| k.verifies_at(now))
                .map(|k| k.jwk.clone())
                .collect(),
        })
    }

    /// An access token for `client`, acting for its account (whose role is `role`), carrying
    /// `scopes`.
    pub fn issue(
        &self,
        issuer: &str,
        client: &OauthClient,
        role: Role,
        scopes: Scopes,
    ) -> Result<IssuedAccessToken, ApiError> {
        let set = self.loaded()?;
        let key = set
            .signer()
            .ok_or_else(|| ApiError::new(ErrorCode::StoreUnavailable).retry_after(1))?;
        let now = Utc::now().timestamp();
        let scope = scopes.to_space_separated();
        let claims = AccessClaims {
            iss: issuer.to_owned(),
            aud: audience_of(issuer),
            sub: client.user_id,
            client_id: client.client_id.clone(),
            scope: scope.clone(),
            role,
            merchant_id: client.merchant_id,
            iat: now,
            exp: now.saturating_add(self.ttl_secs),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(ApiError::internal)?;
        Ok(IssuedAccessToken {
            token,
            expires_in_secs: self.ttl_secs,
            scope,
        })
    }

    /// The caller an access token proves: a valid signature by a key that verifies now, our
    /// issuer and audience, not expired (no leeway), from a client still registered.
    pub async fn authenticate(
        &self,
        store: &Store,
        issuer: &str,
        token: &str,
    ) -> Result<AuthUser, ApiError> {
        let claims = self.verify(store, issuer, token).await?;
        if !self.client_registered(store, &claims.client_id).await? {
            return Err(ApiError::new(ErrorCode::InvalidToken)
                .with_message("The OAuth client of this token was revoked."));
        }
        let scopes = Scopes::parse_space_separated(&claims.scope)
            .map_err(|_| ApiError::new(ErrorCode::InvalidToken))?;
        Ok(AuthUser {
            id: claims.sub,
            role: claims.role,
            expires_at: claims.exp,
            grant: Grant {
                via: Via::Client {
                    client_id: claims.client_id,
                },
                scopes,
                merchant: claims.merchant_id,
            },
        })
    }

    /// The claims of a token that verifies (signature, kid, typ, iss, aud, exp).
    pub async fn verify(
        &self,
        store: &Store,
        issuer: &str,
        token: &str,
    ) -> Result<AccessClaims, ApiError> {
        let invalid = || ApiError::new(ErrorCode::InvalidToken);
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(invalid());
        }
        let kid = header.kid.ok_or_else(invalid)?;
        let key = match self.verifying_key(&kid)? {
            Some(key) => key,
            None => self
                .reload_for_unknown_kid(store, &kid)
                .await?
                .ok_or_else(invalid)?,
        };
        // The allowlist is EdDSA alone, whatever the header says.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience_of(issuer)]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => ApiError::new(ErrorCode::TokenExpired),
                _ => invalid(),
            })
    }

    /// The key named `kid` if it verifies now; `None` if the set has no such key.
    fn verifying_key(&self, kid: &str) -> Result<Option<Arc<Key>>, ApiError> {
        let set = self.loaded()?;
        let now = Utc::now();
        Ok(set
            .keys
            .iter()
            .find(|k| k.kid == kid && k.verifies_at(now))
            .cloned())
    }

    /// A kid not in the set may be a key another replica just made: reload once (at most every
    /// [`UNKNOWN_KID_RELOAD_MIN_INTERVAL`]) and look again.
    async fn reload_for_unknown_kid(
        &self,
        store: &Store,
        kid: &str,
    ) -> Result<Option<Arc<Key>>, ApiError> {
        if self.from_file() {
            return Ok(None);
        }
        let mut last = self.unknown_kid_reload.lock().await;
        if let Some(key) = self.verifying_key(kid)? {
            return Ok(Some(key));
        }
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_RELOAD_MIN_INTERVAL) {
            return Ok(None);
        }
        *last = Some(Instant::now());
        self.load(store).await?;
        self.verifying_key(kid)
    }

    /// Whether `client_id` is registered and not revoked, read at most every
    /// [`CLIENT_STATE_TTL`] per client.
    async fn client_registered(&self, store: &Store, client_id: &str) -> Result<bool, ApiError> {
        {
            let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((read_at, registered)) = clients.get(client_id)
                && read_at.elapsed() < CLIENT_STATE_TTL
            {
                return Ok(*registered);
            }
        }
        let registered = store
            .oauth_client(client_id)
            .await?
            .is_some_and(|client| client.revoked_at.is_none());
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= CLIENT_CACHE_SWEEP_AT {
            clients.retain(|_, (read_at, _)| read_at.elapsed() < CLIENT_STATE_TTL);
        }
        clients.insert(client_id.to_owned(), (Instant::now(), registered));
        Ok(registered)
    }

    /// Forgets what this replica knows of `client_id` (it was just revoked here).
    pub fn forget_client(&self, client_id: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(client_id);
    }
}

/// The keys of a PEM file, the first first.
fn read_key_file(path: &Path) -> Result<Vec<Arc<Key>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let created_at = Utc::now();
    parse_pem_keys(&text)?
        .iter()
        .enumerate()
        .map(|(i, der)| {
            Key::from_pkcs8_der(der, created_at, None)
                .map(Arc::new)
                .map_err(|e| format!("key {}: {e}", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;

    const ISSUER: &str = "https://dispatch.example.test";

    fn keys_with(seeds: &[u8]) -> SigningKeys {
        // As if read from a file: such keys never reload from the store.
        let keys = SigningKeys::new(&AuthConfig {
            access_token_ttl_secs: 60,
            signing_keys_file: Some("keys.pem".into()),
            ..AuthConfig::default()
        });
        let now = Utc::now();
        let set = seeds
            .iter()
            .map(|seed| {
                let der = ed25519_dalek::SigningKey::from_bytes(&[*seed; 32])
                    .to_pkcs8_der()
                    .unwrap();
                Arc::new(Key::from_pkcs8_der(der.as_bytes(), now, None).unwrap())
            })
            .collect();
        keys.install(KeySet {
            keys: set,
            from_file: true,
        });
        keys
    }

    fn client() -> OauthClient {
        OauthClient {
            client_id: "mkc_unit".into(),
            name: "Unit".into(),
            secret_hash: String::new(),
            scopes: [Scope::OrdersRead].into_iter().collect(),
            user_id: UserId::new(),
            merchant_id: Some(MerchantId::new()),
            created_by: UserId::new(),
            created_at: Utc::now(),
            revoked_at: None,
        }
    }

    /// A store never migrated: file keys do not reload from it.
    fn store() -> (Store, std::path::PathBuf) {
        crate::store::test_support::sqlite_store()
    }

    #[test]
    fn the_kid_is_the_rfc_8037_thumbprint() {
        // RFC 8037 appendix A.2 and A.3.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn pem_files_give_their_keys_in_order_and_refuse_garbage() {
        let pem = |seed: u8| {
            let der = ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                .to_pkcs8_der()
                .unwrap();
            let body = STANDARD.encode(der.as_bytes());
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n{}\n-----END PRIVATE KEY-----\n",
                &body[..40],
                &body[40..]
            )
        };
        let ders = parse_pem_keys(&format!("comment\n{}{}", pem(1), pem(2))).unwrap();
        assert_eq!(ders.len(), 2);
        let first = Key::from_pkcs8_der(&ders[0], Utc::now(), None).unwrap();
        assert_eq!(first.kid, keys_with(&[1]).signing_kid().unwrap());
        assert!(parse_pem_keys("nothing here").is_err());
        assert!(
            parse_pem_keys("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----").is_err()
        );
        assert!(Key::from_pkcs8_der(b"not der", Utc::now(), None).is_err());
    }

    #[actix_web::test]
    async fn an_issued_token_verifies_with_its_claims_and_only_for_our_issuer() {
        let (store, dir) = store();
        let keys = keys_with(&[1, 2]);
        let client = client();
        let issued = keys
            .issue(ISSUER, &client, Role::Merchant, client.scopes)
            .unwrap();
        assert_eq!(issued.expires_in_secs, 60);
        let claims = keys.verify(&store, ISSUER, &issued.token).await.unwrap();
        assert_eq!(claims.sub, client.user_id);
        assert_eq!(claims.client_id, "mkc_unit");
        assert_eq!(claims.scope, "orders:read");
        assert_eq!(claims.role, Role::Merchant);
        assert_eq!(claims.merchant_id, client.merchant_id);
        assert_eq!(claims.aud, format!("{ISSUER}/api/v1"));
        assert_eq!(claims.exp - claims.iat, 60);
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid, keys.signing_kid());
        assert!(is_integration_token(&issued.token));

        let elsewhere = keys
            .verify(&store, "https://other.example", &issued.token)
            .await;
        assert_eq!(elsewhere.unwrap_err().code(), ErrorCode::InvalidToken);
        // Keys that do not know its kid refuse it.
        let other = keys_with(&[3]);
        let unknown = other.verify(&store, ISSUER, &issued.token).await;
        assert_eq!(unknown.unwrap_err().code(), ErrorCode::InvalidToken);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A token signed by `keys`' signer with `claims` and `header` as given.
    fn forge(keys: &SigningKeys, header: Header, claims: &AccessClaims) -> String {
        let set = keys.current().unwrap();
        jsonwebtoken::encode(&header, claims, &set.signer().unwrap().encoding).unwrap()
    }

    #[actix_web::test]
    async fn expired_tokens_and_tokens_without_typ_or_kid_or_with_another_alg_are_refused() {
        let (store, dir) = store();
        let keys = keys_with(&[1]);
        let now = Utc::now().timestamp();
        let claims = AccessClaims {
            iss: ISSUER.into(),
            aud: audience_of(ISSUER),
            sub: UserId::new(),
            client_id: "mkc_unit".into(),
            scope: "orders:read".into(),
            role: Role::Customer,
            merchant_id: None,
            iat: now - 120,
            exp: now - 1,
            jti: "j".into(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        header.kid = keys.signing_kid();
        let expired = keys
            .verify(&store, ISSUER, &forge(&keys, header.clone(), &claims))
            .await;
        assert_eq!(expired.unwrap_err().code(), ErrorCode::TokenExpired);

        let fresh = AccessClaims {
            exp: now + 60,
            ..claims.clone()
        };
        assert!(
            keys.verify(&store, ISSUER, &forge(&keys, header.clone(), &fresh))
                .await
                .is_ok()
        );
        let mut untyped = header.clone();
        untyped.typ = Some("JWT".into());
        let mut no_kid = header.clone();
        no_kid.kid = None;
        for refused in [untyped, no_kid] {
            let error = keys
                .verify(&store, ISSUER, &forge(&keys, refused, &fresh))
                .await;
            assert_eq!(error.unwrap_err().code(), ErrorCode::InvalidToken);
        }
        // An HS256 token naming our kid (keyed with the public key, the classic confusion).
        let mut hs = Header::new(Algorithm::HS256);
        hs.typ = Some(ACCESS_TOKEN_TYPE.into());
        hs.kid = keys.signing_kid();
        let public = keys.jwks().unwrap().keys[0].x.clone();
        let confused =
            jsonwebtoken::encode(&hs, &fresh, &EncodingKey::from_secret(public.as_bytes()))
                .unwrap();
        let error = keys.verify(&store, ISSUER, &confused).await;
        assert_eq!(error.unwrap_err().code(), ErrorCode::InvalidToken);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[actix_web::test]
    async fn nothing_is_issued_verified_or_published_until_keys_are_loaded() {
        let keys = SigningKeys::new(&AuthConfig::default());
        assert!(!keys.is_ready());
        let client = client();
        let error = keys
            .issue(ISSUER, &client, Role::Customer, client.scopes)
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::StoreUnavailable);
        assert_eq!(keys.jwks().unwrap_err().code(), ErrorCode::StoreUnavailable);
        let (store, dir) = store();
        let issued = keys_with(&[1])
            .issue(ISSUER, &client, Role::Customer, client.scopes)
            .unwrap();
        let verified = keys
            .verify(&store, ISSUER, &issued.token)
            .await
            .unwrap_err();
        assert_eq!(verified.code(), ErrorCode::StoreUnavailable);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn replicas_reload_at_least_four_times_per_token_lifetime_within_bounds() {
        let interval = |ttl| {
            SigningKeys::new(&AuthConfig {
                access_token_ttl_secs: ttl,
                ..AuthConfig::default()
            })
            .reload_interval()
            .as_secs()
        };
        assert_eq!(interval(3_600), RELOAD_INTERVAL_MAX_SECS);
        assert_eq!(interval(40), 10);
        assert_eq!(interval(2), RELOAD_INTERVAL_MIN_SECS);
    }

    #[actix_web::test]
    async fn the_store_keeps_one_signing_key_and_a_rotation_retires_the_old_one_for_its_grace() {
        let (store, dir) = store();
        store.migrate().await.unwrap();
        let keys = SigningKeys::new(&AuthConfig {
            access_token_ttl_secs: 60,
            ..AuthConfig::default()
        });
        keys.load(&store).await.unwrap();
        let first = keys.signing_kid().unwrap();
        // A second replica loading finds the same key.
        let replica = SigningKeys::new(&AuthConfig::default());
        replica.load(&store).await.unwrap();
        assert_eq!(replica.signing_kid(), Some(first.clone()));

        let second = keys.rotate(&store).await.unwrap().unwrap();
        assert_ne!(second, first);
        assert_eq!(keys.signing_kid(), Some(second.clone()));
        let published: Vec<String> = keys
            .jwks()
            .unwrap()
            .keys
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert_eq!(published, vec![second.clone(), first.clone()]);
        let rows = store.signing_keys().await.unwrap();
        let old = rows.iter().find(|k| k.kid == first).unwrap();
        let grace = (old.verify_until.unwrap() - old.retired_at.unwrap()).num_seconds();
        assert_eq!(
            grace,
            60 + 15 + 1,
            "a token lifetime, a reload interval, a second"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
