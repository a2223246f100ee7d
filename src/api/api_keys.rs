//! API key management over REST: `POST /api/v1/api-keys` (the key shown once),
//! `GET /api/v1/api-keys` (never a secret), `DELETE /api/v1/api-keys/{id}` (revoked at once
//! here, within a second on every replica). Every key made or revoked goes to the audit log.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::keys::make_key;
use super::auth::{Scoped, need};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::ApiJson;
use super::state::AppState;
use crate::domain::{MerchantId, Role, Scopes};
use crate::store::{ApiKey, NewApiKey, NewAuditEntry};

/// Longest key name, in characters.
pub const KEY_NAME_MAX_CHARS: usize = 100;

/// `POST /api/v1/api-keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// What the key is for (`POS`), 1 to 100 characters.
    pub name: String,
    /// What it may do, e.g. `["orders:read","orders:write","menu:write","webhooks:manage"]`.
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<String>,
    /// Only this merchant's resources (one the caller owns).
    #[serde(default)]
    #[schema(value_type = Option<Uuid>)]
    pub merchant_id: Option<MerchantId>,
    /// When it stops working; null: never.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// `live` (default) or `test`: a sandbox key, `mk_test_…`.
    #[serde(default)]
    pub mode: Option<String>,
}

/// A key as listed: never its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    /// The key's first characters, to recognise it (`mk_live_AbC1`).
    pub prefix: String,
    /// `live` or `test`.
    pub mode: &'static str,
    #[schema(value_type = Vec<String>)]
    pub scopes: Scopes,
    #[schema(value_type = Option<Uuid>)]
    pub merchant_id: Option<MerchantId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// To the minute.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(key: &ApiKey) -> Self {
        ApiKeyView {
            id: key.id,
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            mode: if key.test { "test" } else { "live" },
            scopes: key.scopes,
            merchant_id: key.merchant_id,
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            last_used_at: key.last_used_at,
        }
    }
}

/// The answer to `POST /api/v1/api-keys`: the key itself, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    /// The secret: send it as `Authorization: Bearer mk_live_…`. Not shown again.
    pub key: String,
    #[serde(flatten)]
    pub view: ApiKeyView,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyList {
    /// Newest first, revoked ones too.
    pub api_keys: Vec<ApiKeyView>,
}

fn invalid_scope(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidScope).with_message(message.into())
}

/// The scopes asked for: known, some, for the owner's role, and none the caller lacks.
fn requested_scopes(caller: &super::auth::AuthUser, names: &[String]) -> Result<Scopes, ApiError> {
    let scopes = Scopes::parse(names.iter().map(String::as_str))
        .map_err(|e| invalid_scope(format!("scopes: {e}")))?;
    if scopes.is_empty() {
        return Err(invalid_scope("scopes: give at least one scope"));
    }
    scopes
        .check_role(caller.role)
        .map_err(|e| invalid_scope(format!("scopes: {e}")))?;
    if let Some(missing) = scopes.iter().find(|s| !caller.grant.scopes.contains(*s)) {
        return Err(ApiError::insufficient_scope(missing).with_message(format!(
            "A key can only be given scopes its maker holds; this credential lacks `{missing}`."
        )));
    }
    Ok(scopes)
}

