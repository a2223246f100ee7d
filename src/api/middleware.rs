//! Per-request plumbing: a request id and tracing span for every request, request metrics by
//! route and status, and a last line of defence that turns any non-JSON error response into the
//! standard error body.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, Next};
use actix_web::{HttpMessage, ResponseError};
use tracing::Instrument;

use super::error::{ApiError, ErrorCode};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest client-supplied request id we adopt; anything else gets a fresh id.
const REQUEST_ID_MAX_LEN: usize = 64;
/// Route label for requests that matched no route, so unknown paths cannot explode the
/// number of metric series.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The id of the request being served, available to handlers through request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= REQUEST_ID_MAX_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Wraps every request in a span carrying its id, logs its outcome, and records
/// `http_requests_total` and `http_request_duration_seconds` by method, route and status.
/// Only the path is logged, never the query string (WebSocket clients put tokens there).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let method = method_label(req.method());
    let route = req
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let span = tracing::info_span!("request", request_id = %id, method, route = %route);
    req.extensions_mut().insert(RequestId(id.clone()));

    let mut response = next.call(req).instrument(span.clone()).await?;

    let status = response.status();
    let elapsed = started.elapsed();
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1e3,
            "request served"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(response)
}

/// Replaces an error response that is not already JSON (one produced inside actix-web rather
/// than by our handlers) with the standard error body for its status.
pub fn json_error_fallback<B>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    }
    let status = response.status();
    let (request, _) = response.into_parts();
    let replacement = ApiError::new(ErrorCode::for_status(status)).error_response();
    let replacement = ServiceResponse::new(request, replacement).map_into_boxed_body();
    Ok(ErrorHandlerResponse::Response(
        replacement.map_body(|_, body| EitherBody::right(body)),
    ))
}
