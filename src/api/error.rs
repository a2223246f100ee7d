//! The error table: every error code the API can answer with, its HTTP status and default
//! message, and the one JSON shape all of them share:
//! `{"error":{"code":"snake_case","message":"…"}}` (plus `field` for a field that failed
//! validation). A new failure mode is one new row.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::store::StoreError;

macro_rules! error_table {
    ($($variant:ident => $status:ident, $code:literal, $message:literal;)*) => {
        /// Every error code of the API.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status),* }
            }

            /// The stable snake_case code clients match on.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),* }
            }

            pub fn default_message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message),* }
            }
        }
    };
}

error_table! {
    MalformedJson        => BAD_REQUEST,            "malformed_json",         "The request body is not valid JSON.";
    InvalidQuery         => BAD_REQUEST,            "invalid_query",          "The query string is invalid.";
    BadRequest           => BAD_REQUEST,            "bad_request",            "The request is malformed.";
    MissingToken         => UNAUTHORIZED,           "missing_token",          "Authenticate with the header Authorization: Bearer <token>.";
    InvalidToken         => UNAUTHORIZED,           "invalid_token",          "The token is malformed, forged, or for an account that no longer exists.";
    TokenExpired         => UNAUTHORIZED,           "token_expired",          "The token has expired; log in again.";
    InvalidCredentials   => UNAUTHORIZED,           "invalid_credentials",    "The email or password is wrong.";
    Forbidden            => FORBIDDEN,              "forbidden",              "Your account may not do this.";
    NotFound             => NOT_FOUND,              "not_found",              "There is nothing here.";
    MethodNotAllowed     => METHOD_NOT_ALLOWED,     "method_not_allowed",     "This method is not allowed on this resource.";
    EmailTaken           => CONFLICT,               "email_taken",            "An account with this email already exists.";
    Conflict             => CONFLICT,               "conflict",               "The request conflicts with the current state.";
    PayloadTooLarge      => PAYLOAD_TOO_LARGE,      "payload_too_large",      "The request body is larger than 64 KiB.";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Send the body as JSON with Content-Type: application/json.";
    InvalidField         => UNPROCESSABLE_ENTITY,   "invalid_field",          "A field of the request is missing or invalid.";
    OutsideServiceArea   => UNPROCESSABLE_ENTITY,   "outside_service_area",   "The location is outside the service area.";
    InvalidLocation      => UNPROCESSABLE_ENTITY,   "invalid_location",       "Latitude must be within -90..90 and longitude within -180..180.";
    InvalidTransition    => CONFLICT,               "invalid_transition",     "The order is not in a state that allows this.";
    OfferExpired         => CONFLICT,               "offer_expired",          "The offer has expired.";
    DriverBusy           => CONFLICT,               "driver_busy",            "The driver already has an offer or an order.";
    StaleLocation        => CONFLICT,               "stale_location",         "The location is older than the last one received.";
    BadMessage           => BAD_REQUEST,            "bad_message",            "The WebSocket message is not understood.";
    IdempotencyKeyRequired => BAD_REQUEST,          "idempotency_key_required", "Send an Idempotency-Key header (a unique string per checkout).";
    InvalidIdempotencyKey => BAD_REQUEST,           "invalid_idempotency_key", "The Idempotency-Key must be 1 to 255 visible ASCII characters.";
    IdempotencyKeyReused => UNPROCESSABLE_ENTITY,   "idempotency_key_reused", "This Idempotency-Key was used with a different request.";
    RequestInProgress    => CONFLICT,               "request_in_progress",    "A request with this Idempotency-Key is still being processed by a live server; retry shortly with the same key.";
    CheckoutAbandoned    => GONE,                   "checkout_abandoned",     "This checkout was not finished in time and was given up; any hold on the card was released. Check out again with a new Idempotency-Key.";
    MerchantClosed       => CONFLICT,               "merchant_closed",        "The merchant is closed and takes no orders.";
    DropoffTooFar        => UNPROCESSABLE_ENTITY,   "dropoff_too_far",        "The dropoff is too far from the merchant.";
    PaymentDeclined      => PAYMENT_REQUIRED,       "payment_declined",       "The card was declined.";
    InsufficientFunds    => PAYMENT_REQUIRED,       "insufficient_funds",     "The card was declined for insufficient funds.";
    PaymentGatewayUnavailable => SERVICE_UNAVAILABLE, "payment_gateway_unavailable", "The payment gateway is unavailable; try again shortly.";
    InvalidSignature     => BAD_REQUEST,            "invalid_signature",      "The webhook signature is missing, malformed, expired or wrong.";
    WebhooksDisabled     => SERVICE_UNAVAILABLE,    "webhooks_disabled",      "Webhooks are not configured (MEALKITZ_WEBHOOK_SECRET).";
    RateLimited          => TOO_MANY_REQUESTS,      "rate_limited",           "Too many requests; slow down.";
    Internal             => INTERNAL_SERVER_ERROR,  "internal_error",         "Something went wrong on our side; it has been logged.";
    StoreUnavailable     => SERVICE_UNAVAILABLE,    "store_unavailable",      "The database is not available right now; try again shortly.";
    DispatchUnavailable  => SERVICE_UNAVAILABLE,    "dispatch_unavailable",   "Dispatch is briefly unavailable; try again shortly.";
    ActorFailed          => SERVICE_UNAVAILABLE,    "actor_failed",           "This order failed repeatedly and awaits an operator.";
    NotReady             => SERVICE_UNAVAILABLE,    "not_ready",              "The service is not ready.";
}

