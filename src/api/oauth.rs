//! OAuth2 for integrations: registering clients (admins), the token endpoint of the client
//! credentials grant (RFC 6749 §4.4, errors as §5.2), the public keys that verify its tokens
//! (JWKS), signing-key rotation, and the server's metadata (RFC 8414).

use std::borrow::Cow;
use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth::AuthUser;
use super::auth::signing::{Jwks, issuer_of};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::ApiJson;
use super::state::AppState;
use crate::domain::{MerchantId, Role, Scope, Scopes, UserId};
use crate::store::{ClientAccount, NewAuditEntry, NewOauthClient, OauthClient};

/// Client ids start so (a short public id: 80 random bits, hex).
pub const CLIENT_ID_PREFIX: &str = "mkc_";
/// Client secrets start so; secret scanners match it.
pub const CLIENT_SECRET_PREFIX: &str = "mkcs_";
/// Random bytes in a client id.
const CLIENT_ID_BYTES: usize = 10;
/// Random bytes in a client secret: 256 bits, so a plain SHA-256 is a safe way to keep it.
const CLIENT_SECRET_BYTES: usize = 32;
/// Longest client name accepted.
const CLIENT_NAME_MAX_CHARS: usize = 100;
/// Largest token request body: a handful of short parameters fit many times over.
const TOKEN_BODY_MAX_BYTES: usize = 8 * 1024;
/// Longest client id counted by the failure limit (longer ones are cut: no id is that long).
const LIMIT_KEY_MAX_CHARS: usize = 64;
/// How long the metadata may be cached: it changes only with a deployment.
const METADATA_MAX_AGE_SECS: u64 = 300;
/// The realm of `WWW-Authenticate: Basic` on `invalid_client`.
const BASIC_CHALLENGE: &str = "Basic realm=\"mealkitz\"";
/// Compared against when the client is unknown, so both failures cost the same.
const DUMMY_SECRET_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The SHA-256 of a client secret, lowercase hex (what the store keeps).
pub fn secret_hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

// ---- Admin routes: clients and signing keys ----

/// `POST /api/v1/oauth-clients`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClientRequest {
    /// Who the client is (shown to admins; the name of its service account).
    pub name: String,
    /// The scopes it may ask for (at least one, each allowed for the account it acts for).
    pub scopes: Vec<String>,
    /// Limit its tokens to this merchant, acting for the merchant's owner; without it the
    /// client gets a service account of its own (a customer).
    #[serde(default)]
    #[schema(value_type = Option<uuid::Uuid>)]
    pub merchant_id: Option<MerchantId>,
}

/// A client as admins see it: never with its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientView {
    pub client_id: String,
    pub name: String,
    #[schema(value_type = Vec<String>)]
    pub scopes: Scopes,
    #[schema(value_type = Option<uuid::Uuid>)]
    pub merchant_id: Option<MerchantId>,
    /// The account its tokens act for (their `sub`).
    #[schema(value_type = uuid::Uuid)]
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    /// Set once revoked: its tokens no longer work.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<OauthClient> for ClientView {
    fn from(client: OauthClient) -> Self {
        ClientView {
            client_id: client.client_id,
            name: client.name,
            scopes: client.scopes,
            merchant_id: client.merchant_id,
            user_id: client.user_id,
            created_at: client.created_at,
            revoked_at: client.revoked_at,
        }
    }
}

/// A client just registered, with its secret (shown only here).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedClient {
    pub client_id: String,
    /// Keep it: it is not shown again (only its SHA-256 is stored).
    pub client_secret: String,
    pub name: String,
    #[schema(value_type = Vec<String>)]
    pub scopes: Scopes,
    #[schema(value_type = Option<uuid::Uuid>)]
    pub merchant_id: Option<MerchantId>,
    #[schema(value_type = uuid::Uuid)]
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientList {
    /// Oldest first, revoked ones too.
    pub clients: Vec<ClientView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotatedKey {
    /// The kid of the key that signs from now on.
    pub kid: String,
}

fn require_admin(caller: &AuthUser) -> Result<(), ApiError> {
    caller.require(&[Role::Admin])?;
    caller.require_scope(Scope::Admin)
}

fn invalid_scope(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidScope).with_message(format!("scopes: {message}"))
}

