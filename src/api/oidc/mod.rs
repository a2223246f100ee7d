//! Sign-in with an OpenID provider (authorization code flow with PKCE): `GET /auth/oidc` says
//! whether one is configured and its name, `GET /auth/oidc/login` sends the person to it, and
//! `GET /auth/oidc/callback` checks what comes back (state, code, the ID token's signature,
//! issuer, audience, expiry and nonce), finds or creates the account, and returns the person to
//! the page they started on with a login token in the URL's fragment.
//!
//! Linking is by (issuer, subject) first; an account the provider has never signed in to is
//! linked by email only when the provider says the email is verified, so that nobody takes over
//! an account by registering its address, unverified, at the provider.

mod provider;

pub use provider::Oidc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use openidconnect::core::{CoreAuthenticationFlow, CoreUserInfoClaims};
use openidconnect::{
    AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RequestTokenError, Scope, TokenResponse, UserInfoError,
};
use serde::{Deserialize, Serialize};

use self::provider::{error_chain, unavailable};
use super::AppState;
use super::error::{ApiError, ErrorBody, ErrorCode};
use crate::domain::{Email, Role};
use crate::store::{NewUser, OIDC_LOGIN_TTL_SECS, OidcLogin, StoreError, User};

/// Where the pages send people to sign in.
pub const OIDC_LOGIN_PATH: &str = "/auth/oidc/login";
/// Longest `return_to` kept: a page's path and a short query, not a document.
const RETURN_TO_MAX_BYTES: usize = 512;
/// Stored as the password hash of accounts created through a provider: not a PHC string, so no
/// password ever matches it (the check fails closed) until the person sets one.
const NO_PASSWORD_HASH: &str = "!oidc-no-password";
/// Longest error code from the provider repeated to the person (RFC 6749 codes are short).
const PROVIDER_ERROR_MAX_CHARS: usize = 64;
/// The cookie that ties a sign-in to the browser that started it (RFC 6749 §10.12): a browser
/// coming back with a state it did not start is refused, so nobody can sign a victim into the
/// attacker's account by sending them the attacker's callback link (login CSRF).
const BINDING_COOKIE: &str = "mealkitz_oidc_state";
/// Where the binding cookie is sent: the callback, nowhere else.
const BINDING_COOKIE_PATH: &str = "/auth/oidc";

/// Whether sign-in with a provider is on, and what the pages' "Sign in with …" button needs.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OidcInfo {
    /// Whether a provider is configured.
    pub enabled: bool,
    /// The provider's name, for "Sign in with {name}" (when enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the button goes; add `?return_to=/path` to come back to that page (when enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LoginQuery {
    /// The page on this site to come back to after sign-in: a path starting with one `/`
    /// (default `/`).
    pub return_to: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CallbackQuery {
    /// The authorization code.
    pub code: Option<String>,
    /// The state sent with the sign-in.
    pub state: Option<String>,
    /// The provider's error code, when it refused.
    pub error: Option<String>,
    /// The provider's explanation of the error.
    pub error_description: Option<String>,
    /// The issuer that answers (RFC 9207); must be the configured one when present.
    pub iss: Option<String>,
}

fn configured(state: &AppState) -> Result<&Oidc, ApiError> {
    state
        .oidc
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::OidcNotConfigured))
}

/// `GET /auth/oidc`: whether sign-in with a provider is on, and its name. Always 200: every
/// page asks, and sign-in being off is no error (a 404 would put one in every browser console).
#[utoipa::path(
    get, path = "/auth/oidc", tag = "users",
    responses((status = 200, description = "`{\"enabled\":false}` when no provider is configured", body = OidcInfo))
)]
pub async fn info(state: web::Data<AppState>) -> HttpResponse {
    let info = match state.oidc.as_deref() {
        Some(oidc) => OidcInfo {
            enabled: true,
            name: Some(oidc.name().to_owned()),
            login_url: Some(OIDC_LOGIN_PATH.to_owned()),
        },
        None => OidcInfo {
            enabled: false,
            name: None,
            login_url: None,
        },
    };
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .json(info)
}

/// `return_to` when it names a page of this site: a path starting with a single `/` (not `//`
/// or `/\`, which browsers read as another host), printable ASCII without a fragment.
pub fn same_site_path(raw: &str) -> Option<&str> {
    let ok = raw.len() <= RETURN_TO_MAX_BYTES
        && raw.starts_with('/')
        && !raw.starts_with("//")
        && raw
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'#');
    ok.then_some(raw)
}

