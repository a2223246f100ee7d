//! Authentication: the [`AuthUser`] extractor that every protected route takes, and the bearer
//! token it reads. Password hashing and the tokens themselves are in `credentials.rs`, which the
//! shared state holds and this extractor reads back through it.

mod credentials;

use std::future::{Ready, ready};

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

pub use self::credentials::{
    Auth, Claims, IssuedToken, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS, Passwords, Tokens,
};
use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use crate::domain::{Role, UserId};

/// The caller, proven by a valid bearer token. Taking this as a handler argument makes the
/// route require authentication.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    pub role: Role,
    /// When the token stops being valid, unix seconds.
    pub expires_at: i64,
}

impl AuthUser {
    /// Refuses the request unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::Forbidden))
        }
    }
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer_token(req: &HttpRequest) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ErrorCode::MissingToken)?;
    let value = value.to_str().map_err(|_| ErrorCode::InvalidToken)?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::new(ErrorCode::InvalidToken)
            .with_message("Use the header Authorization: Bearer <token>.")),
    }
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState is not registered")))?;
            let claims = state.auth.tokens.verify(bearer_token(req)?)?;
            Ok(AuthUser {
                id: claims.sub,
                role: claims.role,
                expires_at: claims.exp,
            })
        })())
    }
}
