//! Checkout over REST (`POST /api/v1/orders`): validation, then the saga that authorises the
//! payment and places the order, idempotent per Idempotency-Key and resumable after any crash.
//! Apart from the order reads in [`super::orders`] because it is the one write with money in it.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::{AuthUser, Scoped, need};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{is_json, parse_json};
use super::idempotent::idempotency_key;
pub use super::idempotent::{
    CheckoutAnswer, IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_MAX_LEN, REPLAYED_HEADER, request_hash,
};
use super::merchants::service_point;
use super::orders::TEXT_MAX_CHARS;
use super::state::{Answered, AppState, Entered, InFlightGuard};
use crate::actors::EngineError;
use crate::actors::commands::orders::PlaceOrder;
use crate::domain::pricing::quote;
use crate::domain::{
    Cents, MerchantId, NewOrder, OrderId, OrderItem, OrderView, Phone, Position, Role,
};
use crate::geo::haversine_m;
use crate::payments::{Authorisation, AuthoriseRequest, DeclineCode, GatewayError, authorise_key};
use crate::store::{
    KeyAnswer, KeyClaim, KeyHold, Payment, PaymentStatus, PendingCharge, StoreError,
};

/// Most lines in one order.
pub const ORDER_MAX_LINES: usize = 50;
/// Most of one item in one order.
pub const LINE_MAX_QUANTITY: u32 = 99;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CheckoutLine {
    pub menu_item_id: Uuid,
    pub quantity: u32,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DropoffInput {
    /// With `lon`; both left out, the address is geocoded (near the merchant).
    pub lat: Option<f64>,
    pub lon: Option<f64>,
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
    /// Where to send this order's updates on WhatsApp, in E.164 form (`+358401234567`); left
    /// out, the account's number (`PATCH /api/v1/me`) is used.
    #[serde(default)]
    #[schema(example = "+358401234567")]
    pub phone: Option<String>,
    /// Whether to send this order's updates on WhatsApp; left out, the account's choice holds.
    #[serde(default)]
    pub notify_whatsapp: Option<bool>,
}

/// The phone number and WhatsApp consent a checkout gave for its order.
struct OrderContact {
    phone: Option<Phone>,
    notify_whatsapp: Option<bool>,
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
    pickup_address: String,
    payment_method: String,
    /// Kept for the order when the checkout gave a phone or a consent.
    contact: Option<OrderContact>,
}

/// Checks everything that needs no money: the merchant, the items, the dropoff, the price.
async fn validate(state: &AppState, request: CheckoutRequest) -> Result<Plan, ApiError> {
    let phone = match request.phone.as_deref() {
        Some(raw) => Some(Phone::parse(raw).map_err(|e| {
            ApiError::new(ErrorCode::InvalidPhone).with_message(format!("phone: {e}"))
        })?),
        None => None,
    };
    let contact = (phone.is_some() || request.notify_whatsapp.is_some()).then_some(OrderContact {
        phone,
        notify_whatsapp: request.notify_whatsapp,
    });
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
    let (merchant, menu) = state
        .menu_cache
        .merchant_with_menu(&state.store, request.merchant_id)
        .await?
        .ok_or_else(|| ApiError::invalid_field("merchant_id", "no such merchant"))?;
    let pickup_point = crate::geo::LatLon::new(merchant.location.lat, merchant.location.lon)
        .map_err(ApiError::internal)?;
    let dropoff = match (request.dropoff.lat, request.dropoff.lon) {
        (Some(lat), Some(lon)) => Position { lat, lon },
        (None, None) => {
            super::locate::locate(&state.maps, "dropoff.address", &address, Some(pickup_point))?
        }
        _ => {
            return Err(ApiError::invalid_field(
                "dropoff",
                "give both lat and lon, or neither (the address is then looked up)",
            ));
        }
    };
    let dropoff_point = service_point(state, "dropoff", dropoff)?;
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
        pickup_address: merchant.address.clone(),
        payment_method: method.to_owned(),
        contact,
    })
}

/// How a checkout ended, and whether its answer is kept for the Idempotency-Key.
enum Outcome {
    Placed(OrderView),
    /// An answer to keep and replay (a declined card, an unknown payment method, a dropoff
    /// dispatch refuses). A hold made for it is released by the reconciler.
    Final(ApiError),
    /// A passing failure (database, gateway or dispatch unavailable): the key is unlocked, not
    /// forgotten, so a retry continues the same order id and reuses the same authorisation.
    Transient(ApiError),
}

