//! The audit log: who did what with credentials — keys created and revoked, every use of an
//! admin-scoped key, OAuth clients registered and removed, signing keys rotated. Append-only,
//! read newest first a page at a time.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError, on_pool, on_writer};
use crate::domain::UserId;

/// One entry to append.
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    /// The user whose credential acted (none for the system itself, e.g. a scheduled rotation).
    pub actor: Option<UserId>,
    /// How they acted: `session`, `api_key:<id>`, `client:<id>`, `system`.
    pub via: &'a str,
    /// What happened: `api_key.created`, `api_key.revoked`, `api_key.used`, …
    pub action: &'a str,
    /// What it happened to (a key id, a client id, a kid, a request line).
    pub target: Option<&'a str>,
    /// More, as a JSON object (never a secret).
    pub detail: serde_json::Value,
}

/// An entry as stored.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Increases with every entry: the cursor for the next page.
    pub seq: i64,
    pub at: DateTime<Utc>,
    #[schema(value_type = Option<uuid::Uuid>)]
    pub actor_id: Option<Uuid>,
    pub via: String,
    pub action: String,
    pub target: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    at: DateTime<Utc>,
    actor_id: Option<Uuid>,
    via: String,
    action: String,
    target: Option<String>,
    detail: String,
}

impl Store {
    /// Appends an entry.
    pub async fn audit(&self, entry: NewAuditEntry<'_>) -> Result<(), StoreError> {
        let detail = entry.detail.to_string();
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO audit_log (at, actor_id, via, action, target, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(super::now())
            .bind(entry.actor.map(|u| u.as_uuid()))
            .bind(entry.via)
            .bind(entry.action)
            .bind(entry.target)
            .bind(detail)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Up to `limit` entries older than `before` (a `seq`; none: the newest), newest first.
    pub async fn audit_page(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT seq, at, actor_id, via, action, target, detail FROM audit_log \
                 WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
            )
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| AuditEntry {
                seq: row.seq,
                at: row.at,
                actor_id: row.actor_id,
                via: row.via,
                action: row.action,
                target: row.target,
                detail: serde_json::from_str(&row.detail).unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }
}
