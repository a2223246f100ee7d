//! Merchants' webhook endpoints over REST (`/api/v1/merchants/{merchant_id}/webhooks…`): register
//! one (its secret shown once), list, remove, rotate the secret, read its deliveries and replay
//! one — for the merchant's owner or an admin. Sending is the notifier's ([`crate::notify`]): a
//! replayed delivery waits for its next poll.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{AuthUser, Scoped, need};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::ApiJson;
use super::state::AppState;
use crate::domain::{MerchantId, NotifyEvent, Role};
use crate::notify::address::check_webhook_url;
use crate::notify::signing::new_secret;
use crate::store::{Delivery, Merchant, NewWebhookEndpoint, WebhookEndpoint};

/// Most endpoints one merchant may register.
pub const WEBHOOKS_PER_MERCHANT_MAX: usize = 10;
/// How long the secret before a rotation keeps signing beside the new one.
pub const SECRET_ROTATION_GRACE_HOURS: i64 = 24;
/// Deliveries listed when no `limit` is asked for, and the most allowed.
pub const DELIVERIES_DEFAULT_LIMIT: i64 = 50;
pub const DELIVERIES_MAX_LIMIT: i64 = 200;
/// Longest event name quoted back in an error, in characters.
const QUOTED_NAME_MAX_CHARS: usize = 64;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateWebhookRequest {
    /// An `https://` URL on the public internet.
    #[schema(example = "https://pos.example.com/mealkitz")]
    pub url: String,
    /// The events to receive (at least one): `order.placed`, `order.accepted`,
    /// `order.rejected`, `order.ready`, `order.driver_assigned`, `order.picked_up`,
    /// `order.delivered`, `order.cancelled`.
    #[schema(example = json!(["order.placed", "order.cancelled"]))]
    pub events: Vec<String>,
}

/// The newest delivery to an endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastDelivery {
    pub id: Uuid,
    #[schema(value_type = String, example = "order.accepted")]
    pub event: NotifyEvent,
    /// `pending`, `sent`, `failed` or `cancelled`.
    pub state: String,
    pub created_at: DateTime<Utc>,
    /// The HTTP status of its last attempt, when the endpoint answered.
    pub status_code: Option<i32>,
    pub last_error: Option<String>,
}

impl From<&Delivery> for LastDelivery {
    fn from(delivery: &Delivery) -> Self {
        LastDelivery {
            id: delivery.id,
            event: delivery.event,
            state: delivery.state.clone(),
            created_at: delivery.created_at,
            status_code: delivery.attempts.last().and_then(|a| a.status_code),
            last_error: delivery.last_error.clone(),
        }
    }
}

/// A webhook endpoint as the API shows it: never with its secrets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub merchant_id: MerchantId,
    pub url: String,
    #[schema(value_type = Vec<String>, example = json!(["order.placed", "order.cancelled"]))]
    pub events: Vec<NotifyEvent>,
    pub created_at: DateTime<Utc>,
    /// Since when deliveries fail (no success since); null while they succeed. An endpoint
    /// failing for 5 days is disabled.
    pub failing_since: Option<DateTime<Utc>>,
    /// When it was disabled (it answered 410 Gone, or failed for 5 days); a disabled endpoint
    /// gets nothing more: register it again.
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    /// Until when the secret before the last rotation still signs beside the current one.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// The newest delivery, if any (in lists only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<LastDelivery>,
}

impl WebhookView {
    fn of(endpoint: &WebhookEndpoint, now: DateTime<Utc>) -> WebhookView {
        WebhookView {
            id: endpoint.id,
            merchant_id: endpoint.merchant_id,
            url: endpoint.url.clone(),
            events: endpoint.events.clone(),
            created_at: endpoint.created_at,
            failing_since: endpoint.failing_since,
            disabled_at: endpoint.disabled_at,
            disabled_reason: endpoint.disabled_reason.clone(),
            previous_secret_expires_at: endpoint
                .previous_secret_until
                .filter(|until| *until > now && endpoint.previous_secret.is_some()),
            last_delivery: None,
        }
    }
}