fn transient(error: impl Into<ApiError>) -> Outcome {
    Outcome::Transient(error.into())
}

/// The final answer for a payment the gateway declined.
fn declined(code: Option<&str>) -> ApiError {
    match DeclineCode::parse(code.unwrap_or_default()) {
        DeclineCode::CardDeclined => ErrorCode::PaymentDeclined.into(),
        DeclineCode::InsufficientFunds => ErrorCode::InsufficientFunds.into(),
    }
}

fn unknown_method(method: &str) -> ApiError {
    ApiError::invalid_field(
        "payment_method",
        format!("unknown payment method {method:?}"),
    )
}

/// The checkout's payment: the one an earlier attempt with the same key started, or a new one
/// recorded as pending *before* the gateway is asked, so that a hold made just before a crash
/// is found again (by the retry, or by the reconciler).
async fn payment_of(
    state: &AppState,
    caller: &AuthUser,
    order_id: OrderId,
    plan: &Plan,
    resumed: bool,
    claimed: Option<Payment>,
) -> Result<Payment, Outcome> {
    // Recorded with the key's first claim.
    if let Some(payment) = claimed {
        return Ok(payment);
    }
    // A key claimed for the first time has a fresh order id: nothing to look up.
    if resumed
        && let Some(payment) = state
            .store
            .payment_for_order(order_id)
            .await
            .map_err(transient)?
    {
        return Ok(payment);
    }
    let payment = Payment::pending(
        order_id,
        caller.id,
        plan.total_cents,
        plan.payment_method.clone(),
    );
    match state
        .store
        .create_payment(&payment, &authorise_key(order_id), "checkout")
        .await
    {
        Ok(()) => Ok(payment),
        // A racing attempt with the same key recorded it first: continue with that one.
        Err(StoreError::Duplicate(_)) => state
            .store
            .payment_for_order(order_id)
            .await
            .map_err(transient)?
            .ok_or_else(|| transient(ErrorCode::StoreUnavailable)),
        Err(error) => Err(transient(error)),
    }
}

/// Authorises a pending payment (again, with the same gateway key: a gateway that saw it answers
/// as before), records the answer and renews this request's claim on `key` in the same write.
async fn authorise(
    state: &AppState,
    caller: &AuthUser,
    key: &str,
    payment: &Payment,
) -> Result<(), Outcome> {
    let gateway_key = authorise_key(payment.order_id);
    let answer = state
        .payments
        .authorise(AuthoriseRequest {
            idempotency_key: &gateway_key,
            amount: payment.amount_cents,
            payment_method: &payment.payment_method,
        })
        .await;
    let (status, reference, decline) = match &answer {
        Ok(Authorisation::Authorised { reference }) => {
            (PaymentStatus::Authorised, Some(reference.as_str()), None)
        }
        Ok(Authorisation::Declined(code)) => (PaymentStatus::Declined, None, Some(code.as_str())),
        Err(GatewayError::UnknownPaymentMethod(_)) => {
            (PaymentStatus::Failed, None, Some("unknown_payment_method"))
        }
        Err(error) => {
            return Err(Outcome::Transient(
                ApiError::new(ErrorCode::PaymentGatewayUnavailable)
                    .with_message(error.to_string())
                    .retry_after(1),
            ));
        }
    };
    let hold = KeyHold {
        user: caller.id,
        key,
        holder: state.cluster.node(),
    };
    let still_held = state
        .store
        .record_checkout_authorisation(payment.id, status, reference, decline, &gateway_key, hold)
        .await
        .map_err(transient)?;
    match answer {
        Ok(Authorisation::Authorised { .. }) if still_held => Ok(()),
        Ok(Authorisation::Authorised { .. }) => {
            Err(Outcome::Final(ErrorCode::RequestInProgress.into()))
        }
        Ok(Authorisation::Declined(code)) => Err(Outcome::Final(declined(Some(code.as_str())))),
        Err(_) => Err(Outcome::Final(unknown_method(&payment.payment_method))),
    }
}

/// Renews this request's claim on `key` before a step that must not run once the key was given
/// up or taken over (authorising, placing the order).
async fn still_ours(state: &AppState, caller: &AuthUser, key: &str) -> Result<(), Outcome> {
    match state
        .store
        .refresh_idempotency_key(caller.id, key, state.cluster.node())
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(Outcome::Final(ErrorCode::RequestInProgress.into())),
        Err(error) => Err(transient(error)),
    }
}

