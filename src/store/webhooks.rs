//! Merchants' webhook endpoints: registered, listed, removed, their secrets rotated with a grace
//! period, disabled (gone, or failing for days) and their failing streak tracked; and each
//! endpoint's deliveries with their attempts, replayable one by one.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Pool, Store, StoreError, on_pool, on_writer};
use crate::domain::{MerchantId, NotifyEvent, OrderId};

/// A merchant's webhook endpoint. The secrets are here because the notifier signs with them;
/// never render them, except the new one once when made.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    pub merchant_id: MerchantId,
    pub url: String,
    pub events: Vec<NotifyEvent>,
    /// `whsec_…`.
    pub secret: String,
    /// The secret before the last rotation, signing beside the new one until
    /// `previous_secret_until`.
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// When it started failing (the first failed attempt after a success), if it is failing.
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl WebhookEndpoint {
    /// The secrets that sign a delivery at `now`: the current one, and the previous one during
    /// its grace period.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_secret_until)
            && now < until
        {
            secrets.push(previous);
        }
        secrets
    }
}

/// What it takes to register an endpoint.
#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub merchant_id: MerchantId,
    pub url: String,
    pub events: Vec<NotifyEvent>,
    pub secret: String,
}

/// One message to an endpoint, with its attempts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The delivery's id (for a replay).
    pub id: Uuid,
    /// `webhook-id`: the same on every attempt.
    pub message_id: String,
    #[schema(value_type = String, example = "order.accepted")]
    pub event: NotifyEvent,
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    /// `pending`, `sent`, `failed` or `cancelled`.
    pub state: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub attempts: Vec<DeliveryAttempt>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    pub at: DateTime<Utc>,
    /// `sent`, `failed`, `refused`, `timeout`, …
    pub outcome: String,
    /// The HTTP status the endpoint answered with, when it answered.
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: Uuid,
    merchant_id: Uuid,
    url: String,
    events: Json<Vec<NotifyEvent>>,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_until: Option<DateTime<Utc>>,
    failing_since: Option<DateTime<Utc>>,
    disabled_at: Option<DateTime<Utc>>,
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<EndpointRow> for WebhookEndpoint {
    fn from(row: EndpointRow) -> Self {
        WebhookEndpoint {
            id: row.id,
            merchant_id: MerchantId(row.merchant_id),
            url: row.url,
            events: row.events.0,
            secret: row.secret,
            previous_secret: row.previous_secret,
            previous_secret_until: row.previous_secret_until,
            failing_since: row.failing_since,
            disabled_at: row.disabled_at,
            disabled_reason: row.disabled_reason,
            created_at: row.created_at,
        }
    }
}

const ENDPOINT_COLUMNS: &str = "id, merchant_id, url, events, secret, previous_secret, \
    previous_secret_until, failing_since, disabled_at, disabled_reason, created_at";

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    outbox_id: Uuid,
    event: String,
    order_id: Uuid,
    state: String,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    notification_id: Uuid,
    at: DateTime<Utc>,
    outcome: String,
    status_code: Option<i32>,
    latency_ms: i64,
    error: Option<String>,
}

