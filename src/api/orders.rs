//! Orders over REST: checkout (idempotent, with payment), reading one order and its payment,
//! listing the caller's orders, and cancelling.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{is_json, parse_json};
use super::merchants::service_point;
use crate::actors::{Canceller, EngineError};
use crate::domain::pricing::quote;
use crate::domain::{Cents, MerchantId, NewOrder, OrderId, OrderItem, OrderView, Position, Role};
use crate::geo::haversine_m;
use crate::payments::{Authorisation, AuthoriseRequest, DeclineCode, GatewayError};
use crate::store::{KeyClaim, OrderFilter, Payment, PaymentStatus};

/// Most lines in one order.
pub const ORDER_MAX_LINES: usize = 50;
/// Most of one item in one order.
pub const LINE_MAX_QUANTITY: u32 = 99;
/// Longest Idempotency-Key.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 255;
/// Longest dropoff address or cancellation reason, in characters.
pub const TEXT_MAX_CHARS: usize = 300;
/// Orders per page when none is asked for, and the most allowed.
pub const PAGE_DEFAULT_LIMIT: i64 = 20;
pub const PAGE_MAX_LIMIT: i64 = 100;
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// Set on a response replayed for a repeated Idempotency-Key.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CheckoutLine {
    pub menu_item_id: Uuid,
    pub quantity: u32,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DropoffInput {
    pub lat: f64,
    pub lon: f64,
    pub address: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CheckoutRequest {
    #[schema(value_type = String, format = Uuid)]
    pub merchant_id: MerchantId,
    pub items: Vec<CheckoutLine>,
    pub dropoff: DropoffInput,
    /// A sandbox test method: `pm_card_visa`, `pm_card_chargeDeclined`,
    /// `pm_card_chargeDeclinedInsufficientFunds`.
    pub payment_method: String,
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
pub struct CancelRequest {
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderPage {
    /// Newest first.
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// Orders per page, 1 to 100 (default 20).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentEventView {
    #[schema(value_type = String, example = "authorised")]
    pub status: PaymentStatus,
    /// `checkout`, `settlement` or `webhook`.
    pub source: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentView {
    pub id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    #[schema(value_type = String, example = "authorised")]
    pub status: PaymentStatus,
    #[schema(value_type = i64)]
    pub amount_cents: Cents,
    pub payment_method: String,
    /// Every change of status, oldest first.
    pub events: Vec<PaymentEventView>,
}

/// A checkout that passed validation: what to charge and what to order.
struct Plan {
    merchant_id: MerchantId,
    items: Vec<OrderItem>,
    delivery_fee_cents: Cents,
    total_cents: Cents,
    pickup: Position,
    dropoff: Position,
    dropoff_address: String,
    payment_method: String,
}

fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get(IDEMPOTENCY_KEY_HEADER)
        .ok_or(ErrorCode::IdempotencyKeyRequired)?;
    let key = value
        .to_str()
        .map_err(|_| ErrorCode::InvalidIdempotencyKey)?;
    if key.is_empty()
        || key.len() > IDEMPOTENCY_KEY_MAX_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ErrorCode::InvalidIdempotencyKey.into());
    }
    Ok(key.to_owned())
}

/// Checks everything that needs no money: the merchant, the items, the dropoff, the price.
async fn validate(state: &AppState, request: CheckoutRequest) -> Result<Plan, ApiError> {
    if request.items.is_empty() || request.items.len() > ORDER_MAX_LINES {
        return Err(ApiError::invalid_field(
            "items",
            format!("must have 1 to {ORDER_MAX_LINES} lines"),
        ));
    }
    let address = request.dropoff.address.trim().to_owned();
    if address.is_empty() || address.chars().count() > TEXT_MAX_CHARS {
        return Err(ApiError::invalid_field(
            "dropoff.address",
            format!("must be 1 to {TEXT_MAX_CHARS} characters"),
        ));
    }
    let method = request.payment_method.trim();
    if method.is_empty() || method.len() > IDEMPOTENCY_KEY_MAX_LEN {
        return Err(ApiError::invalid_field("payment_method", "is required"));
    }
    let merchant = state
        .store
        .merchant(request.merchant_id)
        .await?
        .ok_or_else(|| ApiError::invalid_field("merchant_id", "no such merchant"))?;
    let dropoff = Position {
        lat: request.dropoff.lat,
        lon: request.dropoff.lon,
    };
    let dropoff_point = service_point(state, "dropoff", dropoff)?;
    let pickup_point = crate::geo::LatLon::new(merchant.location.lat, merchant.location.lon)
        .map_err(ApiError::internal)?;
    let distance_m = haversine_m(pickup_point, dropoff_point);
    let limit_m = state.checkout.max_delivery_distance_m;
    if distance_m > limit_m {
        return Err(
            ApiError::new(ErrorCode::DropoffTooFar).with_message(format!(
                "The dropoff is {:.1} km from the merchant; the limit is {:.1} km.",
                distance_m / 1_000.0,
                limit_m / 1_000.0
            )),
        );
    }
    let menu = state.store.menu(merchant.id).await?;
    let mut items = Vec::with_capacity(request.items.len());
    for (i, line) in request.items.iter().enumerate() {
        if line.quantity == 0 || line.quantity > LINE_MAX_QUANTITY {
            return Err(ApiError::invalid_field(
                format!("items[{i}].quantity"),
                format!("must be 1 to {LINE_MAX_QUANTITY}"),
            ));
        }
        let item = menu
            .iter()
            .find(|m| m.id == line.menu_item_id)
            .ok_or_else(|| {
                ApiError::invalid_field(
                    format!("items[{i}].menu_item_id"),
                    "is not on this merchant's menu",
                )
            })?;
        items.push(OrderItem {
            menu_item_id: Some(item.id),
            name: item.name.clone(),
            quantity: line.quantity,
            unit_price_cents: item.price_cents,
        });
    }
    let priced = quote(
        items.iter().map(|i| (i.unit_price_cents, i.quantity)),
        distance_m,
    )
    .map_err(|_| ApiError::invalid_field("items", "the total is too large"))?;
    // Checked last among the merchant's rules: a closed merchant's menu still validates.
    if !merchant.is_open {
        return Err(ErrorCode::MerchantClosed.into());
    }
    Ok(Plan {
        merchant_id: merchant.id,
        items,
        delivery_fee_cents: priced.delivery_fee_cents,
        total_cents: priced.total_cents,
        pickup: merchant.location,
        dropoff,
        dropoff_address: address,
        payment_method: method.to_owned(),
    })
}

/// How a checkout ended, and whether its answer is kept for the Idempotency-Key.
enum Outcome {
    Placed(OrderView),
    /// An answer to keep and replay (a declined card, an unknown payment method).
    Final(ApiError),
    /// A passing failure (database, gateway or dispatch unavailable): the key is released so
    /// that a retry runs afresh; an authorisation already made is reused by it.
    Transient(ApiError),
}

/// Authorises the payment and hands the order to dispatch.
async fn process(state: &AppState, caller: &AuthUser, order_id: OrderId, plan: Plan) -> Outcome {
    let existing = match state.store.payment_for_order(order_id).await {
        Ok(existing) => existing,
        Err(error) => return Outcome::Transient(error.into()),
    };
    let authorise_key = format!("authorise:{order_id}");
    let authorisation = match &existing {
        // A retry after a crash: the money side already happened; do not authorise again.
        Some(payment) if payment.status == PaymentStatus::Declined => Ok(Authorisation::Declined(
            if payment.decline_code.as_deref() == Some("insufficient_funds") {
                DeclineCode::InsufficientFunds
            } else {
                DeclineCode::CardDeclined
            },
        )),
        Some(payment) => Ok(Authorisation::Authorised {
            reference: payment.gateway_ref.clone().unwrap_or_default(),
        }),
        None => {
            state
                .payments
                .authorise(AuthoriseRequest {
                    idempotency_key: &authorise_key,
                    amount: plan.total_cents,
                    payment_method: &plan.payment_method,
                })
                .await
        }
    };
    let authorisation = match authorisation {
        Ok(authorisation) => authorisation,
        Err(GatewayError::UnknownPaymentMethod(method)) => {
            return Outcome::Final(ApiError::invalid_field(
                "payment_method",
                format!("unknown payment method {method:?}"),
            ));
        }
        Err(error) => {
            return Outcome::Transient(
                ApiError::new(ErrorCode::PaymentGatewayUnavailable)
                    .with_message(error.to_string())
                    .retry_after(1),
            );
        }
    };
    if existing.is_none() {
        let now = crate::store::now();
        let (status, reference, decline) = match &authorisation {
            Authorisation::Authorised { reference } => {
                (PaymentStatus::Authorised, Some(reference.clone()), None)
            }
            Authorisation::Declined(code) => (
                PaymentStatus::Declined,
                None,
                Some(code.as_str().to_owned()),
            ),
        };
        let payment = Payment {
            id: Uuid::now_v7(),
            order_id,
            customer_id: caller.id,
            amount_cents: plan.total_cents,
            payment_method: plan.payment_method.clone(),
            status,
            gateway_ref: reference,
            decline_code: decline,
            created_at: now,
            updated_at: now,
        };
        if let Err(error) = state
            .store
            .create_payment(&payment, &authorise_key, "checkout")
            .await
        {
            return Outcome::Transient(error.into());
        }
    }
    match authorisation {
        Authorisation::Declined(DeclineCode::CardDeclined) => {
            return Outcome::Final(ErrorCode::PaymentDeclined.into());
        }
        Authorisation::Declined(DeclineCode::InsufficientFunds) => {
            return Outcome::Final(ErrorCode::InsufficientFunds.into());
        }
        Authorisation::Authorised { .. } => {}
    }
    let placed = state
        .engine
        .place_order(NewOrder {
            id: order_id,
            merchant_id: plan.merchant_id,
            customer_id: caller.id,
            items: plan.items,
            delivery_fee_cents: plan.delivery_fee_cents,
            total_cents: plan.total_cents,
            pickup: plan.pickup,
            dropoff: plan.dropoff,
            dropoff_address: plan.dropoff_address,
        })
        .await;
    match placed {
        Ok(view) => Outcome::Placed(view),
        Err(error @ (EngineError::OutsideServiceArea | EngineError::InvalidLocation(_))) => {
            Outcome::Final(error.into())
        }
        Err(error) => Outcome::Transient(error.into()),
    }
}

fn json_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

/// Places an order: validates it, authorises the payment, and hands it to dispatch as
/// `placed` (the merchant's board sees it at once). Idempotent per `Idempotency-Key`.
#[utoipa::path(
    post, path = "/api/v1/orders", tag = "orders",
    request_body = CheckoutRequest,
    params(("Idempotency-Key" = String, Header, description = "A unique string per checkout (1 to 255 visible ASCII characters). The same key with the same body replays the first answer for 24 h.")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Placed; the payment is authorised", body = OrderView),
        (status = 400, description = "Malformed JSON, a missing or invalid Idempotency-Key", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 402, description = "payment_declined or insufficient_funds; no order was made", body = ErrorBody),
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 409, description = "request_in_progress (same key still running) or merchant_closed", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "invalid_field, outside_service_area, dropoff_too_far, idempotency_key_reused", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn checkout(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: AuthUser,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Customer])?;
    state
        .limits
        .checkout_per_customer
        .check(&caller.id.to_string())
        .await?;
    let key = idempotency_key(&req)?;
    if !is_json(&req) {
        return Err(ErrorCode::UnsupportedMediaType.into());
    }
    let canonical: serde_json::Value = parse_json(&body)?;
    let request: CheckoutRequest = parse_json(&body)?;
    let hash: String = Sha256::digest(canonical.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let order_id = match state
        .store
        .claim_idempotency_key(caller.id, &key, &hash)
        .await?
    {
        KeyClaim::Proceed { order_id } => order_id,
        KeyClaim::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = json_response(status, body);
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
                actix_web::http::header::HeaderValue::from_static("true"),
            );
            return Ok(response);
        }
        KeyClaim::InProgress => return Err(ErrorCode::RequestInProgress.into()),
        KeyClaim::Mismatch => return Err(ErrorCode::IdempotencyKeyReused.into()),
    };
    let plan = match validate(&state, request).await {
        Ok(plan) => plan,
        Err(error) => {
            // Invalid parameters: nothing was done, nothing is kept.
            state.store.release_idempotency_key(caller.id, &key).await?;
            return Err(error);
        }
    };
    match process(&state, &caller, order_id, plan).await {
        Outcome::Placed(view) => {
            let body = serde_json::to_string(&view).map_err(ApiError::internal)?;
            state
                .store
                .complete_idempotency_key(caller.id, &key, 201, &body)
                .await?;
            metrics::counter!("checkouts_total", "outcome" => "placed").increment(1);
            tracing::info!(order_id = %view.id, customer_id = %caller.id, total_cents = view.total_cents.0, "order checked out");
            Ok(json_response(StatusCode::CREATED, body))
        }
        Outcome::Final(error) => {
            let body = serde_json::to_string(&error.body()).map_err(ApiError::internal)?;
            state
                .store
                .complete_idempotency_key(caller.id, &key, error.status_code().as_u16(), &body)
                .await?;
            metrics::counter!("checkouts_total", "outcome" => error.code().as_str()).increment(1);
            Err(error)
        }
        Outcome::Transient(error) => {
            state.store.release_idempotency_key(caller.id, &key).await?;
            Err(error)
        }
    }
}