/// The checkout saga after validation: the payment (started, authorised or reused), then the
/// order handed to dispatch under the id the key is bound to. Every step may have run before,
/// in an attempt that died: each one continues from what the store and the gateway recorded.
async fn process(
    state: &AppState,
    caller: &AuthUser,
    key: &str,
    order_id: OrderId,
    resumed: bool,
    plan: Plan,
    claimed: Option<Payment>,
) -> Outcome {
    let payment = match payment_of(state, caller, order_id, &plan, resumed, claimed).await {
        Ok(payment) => payment,
        Err(outcome) => return outcome,
    };
    if payment.amount_cents != plan.total_cents || payment.payment_method != plan.payment_method {
        // The menu changed between two attempts with the same key: do not place an order for
        // another amount than the one held. The hold is released by the reconciler.
        return Outcome::Final(ApiError::invalid_field(
            "items",
            "the prices changed since the first attempt with this Idempotency-Key; check out again with a new key",
        ));
    }
    // The last fence: the key is renewed (as the authorisation is recorded, or now for a payment
    // authorised before), so no order is placed once the reconciler gave the key up.
    match payment.status {
        PaymentStatus::Authorised => {
            if let Err(outcome) = still_ours(state, caller, key).await {
                return outcome;
            }
        }
        PaymentStatus::Pending => {
            if let Err(outcome) = authorise(state, caller, key, &payment).await {
                return outcome;
            }
        }
        PaymentStatus::Declined => {
            return Outcome::Final(declined(payment.decline_code.as_deref()));
        }
        PaymentStatus::Failed => return Outcome::Final(unknown_method(&payment.payment_method)),
        PaymentStatus::Captured
        | PaymentStatus::Voided
        | PaymentStatus::Refunded
        | PaymentStatus::Abandoned => return Outcome::Final(ErrorCode::CheckoutAbandoned.into()),
    }
    // Kept before the order exists, so that its first notification already finds it.
    if let Some(contact) = &plan.contact
        && let Err(error) = state
            .store
            .set_order_contact(order_id, contact.phone.as_ref(), contact.notify_whatsapp)
            .await
    {
        return transient(error);
    }
    let placed = state
        .engine
        .execute(PlaceOrder {
            order: NewOrder {
                id: order_id,
                merchant_id: plan.merchant_id,
                customer_id: caller.id,
                items: plan.items,
                delivery_fee_cents: plan.delivery_fee_cents,
                total_cents: plan.total_cents,
                pickup: plan.pickup,
                dropoff: plan.dropoff,
                dropoff_address: plan.dropoff_address,
                pickup_address: plan.pickup_address,
            },
        })
        .await;
    match placed {
        Ok(view) => Outcome::Placed(view),
        Err(error @ (EngineError::OutsideServiceArea | EngineError::InvalidLocation(_))) => {
            Outcome::Final(error.into())
        }
        Err(error) => transient(error),
    }
}

/// Places an order: validates it, authorises the payment, and hands it to dispatch as
/// `placed` (the merchant's board sees it at once). Idempotent per `Idempotency-Key`: the key
/// is bound to one order id and one authorisation from the first attempt, and any retry —
/// after a timeout, a 503, a crash of the server — continues that same checkout.
#[utoipa::path(
    post, path = "/api/v1/orders", tag = "orders",
    request_body = CheckoutRequest,
    params(("Idempotency-Key" = String, Header, description = "A unique string per checkout (1 to 255 visible ASCII characters). The same key with the same body continues the same checkout: it never makes a second order or a second authorisation, and replays the final answer for 24 h.")),
    security(("bearer" = ["orders:write"])),
    responses(
        (status = 201, description = "Placed; the payment is authorised", body = OrderView),
        (status = 400, description = "Malformed JSON, a missing or invalid Idempotency-Key", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 402, description = "payment_declined or insufficient_funds; no order was made", body = ErrorBody),
        (status = 403, description = "insufficient_scope; merchant_not_in_grant; forbidden: neither a customer nor the merchant's owner", body = ErrorBody),
        (status = 409, description = "request_in_progress (a live server is still running a request with this key: retry shortly with the same key) or merchant_closed", body = ErrorBody),
        (status = 410, description = "checkout_abandoned: the checkout was given up unfinished (after MEALKITZ_PAYMENT_ABANDON_AFTER_SECS) and its hold released", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "invalid_field, invalid_phone, outside_service_area, dropoff_too_far, idempotency_key_reused", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, description = "store_unavailable, dispatch_unavailable or payment_gateway_unavailable: retry with the same key", body = ErrorBody),
    )
)]
pub async fn checkout(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Scoped<need::OrdersWrite>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // Customers order for themselves; a merchant (its POS, with a key) orders at its own
    // kitchens only, checked once the body names the merchant.
    caller.require(&[Role::Customer, Role::Merchant])?;
    state
        .limits
        .checkout_per_customer
        .check(&caller.id.to_string())
        .await?;
    let key = idempotency_key(&req)?;
    if !is_json(&req) {
        return Err(ErrorCode::UnsupportedMediaType.into());
    }
    run(&state, &caller, &key, &body)
        .await
        .map(CheckoutAnswer::into_response)
}

