//! Errors as the REST API answers them: the rows of the error table (`crate::error`) rendered
//! with their HTTP status and `Retry-After`, in the one JSON shape all of them share:
//! `{"error":{"code":"snake_case","message":"…"}}` (plus `field` for a field that failed
//! validation). A new failure mode is one new row.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::store::StoreError;

pub use crate::error::ErrorCode;

impl ErrorCode {
    /// The HTTP status of the code's row.
    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.status_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
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

impl From<crate::actors::EngineError> for ApiError {
    fn from(error: crate::actors::EngineError) -> Self {
        match error {
            crate::actors::EngineError::Store(store) => ApiError::from(store),
            other => ApiError::new(other.code()).with_message(other.to_string()),
        }
    }
}

/// An error a handler returns; rendered through the table.
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    field: Option<String>,
    retry_after_secs: Option<u64>,
    /// `WWW-Authenticate` for a 403 `insufficient_scope` (RFC 6750 §3.1).
    required_scope: Option<&'static str>,
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
            retry_after_secs: code.retry_after_secs(),
            required_scope: None,
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

    /// 403 `insufficient_scope` naming the scope needed, in the body and, as RFC 6750 §3.1 has
    /// it, in `WWW-Authenticate`.
    pub fn insufficient_scope(scope: crate::domain::Scope) -> Self {
        ApiError {
            required_scope: Some(scope.as_str()),
            ..ApiError::new(ErrorCode::InsufficientScope).with_message(format!(
                "This key or token lacks the scope `{scope}` that this needs."
            ))
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

impl From<crate::maps::MapsError> for ApiError {
    fn from(error: crate::maps::MapsError) -> Self {
        let crate::maps::MapsError::Unavailable(reason) = error;
        ApiError::new(ErrorCode::MapsUnavailable).with_message(reason)
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
        if let Some(scope) = self.required_scope {
            let value = format!(
                "Bearer realm=\"mealkitz\", error=\"insufficient_scope\", scope=\"{scope}\""
            );
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
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
