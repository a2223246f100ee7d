//! The token endpoint of the client credentials grant (RFC 6749 §4.4): the form read strictly,
//! the client authenticated by HTTP Basic or by the form (never both), failures limited per
//! client and address, every error answered as §5.2 says (not in the service's error shape).

use std::borrow::Cow;
use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::secret_hash;
use crate::api::auth::signing::issuer_of;
use crate::api::error::{ApiError, ErrorCode};
use crate::api::state::AppState;
use crate::domain::Scopes;
use crate::store::OauthClient;

/// Largest token request body: a handful of short parameters fit many times over.
const TOKEN_BODY_MAX_BYTES: usize = 8 * 1024;
/// Longest client id counted by the failure limit (longer ones are cut: no id is that long).
const LIMIT_KEY_MAX_CHARS: usize = 64;
/// The realm of `WWW-Authenticate: Basic` on `invalid_client`.
const BASIC_CHALLENGE: &str = "Basic realm=\"mealkitz\"";
/// Compared against when the client is unknown, so both failures cost the same.
const DUMMY_SECRET_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The form of `POST /oauth/token` (`application/x-www-form-urlencoded`).
/// (For the OpenAPI document: the handler reads the form itself, to refuse a repeated
/// parameter, which a deserializer would silently take the last of.)
#[derive(Debug, utoipa::ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`.
    pub grant_type: String,
    /// Space-separated; a subset of the client's scopes. Absent: all of them.
    pub scope: Option<String>,
    /// With `client_secret`, when not using HTTP Basic (`client_secret_post`).
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// A token (RFC 6749 §5.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// An EdDSA-signed JWT (`typ: at+jwt`); verify it with the JWKS.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The scopes it carries, space-separated.
    pub scope: String,
}

/// An error of the token endpoint (RFC 6749 §5.2), not the service's usual shape.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_scope`, `unsupported_grant_type`, or
    /// `store_unavailable` (503, while the signing keys or the database are not available).
    pub error: &'static str,
    pub error_description: Cow<'static, str>,
}

/// A token endpoint failure, answered as §5.2 says.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: Cow<'static, str>,
    retry_after_secs: Option<u64>,
}

impl OAuthError {
    fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            retry_after_secs: None,
        }
    }

    fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    fn invalid_scope(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    fn response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"));
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, BASIC_CHALLENGE));
        }
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(OAuthErrorBody {
            error: self.error,
            error_description: self.description.clone(),
        })
    }
}

/// Errors of the layers below: the store or the keys unavailable (503), a limit (429), the rest
/// a 500 that tells nothing.
impl From<ApiError> for OAuthError {
    fn from(error: ApiError) -> Self {
        let rendered = error.error_response();
        let retry_after_secs = rendered
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let (status, code, description): (_, _, Cow<'static, str>) = match error.code() {
            ErrorCode::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "The database or the signing keys are not available yet; try again shortly.".into(),
            ),
            ErrorCode::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request",
                "Too many failed client authentications for this client or from this address; \
                 try again after Retry-After seconds."
                    .into(),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "Something went wrong on our side; it has been logged.".into(),
            ),
        };
        OAuthError {
            status,
            error: code,
            description,
            retry_after_secs,
        }
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(error: crate::store::StoreError) -> Self {
        OAuthError::from(ApiError::from(error))
    }
}

/// Issues an access token by the client credentials grant (RFC 6749 §4.4).
#[utoipa::path(
    post, path = "/oauth/token", tag = "integrations",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded",
        description = "Authenticate with HTTP Basic (client_id:client_secret, each form-urlencoded) or with the form fields client_id and client_secret, not both."),
    responses(
        (status = 200, description = "A token (Cache-Control: no-store)", body = TokenResponse),
        (status = 400, description = "invalid_request (a parameter missing or repeated, wrong content type, malformed body, two ways of client authentication), invalid_scope, unsupported_grant_type", body = OAuthErrorBody),
        (status = 401, description = "invalid_client (unknown, wrong secret, revoked, no client authentication), with WWW-Authenticate: Basic", body = OAuthErrorBody),
        (status = 429, description = "Too many failed client authentications for the client or from the address (error invalid_request, Retry-After)", body = OAuthErrorBody),
        (status = 503, description = "store_unavailable", body = OAuthErrorBody),
    )
)]
pub async fn token(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    match issue_token(&req, &state, payload).await {
        Ok(response) => response,
        Err(error) => error.response(),
    }
}

