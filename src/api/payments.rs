//! Payment webhooks: asynchronous events from the gateway, signed like Stripe's, each applied
//! at most once.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::auth::{Scoped, need};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::parse_json;
use super::state::AppState;
use crate::payments::webhook::{SIGNATURE_HEADER, verify};
use crate::store::PaymentStatus;

/// A gateway event.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WebhookEvent {
    /// Unique per event; a repeated id is acknowledged and ignored.
    pub id: String,
    /// `payment.captured`, `payment.voided`, `payment.refunded` or `payment.failed`; other types
    /// are acknowledged and ignored.
    #[serde(rename = "type")]
    pub kind: String,
    pub data: WebhookData,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WebhookData {
    /// The gateway's reference for the payment (or our payment id).
    pub payment: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookAck {
    pub received: bool,
    /// The event id was seen before; nothing changed.
    pub duplicate: bool,
    /// The event changed a payment.
    pub applied: bool,
}

/// The status an event moves a payment to, and from which.
fn transition(kind: &str) -> Option<(&'static [PaymentStatus], PaymentStatus)> {
    use PaymentStatus::*;
    match kind {
        "payment.captured" => Some((&[Authorised], Captured)),
        "payment.voided" => Some((&[Authorised], Voided)),
        "payment.refunded" => Some((&[Captured], Refunded)),
        "payment.failed" => Some((&[Authorised, Captured], Failed)),
        _ => None,
    }
}

/// Receives a gateway event. A bad signature (or one more than 5 minutes old) is refused with
/// 400 and changes nothing.
#[utoipa::path(
    post, path = "/api/v1/payments/webhook", tag = "payments",
    request_body = WebhookEvent,
    params(("Mealkitz-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">; several v1 allowed")),
    responses(
        (status = 200, description = "Received (also for repeats and ignored types)", body = WebhookAck),
        (status = 400, description = "invalid_signature or malformed_json", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, description = "webhooks_disabled, or the database is unavailable", body = ErrorBody),
    )
)]
pub async fn webhook(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let Some(secret) = &state.checkout.webhook_secret else {
        return Err(ErrorCode::WebhooksDisabled.into());
    };
    let header = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    verify(
        header,
        &body,
        secret.expose().as_bytes(),
        chrono::Utc::now().timestamp(),
    )
    .map_err(|error| {
        metrics::counter!("webhooks_total", "outcome" => "bad_signature").increment(1);
        ApiError::new(ErrorCode::InvalidSignature).with_message(error.to_string())
    })?;
    let event: WebhookEvent = parse_json(&body)?;
    if !state
        .store
        .record_webhook_event(&event.id, &event.kind)
        .await?
    {
        metrics::counter!("webhooks_total", "outcome" => "duplicate").increment(1);
        return Ok(HttpResponse::Ok().json(WebhookAck {
            received: true,
            duplicate: true,
            applied: false,
        }));
    }
    let applied = match transition(&event.kind) {
        None => false,
        Some((from, to)) => {
            let outcome = async {
                match state.store.payment_by_ref(&event.data.payment).await? {
                    Some(payment) => {
                        state
                            .store
                            .set_payment_status(payment.id, from, to, Some(&event.id), "webhook")
                            .await
                    }
                    None => Ok(false),
                }
            }
            .await;
            match outcome {
                Ok(applied) => applied,
                Err(error) => {
                    // Let the gateway's retry process it again.
                    let _ = state.store.forget_webhook_event(&event.id).await;
                    return Err(error.into());
                }
            }
        }
    };
    metrics::counter!("webhooks_total", "outcome" => if applied { "applied" } else { "ignored" })
        .increment(1);
    Ok(HttpResponse::Ok().json(WebhookAck {
        received: true,
        duplicate: false,
        applied,
    }))
}

/// A payment whose settlement keeps failing.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttentionPayment {
    pub id: uuid::Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub order_id: crate::domain::OrderId,
    #[schema(value_type = String, example = "authorised")]
    pub status: PaymentStatus,
    #[schema(value_type = i64)]
    pub amount_cents: crate::domain::Cents,
    /// Failed settlement attempts so far.
    pub settle_attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttentionPayments {
    /// Oldest change first; at most 100.
    pub payments: Vec<AttentionPayment>,
}

/// Most payments listed for attention at once.
const ATTENTION_PAGE_MAX: i64 = 100;

/// Payments an operator should look at: settlement failed several times in a row, or the
/// gateway refused it. They are still retried, at most every few minutes. Admins only.
#[utoipa::path(
    get, path = "/api/v1/payments/attention", tag = "payments",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, body = AttentionPayments),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn attention(
    state: web::Data<AppState>,
    caller: Scoped<need::Admin>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[crate::domain::Role::Admin])?;
    let payments = state
        .store
        .payments_needing_attention(ATTENTION_PAGE_MAX)
        .await?;
    Ok(HttpResponse::Ok().json(AttentionPayments {
        payments: payments
            .into_iter()
            .map(|p| AttentionPayment {
                id: p.id,
                order_id: p.order_id,
                status: p.status,
                amount_cents: p.amount_cents,
                settle_attempts: p.settle_attempts,
                last_error: p.last_settle_error,
                updated_at: p.updated_at,
            })
            .collect(),
    }))
}
