//! Orders over REST once placed: reading one order, its payment and the notifications sent about
//! it, listing the caller's orders, and cancelling (placing one is [`super::checkout`]).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{AuthUser, Scoped, need};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{is_json, parse_json};
use super::state::AppState;
use crate::actors::commands::orders::CancelOrder;
use crate::actors::{Canceller, EngineError};
use crate::domain::{Cents, OrderId, OrderView, Role};
use crate::store::{NotificationSummary, OrderFilter, PaymentStatus};

/// Longest dropoff address or cancellation reason, in characters.
pub const TEXT_MAX_CHARS: usize = 300;
/// Orders per page when none is asked for, and the most allowed.
pub const PAGE_DEFAULT_LIMIT: i64 = 20;
pub const PAGE_MAX_LIMIT: i64 = 100;

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

/// The messages sent, or to be sent, about an order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationList {
    /// In the order they were made: by journal entry, then channel.
    pub notifications: Vec<NotificationSummary>,
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
    if !caller.may_reach(order.merchant_id) {
        return Err(not_found());
    }
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
    params(("order_id" = Uuid, Path)), security(("bearer" = ["orders:read"])),
    responses((status = 200, body = OrderView), (status = 401, body = ErrorBody), (status = 404, description = "No such order, or not yours", body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Scoped<need::OrdersRead>,
    path: web::Path<OrderId>,
) -> Result<HttpResponse, ApiError> {
    let order = visible_order(&state, &caller, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(order))
}

/// The order's payment and its history.
#[utoipa::path(
    get, path = "/api/v1/orders/{order_id}/payment", tag = "orders",
    params(("order_id" = Uuid, Path)), security(("bearer" = ["orders:read"])),
    responses((status = 200, body = PaymentView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn payment(
    state: web::Data<AppState>,
    caller: Scoped<need::OrdersRead>,
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

/// What was sent about the order, and to be sent: to the customer on WhatsApp (with WhatsApp's
/// own status once it reports one) and to the merchant's webhooks. Seen by whoever may see the
/// order.
#[utoipa::path(
    get, path = "/api/v1/orders/{order_id}/notifications", tag = "orders",
    params(("order_id" = Uuid, Path)), security(("bearer" = ["orders:read"])),
    responses((status = 200, body = NotificationList), (status = 401, body = ErrorBody), (status = 404, description = "No such order, or not yours", body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn notifications(
    state: web::Data<AppState>,
    caller: Scoped<need::OrdersRead>,
    path: web::Path<OrderId>,
) -> Result<HttpResponse, ApiError> {
    let order = visible_order(&state, &caller, path.into_inner()).await?;
    let notifications = state.store.order_notifications(order.id).await?;
    Ok(HttpResponse::Ok().json(NotificationList { notifications }))
}

/// The caller's orders, newest first: a customer's own, a merchant's (all merchants owned), a
/// driver's, or every order for an admin.
#[utoipa::path(
    get, path = "/api/v1/orders", tag = "orders",
    params(PageQuery), security(("bearer" = ["orders:read"])),
    responses((status = 200, body = OrderPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Scoped<need::OrdersRead>,
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
    let mut orders = state
        .store
        .orders_page(filter, caller.grant.merchant, cursor, limit + 1)
        .await?;
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
    params(("order_id" = Uuid, Path)), request_body(content = Option<CancelRequest>), security(("bearer" = ["orders:write"])),
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
    caller: Scoped<need::OrdersWrite>,
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
        .execute(CancelOrder {
            order_id: order.id,
            by,
            reason: request.reason,
        })
        .await?;
    Ok(HttpResponse::Ok().json(cancelled))
}
