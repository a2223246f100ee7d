//! Authentication: the [`AuthUser`] extractor that every protected route takes, and the bearer
//! credential it reads — a person's login token (HS256), an API key (`mk_live_…`), or an
//! integration access token (EdDSA, from OAuth2 client credentials). Each proves a user and a
//! [`Grant`] (`caller.rs`): the scopes it carries and the merchant it is limited to. Password hashing and login
//! tokens are in `credentials.rs`, API keys in `keys.rs`, integration tokens in `signing.rs`.

mod caller;
mod credentials;
pub mod keys;
pub mod signing;

use std::marker::PhantomData;
use std::ops::Deref;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::future::LocalBoxFuture;

pub use self::caller::{AuthUser, Grant, Via};
pub use self::credentials::{
    Auth, Claims, IssuedToken, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS, Passwords, Tokens,
};
use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use crate::domain::scope::NeedsScope;
pub use crate::domain::scope::need;

impl AuthUser {
    /// A person signed in with a login token.
    pub fn from_session(claims: Claims) -> AuthUser {
        AuthUser {
            id: claims.sub,
            role: claims.role,
            expires_at: claims.exp,
            grant: Grant::session(),
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

/// The caller a bearer credential proves, whichever kind it is; for `method` and `path` (the
/// audit log's record of an admin key's use). Also applies the per-key request limit.
pub async fn authenticate(
    state: &AppState,
    credential: &str,
    method: &str,
    path: &str,
) -> Result<AuthUser, ApiError> {
    let (kind, proven) = if keys::looks_like_key(credential) {
        let proven = state
            .auth
            .keys
            .authenticate(
                &state.store,
                &state.limits.per_api_key,
                credential,
                method,
                path,
            )
            .await;
        ("api_key", proven)
    } else if signing::is_integration_token(credential) {
        let issuer = signing::issuer_of(&state.notify.public_url);
        let proven = state
            .auth
            .signing
            .authenticate(&state.store, &issuer, credential)
            .await;
        ("access_token", proven)
    } else {
        let proven = state
            .auth
            .tokens
            .verify(credential)
            .map(AuthUser::from_session);
        ("session", proven)
    };
    let outcome = match &proven {
        Ok(_) => "ok",
        Err(error) => error.code().as_str(),
    };
    metrics::counter!("auth_requests_total", "credential" => kind, "outcome" => outcome)
        .increment(1);
    proven
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let credential = bearer_token(req).map(str::to_owned);
        let method = req.method().to_string();
        let path = req.path().to_owned();
        Box::pin(async move {
            let state = state
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState is not registered")))?;
            authenticate(&state, &credential?, &method, &path).await
        })
    }
}

/// The caller, proven by a valid bearer credential that carries the scope `S` (else 403
/// `insufficient_scope`). A handler states the scope it needs by taking
/// `caller: Scoped<need::OrdersWrite>`; the check runs before the request body is read.
pub struct Scoped<S: NeedsScope> {
    caller: AuthUser,
    scope: PhantomData<S>,
}

impl<S: NeedsScope> Scoped<S> {
    pub fn into_inner(self) -> AuthUser {
        self.caller
    }
}

impl<S: NeedsScope> Deref for Scoped<S> {
    type Target = AuthUser;

    fn deref(&self) -> &AuthUser {
        &self.caller
    }
}

impl<S: NeedsScope + 'static> FromRequest for Scoped<S> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = AuthUser::from_request(req, payload);
        Box::pin(async move {
            let caller = caller.await?;
            caller.require_scope(S::SCOPE)?;
            Ok(Scoped {
                caller,
                scope: PhantomData,
            })
        })
    }
}