/// Checks out the JSON `body` as `caller` under Idempotency-Key `key`: the one code path of
/// every checkout (REST, and a WhatsApp payment link for its customer). Answers the placed
/// order, or the answer kept for the key when it repeats; any other outcome is the error.
/// The caller checked its role, its rate limit and the body's content type.
pub async fn run(
    state: &web::Data<AppState>,
    caller: &AuthUser,
    key: &str,
    body: &[u8],
) -> Result<CheckoutAnswer, ApiError> {
    let hash = request_hash(&parse_json(body)?);
    let request: CheckoutRequest = parse_json(body)?;
    caller.require_merchant(request.merchant_id)?;
    if caller.role == Role::Merchant {
        let own = state
            .store
            .merchant(request.merchant_id)
            .await?
            .is_some_and(|m| m.owner_id == caller.id);
        if !own {
            return Err(ApiError::new(ErrorCode::Forbidden)
                .with_message("A merchant places orders at its own kitchens only."));
        }
    }
    let place = match state.checkouts_in_flight.enter(caller.id, key) {
        Entered::Fresh(place) => place,
        Entered::Running => {
            return Err(ApiError::new(ErrorCode::RequestInProgress).retry_after(1));
        }
        // Answered here a moment ago; the store has not got the answer yet.
        Entered::Answered(answered) if answered.hash == hash => {
            return Ok(CheckoutAnswer::replayed(answered.status, answered.body));
        }
        Entered::Answered(_) => return Err(ErrorCode::IdempotencyKeyReused.into()),
    };
    // Validated before the key is claimed, so that a key seen for the first time is claimed
    // with its pending payment in one write. What a repeated key answers is decided below, as
    // for any request.
    let plan = validate(state, request).await;
    let charge = plan.as_ref().ok().map(|plan| PendingCharge {
        amount_cents: plan.total_cents,
        payment_method: plan.payment_method.clone(),
    });
    let node = state.cluster.node().to_owned();
    let (claim, claimed) = state
        .store
        .claim_idempotency_key_paying(caller.id, key, &hash, &node, charge)
        .await?;
    let (order_id, resumed) = match claim {
        KeyClaim::Proceed { order_id, resumed } => (order_id, resumed),
        KeyClaim::Replay { status, body } => return Ok(CheckoutAnswer::replayed(status, body)),
        KeyClaim::InProgress => {
            return Err(ApiError::new(ErrorCode::RequestInProgress).retry_after(1));
        }
        KeyClaim::Mismatch => return Err(ErrorCode::IdempotencyKeyReused.into()),
    };
    if resumed {
        metrics::counter!("checkouts_resumed_total").increment(1);
    }
    // The saga runs to its end on its own task: a client that goes away mid-request must not
    // leave its key locked, or a payment half-recorded.
    let task_state = state.clone();
    let task_caller = caller.clone();
    let task_key = key.to_owned();
    let saga = actix_web::rt::spawn(async move {
        let attempt = Attempt {
            order_id,
            resumed,
            plan,
            claimed,
        };
        let answering = Answering { hash, place };
        run_checkout(&task_state, &task_caller, &task_key, attempt, answering).await
    })
    .await;
    match saga {
        Ok(answer) => answer,
        Err(error) => {
            // The task panicked: nothing is known to have finished. Unlock so a retry resumes.
            tracing::error!(error = %error, order_id = %order_id, "checkout task failed");
            state
                .store
                .unlock_idempotency_key(caller.id, key, &node)
                .await?;
            Err(ApiError::internal(error))
        }
    }
}