async fn issue_token(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
) -> Result<HttpResponse, OAuthError> {
    let params = read_form(req, payload).await?;
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("The parameter grant_type is missing."))?;
    if grant_type != "client_credentials" {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The only grant_type supported is client_credentials.",
        ));
    }
    let (client_id, secret) = client_credentials(req, &params)?;
    let client = authenticate_client(req, state, &client_id, &secret).await?;
    let scopes = match params.get("scope") {
        None => client.scopes,
        Some(asked) => {
            let asked = Scopes::parse_space_separated(asked)
                .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
            if !asked.is_subset(client.scopes) {
                return Err(OAuthError::invalid_scope(format!(
                    "This client may ask only for: {}.",
                    client.scopes.to_space_separated()
                )));
            }
            if asked.is_empty() {
                client.scopes
            } else {
                asked
            }
        }
    };
    let role = state
        .store
        .user_by_id(client.user_id)
        .await?
        .map(|user| user.role)
        .ok_or_else(|| OAuthError::invalid_client("The client's account no longer exists."))?;
    let issuer = issuer_of(&state.notify.public_url);
    let issued = state.auth.signing.issue(&issuer, &client, role, scopes)?;
    metrics::counter!("oauth_tokens_issued_total").increment(1);
    tracing::info!(client_id = %client.client_id, "access token issued");
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(TokenResponse {
            access_token: issued.token,
            token_type: "Bearer",
            expires_in: issued.expires_in_secs,
            scope: issued.scope,
        }))
}

/// The form's parameters: the content type checked, the body read (bounded), no parameter
/// twice, empty ones dropped (RFC 6749 §3.2: "treated as if they were omitted").
async fn read_form(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<HashMap<String, String>, OAuthError> {
    let essence = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if essence.as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "Send the parameters as Content-Type: application/x-www-form-urlencoded.",
        ));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| OAuthError::invalid_request("The body could not be read."))?;
        if body.len() + chunk.len() > TOKEN_BODY_MAX_BYTES {
            return Err(OAuthError::invalid_request(
                "The body is larger than 8 KiB.",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| OAuthError::invalid_request("The body is not UTF-8 form data."))?;
    let mut params = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name)?;
        let value = form_decode(value)?;
        if value.is_empty() {
            continue;
        }
        if params.insert(name.clone(), value).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "The parameter {name} is repeated."
            )));
        }
    }
    Ok(params)
}

/// One `application/x-www-form-urlencoded` component: `+` is a space, `%XX` a byte; a broken
/// escape or bytes that are not UTF-8 are a malformed request.
fn form_decode(text: &str) -> Result<String, OAuthError> {
    let malformed = || OAuthError::invalid_request("The body is not valid form data.");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(malformed)?;
                let hex = std::str::from_utf8(hex).map_err(|_| malformed())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| malformed())?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| malformed())
}