/// An endpoint with its signing secret: the answer to registering it and to rotating the secret,
/// the only two times the secret is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_` and the base64 of the key: verify `webhook-signature` with it (Standard
    /// Webhooks). Shown only now; keep it.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub webhooks: Vec<WebhookView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    /// Newest first, each with its attempts.
    pub deliveries: Vec<Delivery>,
}

/// A replay accepted: the delivery is due now, for the notifier's next round.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RetryAccepted {
    pub id: Uuid,
    #[schema(example = "pending")]
    pub state: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DeliveriesQuery {
    /// Deliveries to list, 1 to 200 (default 50), newest first.
    pub limit: Option<i64>,
}

fn no_merchant() -> ApiError {
    ApiError::new(ErrorCode::NotFound).with_message("No such merchant.")
}

fn no_endpoint() -> ApiError {
    ApiError::new(ErrorCode::NotFound).with_message("No such webhook endpoint.")
}

/// The merchant `id`, whose webhooks the caller may manage: its owner, or an admin.
async fn managed_merchant(
    state: &AppState,
    caller: &AuthUser,
    id: MerchantId,
) -> Result<Merchant, ApiError> {
    let merchant = state.store.merchant(id).await?.ok_or_else(no_merchant)?;
    caller.require_merchant(id)?;
    if caller.role != Role::Admin && merchant.owner_id != caller.id {
        return Err(ApiError::new(ErrorCode::Forbidden)
            .with_message("Only the merchant's owner or an admin may manage its webhooks."));
    }
    Ok(merchant)
}

/// The endpoint `webhook_id` of the merchant `merchant_id`, which the caller may manage; an
/// endpoint of another merchant does not exist here.
async fn managed_endpoint(
    state: &AppState,
    caller: &AuthUser,
    merchant_id: MerchantId,
    webhook_id: Uuid,
) -> Result<WebhookEndpoint, ApiError> {
    managed_merchant(state, caller, merchant_id).await?;
    state
        .store
        .webhook_endpoint(webhook_id)
        .await?
        .filter(|endpoint| endpoint.merchant_id == merchant_id)
        .ok_or_else(no_endpoint)
}