/// Registers an OAuth client. The answer carries its secret, shown only here.
#[utoipa::path(
    post, path = "/api/v1/oauth-clients", tag = "oauth", request_body = CreateClientRequest,
    security(("bearer" = ["admin"])),
    responses(
        (status = 201, description = "Registered; keep the `client_secret`, it is not shown again", body = CreatedClient),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin, or the credential lacks the `admin` scope", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "invalid_scope (empty, unknown, or not for the account the client acts for) or invalid_field (`name`, an unknown `merchant_id`)", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn create_client(
    state: web::Data<AppState>,
    caller: AuthUser,
    ApiJson(request): ApiJson<CreateClientRequest>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > CLIENT_NAME_MAX_CHARS {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1 to {CLIENT_NAME_MAX_CHARS} characters"),
        ));
    }
    if request.scopes.is_empty() {
        return Err(invalid_scope("give at least one scope"));
    }
    let scopes = Scopes::parse(request.scopes.iter().map(String::as_str)).map_err(invalid_scope)?;
    let client_id = format!(
        "{CLIENT_ID_PREFIX}{}",
        random_bytes::<CLIENT_ID_BYTES>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let (account, role) = match request.merchant_id {
        Some(merchant_id) => {
            let merchant = state
                .store
                .merchant(merchant_id)
                .await?
                .ok_or_else(|| ApiError::invalid_field("merchant_id", "no such merchant"))?;
            let owner = state
                .store
                .user_by_id(merchant.owner_id)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid_field("merchant_id", "the merchant has no owner")
                })?;
            (ClientAccount::Existing(owner.id), owner.role)
        }
        None => (
            ClientAccount::Service {
                id: UserId::new(),
                email: format!("client+{client_id}@clients.mealkitz.invalid"),
            },
            Role::Customer,
        ),
    };
    scopes.check_role(role).map_err(invalid_scope)?;
    let secret = format!(
        "{CLIENT_SECRET_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<CLIENT_SECRET_BYTES>())
    );
    let hash = secret_hash(&secret);
    let client = state
        .store
        .create_oauth_client(&NewOauthClient {
            client_id: &client_id,
            name,
            secret_hash: &hash,
            scopes,
            account,
            merchant_id: request.merchant_id,
            created_by: caller.id,
        })
        .await?;
    state
        .store
        .audit(NewAuditEntry {
            actor: Some(caller.id),
            via: &caller.grant.via.label(),
            action: "oauth_client.created",
            target: Some(&client.client_id),
            detail: serde_json::json!({
                "name": client.name,
                "scopes": client.scopes.names(),
                "merchant_id": client.merchant_id,
            }),
        })
        .await?;
    tracing::info!(client_id = %client.client_id, "oauth client registered");
    Ok(HttpResponse::Created().json(CreatedClient {
        client_id: client.client_id,
        client_secret: secret,
        name: client.name,
        scopes: client.scopes,
        merchant_id: client.merchant_id,
        user_id: client.user_id,
        created_at: client.created_at,
    }))
}