/// `GET /auth/oidc/login`: 302 to the provider's authorization endpoint, with a new state,
/// nonce and PKCE challenge (S256) kept in the store for the callback.
#[utoipa::path(
    get, path = "/auth/oidc/login", tag = "users", params(LoginQuery),
    responses(
        (status = 302, description = "To the provider's sign-in page"),
        (status = 400, description = "invalid_query: return_to is not a path on this site", body = ErrorBody),
        (status = 404, description = "oidc_not_configured", body = ErrorBody),
        (status = 503, description = "oidc_provider_unavailable, store_unavailable", body = ErrorBody),
    )
)]
pub async fn login(
    state: web::Data<AppState>,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, ApiError> {
    let oidc = configured(&state)?;
    let return_to = match query.return_to.as_deref() {
        None | Some("") => "/",
        Some(raw) => same_site_path(raw).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidQuery).with_message(
                "return_to must be a path on this site starting with one /, like /merchant",
            )
        })?,
    };
    let client = oidc.client().await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".to_owned()))
        .add_scope(Scope::new("profile".to_owned()))
        .set_pkce_challenge(challenge)
        .url();
    state
        .store
        .insert_oidc_login(&OidcLogin {
            state: csrf.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to: return_to.to_owned(),
            created_at: crate::store::now(),
        })
        .await?;
    // The state is base64url: a valid cookie value as it is. Lax: sent on the provider's
    // redirect back (a top-level GET), not on requests other sites' pages make.
    let secure = if oidc.redirect_is_https() {
        "; Secure"
    } else {
        ""
    };
    let binding = format!(
        "{BINDING_COOKIE}={}; Path={BINDING_COOKIE_PATH}; Max-Age={OIDC_LOGIN_TTL_SECS}; \
         HttpOnly; SameSite=Lax{secure}",
        csrf.secret()
    );
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, url.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::SET_COOKIE, binding))
        .finish())
}

/// Whether a browser's callback carries the binding cookie of `sent_state`.
fn started_in_this_browser(req: &HttpRequest, sent_state: &str) -> bool {
    use subtle::ConstantTimeEq;
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| {
            name == BINDING_COOKIE && bool::from(value.as_bytes().ct_eq(sent_state.as_bytes()))
        })
}

/// A failed sign-in: where to send the person back to, and why.
struct Failure {
    return_to: Option<String>,
    error: ApiError,
}

impl Failure {
    fn new(return_to: Option<&str>, error: ApiError) -> Failure {
        Failure {
            return_to: return_to.map(str::to_owned),
            error,
        }
    }

    fn login_failed(return_to: Option<&str>, message: impl Into<String>) -> Failure {
        Failure::new(
            return_to,
            ApiError::new(ErrorCode::OidcLoginFailed).with_message(message.into()),
        )
    }
}

/// `GET /auth/oidc/callback`: finishes the sign-in and sends the person back to the page they
/// started on, with `#token=<login token>` (a fragment: browsers send it to no server). A
/// browser (`Accept: text/html`) that fails comes back to that page with `#oidc_error=<code>&
/// message=<text>`; other clients get the JSON error.
#[utoipa::path(
    get, path = "/auth/oidc/callback", tag = "users", params(CallbackQuery),
    responses(
        (status = 302, description = "Back to the page, with #token=… (or, for a browser, #oidc_error=…&message=…)"),
        (status = 400, description = "oidc_login_failed: unknown, expired or used state, refused sign-in, bad ID token, or an account with this email whose email the provider does not verify", body = ErrorBody),
        (status = 404, description = "oidc_not_configured", body = ErrorBody),
        (status = 503, description = "oidc_provider_unavailable, store_unavailable", body = ErrorBody),
    )
)]
pub async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<CallbackQuery>,
) -> Result<HttpResponse, ApiError> {
    let oidc = configured(&state)?;
    let browser = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    // A browser must be the one that started the sign-in; other clients (scripts, tests) have
    // no cookie jar to tie it to and cannot be tricked into following someone else's link.
    let outcome = match query.state.as_deref() {
        Some(sent) if browser && !started_in_this_browser(&req, sent) => {
            Err(Failure::login_failed(
                None,
                "This sign-in was started in another browser or tab, or has expired; start again here.",
            ))
        }
        _ => finish(&state, oidc, &query).await,
    };
    match outcome {
        Ok((user, return_to)) => {
            let issued = state.auth.tokens.issue(user.id, user.role)?;
            tracing::info!(user_id = %user.id, role = %user.role, "signed in with the OpenID provider");
            let mut response = back_to(&format!("{return_to}#token={}", issued.token));
            // Spent: the state is gone from the store too.
            let spent = format!("{BINDING_COOKIE}=; Path={BINDING_COOKIE_PATH}; Max-Age=0");
            if let Ok(value) = header::HeaderValue::from_str(&spent) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            Ok(response)
        }
        Err(Failure { return_to, error }) => {
            if !browser {
                return Err(error);
            }
            // Rendered as a redirect, not through the error table: log what it would have.
            if error.code().status_u16() >= 500 {
                tracing::warn!(code = %error.code(), "a sign-in failed on our side or the provider's");
            }
            let fragment = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("oidc_error", error.code().as_str())
                .append_pair("message", &error.body().error.message)
                .finish();
            let page = return_to.as_deref().unwrap_or("/");
            Ok(back_to(&format!("{page}#{fragment}")))
        }
    }
}

