//! `GET /api/v1/audit`: the audit log, newest first, a page at a time — admins only.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::auth::{Scoped, need};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::state::AppState;
use crate::domain::Role;
use crate::store::AuditEntry;

/// Entries per page when none is asked for, and the most allowed.
pub const AUDIT_PAGE_DEFAULT_LIMIT: u32 = 50;
pub const AUDIT_PAGE_MAX_LIMIT: u32 = 200;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Entries per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// `next_before` of the previous page: entries older than it.
    pub before: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page; null on the last page.
    pub next_before: Option<i64>,
}

/// The audit log: API keys made and revoked, every use of an admin-scoped key, OAuth clients
/// registered and revoked, signing keys rotated.
#[utoipa::path(
    get, path = "/api/v1/audit", tag = "integrations",
    params(AuditQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin, or insufficient_scope", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Scoped<need::Admin>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let limit = query.limit.unwrap_or(AUDIT_PAGE_DEFAULT_LIMIT);
    if !(1..=AUDIT_PAGE_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(ErrorCode::InvalidQuery)
            .with_message(format!("limit: must be 1 to {AUDIT_PAGE_MAX_LIMIT}")));
    }
    let mut entries = state.store.audit_page(query.before, limit + 1).await?;
    let next_before = if entries.len() > limit as usize {
        entries.truncate(limit as usize);
        entries.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(AuditPage {
        entries,
        next_before,
    }))
}
