//! Request-body and query extractors that answer bad input through the error table: a JSON body
//! over 64 KiB, of the wrong content type, malformed, or with a missing or mistyped field.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON request body. Unlike `web::Json`, its errors name the offending field
/// (`items[2].quantity: invalid type: string "2", expected i64`).
pub struct ApiJson<T>(pub T);

/// Whether the request declares a JSON body (`application/json` or `application/*+json`).
pub fn is_json(req: &HttpRequest) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON document into `T`, mapping syntax errors to `malformed_json` and shape errors
/// to `invalid_field` with the field's path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::new(ErrorCode::MalformedJson)
                .with_message(format!("The body is not valid JSON: {inner}"));
        }
        let message = strip_position(&inner.to_string());
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'));
        match (path.as_str(), missing) {
            (".", Some(field)) => ApiError::invalid_field(field, "is required"),
            (".", None) => ApiError::new(ErrorCode::InvalidField)
                .with_message(format!("The body has the wrong shape: {message}")),
            (path, Some(field)) => {
                ApiError::invalid_field(format!("{path}.{field}"), "is required")
            }
            (path, None) => ApiError::invalid_field(path, message),
        }
    })
}

/// serde_json appends " at line 1 column 20" to its messages; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if !json {
                return Err(ApiError::new(ErrorCode::UnsupportedMediaType));
            }
            if declared_len.is_some_and(|len| len > MAX_BODY_BYTES) {
                return Err(ApiError::new(ErrorCode::PayloadTooLarge));
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| {
                    ApiError::new(ErrorCode::BadRequest)
                        .with_message("The request body could not be read.")
                })?;
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(ApiError::new(ErrorCode::PayloadTooLarge));
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(ApiJson)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Line {
        quantity: i64,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        items: Vec<Line>,
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        let error = parse_json::<Body>(b"{\"name\": ").unwrap_err();
        assert_eq!(error.code(), ErrorCode::MalformedJson);
    }

    #[test]
    fn shape_errors_name_the_field_path() {
        let error =
            parse_json::<Body>(br#"{"name":"x","items":[{"quantity":1},{"quantity":"2"}]}"#)
                .unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidField);
        assert_eq!(
            error.body().error.field.as_deref(),
            Some("items[1].quantity")
        );

        let error = parse_json::<Body>(br#"{"items":[]}"#).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidField);
        assert_eq!(error.body().error.field.as_deref(), Some("name"));

        let error = parse_json::<Body>(br#"{"name":"x","items":[{}]}"#).unwrap_err();
        assert_eq!(
            error.body().error.field.as_deref(),
            Some("items[0].quantity")
        );

        let error = parse_json::<Body>(b"\"just a string\"").unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidField);
        assert_eq!(error.body().error.field, None);
    }
}