/// 302 to `location` on this site; neither cached nor passed on as a referrer.
fn back_to(location: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .finish()
}

/// The account the provider's answer signs in, and the page to go back to.
async fn finish(
    state: &AppState,
    oidc: &Oidc,
    query: &CallbackQuery,
) -> Result<(User, String), Failure> {
    let Some(sent_state) = query.state.as_deref().filter(|s| !s.is_empty()) else {
        return Err(Failure::login_failed(
            None,
            "The sign-in came back without its state; start again.",
        ));
    };
    let login = state
        .store
        .take_oidc_login(sent_state, crate::store::now())
        .await
        .map_err(|e| Failure::new(None, e.into()))?
        .ok_or_else(|| {
            Failure::login_failed(
                None,
                "This sign-in is unknown, expired (after 10 minutes) or was used already; start again.",
            )
        })?;
    let back = Some(login.return_to.as_str());
    if let Some(error) = query.error.as_deref() {
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(PROVIDER_ERROR_MAX_CHARS)
            .collect();
        tracing::info!(provider_error = %code, "the OpenID provider refused the sign-in");
        let message = if code == "access_denied" {
            format!("The sign-in with {} was cancelled.", oidc.name())
        } else {
            format!("{} refused the sign-in ({code}).", oidc.name())
        };
        return Err(Failure::login_failed(back, message));
    }
    if query.iss.as_deref().is_some_and(|iss| iss != oidc.issuer()) {
        return Err(Failure::login_failed(
            back,
            "The sign-in came back from another provider; start again.",
        ));
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(Failure::login_failed(
            back,
            "The provider sent no authorization code; start again.",
        ));
    };
    let client = oidc.client().await.map_err(|e| Failure::new(back, e))?;
    let exchange = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|_| Failure::login_failed(back, "The provider announces no token endpoint."))?
        .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier.clone()));
    let tokens = exchange
        .request_async(&oidc.http)
        .await
        .map_err(|error| match error {
            RequestTokenError::Request(cause) => {
                tracing::warn!(error = %error_chain(&cause), "the OpenID provider's token endpoint cannot be reached");
                Failure::new(back, unavailable())
            }
            RequestTokenError::ServerResponse(refused) => {
                tracing::info!(provider_error = %refused.error(), "the OpenID provider refused the code");
                Failure::login_failed(back, "The provider refused the sign-in's code; start again.")
            }
            other => {
                // Not the body: it may hold tokens.
                tracing::warn!(error = %other, "the OpenID provider's token response is unreadable");
                Failure::login_failed(back, "The provider's answer could not be read; start again.")
            }
        })?;
    let Some(id_token) = tokens.id_token() else {
        return Err(Failure::login_failed(
            back,
            "The provider sent no ID token; start again.",
        ));
    };
    let verifier = client.id_token_verifier();
    let claims = match id_token.claims(&verifier, &Nonce::new(login.nonce.clone())) {
        Ok(claims) => claims,
        Err(error) => {
            tracing::warn!(error = %error, "an ID token failed verification");
            // Perhaps signed with a key published since we fetched the JWKS.
            oidc.forget_keys().await;
            return Err(Failure::login_failed(
                back,
                "The provider's ID token did not verify; start again.",
            ));
        }
    };
    let subject = claims.subject().as_str();
    let mut email = claims.email().map(|e| e.as_str().to_owned());
    let mut email_verified = claims.email_verified() == Some(true);
    let mut name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().to_owned())
        .or_else(|| claims.preferred_username().map(|u| u.as_str().to_owned()));
    // Providers that follow OpenID Connect Core §5.4 strictly put the email and profile
    // claims in the userinfo response, not in an ID token issued with an access token: ask it,
    // for the same subject (the crate checks that `sub` matches).
    if email.is_none()
        && let Ok(request) = client.user_info(
            tokens.access_token().clone(),
            Some(claims.subject().clone()),
        )
    {
        let info: CoreUserInfoClaims =
            request
                .request_async(&oidc.http)
                .await
                .map_err(|error| match error {
                    UserInfoError::Request(cause) => {
                        tracing::warn!(error = %error_chain(&cause), "the OpenID provider's userinfo endpoint cannot be reached");
                        Failure::new(back, unavailable())
                    }
                    other => {
                        tracing::warn!(error = %other, "the OpenID provider's userinfo answer is unusable");
                        Failure::login_failed(back, "The provider's account details could not be read; start again.")
                    }
                })?;
        email = info.email().map(|e| e.as_str().to_owned());
        email_verified = info.email_verified() == Some(true);
        name = name.or_else(|| {
            info.name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned())
                .or_else(|| info.preferred_username().map(|u| u.as_str().to_owned()))
        });
    }
    let user = account_for(
        state,
        oidc,
        Identity {
            subject,
            email: email.as_deref(),
            email_verified,
            name: name.as_deref(),
        },
    )
    .await
    .map_err(|e| Failure::new(back, e))?;
    Ok((user, login.return_to))
}

