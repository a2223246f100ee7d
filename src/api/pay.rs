//! Paying a WhatsApp basket through its payment link (`/api/v1/pay/{token}`): the basket priced
//! as checkout prices it, and the checkout itself, run as the link's customer through the same
//! code path as REST checkout, which uses the link up once the order is placed and tells the
//! conversation (a `paid` message in the WhatsApp inbox). The token is the capability: no login.

use actix_web::{HttpResponse, ResponseError, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::AuthUser;
use super::checkout;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::ApiJson;
use super::state::AppState;
use crate::domain::chat::PAID_KIND;
use crate::domain::pricing::quote;
use crate::domain::{OrderId, OrderView, Role};
use crate::geo::{LatLon, haversine_m};
use crate::payments::sandbox::{SANDBOX_DECLINED, SANDBOX_INSUFFICIENT_FUNDS, SANDBOX_VISA};
use crate::store::{InboundMessage, PayLink, pay_token_hash};

/// The cards a payment link offers (the sandbox gateway's test methods), with what the page
/// shows for each.
pub const PAY_METHODS: [(&str, &str); 3] = [
    (SANDBOX_VISA, "Visa (test card that pays)"),
    (SANDBOX_DECLINED, "Declined card (test)"),
    (SANDBOX_INSUFFICIENT_FUNDS, "Insufficient funds (test)"),
];
/// Longest token looked up; a real one is 43 bytes (32 random bytes, base64url).
const PAY_TOKEN_MAX_BYTES: usize = 128;
/// The answer to another card while the link's attempt with an earlier card is unfinished.
const UNFINISHED_ATTEMPT: &str = "An earlier payment on this link with another card has not \
    finished yet; retry in a moment (or with the card you chose first).";

/// One line of the basket, at the price the checkout charges.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PayItem {
    pub name: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

/// A card the page offers.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PayMethod {
    /// Pass as `payment_method`.
    #[schema(example = "pm_card_visa")]
    pub id: String,
    pub label: String,
}

/// What a payment link pays for.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PayLinkView {
    pub merchant_name: String,
    pub items: Vec<PayItem>,
    pub subtotal_cents: i64,
    /// Priced as checkout prices it, by the distance from the kitchen to the dropoff.
    pub delivery_fee_cents: i64,
    pub total_cents: i64,
    pub dropoff_address: String,
    /// The link cannot be paid after this.
    pub expires_at: DateTime<Utc>,
    pub payment_methods: Vec<PayMethod>,
}

/// The order a 201 answer of checkout carries.
#[derive(Deserialize)]
struct Placed {
    id: OrderId,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PayRequest {
    /// One of the link's `payment_methods`.
    #[schema(example = "pm_card_visa")]
    pub payment_method: String,
}

/// The link `token` opens, if it can still be paid: 404 unknown, 410 used or expired.
async fn payable_link(state: &AppState, token: &str) -> Result<PayLink, ApiError> {
    if token.is_empty() || token.len() > PAY_TOKEN_MAX_BYTES {
        return Err(ErrorCode::PayLinkNotFound.into());
    }
    let link = state
        .store
        .pay_link(&pay_token_hash(token))
        .await?
        .ok_or(ErrorCode::PayLinkNotFound)?;
    if link.order_id.is_some() {
        return Err(ErrorCode::PayLinkUsed.into());
    }
    if link.expires_at <= crate::store::now() {
        return Err(ErrorCode::PayLinkExpired.into());
    }
    Ok(link)
}

/// The basket of `link` priced as checkout will price it: today's menu prices (the basket's
/// for an item no longer on the menu; checkout then refuses it) and the delivery fee by
/// distance.
async fn priced(state: &AppState, link: &PayLink) -> Result<PayLinkView, ApiError> {
    let basket = &link.basket;
    let merchant = state
        .store
        .merchant(basket.merchant_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(ErrorCode::PayLinkNotFound)
                .with_message("The kitchen of this payment link no longer exists.")
        })?;
    let menu = state.store.menu(merchant.id).await?;
    let items: Vec<PayItem> = basket
        .lines
        .iter()
        .map(|line| PayItem {
            name: line.name.clone(),
            quantity: line.quantity,
            unit_price_cents: menu
                .iter()
                .find(|item| item.id == line.menu_item_id)
                .map_or(line.unit_price_cents.0, |item| item.price_cents.0),
        })
        .collect();
    let pickup =
        LatLon::new(merchant.location.lat, merchant.location.lon).map_err(ApiError::internal)?;
    let dropoff = LatLon::new(basket.dropoff.position.lat, basket.dropoff.position.lon)
        .map_err(ApiError::internal)?;
    let price = quote(
        items
            .iter()
            .map(|i| (crate::domain::Cents(i.unit_price_cents), i.quantity)),
        haversine_m(pickup, dropoff),
    )
    .map_err(|_| ApiError::invalid_field("items", "the total is too large"))?;
    Ok(PayLinkView {
        merchant_name: basket.merchant_name.clone(),
        items,
        subtotal_cents: price.subtotal_cents.0,
        delivery_fee_cents: price.delivery_fee_cents.0,
        total_cents: price.total_cents.0,
        dropoff_address: basket.dropoff.address.clone(),
        expires_at: link.expires_at,
        payment_methods: PAY_METHODS
            .iter()
            .map(|(id, label)| PayMethod {
                id: (*id).to_owned(),
                label: (*label).to_owned(),
            })
            .collect(),
    })
}