/// The order, if the caller may see it: its customer, its merchant's owner, its driver, an
/// admin. Anyone else is told it does not exist.
async fn visible_order(
    state: &AppState,
    caller: &AuthUser,
    id: OrderId,
) -> Result<OrderView, ApiError> {
    let not_found = || ApiError::new(ErrorCode::NotFound).with_message("No such order.");
    let order = match state.engine.order(id).await {
        Ok(order) => order,
        Err(EngineError::OrderNotFound) => return Err(not_found()),
        Err(error) => return Err(error.into()),
    };
    let visible = match caller.role {
        Role::Admin => true,
        Role::Customer => order.customer_id == caller.id,
        Role::Driver => order.driver_id == Some(caller.id),
        Role::Merchant => state
            .store
            .merchant(order.merchant_id)
            .await?
            .is_some_and(|m| m.owner_id == caller.id),
    };
    if visible { Ok(order) } else { Err(not_found()) }
}

/// One order.
#[utoipa::path(
    get, path = "/api/v1/orders/{order_id}", tag = "orders",
    params(("order_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = OrderView), (status = 401, body = ErrorBody), (status = 404, description = "No such order, or not yours", body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<OrderId>,
) -> Result<HttpResponse, ApiError> {
    let order = visible_order(&state, &caller, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(order))
}

/// The order's payment and its history.
#[utoipa::path(
    get, path = "/api/v1/orders/{order_id}/payment", tag = "orders",
    params(("order_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = PaymentView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn payment(
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<OrderId>,
) -> Result<HttpResponse, ApiError> {
    let order = visible_order(&state, &caller, path.into_inner()).await?;
    let payment = state
        .store
        .payment_for_order(order.id)
        .await?
        .ok_or_else(|| {
            ApiError::new(ErrorCode::NotFound).with_message("The order has no payment.")
        })?;
    let events = state.store.payment_events(payment.id).await?;
    Ok(HttpResponse::Ok().json(PaymentView {
        id: payment.id,
        order_id: payment.order_id,
        status: payment.status,
        amount_cents: payment.amount_cents,
        payment_method: payment.payment_method,
        events: events
            .into_iter()
            .map(|e| PaymentEventView {
                status: e.status,
                source: e.source,
                at: e.at,
            })
            .collect(),
    }))
}

/// The caller's orders, newest first: a customer's own, a merchant's (all merchants owned), a
/// driver's, or every order for an admin.
#[utoipa::path(
    get, path = "/api/v1/orders", tag = "orders",
    params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = OrderPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(PAGE_DEFAULT_LIMIT);
    if !(1..=PAGE_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(ErrorCode::InvalidQuery)
            .with_message(format!("limit: must be 1 to {PAGE_MAX_LIMIT}")));
    }
    let cursor = match &query.cursor {
        Some(raw) if !raw.is_empty() => Some(raw.parse::<OrderId>().map_err(|_| {
            ApiError::new(ErrorCode::InvalidQuery)
                .with_message("cursor: not a cursor from this API")
        })?),
        _ => None,
    };
    let filter = match caller.role {
        Role::Customer => OrderFilter::Customer(caller.id),
        Role::Driver => OrderFilter::Driver(caller.id),
        Role::Merchant => OrderFilter::MerchantOwner(caller.id),
        Role::Admin => OrderFilter::All,
    };
    let mut orders = state.store.orders_page(filter, cursor, limit + 1).await?;
    let next_cursor = if orders.len() as i64 > limit {
        orders.truncate(limit as usize);
        orders.last().map(|o| o.id.to_string())
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(OrderPage {
        orders: orders.iter().map(|o| o.view()).collect(),
        next_cursor,
    }))
}

