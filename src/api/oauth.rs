//! OAuth2 for integrations: registering clients (admins), the token endpoint of the client
//! credentials grant (RFC 6749 §4.4, errors as §5.2), the public keys that verify its tokens
//! (JWKS), signing-key rotation, and the server's metadata (RFC 8414).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::auth::signing::{Jwks, issuer_of};
use super::auth::{AuthUser, Scoped, need};
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
/// How long the metadata may be cached: it changes only with a deployment.
const METADATA_MAX_AGE_SECS: u64 = 300;

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

pub mod token;

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

/// Admins only: the `admin` scope is checked by [`Scoped`] before the body is read; the role
/// here (a person's own session carries every scope).
fn require_admin(caller: &AuthUser) -> Result<(), ApiError> {
    caller.require(&[Role::Admin])
}

fn invalid_scope(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidScope).with_message(format!("scopes: {message}"))
}

/// Registers an OAuth client. The answer carries its secret, shown only here.
#[utoipa::path(
    post, path = "/api/v1/oauth-clients", tag = "integrations", request_body = CreateClientRequest,
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
    caller: Scoped<need::Admin>,
    body: Result<ApiJson<CreateClientRequest>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    // The body is read only once the credential, its scope and the role passed.
    let ApiJson(request) = body?;
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
    get, path = "/api/v1/oauth-clients", tag = "integrations", security(("bearer" = ["admin"])),
    responses(
        (status = 200, body = ClientList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn list_clients(
    state: web::Data<AppState>,
    caller: Scoped<need::Admin>,
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
    delete, path = "/api/v1/oauth-clients/{client_id}", tag = "integrations",
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
    caller: Scoped<need::Admin>,
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
    post, path = "/api/v1/signing-keys/rotate", tag = "integrations", security(("bearer" = ["admin"])),
    responses(
        (status = 201, description = "The key that signs from now on", body = RotatedKey),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "conflict: the keys come from MEALKITZ_SIGNING_KEYS_FILE and are not rotated here", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn rotate_signing_key(
    state: web::Data<AppState>,
    caller: Scoped<need::Admin>,
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
    get, path = "/.well-known/jwks.json", tag = "integrations",
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
    get, path = "/.well-known/oauth-authorization-server", tag = "integrations",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_hash_is_the_hex_sha256() {
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