/// What the payment link pays for: the kitchen, the lines, the total, where it goes, until
/// when, and the cards to choose from.
#[utoipa::path(
    get, path = "/api/v1/pay/{token}", tag = "whatsapp",
    params(("token" = String, Path, description = "The payment link's token, as sent in the chat")),
    responses(
        (status = 200, description = "The basket, priced as checkout prices it", body = PayLinkView),
        (status = 404, description = "pay_link_not_found", body = ErrorBody),
        (status = 410, description = "pay_link_used or pay_link_expired", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn show(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let link = payable_link(&state, &path).await?;
    Ok(HttpResponse::Ok().json(priced(&state, &link).await?))
}

/// After the link's checkout placed `order`: tells the conversation (once) and marks the link
/// used (once). The conversation is told first: a failure between the two steps leaves the
/// link open, so the client's retry replays the order and finishes both.
async fn complete(state: &AppState, link: &PayLink, order: OrderId) -> Result<(), ApiError> {
    let now = crate::store::now();
    state
        .store
        .record_inbound_message(&InboundMessage {
            id: format!("paid_{}", link.id),
            phone: link.phone.clone(),
            kind: PAID_KIND.to_owned(),
            message: json!({ "order_id": order }),
            state: "received",
            received_at: now,
        })
        .await?;
    if state.store.use_pay_link(link.id, order, now).await? {
        tracing::info!(pay_link_id = %link.id, order_id = %order, "payment link paid");
    }
    Ok(())
}

/// Whether an answer is a declined card (`payment_declined`, `insufficient_funds`).
fn is_declined(status: actix_web::http::StatusCode) -> bool {
    status == actix_web::http::StatusCode::PAYMENT_REQUIRED
}

/// After a declined card: the link's next attempt is a new checkout (another card may be
/// tried). A request that lost the race to move it on changes nothing.
async fn next_attempt(state: &AppState, link: &PayLink) -> Result<(), ApiError> {
    state
        .store
        .advance_pay_link_attempt(link.id, link.attempt)
        .await?;
    tracing::info!(pay_link_id = %link.id, attempt = link.attempt, "payment link card declined");
    Ok(())
}

/// Pays the link: checks out its basket as its customer with the chosen card. Each attempt is
/// one checkout under the key `whatsapp-pay:{link id}:{attempt}`, so a repeated press places
/// one order and authorises once; a declined card moves the attempt on.
#[utoipa::path(
    post, path = "/api/v1/pay/{token}", tag = "whatsapp",
    params(("token" = String, Path, description = "The payment link's token, as sent in the chat")),
    request_body = PayRequest,
    responses(
        (status = 201, description = "Placed; the payment is authorised and the link used", body = OrderView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 402, description = "payment_declined or insufficient_funds: no order; another card may be tried on the same link", body = ErrorBody),
        (status = 404, description = "pay_link_not_found", body = ErrorBody),
        (status = 409, description = "request_in_progress (this link is being paid: retry shortly with the same card) or merchant_closed", body = ErrorBody),
        (status = 410, description = "pay_link_used, pay_link_expired, or checkout_abandoned", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "invalid_field (say, a payment method the link does not offer, or an item no longer on the menu), outside_service_area, dropoff_too_far", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, description = "store_unavailable, dispatch_unavailable or payment_gateway_unavailable: retry with the same card", body = ErrorBody),
    )
)]
pub async fn pay(
    state: web::Data<AppState>,
    path: web::Path<String>,
    ApiJson(request): ApiJson<PayRequest>,
) -> Result<HttpResponse, ApiError> {
    let link = payable_link(&state, &path).await?;
    let customer = link.customer_id.to_string();
    state.limits.checkout_per_customer.check(&customer).await?;
    let method = request.payment_method.trim();
    if !PAY_METHODS.iter().any(|(id, _)| *id == method) {
        let offered: Vec<&str> = PAY_METHODS.iter().map(|(id, _)| *id).collect();
        return Err(ApiError::invalid_field(
            "payment_method",
            format!("must be one of {}", offered.join(", ")),
        ));
    }
    let caller = AuthUser {
        id: link.customer_id,
        role: Role::Customer,
        expires_at: link.expires_at.timestamp(),
        grant: crate::api::auth::Grant::session(),
    };
    let key = format!("whatsapp-pay:{}:{}", link.id, link.attempt);
    let basket = &link.basket;
    let body = json!({
        "merchant_id": basket.merchant_id,
        "items": basket.lines.iter().map(|line| json!({
            "menu_item_id": line.menu_item_id,
            "quantity": line.quantity,
        })).collect::<Vec<_>>(),
        "dropoff": {
            "lat": basket.dropoff.position.lat,
            "lon": basket.dropoff.position.lon,
            "address": basket.dropoff.address,
        },
        "payment_method": method,
        "phone": link.phone,
        "notify_whatsapp": true,
    });
    let body = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    match checkout::run(&state, &caller, &key, &body).await {
        Ok(answer) if answer.status == actix_web::http::StatusCode::CREATED => {
            let placed: Placed = serde_json::from_str(&answer.body).map_err(ApiError::internal)?;
            complete(&state, &link, placed.id).await?;
            Ok(answer.into_response())
        }
        Ok(answer) => {
            if is_declined(answer.status) {
                next_attempt(&state, &link).await?;
            }
            Ok(answer.into_response())
        }
        Err(error) if is_declined(error.status_code()) => {
            next_attempt(&state, &link).await?;
            Err(error)
        }
        // This attempt's key is bound to the card of an earlier request that has not finished.
        Err(error) if error.code() == ErrorCode::IdempotencyKeyReused => {
            Err(ApiError::new(ErrorCode::RequestInProgress)
                .with_message(UNFINISHED_ATTEMPT)
                .retry_after(1))
        }
        Err(error) => Err(error),
    }
}