/// Cancels the order: its customer before the merchant accepts, an admin before pickup. The
/// payment is then voided (or refunded).
#[utoipa::path(
    post, path = "/api/v1/orders/{order_id}/cancel", tag = "orders",
    params(("order_id" = Uuid, Path)), request_body(content = Option<CancelRequest>), security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled", body = OrderView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "Neither the order's customer nor an admin", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "invalid_transition: too late to cancel", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<OrderId>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: CancelRequest = if body.is_empty() {
        CancelRequest::default()
    } else if !is_json(&req) {
        return Err(ErrorCode::UnsupportedMediaType.into());
    } else {
        parse_json(&body)?
    };
    if request.reason.chars().count() > TEXT_MAX_CHARS {
        return Err(ApiError::invalid_field(
            "reason",
            format!("must be at most {TEXT_MAX_CHARS} characters"),
        ));
    }
    let order = visible_order(&state, &caller, path.into_inner()).await?;
    let by = match caller.role {
        Role::Customer => Canceller::Customer(caller.id),
        Role::Admin => Canceller::Admin,
        _ => {
            return Err(ApiError::new(ErrorCode::Forbidden)
                .with_message("Only the customer or an admin may cancel; a merchant rejects."));
        }
    };
    let cancelled = state
        .engine
        .cancel_order(order.id, by, request.reason)
        .await?;
    Ok(HttpResponse::Ok().json(cancelled))
}
