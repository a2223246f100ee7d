//! User accounts in the store.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError, on_pool, on_writer};
use crate::domain::{Email, Phone, Role, UserId};

/// A user as the rest of the engine sees it: never with the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// Their phone number (E.164), if they gave one.
    pub phone: Option<String>,
    /// Whether they agreed to order updates on WhatsApp.
    pub notify_whatsapp: bool,
    /// Whether the phone is proven theirs (they wrote from it on WhatsApp): only a verified
    /// phone links a WhatsApp conversation to the account.
    pub phone_verified: bool,
}

/// A user with the stored password hash, for checking a login and nothing else.
#[derive(Debug, Clone)]
pub struct UserWithPassword {
    pub user: User,
    pub password_hash: String,
}

/// What it takes to create an account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub name: String,
    pub role: Role,
    pub password_hash: String,
}

impl NewUser {
    /// The account it makes: a new id, created now, no phone yet.
    pub(super) fn account(&self) -> User {
        User {
            id: UserId::new(),
            email: self.email.as_str().to_owned(),
            name: self.name.clone(),
            role: self.role,
            // Stored at microsecond precision, like PostgreSQL, so what we return is what we read.
            created_at: super::now(),
            phone: None,
            notify_whatsapp: false,
            phone_verified: false,
        }
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    name: String,
    role: String,
    password_hash: String,
    created_at: DateTime<Utc>,
    phone: Option<String>,
    notify_whatsapp: bool,
    phone_verified_at: Option<DateTime<Utc>>,
}

impl TryFrom<UserRow> for UserWithPassword {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        let role = row
            .role
            .parse::<Role>()
            .map_err(|e| StoreError::Corrupt(format!("user {}: {e}", row.id)))?;
        Ok(UserWithPassword {
            user: User {
                id: UserId(row.id),
                email: row.email,
                name: row.name,
                role,
                created_at: row.created_at,
                phone: row.phone,
                notify_whatsapp: row.notify_whatsapp,
                phone_verified: row.phone_verified_at.is_some(),
            },
            password_hash: row.password_hash,
        })
    }
}

impl Store {
    /// Creates an account. A taken email is [`StoreError::Duplicate`].
    pub async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let user = new.account();
        on_writer!(self, |pool| {
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
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(user)
    }

    /// The account with this email, with its password hash, if any.
    pub async fn user_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<UserWithPassword>, StoreError> {
        let row: Option<UserRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, email, name, role, password_hash, created_at, phone, notify_whatsapp, phone_verified_at FROM users WHERE email = $1",
            )
                .bind(email.as_str())
                .fetch_optional(pool)
                .await
        })?;
        row.map(UserWithPassword::try_from).transpose()
    }

    /// The account with this id, if any.
    pub async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, email, name, role, password_hash, created_at, phone, notify_whatsapp, phone_verified_at FROM users WHERE id = $1",
            )
            .bind(id.as_uuid())
            .fetch_optional(pool)
            .await
        })?;
        Ok(row
            .map(UserWithPassword::try_from)
            .transpose()?
            .map(|u| u.user))
    }

    /// Sets the account's phone number (E.164, or none) and WhatsApp consent (a changed number
    /// loses its verification). Returns the account
    /// as it is now, or `None` when there is no such account.
    pub async fn set_user_contact(
        &self,
        id: UserId,
        phone: Option<&Phone>,
        notify_whatsapp: bool,
    ) -> Result<Option<User>, StoreError> {
        let moved = on_writer!(self, |pool| {
            // A changed number is no longer verified.
            sqlx::query(
                "UPDATE users SET phone = $1, notify_whatsapp = $2, \
                   phone_verified_at = CASE WHEN phone = $1 THEN phone_verified_at ELSE NULL END \
                 WHERE id = $3",
            )
            .bind(phone.map(Phone::as_str))
            .bind(notify_whatsapp)
            .bind(id.as_uuid())
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        if moved == 0 {
            return Ok(None);
        }
        self.user_by_id(id).await
    }
}