impl ErrorCode {
    /// The code a bare status maps to, for error responses that did not come from a handler
    /// (actix-web's own rejections).
    pub fn for_status(status: StatusCode) -> ErrorCode {
        match status {
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::UNAUTHORIZED => ErrorCode::InvalidToken,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::NotReady,
            status if status.is_client_error() => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}

impl ErrorCode {
    /// The row for a code string, if the table has one.
    pub fn from_code(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl From<crate::actors::EngineError> for ApiError {
    fn from(error: crate::actors::EngineError) -> Self {
        use crate::actors::EngineError;
        let code = ErrorCode::from_code(error.code()).unwrap_or(ErrorCode::Internal);
        match error {
            EngineError::Store(store) => ApiError::from(store),
            EngineError::Unavailable(_)
            | EngineError::Recovering
            | EngineError::NotOwner(_)
            | EngineError::Failed(_) => ApiError::new(code)
                .with_message(error.to_string())
                .retry_after(1),
            EngineError::Remote {
                code: "dispatch_unavailable" | "store_unavailable" | "actor_failed",
                ..
            } => ApiError::new(code)
                .with_message(error.to_string())
                .retry_after(1),
            other => ApiError::new(code).with_message(other.to_string()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a handler returns; rendered through the table.
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    field: Option<String>,
    retry_after_secs: Option<u64>,
    /// The cause, for the log only; never sent to the client.
    source: Option<anyhow::Error>,
}

/// The JSON body of every error.
#[derive(Serialize, serde::Deserialize, Debug, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, serde::Deserialize, Debug, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `invalid_field`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// An error with the code's default message.
    pub fn new(code: ErrorCode) -> Self {
        ApiError {
            code,
            message: Cow::Borrowed(code.default_message()),
            field: None,
            retry_after_secs: None,
            source: None,
        }
    }

    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = message.into();
        self
    }

    /// A field that is missing or fails validation (422 `invalid_field`).
    pub fn invalid_field(field: impl Into<String>, problem: impl fmt::Display) -> Self {
        let field = field.into();
        let message = format!("{field}: {problem}");
        ApiError {
            field: Some(field),
            ..ApiError::new(ErrorCode::InvalidField).with_message(message)
        }
    }

    /// An unexpected failure: the client sees a bare 500, the log gets `source`.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        ApiError {
            source: Some(source.into()),
            ..ApiError::new(ErrorCode::Internal)
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message.clone().into_owned(),
                field: self.field.clone(),
            },
        }
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        ApiError::new(code)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) | StoreError::LeaseLost(_) => ApiError {
                source: Some(error.into()),
                ..ApiError::new(ErrorCode::StoreUnavailable).retry_after(1)
            },
            StoreError::Duplicate(_) | StoreError::Conflict(_) => ApiError {
                source: Some(error.into()),
                ..ApiError::new(ErrorCode::Conflict)
            },
            other => ApiError::internal(other),
        }
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            match &self.source {
                Some(cause) => tracing::error!(code = %self.code, error = ?cause, "request failed"),
                None => tracing::error!(code = %self.code, "request failed"),
            }
        }
        let mut response = HttpResponse::build(status);
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mealkitz\""),
            ));
        }
        response.json(self.body())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_errors_only() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "duplicate code {name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name} is not snake_case"
            );
            assert!(
                code.status().as_u16() >= 400,
                "{name} is not an error status"
            );
            assert!(!code.default_message().is_empty(), "{name} has no message");
        }
    }

    #[test]
    fn every_engine_and_socket_error_code_is_in_the_table() {
        for code in crate::actors::EngineError::CODES
            .iter()
            .chain(crate::gateway::SOCKET_ERROR_CODES)
        {
            assert!(
                ErrorCode::from_code(code).is_some(),
                "{code} missing from the table"
            );
        }
    }

    #[test]
    fn store_unavailable_becomes_503_with_retry_after() {
        let error = ApiError::from(StoreError::Unavailable("down".into()));
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
    }

    #[test]
    fn internal_errors_hide_their_cause_from_the_client() {
        let error = ApiError::internal(anyhow::anyhow!("password=hunter2 at db.internal"));
        let body = serde_json::to_string(&error.body()).unwrap();
        assert!(!body.contains("hunter2"), "{body}");
        assert!(body.contains("internal_error"));
    }
}
