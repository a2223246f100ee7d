//! WebSocket endpoints: the handshake checks the token (header or `?token=`), the browser's
//! origin, the role and access to what is asked for, then hands the socket to a session actor.
//! A refused handshake is an ordinary JSON error response: no upgrade happens.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::OpenApi;

use super::handover::Handover;
use super::session::CredentialCheck;
use super::{DriverSession, MerchantSession, SessionSetup, TrackerSession};
use crate::api::auth::{AuthUser, Via, authenticate, bearer_token};
use crate::api::error::{ApiError, ErrorBody, ErrorCode};
use crate::api::{AppState, resource};
use crate::config::GatewayConfig;
use crate::domain::{MerchantId, OrderId, Role, Scope};

/// Registers the three sockets' routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/ws/driver").route(web::get().to(driver)))
        .service(resource("/ws/merchant").route(web::get().to(merchant)))
        .service(resource("/ws/orders/{order_id}").route(web::get().to(order)));
}

/// The handshakes' part of the OpenAPI document (merged into the API's at start-up).
#[derive(OpenApi)]
#[openapi(paths(driver, merchant, order))]
pub struct GatewayDoc;

#[derive(Deserialize)]
struct SocketQuery {
    token: Option<String>,
    merchant_id: Option<String>,
}

fn query(req: &HttpRequest) -> Result<SocketQuery, ApiError> {
    web::Query::<SocketQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| {
            ApiError::new(ErrorCode::InvalidQuery)
                .with_message(format!("The query string is invalid: {e}"))
        })
}

/// The caller, from `Authorization: Bearer` or, for browsers (which cannot set headers on a
/// WebSocket), `?token=`.
async fn caller(
    req: &HttpRequest,
    state: &AppState,
    query: &SocketQuery,
) -> Result<AuthUser, ApiError> {
    let token = match (bearer_token(req), &query.token) {
        (Ok(token), _) => token.to_owned(),
        (Err(_), Some(token)) if !token.is_empty() => token.clone(),
        (Err(error), _) => return Err(error),
    };
    authenticate(state, &token, req.method().as_str(), req.path()).await
}

/// Browsers send `Origin`; it must be the page's own origin or one on the allowlist. Clients
/// that are not browsers send none and are let through (they cannot be tricked into
/// connecting with someone else's cookies, and we use no cookies anyway).
fn check_origin(req: &HttpRequest, gateway: &GatewayConfig) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let refused = || {
        ApiError::new(ErrorCode::Forbidden)
            .with_message("This origin may not open a WebSocket here.")
    };
    let origin = origin
        .to_str()
        .map_err(|_| refused())?
        .trim_end_matches('/')
        .to_ascii_lowercase();
    if gateway.any_origin || gateway.allowed_origins.contains(&origin) {
        return Ok(());
    }
    let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    if gateway.allowed_origins.is_empty() && host.as_deref() == Some(authority) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// For a socket opened with an API key: asks the key cache whether the key still works.
fn credential_check(state: &web::Data<AppState>, caller: &AuthUser) -> Option<CredentialCheck> {
    let Via::ApiKey { lookup, .. } = &caller.grant.via else {
        return None;
    };
    let state = state.clone();
    let lookup = lookup.clone();
    Some(Box::new(move || {
        let state = state.clone();
        let lookup = lookup.clone();
        Box::pin(async move { state.auth.keys.still_valid(&state.store, &lookup).await })
    }))
}

/// Accepts the handshake: a 101 carrying what starts the session once the server has written
/// it and handed the connection over ([`super::handover`]).
fn upgrade(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    caller: &AuthUser,
    start: impl FnOnce(SessionSetup) + 'static,
) -> Result<HttpResponse, ApiError> {
    let mut accepted = actix_http::ws::handshake(req.head()).map_err(|e| {
        ApiError::new(ErrorCode::BadRequest).with_message(format!("Not a WebSocket handshake: {e}"))
    })?;
    let engine = state.engine.clone();
    let config = state.gateway.clone();
    let token_expires_at = caller.expires_at;
    let still_valid = credential_check(state, caller);
    let shutdown = state.sockets_shutdown.clone();
    // Counted from the handshake on, so that a stop that starts before the session does still
    // waits for its close frame.
    let counted = state.socket_writers.token();
    let mut response = HttpResponse::from(accepted.finish().map_into_boxed_body());
    response
        .extensions_mut()
        .insert(Handover::new(move |connection| {
            let (reader, writer) = connection.split();
            start(SessionSetup {
                reader,
                writer,
                engine,
                config,
                token_expires_at,
                still_valid,
                shutdown,
                counted,
            });
        }));
    Ok(response)
}