/// One attempt of a checkout, as its key's claim left it: the order id the key is bound to,
/// whether an earlier attempt ran, the request validated, and the pending payment recorded with
/// the claim (a key taken fresh from a valid request).
struct Attempt {
    order_id: OrderId,
    resumed: bool,
    plan: Result<Plan, ApiError>,
    claimed: Option<Payment>,
}

/// The key's place in this process while its checkout runs, and the request's hash: what a
/// placed checkout's answer is held with until the store keeps it.
struct Answering {
    hash: String,
    place: InFlightGuard,
}

/// Runs one attempt of a checkout bound to `order_id` and settles its key: completed with a
/// final answer, unlocked after a passing failure, released when nothing was done.
async fn run_checkout(
    state: &AppState,
    caller: &AuthUser,
    key: &str,
    attempt: Attempt,
    answering: Answering,
) -> Result<CheckoutAnswer, ApiError> {
    let Attempt {
        order_id,
        resumed,
        plan,
        claimed,
    } = attempt;
    // An earlier attempt may have placed the order and died before answering: answer with it.
    // Its write may have committed with nobody told (the database went away at the commit), so
    // an open order is handed to dispatch again: placing an id that exists adopts it there.
    if resumed {
        let outcome = match state.store.load_order(order_id).await {
            Ok(Some(order)) if order.is_open() => {
                let placement = PlaceOrder {
                    order: order.placement(),
                };
                match state.engine.execute(placement).await {
                    Ok(view) => Some(Outcome::Placed(view)),
                    Err(error) => Some(transient(error)),
                }
            }
            Ok(Some(order)) => Some(Outcome::Placed(order.view())),
            Ok(None) => None,
            Err(error) => Some(transient(error)),
        };
        if let Some(outcome) = outcome {
            return finish(state, caller, key, outcome, answering).await;
        }
    }
    let plan = match plan {
        Ok(plan) => plan,
        Err(error) if error.status_code() == StatusCode::SERVICE_UNAVAILABLE => {
            return finish(state, caller, key, Outcome::Transient(error), answering).await;
        }
        Err(error) => {
            // Invalid parameters: nothing was done, nothing is kept — unless an earlier
            // attempt already holds money for this key (say the merchant closed in between):
            // then this answer is final, and the reconciler releases the hold.
            if state.store.release_idempotency_key(caller.id, key).await? {
                return Err(error);
            }
            return finish(state, caller, key, Outcome::Final(error), answering).await;
        }
    };
    let outcome = process(state, caller, key, order_id, resumed, plan, claimed).await;
    finish(state, caller, key, outcome, answering).await
}

/// Keeps the answer for the key (or unlocks it) and answers the client. A placed order's
/// answer is kept off the answer's path, with others ([`super::key_answers`]).
async fn finish(
    state: &AppState,
    caller: &AuthUser,
    key: &str,
    outcome: Outcome,
    answering: Answering,
) -> Result<CheckoutAnswer, ApiError> {
    match outcome {
        Outcome::Placed(view) => {
            let body = serde_json::to_string(&view).map_err(ApiError::internal)?;
            let Answering { hash, place } = answering;
            place.answered(Answered {
                hash,
                status: StatusCode::CREATED.as_u16(),
                body: body.clone(),
            });
            let answer = KeyAnswer {
                user: caller.id,
                key: key.to_owned(),
                status: StatusCode::CREATED.as_u16(),
                body: body.clone(),
            };
            state.key_answers.keep(answer, view.id, place).await;
            metrics::counter!("checkouts_total", "outcome" => "placed").increment(1);
            tracing::info!(order_id = %view.id, customer_id = %caller.id, total_cents = view.total_cents.0, "order checked out");
            Ok(CheckoutAnswer {
                status: StatusCode::CREATED,
                body,
                replayed: false,
            })
        }
        Outcome::Final(error) => {
            if error.code() == ErrorCode::RequestInProgress {
                // Another attempt took the key over: its answer is the one kept.
                return Err(error.retry_after(1));
            }
            let body = serde_json::to_string(&error.body()).map_err(ApiError::internal)?;
            state
                .store
                .complete_idempotency_key(caller.id, key, error.status_code().as_u16(), &body)
                .await?;
            state.settlement.notify_one();
            metrics::counter!("checkouts_total", "outcome" => error.code().as_str()).increment(1);
            Err(error)
        }
        Outcome::Transient(error) => {
            metrics::counter!("checkouts_total", "outcome" => "retryable").increment(1);
            state
                .store
                .unlock_idempotency_key(caller.id, key, state.cluster.node())
                .await?;
            Err(error)
        }
    }
}