/// The client id and secret, from HTTP Basic or from the form (not both).
fn client_credentials(
    req: &HttpRequest,
    params: &HashMap<String, String>,
) -> Result<(String, String), OAuthError> {
    let form_id = params.get("client_id");
    let form_secret = params.get("client_secret");
    let basic = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(parse_basic(value)?),
    };
    match basic {
        Some((id, secret)) => {
            // A client_id beside Basic is tolerated when it names the same client; a secret
            // in the form as well is a second way of authenticating.
            if form_secret.is_some() || form_id.is_some_and(|form| *form != id) {
                return Err(OAuthError::invalid_request(
                    "Authenticate the client one way: HTTP Basic or the form's client_id and client_secret, not both.",
                ));
            }
            Ok((id, secret))
        }
        None => match (form_id, form_secret) {
            (Some(id), Some(secret)) => Ok((id.clone(), secret.clone())),
            (None, Some(_)) => Err(OAuthError::invalid_request(
                "client_secret was sent without client_id.",
            )),
            _ => Err(OAuthError::invalid_client(
                "Authenticate the client with HTTP Basic or with client_id and client_secret.",
            )),
        },
    }
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(value: &HeaderValue) -> Result<(String, String), OAuthError> {
    let unsupported = || {
        OAuthError::invalid_client(
            "Use Authorization: Basic with the form-urlencoded client_id and client_secret.",
        )
    };
    let value = value.to_str().map_err(|_| unsupported())?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or_else(unsupported)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(unsupported());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| unsupported())?;
    let decoded = String::from_utf8(decoded).map_err(|_| unsupported())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(unsupported)?;
    let id = form_decode(id).map_err(|_| unsupported())?;
    let secret = form_decode(secret).map_err(|_| unsupported())?;
    if id.is_empty() || secret.is_empty() {
        return Err(unsupported());
    }
    Ok((id, secret))
}

/// The registered, unrevoked client whose secret this is. Failures count against the client
/// id and the address; past their limits, 429 before any check.
async fn authenticate_client(
    req: &HttpRequest,
    state: &AppState,
    client_id: &str,
    secret: &str,
) -> Result<OauthClient, OAuthError> {
    let limits = &state.limits;
    let address = req.peer_addr().map(|a| a.ip().to_string());
    let limit_key: String = client_id.chars().take(LIMIT_KEY_MAX_CHARS).collect();
    if let Some(address) = &address {
        limits
            .oauth_failures_per_address
            .ensure_below(address)
            .await?;
    }
    limits
        .oauth_failures_per_client
        .ensure_below(&limit_key)
        .await?;
    let client = state.store.oauth_client(client_id).await?;
    let presented = secret_hash(secret);
    let expected = client
        .as_ref()
        .map_or(DUMMY_SECRET_HASH, |c| c.secret_hash.as_str());
    let secret_matches: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
    match client {
        Some(client) if secret_matches && client.revoked_at.is_none() => Ok(client),
        _ => {
            if let Some(address) = &address {
                limits.oauth_failures_per_address.record(address).await;
            }
            limits.oauth_failures_per_client.record(&limit_key).await;
            metrics::counter!("oauth_client_authentication_failures_total").increment(1);
            tracing::info!(client_id = %limit_key, "oauth client authentication failed");
            Err(OAuthError::invalid_client(
                "The client is unknown or revoked, or the secret is wrong.",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_components_decode_plus_and_percent_and_refuse_broken_escapes() {
        assert_eq!(form_decode("a+b%2Bc%3A").unwrap(), "a b+c:");
        assert!(form_decode("%2").is_err());
        assert!(form_decode("%zz").is_err());
        assert!(form_decode("%ff").is_err(), "not UTF-8");
    }

    #[test]
    fn basic_credentials_are_form_decoded_and_other_schemes_are_refused() {
        let header = |raw: &str| HeaderValue::from_str(raw).unwrap();
        let encoded = STANDARD.encode("mkc_1%3Ax:s%2Bp+q");
        let (id, secret) = parse_basic(&header(&format!("Basic {encoded}"))).unwrap();
        assert_eq!((id.as_str(), secret.as_str()), ("mkc_1:x", "s+p q"));
        for refused in [
            "Bearer abc",
            "Basic !!!",
            "Basic",
            &format!("Basic {}", STANDARD.encode("nocolon")),
        ] {
            let error = parse_basic(&header(refused)).unwrap_err();
            assert_eq!(error.error, "invalid_client", "{refused}");
        }
    }
}