/// Every OAuth client, without secrets.
#[utoipa::path(
    get, path = "/api/v1/oauth-clients", tag = "oauth", security(("bearer" = ["admin"])),
    responses(
        (status = 200, body = ClientList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn list_clients(
    state: web::Data<AppState>,
    caller: AuthUser,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let clients = state.store.oauth_clients().await?;
    Ok(HttpResponse::Ok().json(ClientList {
        clients: clients.into_iter().map(ClientView::from).collect(),
    }))
}

/// Revokes a client: token requests fail with `invalid_client`, and tokens already issued get
/// 401 on every replica within a second.
#[utoipa::path(
    delete, path = "/api/v1/oauth-clients/{client_id}", tag = "oauth",
    params(("client_id" = String, Path)), security(("bearer" = ["admin"])),
    responses(
        (status = 204, description = "Revoked (revoking again changes nothing)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "oauth_client_not_found", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn revoke_client(
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let client_id = path.into_inner();
    let at = crate::store::now();
    let client = state
        .store
        .revoke_oauth_client(&client_id, at)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::OauthClientNotFound))?;
    state.auth.signing.forget_client(&client_id);
    if client.revoked_at == Some(at) {
        state
            .store
            .audit(NewAuditEntry {
                actor: Some(caller.id),
                via: &caller.grant.via.label(),
                action: "oauth_client.revoked",
                target: Some(&client_id),
                detail: serde_json::json!({ "name": client.name }),
            })
            .await?;
        tracing::info!(client_id = %client_id, "oauth client revoked");
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Makes a new key sign integration tokens; the previous one verifies until its last token
/// has expired, then leaves the JWKS.
#[utoipa::path(
    post, path = "/api/v1/signing-keys/rotate", tag = "oauth", security(("bearer" = ["admin"])),
    responses(
        (status = 201, description = "The key that signs from now on", body = RotatedKey),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "conflict: the keys come from MEALKITZ_SIGNING_KEYS_FILE and are not rotated here", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn rotate_signing_key(
    state: web::Data<AppState>,
    caller: AuthUser,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let signing = &state.auth.signing;
    if signing.from_file() {
        return Err(ApiError::new(ErrorCode::Conflict).with_message(
            "The signing keys come from MEALKITZ_SIGNING_KEYS_FILE: rotate them by changing the file.",
        ));
    }
    let kid = match signing.rotate(&state.store).await? {
        Some(kid) => {
            state
                .store
                .audit(NewAuditEntry {
                    actor: Some(caller.id),
                    via: &caller.grant.via.label(),
                    action: "signing_key.rotated",
                    target: Some(&kid),
                    detail: serde_json::json!({ "reason": "admin" }),
                })
                .await?;
            tracing::info!(kid = %kid, "signing key rotated by an admin");
            kid
        }
        // Another replica rotated at the same moment: its new key is the answer.
        None => signing
            .signing_kid()
            .ok_or_else(|| ApiError::new(ErrorCode::StoreUnavailable))?,
    };
    Ok(HttpResponse::Created().json(RotatedKey { kid }))
}

// ---- Public: keys and metadata ----

/// The public keys that verify integration access tokens (every key that still verifies).
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "oauth",
    responses((status = 200, body = Jwks), (status = 503, body = ErrorBody))
)]
pub async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let keys = state.auth.signing.jwks()?;
    let max_age = state.auth.signing.reload_interval().as_secs();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, format!("public, max-age={max_age}")))
        .json(keys))
}

/// RFC 8414 authorization server metadata.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerMetadata {
    pub issuer: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub grant_types_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub scopes_supported: Vec<&'static str>,
    pub response_types_supported: Vec<&'static str>,
    pub service_documentation: String,
}

/// What this authorization server supports (RFC 8414).
#[utoipa::path(
    get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses((status = 200, body = ServerMetadata))
)]
pub async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    let issuer = issuer_of(&state.notify.public_url);
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={METADATA_MAX_AGE_SECS}"),
        ))
        .json(ServerMetadata {
            token_endpoint: format!("{issuer}/oauth/token"),
            jwks_uri: format!("{issuer}/.well-known/jwks.json"),
            grant_types_supported: vec!["client_credentials"],
            token_endpoint_auth_methods_supported: vec![
                "client_secret_basic",
                "client_secret_post",
            ],
            scopes_supported: Scope::ALL.iter().map(|s| s.as_str()).collect(),
            // RFC 8414 §2 requires the member. There is no authorization endpoint (the one
            // grant is client credentials, which uses none), so no `response_type` is
            // supported: the honest value is the empty list.
            response_types_supported: vec![],
            service_documentation: format!("{issuer}/docs/"),
            issuer,
        })
}

// ---- The token endpoint ----

/// The form of `POST /oauth/token` (`application/x-www-form-urlencoded`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
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
    post, path = "/oauth/token", tag = "oauth",
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

    #[test]
    fn a_secret_hash_is_the_hex_sha256() {
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
