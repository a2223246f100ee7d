//! The OpenID provider as this service talks to it: its discovery document and keys (fetched
//! on first use, kept for a while, fetched again after a failure or an ID token whose key is
//! unknown), and the HTTP client every call to it goes through (bounded in time, never
//! following redirects).

use std::time::{Duration, Instant};

use openidconnect::core::{CoreClient, CoreProviderMetadata};
use openidconnect::{
    ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, RedirectUrl,
};

use crate::api::error::{ApiError, ErrorCode};
use crate::config::OidcConfig;

/// How long the discovery document and the provider's keys are used before they are fetched
/// again: providers rotate keys, announcing the new one in the JWKS ahead of use.
const PROVIDER_METADATA_TTL: Duration = Duration::from_secs(15 * 60);
/// How long to wait for a TCP connection to the provider; the whole call has
/// [`OidcConfig::timeout`].
const PROVIDER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The client for this service at the provider, as `openidconnect` types it once built from
/// the discovery document (authorization endpoint set; token and userinfo as discovered).
pub(super) type ProviderClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

struct Discovered {
    metadata: CoreProviderMetadata,
    fetched_at: Instant,
}

/// One configured provider, shared by the HTTP workers.
pub struct Oidc {
    config: OidcConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    /// For every call to the provider.
    pub(super) http: reqwest::Client,
    /// The last discovery that succeeded. One discovery at a time: the lock is held across it,
    /// so a burst of sign-ins after a restart makes one request, not one each.
    discovered: tokio::sync::Mutex<Option<Discovered>>,
    /// Why the last discovery failed, until one succeeds (for `/ready`).
    last_failure: std::sync::Mutex<Option<String>>,
}

impl Oidc {
    /// The provider of `config`; contacts nobody until the first sign-in.
    pub fn new(config: &OidcConfig) -> anyhow::Result<Oidc> {
        let issuer = IssuerUrl::new(config.issuer.clone())?;
        let redirect = RedirectUrl::new(config.redirect_url.clone())?;
        // openidconnect's own advice: a client that follows redirects lets a provider (or anyone
        // who can answer for it) steer our requests to internal addresses (SSRF).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(PROVIDER_CONNECT_TIMEOUT.min(config.timeout))
            .timeout(config.timeout)
            .build()?;
        Ok(Oidc {
            config: config.clone(),
            issuer,
            redirect,
            http,
            discovered: tokio::sync::Mutex::new(None),
            last_failure: std::sync::Mutex::new(None),
        })
    }

    /// The name on the button.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether people come back over https (the binding cookie is then `Secure`).
    pub(super) fn redirect_is_https(&self) -> bool {
        self.config.redirect_url.starts_with("https://")
    }

    /// The issuer identities are recorded under.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The client for this service, from the provider's discovery document: fetched now when
    /// none is cached or it is old, else the cached one. The provider down or answering
    /// nonsense is 503 `oidc_provider_unavailable`, and the next call tries again.
    pub(super) async fn client(&self) -> Result<ProviderClient, ApiError> {
        let mut discovered = self.discovered.lock().await;
        let fresh = discovered
            .as_ref()
            .is_some_and(|d| d.fetched_at.elapsed() < PROVIDER_METADATA_TTL);
        if !fresh {
            let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
                .await
                .map_err(|error| {
                    let reason = error_chain(&error);
                    tracing::warn!(
                        issuer = %self.config.issuer,
                        error = %reason,
                        "the OpenID provider's discovery failed"
                    );
                    self.set_last_failure(Some(reason));
                    unavailable()
                })?;
            self.set_last_failure(None);
            *discovered = Some(Discovered {
                metadata,
                fetched_at: Instant::now(),
            });
        }
        let metadata = discovered
            .as_ref()
            .map(|d| d.metadata.clone())
            .ok_or_else(unavailable)?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(
                self.config.client_secret.expose().to_owned(),
            )),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// For `/ready`: `ok` once discovery succeeded, `degraded: …` after it failed, without
    /// contacting the provider.
    pub fn health(&self) -> String {
        let failure = self
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match failure {
            Some(reason) => {
                format!("degraded: the provider cannot be reached ({reason}); password logins work")
            }
            None => "ok".to_owned(),
        }
    }

    fn set_last_failure(&self, reason: Option<String>) {
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Forgets the discovery document and keys, so the next sign-in fetches them again (an ID
    /// token signed with a key we do not know yet: the provider rotated).
    pub(super) async fn forget_keys(&self) {
        *self.discovered.lock().await = None;
    }
}

/// 503 `oidc_provider_unavailable`.
pub(super) fn unavailable() -> ApiError {
    ApiError::new(ErrorCode::OidcProviderUnavailable)
}

/// An error and its causes on one line, for the log (reqwest's outermost error says only
/// "error sending request").
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