impl Store {
    /// Registers an endpoint.
    pub async fn create_webhook_endpoint(
        &self,
        new: NewWebhookEndpoint,
    ) -> Result<WebhookEndpoint, StoreError> {
        let endpoint = WebhookEndpoint {
            id: Uuid::now_v7(),
            merchant_id: new.merchant_id,
            url: new.url,
            events: new.events,
            secret: new.secret,
            previous_secret: None,
            previous_secret_until: None,
            failing_since: None,
            disabled_at: None,
            disabled_reason: None,
            created_at: super::now(),
        };
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, merchant_id, url, events, secret, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(endpoint.id)
            .bind(endpoint.merchant_id.as_uuid())
            .bind(&endpoint.url)
            .bind(Json(&endpoint.events))
            .bind(&endpoint.secret)
            .bind(endpoint.created_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(endpoint)
    }

    /// A merchant's endpoints, oldest first.
    pub async fn webhook_endpoints(
        &self,
        merchant: MerchantId,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let rows: Vec<EndpointRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE merchant_id = $1 \
                 ORDER BY created_at, id"
            )))
            .bind(merchant.as_uuid())
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(WebhookEndpoint::from).collect())
    }

    /// Which of `orders` are from a merchant with an enabled endpoint: the only ones whose
    /// outbox entries can make a webhook (one query for a whole round of the notifier).
    pub async fn orders_with_webhook_endpoints(
        &self,
        orders: &[OrderId],
    ) -> Result<HashSet<OrderId>, StoreError> {
        if orders.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<Uuid> = orders.iter().map(|order| order.as_uuid()).collect();
        // The orders are looked up by id and each one's merchant's endpoints by merchant: a
        // scalar subquery, because an `EXISTS` is planned as a join that PostgreSQL may drive
        // from the endpoints — reading every order ever placed at each merchant that has one.
        const WITH_ENDPOINTS: &str = "SELECT o.id FROM orders o WHERE (SELECT COUNT(*) \
            FROM webhook_endpoints e WHERE e.merchant_id = o.merchant_id \
            AND e.disabled_at IS NULL) > 0";
        // PostgreSQL takes the ids as one array: one prepared statement whatever their number.
        if let Pool::Postgres(pool) = self.pool()? {
            let rows: Vec<(Uuid,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{WITH_ENDPOINTS} AND o.id = ANY($1)"
            )))
            .bind(&ids)
            .fetch_all(pool)
            .await?;
            return Ok(rows.into_iter().map(|(id,)| OrderId(id)).collect());
        }
        let rows: Vec<(Uuid,)> = on_pool!(self, |pool| {
            let mut query = sqlx::QueryBuilder::new(WITH_ENDPOINTS);
            query.push(" AND o.id IN (");
            let mut binds = query.separated(", ");
            for id in &ids {
                binds.push_bind(*id);
            }
            query.push(")");
            query.build_query_as().fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|(id,)| OrderId(id)).collect())
    }

    /// One endpoint, if it exists.
    pub async fn webhook_endpoint(&self, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError> {
        let row: Option<EndpointRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(WebhookEndpoint::from))
    }

    /// Removes an endpoint and its deliveries. Returns whether it existed.
    pub async fn delete_webhook_endpoint(&self, id: Uuid) -> Result<bool, StoreError> {
        let removed = on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "DELETE FROM notification_attempts WHERE notification_id IN \
                 (SELECT id FROM notifications WHERE endpoint_id = $1)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM notifications WHERE endpoint_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let removed = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            removed
        });
        Ok(removed == 1)
    }

    /// Makes `secret` the endpoint's signing secret; the old one keeps signing beside it until
    /// `grace_until`. Returns the endpoint as it is now.
    pub async fn rotate_webhook_secret(
        &self,
        id: Uuid,
        secret: &str,
        grace_until: DateTime<Utc>,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let moved = on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE webhook_endpoints SET previous_secret = secret, \
                 previous_secret_until = $3, secret = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(secret)
            .bind(grace_until)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if moved == 0 {
            return Ok(None);
        }
        self.webhook_endpoint(id).await
    }

    /// Notes a delivered attempt: the endpoint is no longer failing.
    pub async fn webhook_endpoint_succeeded(&self, id: Uuid) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = NULL \
                 WHERE id = $1 AND failing_since IS NOT NULL",
            )
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Notes a failed attempt at `at`; returns since when the endpoint has been failing (`None`
    /// when it no longer exists).
    pub async fn webhook_endpoint_failed(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let since: Option<(Option<DateTime<Utc>>,)> = on_writer!(self, |pool| {
            sqlx::query_as(
                "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2) \
                 WHERE id = $1 RETURNING failing_since",
            )
            .bind(id)
            .bind(at)
            .fetch_optional(pool)
            .await?
        });
        Ok(since.and_then(|(since,)| since))
    }

    /// Disables an endpoint for `reason` and cancels what waits for it. Returns whether it was
    /// enabled until now.
    pub async fn disable_webhook_endpoint(
        &self,
        id: Uuid,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let now = super::now();
        let disabled = on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            let disabled = sqlx::query(
                "UPDATE webhook_endpoints SET disabled_at = $2, disabled_reason = $3 \
                 WHERE id = $1 AND disabled_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .bind(reason)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "UPDATE notifications SET state = 'cancelled', last_error = $2 \
                 WHERE endpoint_id = $1 AND state = 'pending' AND claimed_by IS NULL",
            )
            .bind(id)
            .bind(format!("endpoint disabled: {reason}"))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            disabled
        });
        Ok(disabled == 1)
    }

    /// An endpoint's deliveries, newest first, at most `limit`, each with its attempts.
    pub async fn webhook_deliveries(
        &self,
        endpoint: Uuid,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, outbox_id, event, order_id, state, next_attempt_at, last_error, \
                 created_at, sent_at FROM notifications WHERE endpoint_id = $1 \
                 ORDER BY created_at DESC, seq DESC LIMIT $2",
            )
            .bind(endpoint)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        let attempts: Vec<AttemptRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT a.notification_id, a.at, a.outcome, a.status_code, a.latency_ms, a.error \
                 FROM notification_attempts a JOIN notifications n ON n.id = a.notification_id \
                 WHERE n.endpoint_id = $1 AND n.id IN (SELECT id FROM notifications \
                 WHERE endpoint_id = $1 ORDER BY created_at DESC, seq DESC LIMIT $2) \
                 ORDER BY a.at",
            )
            .bind(endpoint)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|row| {
                let event = NotifyEvent::parse(&row.event).ok_or_else(|| {
                    StoreError::Corrupt(format!("notification event {}", row.event))
                })?;
                Ok(Delivery {
                    id: row.id,
                    message_id: crate::domain::notification::message_id(row.outbox_id),
                    event,
                    order_id: OrderId(row.order_id),
                    next_attempt_at: (row.state == "pending").then_some(row.next_attempt_at),
                    state: row.state,
                    last_error: row.last_error,
                    created_at: row.created_at,
                    sent_at: row.sent_at,
                    attempts: attempts
                        .iter()
                        .filter(|a| a.notification_id == row.id)
                        .map(|a| DeliveryAttempt {
                            at: a.at,
                            outcome: a.outcome.clone(),
                            status_code: a.status_code,
                            latency_ms: a.latency_ms,
                            error: a.error.clone(),
                        })
                        .collect(),
                })
            })
            .collect()
    }

    /// Sends one delivery of `endpoint` again, now, with a fresh schedule (whatever became of
    /// it). Returns whether there was such a delivery.
    pub async fn replay_webhook_delivery(
        &self,
        endpoint: Uuid,
        delivery: Uuid,
    ) -> Result<bool, StoreError> {
        let moved = on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE notifications SET state = 'pending', attempts = 0, next_attempt_at = $3, \
                 claimed_by = NULL, claimed_until = NULL WHERE id = $1 AND endpoint_id = $2",
            )
            .bind(delivery)
            .bind(endpoint)
            .bind(super::now())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(moved == 1)
    }
}