/// The events named, each once, in the order first named; or why not.
fn parse_events(names: &[String]) -> Result<Vec<NotifyEvent>, ApiError> {
    let known = || {
        NotifyEvent::ALL
            .iter()
            .map(|event| event.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if names.is_empty() {
        return Err(ApiError::invalid_field(
            "events",
            format!("name at least one of: {}", known()),
        ));
    }
    let mut events = Vec::with_capacity(names.len());
    for name in names {
        let event = NotifyEvent::parse(name).ok_or_else(|| {
            let quoted: String = name.chars().take(QUOTED_NAME_MAX_CHARS).collect();
            ApiError::invalid_field(
                "events",
                format!("unknown event {quoted:?}; the events are: {}", known()),
            )
        })?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// Registers a webhook endpoint for the merchant. The answer carries the signing secret, shown
/// only here (and on rotation).
#[utoipa::path(
    post, path = "/api/v1/merchants/{merchant_id}/webhooks", tag = "webhooks",
    params(("merchant_id" = Uuid, Path)), request_body = CreateWebhookRequest, security(("bearer" = ["webhooks:manage"])),
    responses(
        (status = 201, description = "Registered; keep the `secret`, it is not shown again", body = WebhookWithSecret),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "Neither the merchant's owner nor an admin", body = ErrorBody),
        (status = 404, description = "No such merchant", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "webhook_url_refused (not https://, malformed, or a private, loopback or link-local address), or invalid_field (`events` empty or naming an unknown event, or the merchant already has 10 endpoints)", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Scoped<need::WebhooksManage>,
    path: web::Path<MerchantId>,
    body: Result<ApiJson<CreateWebhookRequest>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    // The body is read only once the credential and its scope passed.
    let ApiJson(request) = body?;
    let merchant = managed_merchant(&state, &caller, path.into_inner()).await?;
    let url =
        check_webhook_url(&request.url, state.notify.webhook_allow_private).map_err(|refusal| {
            ApiError::new(ErrorCode::WebhookUrlRefused).with_message(format!("url {refusal}"))
        })?;
    let events = parse_events(&request.events)?;
    if state.store.webhook_endpoints(merchant.id).await?.len() >= WEBHOOKS_PER_MERCHANT_MAX {
        return Err(
            ApiError::new(ErrorCode::InvalidField).with_message(format!(
                "A merchant may have at most {WEBHOOKS_PER_MERCHANT_MAX} webhook endpoints; delete one first."
            )),
        );
    }
    let endpoint = state
        .store
        .create_webhook_endpoint(NewWebhookEndpoint {
            merchant_id: merchant.id,
            url: url.to_string(),
            events,
            secret: new_secret(),
        })
        .await?;
    // The host only: a path or query may carry the merchant's own token.
    tracing::info!(
        merchant_id = %merchant.id,
        webhook_id = %endpoint.id,
        host = url.host_str().unwrap_or_default(),
        "webhook endpoint registered"
    );
    Ok(HttpResponse::Created().json(WebhookWithSecret {
        webhook: WebhookView::of(&endpoint, Utc::now()),
        secret: endpoint.secret,
    }))
}

/// The merchant's webhook endpoints, without secrets: which are failing or disabled, and each
/// one's newest delivery.
#[utoipa::path(
    get, path = "/api/v1/merchants/{merchant_id}/webhooks", tag = "webhooks",
    params(("merchant_id" = Uuid, Path)), security(("bearer" = ["webhooks:manage"])),
    responses(
        (status = 200, body = WebhookList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Scoped<need::WebhooksManage>,
    path: web::Path<MerchantId>,
) -> Result<HttpResponse, ApiError> {
    let merchant = managed_merchant(&state, &caller, path.into_inner()).await?;
    let now = Utc::now();
    let endpoints = state.store.webhook_endpoints(merchant.id).await?;
    let mut webhooks = Vec::with_capacity(endpoints.len());
    for endpoint in &endpoints {
        let mut view = WebhookView::of(endpoint, now);
        view.last_delivery = state
            .store
            .webhook_deliveries(endpoint.id, 1)
            .await?
            .first()
            .map(LastDelivery::from);
        webhooks.push(view);
    }
    Ok(HttpResponse::Ok().json(WebhookList { webhooks }))
}

/// Removes a webhook endpoint and its deliveries.
#[utoipa::path(
    delete, path = "/api/v1/merchants/{merchant_id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("merchant_id" = Uuid, Path), ("webhook_id" = Uuid, Path)), security(("bearer" = ["webhooks:manage"])),
    responses(
        (status = 204, description = "Removed"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "No such merchant, or no such endpoint of it", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Scoped<need::WebhooksManage>,
    path: web::Path<(MerchantId, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (merchant_id, webhook_id) = path.into_inner();
    let endpoint = managed_endpoint(&state, &caller, merchant_id, webhook_id).await?;
    if !state.store.delete_webhook_endpoint(endpoint.id).await? {
        return Err(no_endpoint());
    }
    tracing::info!(merchant_id = %merchant_id, webhook_id = %endpoint.id, "webhook endpoint removed");
    Ok(HttpResponse::NoContent().finish())
}

/// Gives the endpoint a new signing secret, shown only in this answer. The previous one keeps
/// signing beside it (both signatures in `webhook-signature`) for 24 hours, until
/// `previous_secret_expires_at`, so the receiver can switch without losing a delivery.
#[utoipa::path(
    post, path = "/api/v1/merchants/{merchant_id}/webhooks/{webhook_id}/rotate-secret", tag = "webhooks",
    params(("merchant_id" = Uuid, Path), ("webhook_id" = Uuid, Path)), security(("bearer" = ["webhooks:manage"])),
    responses(
        (status = 200, description = "The endpoint with its new `secret`", body = WebhookWithSecret),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    caller: Scoped<need::WebhooksManage>,
    path: web::Path<(MerchantId, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (merchant_id, webhook_id) = path.into_inner();
    let endpoint = managed_endpoint(&state, &caller, merchant_id, webhook_id).await?;
    let now = Utc::now();
    let grace_until = now + Duration::hours(SECRET_ROTATION_GRACE_HOURS);
    let rotated = state
        .store
        .rotate_webhook_secret(endpoint.id, &new_secret(), grace_until)
        .await?
        .ok_or_else(no_endpoint)?;
    tracing::info!(merchant_id = %merchant_id, webhook_id = %rotated.id, "webhook secret rotated");
    Ok(HttpResponse::Ok().json(WebhookWithSecret {
        webhook: WebhookView::of(&rotated, now),
        secret: rotated.secret,
    }))
}

/// The endpoint's deliveries, newest first, each with its attempts (outcome, response code,
/// latency).
#[utoipa::path(
    get, path = "/api/v1/merchants/{merchant_id}/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("merchant_id" = Uuid, Path), ("webhook_id" = Uuid, Path), DeliveriesQuery), security(("bearer" = ["webhooks:manage"])),
    responses(
        (status = 200, body = DeliveryList),
        (status = 400, description = "invalid_query: `limit` is not 1 to 200", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn deliveries(
    state: web::Data<AppState>,
    caller: Scoped<need::WebhooksManage>,
    path: web::Path<(MerchantId, Uuid)>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DELIVERIES_DEFAULT_LIMIT);
    if !(1..=DELIVERIES_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(ErrorCode::InvalidQuery)
            .with_message(format!("limit: must be 1 to {DELIVERIES_MAX_LIMIT}")));
    }
    let (merchant_id, webhook_id) = path.into_inner();
    let endpoint = managed_endpoint(&state, &caller, merchant_id, webhook_id).await?;
    let deliveries = state.store.webhook_deliveries(endpoint.id, limit).await?;
    Ok(HttpResponse::Ok().json(DeliveryList { deliveries }))
}

/// Sends one delivery again, with a fresh retry schedule, whatever became of it (the same
/// `webhook-id`, so a receiver that has it recognises a duplicate). Refused for a disabled
/// endpoint.
#[utoipa::path(
    post, path = "/api/v1/merchants/{merchant_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    params(("merchant_id" = Uuid, Path), ("webhook_id" = Uuid, Path), ("delivery_id" = Uuid, Path)),
    security(("bearer" = ["webhooks:manage"])),
    responses(
        (status = 202, description = "Due now; the notifier sends it on its next round", body = RetryAccepted),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such merchant, endpoint, or delivery of this endpoint", body = ErrorBody),
        (status = 409, description = "conflict: the endpoint is disabled", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn retry(
    state: web::Data<AppState>,
    caller: Scoped<need::WebhooksManage>,
    path: web::Path<(MerchantId, Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (merchant_id, webhook_id, delivery_id) = path.into_inner();
    let endpoint = managed_endpoint(&state, &caller, merchant_id, webhook_id).await?;
    if endpoint.disabled_at.is_some() {
        return Err(ApiError::new(ErrorCode::Conflict).with_message(format!(
            "The endpoint is disabled ({}); register it again to receive deliveries.",
            endpoint
                .disabled_reason
                .as_deref()
                .unwrap_or("no reason given")
        )));
    }
    if !state
        .store
        .replay_webhook_delivery(endpoint.id, delivery_id)
        .await?
    {
        return Err(ApiError::new(ErrorCode::NotFound)
            .with_message("No such delivery for this webhook endpoint."));
    }
    tracing::info!(webhook_id = %endpoint.id, delivery_id = %delivery_id, "webhook delivery replayed");
    Ok(HttpResponse::Accepted().json(RetryAccepted {
        id: delivery_id,
        state: "pending".to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn events_are_parsed_once_each_in_the_order_first_named() {
        let events = parse_events(&names(&[
            "order.cancelled",
            "order.placed",
            "order.cancelled",
        ]))
        .unwrap();
        assert_eq!(events, [NotifyEvent::Cancelled, NotifyEvent::Placed]);
    }

    #[test]
    fn no_events_or_an_unknown_one_is_refused_listing_the_known_ones() {
        for refused in [names(&[]), names(&["order.placed", "order.eaten"])] {
            let error = parse_events(&refused).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidField);
            let body = serde_json::to_value(error.body()).unwrap();
            assert_eq!(body["error"]["field"], "events");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("order.driver_assigned"), "{message}");
        }
    }
}