/// Makes an API key acting for the caller, shown once.
#[utoipa::path(
    post, path = "/api/v1/api-keys", tag = "integrations",
    request_body = CreateApiKeyRequest,
    security(("bearer" = ["keys:manage"])),
    responses(
        (status = 201, body = CreatedApiKey),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "insufficient_scope, or merchant_not_in_grant", body = ErrorBody),
        (status = 404, description = "No such merchant, or not the caller's", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "invalid_scope or invalid_field", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Scoped<need::KeysManage>,
    body: Result<ApiJson<CreateApiKeyRequest>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    // The body is read only once the credential and its scope passed.
    let ApiJson(request) = body?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > KEY_NAME_MAX_CHARS {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1 to {KEY_NAME_MAX_CHARS} characters"),
        ));
    }
    let scopes = requested_scopes(&caller, &request.scopes)?;
    let test = match request.mode.as_deref() {
        None | Some("live") => false,
        Some("test") => true,
        Some(_) => return Err(ApiError::invalid_field("mode", "must be live or test")),
    };
    let now = Utc::now();
    if request.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::invalid_field(
            "expires_at",
            "must be in the future",
        ));
    }
    // A credential limited to a merchant makes keys limited to it too.
    let merchant_id = match (caller.grant.merchant, request.merchant_id) {
        (Some(only), None) => Some(only),
        (_, wanted) => wanted,
    };
    if let Some(merchant_id) = merchant_id {
        caller.require_merchant(merchant_id)?;
        let merchant = state.store.merchant(merchant_id).await?;
        let owned = merchant.is_some_and(|m| m.owner_id == caller.id || caller.role == Role::Admin);
        if !owned {
            return Err(ApiError::new(ErrorCode::NotFound).with_message("No such merchant."));
        }
    }
    let made = make_key(test);
    let new = NewApiKey {
        id: Uuid::now_v7(),
        owner_id: caller.id,
        name,
        test,
        lookup: &made.lookup,
        prefix: &made.prefix,
        key_hash: &made.hash,
        scopes,
        merchant_id,
        created_at: now,
        expires_at: request.expires_at,
    };
    state.store.create_api_key(&new).await?;
    state
        .store
        .audit(NewAuditEntry {
            actor: Some(caller.id),
            via: &caller.grant.via.label(),
            action: "api_key.created",
            target: Some(&new.id.to_string()),
            detail: serde_json::json!({
                "name": name,
                "prefix": made.prefix,
                "scopes": scopes,
                "merchant_id": merchant_id,
                "expires_at": request.expires_at,
            }),
        })
        .await?;
    tracing::info!(key_id = %new.id, owner_id = %caller.id, "API key created");
    let view = ApiKeyView {
        id: new.id,
        name: name.to_owned(),
        prefix: made.prefix.clone(),
        mode: if test { "test" } else { "live" },
        scopes,
        merchant_id,
        created_at: now,
        expires_at: request.expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    Ok(HttpResponse::Created().json(CreatedApiKey {
        key: made.key,
        view,
    }))
}

/// The caller's keys, without their secrets.
#[utoipa::path(
    get, path = "/api/v1/api-keys", tag = "integrations",
    security(("bearer" = ["keys:manage"])),
    responses((status = 200, body = ApiKeyList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Scoped<need::KeysManage>,
) -> Result<HttpResponse, ApiError> {
    let keys = state.store.api_keys_of(caller.id).await?;
    let api_keys = keys
        .iter()
        .filter(|k| caller.grant.merchant.is_none() || k.merchant_id == caller.grant.merchant)
        .map(ApiKeyView::from)
        .collect();
    Ok(HttpResponse::Ok().json(ApiKeyList { api_keys }))
}

/// Revokes a key: it fails at once here and within a second on every replica. The caller's own
/// keys; an admin's, anyone's.
#[utoipa::path(
    delete, path = "/api/v1/api-keys/{key_id}", tag = "integrations",
    params(("key_id" = Uuid, Path)),
    security(("bearer" = ["keys:manage"])),
    responses(
        (status = 204, description = "Revoked (or revoked before)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "api_key_not_found", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Scoped<need::KeysManage>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let key = state
        .store
        .api_key(id)
        .await?
        .filter(|k| k.owner_id == caller.id || caller.role == Role::Admin)
        .filter(|k| caller.grant.merchant.is_none() || k.merchant_id == caller.grant.merchant)
        .ok_or(ErrorCode::ApiKeyNotFound)?;
    let now = Utc::now();
    if state.store.revoke_api_key(key.id, now).await? {
        state
            .store
            .audit(NewAuditEntry {
                actor: Some(caller.id),
                via: &caller.grant.via.label(),
                action: "api_key.revoked",
                target: Some(&key.id.to_string()),
                detail: serde_json::json!({ "name": key.name, "prefix": key.prefix }),
            })
            .await?;
        tracing::info!(key_id = %key.id, by = %caller.id, "API key revoked");
    }
    state.auth.keys.forget(&key.lookup);
    Ok(HttpResponse::NoContent().finish())
}