/// `GET /ws/driver`: the driver app's WebSocket (messages: docs/protocol.md).
#[utoipa::path(
    get, path = "/ws/driver", tag = "websockets", security(("bearer" = ["drivers:write"])),
    params(("token" = Option<String>, Query, description = "The token, for browsers that cannot set Authorization")),
    responses(
        (status = 101, description = "Switching protocols: the socket is open"),
        (status = 400, description = "Not a WebSocket handshake", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "Not a driver, or a browser origin not allowed", body = ErrorBody),
    )
)]
pub async fn driver(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query(&req)?;
    let caller = caller(&req, &state, &query).await?;
    caller.require_scope(Scope::DriversWrite)?;
    check_origin(&req, &state.gateway)?;
    caller.require(&[Role::Driver])?;
    let driver_id = caller.id;
    upgrade(&req, &state, &caller, move |setup| {
        DriverSession::start(setup, driver_id);
    })
}

/// `GET /ws/merchant`: the live board of every merchant the caller owns, or of `?merchant_id=`.
#[utoipa::path(
    get, path = "/ws/merchant", tag = "websockets", security(("bearer" = ["orders:read"])),
    params(
        ("token" = Option<String>, Query, description = "The token, for browsers"),
        ("merchant_id" = Option<String>, Query, description = "Only this merchant's board"),
    ),
    responses(
        (status = 101, description = "Switching protocols: the socket is open"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "A merchant the caller does not own, or none owned", body = ErrorBody),
    )
)]
pub async fn merchant(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query(&req)?;
    let caller = caller(&req, &state, &query).await?;
    caller.require_scope(Scope::OrdersRead)?;
    check_origin(&req, &state.gateway)?;
    caller.require(&[Role::Merchant])?;
    let mut owned = state.store.merchants_of_owner(caller.id).await?;
    // A key limited to one merchant sees that board only.
    owned.retain(|m| caller.may_reach(m.id));
    let merchants: Vec<MerchantId> = match &query.merchant_id {
        Some(raw) => {
            let wanted: MerchantId = raw
                .parse()
                .map_err(|_| ApiError::new(ErrorCode::NotFound))?;
            // Someone else's merchant is answered like one that does not exist.
            if !owned.iter().any(|m| m.id == wanted) {
                return Err(ApiError::new(ErrorCode::NotFound).with_message("No such merchant."));
            }
            vec![wanted]
        }
        None => owned.iter().map(|m| m.id).collect(),
    };
    if merchants.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound).with_message("You own no merchant yet."));
    }
    let may_act = caller.grant.scopes.contains(Scope::OrdersWrite);
    upgrade(&req, &state, &caller, move |setup| {
        MerchantSession::start(setup, merchants, may_act);
    })
}

/// `GET /ws/orders/{order_id}`: tracking, for the order's customer, its merchant's owner, its
/// driver, and admins. Anyone else gets 404, as if the order did not exist.
#[utoipa::path(
    get, path = "/ws/orders/{order_id}", tag = "websockets", security(("bearer" = ["orders:read"])),
    params(("order_id" = uuid::Uuid, Path), ("token" = Option<String>, Query, description = "The token, for browsers")),
    responses(
        (status = 101, description = "Switching protocols: the socket is open"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn order(
    req: HttpRequest,
    path: web::Path<OrderId>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query(&req)?;
    let caller = caller(&req, &state, &query).await?;
    caller.require_scope(Scope::OrdersRead)?;
    check_origin(&req, &state.gateway)?;
    let order_id = path.into_inner();
    let not_found = || ApiError::new(ErrorCode::NotFound).with_message("No such order.");
    let order = match state.engine.order(order_id).await {
        Ok(order) => order,
        Err(crate::actors::EngineError::OrderNotFound) => return Err(not_found()),
        Err(error) => return Err(error.into()),
    };
    let allowed = caller.may_reach(order.merchant_id)
        && match caller.role {
            Role::Admin => true,
            Role::Customer => order.customer_id == caller.id,
            Role::Driver => order.driver_id == Some(caller.id),
            Role::Merchant => state
                .store
                .merchant(order.merchant_id)
                .await?
                .is_some_and(|merchant| merchant.owner_id == caller.id),
        };
    if !allowed {
        return Err(not_found());
    }
    upgrade(&req, &state, &caller, move |setup| {
        TrackerSession::start(setup, order_id);
    })
}
