//! Who a request acts for: the user, their role, and the [`Grant`] of the credential they used
//! (how they proved it, its scopes, the merchant it is limited to), with the checks handlers
//! make against them. No I/O: proving a credential is `super::authenticate`'s.

use super::super::error::{ApiError, ErrorCode};
use crate::domain::{MerchantId, Role, Scope, Scopes, UserId};

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A person's own login token: every scope their role can use.
    Session,
    /// An API key (its id, the public id inside it; `test` for `mk_test_` keys).
    ApiKey {
        id: uuid::Uuid,
        lookup: String,
        test: bool,
    },
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
    /// A person's own session: every scope (their role decides what they may do, as it always
    /// has), no merchant limit.
    pub fn session() -> Grant {
        Grant {
            via: Via::Session,
            scopes: Scopes::all(),
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