/// What the ID token (or the userinfo endpoint) says about the person.
struct Identity<'a> {
    subject: &'a str,
    email: Option<&'a str>,
    email_verified: bool,
    name: Option<&'a str>,
}

/// The account linked to `identity`, linking an existing account by verified email or
/// creating a customer. A race with another sign-in of the same person ends in the account the
/// first one created or linked.
async fn account_for(
    state: &AppState,
    oidc: &Oidc,
    identity: Identity<'_>,
) -> Result<User, ApiError> {
    let issuer = oidc.issuer();
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Some(id) = state.store.identity_user(issuer, identity.subject).await? {
            return state.store.user_by_id(id).await?.ok_or_else(|| {
                ApiError::new(ErrorCode::OidcLoginFailed)
                    .with_message("The account this sign-in is linked to no longer exists.")
            });
        }
        let raw_email = identity.email.ok_or_else(|| {
            ApiError::new(ErrorCode::OidcLoginFailed).with_message(format!(
                "{} did not share an email address; allow it to, and start again.",
                oidc.name()
            ))
        })?;
        let email = Email::parse(raw_email).map_err(|e| {
            ApiError::new(ErrorCode::OidcLoginFailed)
                .with_message(format!("The email address from {} {e}.", oidc.name()))
        })?;
        if let Some(existing) = state.store.user_by_email(&email).await? {
            if !identity.email_verified {
                tracing::warn!(
                    user_id = %existing.user.id,
                    "refused to link an OpenID identity by an email the provider does not verify"
                );
                return Err(
                    ApiError::new(ErrorCode::OidcLoginFailed).with_message(format!(
                        "An account with this email already exists, and {} does not confirm that \
                     the email is yours. Log in with your password instead.",
                        oidc.name()
                    )),
                );
            }
            let linked = state
                .store
                .link_identity(issuer, identity.subject, existing.user.id)
                .await?;
            if linked == existing.user.id {
                audit_link(state, &existing.user, issuer).await;
                return Ok(existing.user);
            }
            // Another sign-in linked this identity first: take its account.
            continue;
        }
        let name = identity
            .name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| n.chars().take(crate::api::users::NAME_MAX_CHARS).collect())
            .unwrap_or_else(|| {
                email
                    .as_str()
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            });
        let created = state
            .store
            .create_user_with_identity(
                NewUser {
                    email,
                    name,
                    role: Role::Customer,
                    password_hash: NO_PASSWORD_HASH.to_owned(),
                },
                issuer,
                identity.subject,
            )
            .await;
        match created {
            Ok(user) => {
                tracing::info!(user_id = %user.id, "account created through the OpenID provider");
                return Ok(user);
            }
            // Another sign-in (or a registration) took the email or the identity meanwhile:
            // look again, once.
            Err(StoreError::Duplicate(_)) if attempts < 2 => continue,
            Err(other) => return Err(other.into()),
        }
    }
}

/// Records that an existing account was linked to a provider identity (a new way into it).
async fn audit_link(state: &AppState, user: &User, issuer: &str) {
    let entry = crate::store::NewAuditEntry {
        actor: Some(user.id),
        via: "oidc",
        action: "identity.linked",
        target: Some(issuer),
        detail: serde_json::json!({ "user_id": user.id.to_string() }),
    };
    if let Err(error) = state.store.audit(entry).await {
        tracing::warn!(error = %error, "cannot record an identity link in the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_site_are_places_to_return_to() {
        for good in ["/", "/merchant", "/track/abc?x=1", "/%2F%2Fevil.example"] {
            assert_eq!(same_site_path(good), Some(good), "case {good:?}");
        }
        let long = format!("/{}", "a".repeat(RETURN_TO_MAX_BYTES));
        for bad in [
            "",
            "merchant",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "/a b",
            "/a\nLocation: x",
            "/#token=x",
            "javascript:alert(1)",
            long.as_str(),
        ] {
            assert_eq!(same_site_path(bad), None, "case {bad:?}");
        }
    }
}
