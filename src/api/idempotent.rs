//! Idempotency-Key at the HTTP edge of checkout: the header read and checked, what a repeated
//! key is compared by, and the answer replayed for it. The key's claim and its record are the
//! store's ([`crate::store::KeyClaim`]).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::error::{ApiError, ErrorCode};

/// Longest Idempotency-Key.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 255;
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// Set on a response replayed for a repeated Idempotency-Key.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

/// The request's Idempotency-Key: required, 1 to [`IDEMPOTENCY_KEY_MAX_LEN`] visible ASCII
/// characters.
pub(super) fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
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

/// What a repeated Idempotency-Key is compared by: SHA-256 of the body's JSON with its keys in
/// order, so that the same request in another key order or spacing is the same request.
pub fn request_hash(body: &serde_json::Value) -> String {
    Sha256::digest(body.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A checkout's answer that is not a fresh error: the placed order (201), or the answer kept
/// for a repeated Idempotency-Key, replayed as first given.
#[derive(Debug)]
pub struct CheckoutAnswer {
    pub status: StatusCode,
    /// The JSON body: an [`OrderView`](crate::domain::OrderView) for 201, else an
    /// [`ErrorBody`](super::error::ErrorBody).
    pub body: String,
    /// Answered from the key's record (sent with `Idempotent-Replayed: true`).
    pub replayed: bool,
}

impl CheckoutAnswer {
    pub(super) fn replayed(status: u16, body: String) -> CheckoutAnswer {
        CheckoutAnswer {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
            replayed: true,
        }
    }

    /// The HTTP response REST checkout sends for it.
    pub fn into_response(self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status)
            .content_type("application/json")
            .body(self.body);
        if self.replayed {
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
                actix_web::http::header::HeaderValue::from_static("true"),
            );
        }
        response
    }
}
