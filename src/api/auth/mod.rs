//! Authentication: the [`AuthUser`] extractor that every protected route takes, and the bearer
//! credential it reads — a person's login token (HS256), an API key (`mk_live_…`), or an
//! integration access token (EdDSA, from OAuth2 client credentials). Each proves a user and a
//! [`Grant`]: the scopes it carries and the merchant it is limited to. Password hashing and login
//! tokens are in `credentials.rs`, API keys in `keys.rs`, integration tokens in `signing.rs`.

mod credentials;
pub mod keys;
pub mod signing;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::future::LocalBoxFuture;

pub use self::credentials::{
    Auth, Claims, IssuedToken, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS, Passwords, Tokens,
};
use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use crate::domain::{MerchantId, Role, Scope, Scopes, UserId};

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A person's own login token: every scope their role can use.
    Session,
    /// An API key (its id; `test` for `mk_test_` keys).
    ApiKey { id: uuid::Uuid, test: bool },
    /// An access token of an OAuth2 client.
    Client { client_id: String },
}

impl Via {
    /// A short label for logs and the audit log (`session`, `api_key:<id>`, `client:<id>`).
    pub fn label(&self) -> String {
        match self {
            Via::Session => "session".to_owned(),
            Via::ApiKey { id, .. } => format!("api_key:{id}"),
            Via::Client { client_id } => format!("client:{client_id}"),
        }
    }
}

/// What the credential allows, beyond the role of the user it acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub via: Via,
    pub scopes: Scopes,
    /// Only this merchant's resources, when set.
    pub merchant: Option<MerchantId>,
}

impl Grant {
    /// A person's own session: every scope the role can use, no merchant limit.
    pub fn session(role: Role) -> Grant {
        Grant {
            via: Via::Session,
            scopes: Scopes::for_role(role),
            merchant: None,
        }
    }
}

/// The caller, proven by a valid bearer credential. Taking this as a handler argument makes the
/// route require authentication.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    pub role: Role,
    /// When the credential stops being valid, unix seconds (`i64::MAX` for a key that never
    /// expires).
    pub expires_at: i64,
    pub grant: Grant,
}

impl AuthUser {
    /// A person signed in with a login token.
    pub fn from_session(claims: Claims) -> AuthUser {
        AuthUser {
            id: claims.sub,
            role: claims.role,
            expires_at: claims.exp,
            grant: Grant::session(claims.role),
        }
    }

    /// Refuses the request unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::Forbidden))
        }
    }

    /// Refuses the request (403 `insufficient_scope`) unless the credential carries `scope`.
    /// Every protected route and socket message calls it with the scope it states.
    pub fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        if self.grant.scopes.contains(scope) {
            Ok(())
        } else {
            Err(ApiError::insufficient_scope(scope))
        }
    }

    /// Whether the credential may touch `merchant`'s resources (it is not limited to another).
    pub fn may_reach(&self, merchant: MerchantId) -> bool {
        self.grant.merchant.is_none_or(|only| only == merchant)
    }

    /// Refuses (403 `merchant_not_in_grant`) a credential limited to another merchant.
    pub fn require_merchant(&self, merchant: MerchantId) -> Result<(), ApiError> {
        if self.may_reach(merchant) {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::MerchantNotInGrant))
        }
    }

    /// Whether this is a person's own session (not a key or an integration's token).
    pub fn is_session(&self) -> bool {
        self.grant.via == Via::Session
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
    if keys::looks_like_key(credential) {
        return state
            .auth
            .keys
            .authenticate(state, credential, method, path)
            .await;
    }
    if signing::is_integration_token(credential) {
        return state.auth.signing.authenticate(state, credential).await;
    }
    Ok(AuthUser::from_session(
        state.auth.tokens.verify(credential)?,
    ))
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
