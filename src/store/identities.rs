//! Sign-in with an OpenID provider in the store: the identities (issuer, subject) linked to
//! accounts, and the sign-ins in flight (`oidc_logins`: state, nonce, PKCE verifier), kept here
//! so that any replica can finish a sign-in another started, and each only once.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::users::{NewUser, User};
use super::{Store, StoreError, on_pool, on_writer};
use crate::domain::UserId;

/// How long a sign-in may take at the provider before its state is refused.
pub const OIDC_LOGIN_TTL_SECS: i64 = 10 * 60;

/// A sign-in in flight, as `GET /auth/oidc/login` starts it.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcLogin {
    /// The `state` sent to the provider (random, single use).
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier the code exchange proves possession with.
    pub pkce_verifier: String,
    /// The page on this site to go back to (a relative path).
    pub return_to: String,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct OidcLoginRow {
    state: String,
    nonce: String,
    pkce_verifier: String,
    return_to: String,
    created_at: DateTime<Utc>,
}

impl From<OidcLoginRow> for OidcLogin {
    fn from(row: OidcLoginRow) -> Self {
        OidcLogin {
            state: row.state,
            nonce: row.nonce,
            pkce_verifier: row.pkce_verifier,
            return_to: row.return_to,
            created_at: row.created_at,
        }
    }
}

impl Store {
    /// Records a sign-in in flight, and forgets those older than [`OIDC_LOGIN_TTL_SECS`] (the
    /// people who never came back).
    pub async fn insert_oidc_login(&self, login: &OidcLogin) -> Result<(), StoreError> {
        let stale_before = login.created_at - Duration::seconds(OIDC_LOGIN_TTL_SECS);
        on_writer!(self, |pool| {
            sqlx::query("DELETE FROM oidc_logins WHERE created_at < $1")
                .bind(stale_before)
                .execute(pool)
                .await?;
            sqlx::query(
                "INSERT INTO oidc_logins (state, nonce, pkce_verifier, return_to, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&login.state)
            .bind(&login.nonce)
            .bind(&login.pkce_verifier)
            .bind(&login.return_to)
            .bind(login.created_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Takes the sign-in `state` names: deleted as it is read, so a second callback with the
    /// same state (a replay, a double click) finds nothing. `None` also when it is older than
    /// [`OIDC_LOGIN_TTL_SECS`] at `now`.
    pub async fn take_oidc_login(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<OidcLogin>, StoreError> {
        let row: Option<OidcLoginRow> = on_writer!(self, |pool| {
            sqlx::query_as(
                "DELETE FROM oidc_logins WHERE state = $1 \
                 RETURNING state, nonce, pkce_verifier, return_to, created_at",
            )
            .bind(state)
            .fetch_optional(pool)
            .await?
        });
        let fresh_after = now - Duration::seconds(OIDC_LOGIN_TTL_SECS);
        Ok(row
            .map(OidcLogin::from)
            .filter(|login| login.created_at >= fresh_after))
    }

    /// The account the provider's `(issuer, subject)` is linked to.
    pub async fn identity_user(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let id: Option<Uuid> = on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2",
            )
            .bind(issuer)
            .bind(subject)
            .fetch_optional(pool)
            .await?
        });
        Ok(id.map(UserId))
    }

    /// Links `(issuer, subject)` to `user`. Answers the account it is linked to afterwards:
    /// `user`, or the one another request linked it to first.
    pub async fn link_identity(
        &self,
        issuer: &str,
        subject: &str,
        user: UserId,
    ) -> Result<UserId, StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO user_identities (issuer, subject, user_id, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (issuer, subject) DO NOTHING",
            )
            .bind(issuer)
            .bind(subject)
            .bind(user.as_uuid())
            .bind(super::now())
            .execute(pool)
            .await?;
        });
        self.identity_user(issuer, subject)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("identity of {issuer} vanished")))
    }

    /// Creates an account and links `(issuer, subject)` to it, both or neither. A taken email,
    /// or an identity linked meanwhile, is [`StoreError::Duplicate`].
    pub async fn create_user_with_identity(
        &self,
        new: NewUser,
        issuer: &str,
        subject: &str,
    ) -> Result<User, StoreError> {
        let user = User {
            id: UserId::new(),
            email: new.email.as_str().to_owned(),
            name: new.name,
            role: new.role,
            created_at: super::now(),
            phone: None,
            notify_whatsapp: false,
            phone_verified: false,
        };
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO users (id, email, name, role, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(user.id.as_uuid())
            .bind(&user.email)
            .bind(&user.name)
            .bind(user.role.as_str())
            .bind(&new.password_hash)
            .bind(user.created_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO user_identities (issuer, subject, user_id, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(issuer)
            .bind(subject)
            .bind(user.id.as_uuid())
            .bind(user.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(user)
    }
}
