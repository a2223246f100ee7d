//! Accounts and sessions: sign up (`POST /api/v1/users`), log in (`POST /api/v1/sessions`), who
//! am I (`GET /api/v1/me`) and my phone number and WhatsApp consent (`PATCH /api/v1/me`).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::{PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS};
use super::auth::{Scoped, need};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::ApiJson;
use super::state::AppState;
use crate::domain::chat::{
    LINK_CODE_ALPHABET, LINK_CODE_CHARS, LINK_CODE_TTL_SECS, link_code_hash,
};
use crate::domain::{Email, Phone, Role, UserId};
use crate::store::{NewUser, StoreError, User};

/// Longest display name, in characters.
pub const NAME_MAX_CHARS: usize = 100;

/// A user as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    pub email: String,
    pub name: String,
    #[schema(value_type = String, example = "customer")]
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// The phone number order updates go to (E.164), or null.
    #[serde(default)]
    #[schema(example = "+358401234567")]
    pub phone: Option<String>,
    /// Whether the user agreed to order updates on WhatsApp.
    #[serde(default)]
    pub notify_whatsapp: bool,
    /// Whether the phone is proven theirs on WhatsApp (`POST /api/v1/me/whatsapp-link`, or an
    /// account made by WhatsApp itself). Changing the number clears it.
    #[serde(default)]
    pub phone_verified: bool,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        UserView {
            id: user.id,
            email: user.email,
            name: user.name,
            role: user.role,
            created_at: user.created_at,
            phone: user.phone,
            notify_whatsapp: user.notify_whatsapp,
            phone_verified: user.phone_verified,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    pub name: String,
    /// `customer`, `driver` or `merchant`.
    pub role: String,
}

/// A sign-up request whose every field passed validation.
struct ValidRegistration {
    email: Email,
    password: String,
    name: String,
    role: Role,
}

/// Checks the fields every account has, whoever creates it: the normalised email and the
/// trimmed name, or the first field at fault.
pub fn validate_account(
    email: &str,
    password: &str,
    name: &str,
) -> Result<(Email, String), ApiError> {
    let email = Email::parse(email).map_err(|e| ApiError::invalid_field("email", e))?;
    let password_chars = password.chars().count();
    if password_chars < PASSWORD_MIN_CHARS {
        return Err(ApiError::invalid_field(
            "password",
            format!("must be at least {PASSWORD_MIN_CHARS} characters"),
        ));
    }
    if password_chars > PASSWORD_MAX_CHARS {
        return Err(ApiError::invalid_field(
            "password",
            format!("must be at most {PASSWORD_MAX_CHARS} characters"),
        ));
    }
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > NAME_MAX_CHARS {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1 to {NAME_MAX_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            "must not contain control characters",
        ));
    }
    Ok((email, name))
}

impl RegisterRequest {
    fn validate(self) -> Result<ValidRegistration, ApiError> {
        let (email, name) = validate_account(&self.email, &self.password, &self.name)?;
        let role = self
            .role
            .parse::<Role>()
            .ok()
            .filter(|role| role.is_self_service())
            .ok_or_else(|| {
                ApiError::invalid_field("role", "must be one of: customer, driver, merchant")
            })?;
        Ok(ValidRegistration {
            email,
            password: self.password,
            name,
            role,
        })
    }
}

/// `POST /api/v1/users`: creates an account → 201 with the user.
#[utoipa::path(
    post, path = "/api/v1/users", tag = "users", request_body = RegisterRequest,
    responses(
        (status = 201, body = UserView),
        (status = 400, body = ErrorBody), (status = 409, description = "email_taken", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "invalid_field, naming the field", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn register(
    state: web::Data<AppState>,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let valid = request.validate()?;
    let password_hash = state.auth.passwords.hash(valid.password).await?;
    let user = state
        .store
        .create_user(NewUser {
            email: valid.email,
            name: valid.name,
            role: valid.role,
            password_hash,
        })
        .await
        .map_err(|error| match error {
            StoreError::Duplicate(_) => ApiError::new(ErrorCode::EmailTaken),
            other => other.into(),
        })?;
    tracing::info!(user_id = %user.id, role = %user.role, "user registered");
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    pub user: UserView,
}

/// `POST /api/v1/sessions`: logs in → 200 with a token. A wrong password and an unknown email
/// get the same answer after about the same time.
#[utoipa::path(
    post, path = "/api/v1/sessions", tag = "users", request_body = LoginRequest,
    responses(
        (status = 200, body = SessionView),
        (status = 400, body = ErrorBody), (status = 401, description = "invalid_credentials", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, description = "Too many attempts for this email or from this address", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn login(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let address = req.peer_addr().map(|a| a.ip().to_string());
    if let Some(address) = &address {
        state
            .limits
            .login_failures_per_address
            .ensure_below(address)
            .await?;
    }
    state
        .limits
        .login_per_email
        .check(&request.email.trim().to_lowercase())
        .await?;
    let account = match Email::parse(&request.email) {
        Ok(email) => state.store.user_by_email(&email).await?,
        Err(_) => None,
    };
    let (user, stored_hash) = match account {
        Some(account) => (Some(account.user), Some(account.password_hash)),
        None => (None, None),
    };
    let matches = state
        .auth
        .passwords
        .verify(request.password, stored_hash)
        .await?;
    let user = match user {
        Some(user) if matches => user,
        _ => {
            if let Some(address) = &address {
                state
                    .limits
                    .login_failures_per_address
                    .record(address)
                    .await;
            }
            return Err(ApiError::new(ErrorCode::InvalidCredentials));
        }
    };
    let issued = state.auth.tokens.issue(user.id, user.role)?;
    tracing::info!(user_id = %user.id, "session created");
    Ok(HttpResponse::Ok().json(SessionView {
        token: issued.token,
        token_type: "Bearer".to_owned(),
        expires_at: issued.expires_at,
        user: user.into(),
    }))
}

/// `GET /api/v1/me`: the caller's account.
#[utoipa::path(
    get, path = "/api/v1/me", tag = "users", security(("bearer" = ["profile:read"])),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn me(
    state: web::Data<AppState>,
    caller: Scoped<need::ProfileRead>,
) -> Result<HttpResponse, ApiError> {
    let user = state
        .store
        .user_by_id(caller.id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken))?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// A code that links a WhatsApp number to the caller's account (`POST /api/v1/me/whatsapp-link`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhatsAppLinkView {
    /// Shown to the customer; sent by them from their phone.
    #[schema(example = "K7M2-QX9P")]
    pub code: String,
    /// The whole message to send to the business number.
    #[schema(example = "link K7M2-QX9P")]
    pub message: String,
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/v1/me/whatsapp-link`: a single-use code, valid ten minutes, that the customer sends
/// to the WhatsApp bot from their phone as `link <code>`. The message proves the number, the
/// code the account: the number becomes the account's verified phone, and the chat orders for
/// this account from then on.
#[utoipa::path(
    post, path = "/api/v1/me/whatsapp-link", tag = "whatsapp", security(("bearer" = ["profile:write"])),
    responses(
        (status = 201, body = WhatsAppLinkView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn whatsapp_link(
    state: web::Data<AppState>,
    caller: Scoped<need::ProfileWrite>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Customer])?;
    state
        .limits
        .checkout_per_customer
        .check(&caller.id.to_string())
        .await?;
    use rand::Rng;
    let mut rng = rand::rng();
    let normal: String = (0..LINK_CODE_CHARS)
        .map(|_| char::from(LINK_CODE_ALPHABET[rng.random_range(0..LINK_CODE_ALPHABET.len())]))
        .collect();
    let now = crate::store::now();
    let expires_at = now + chrono::Duration::seconds(LINK_CODE_TTL_SECS);
    state
        .store
        .create_whatsapp_link_code(caller.id, &link_code_hash(&normal), now, expires_at)
        .await?;
    let code = format!("{}-{}", &normal[..4], &normal[4..]);
    Ok(HttpResponse::Created().json(WhatsAppLinkView {
        message: format!("link {code}"),
        code,
        expires_at,
    }))
}

/// A change of the caller's contact settings; a field left out stays as it is.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    /// An international number in E.164 form (`+358401234567`; spaces and dashes are dropped);
    /// null removes the number (and, unless `notify_whatsapp` is given, the consent with it).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "+358401234567")]
    pub phone: Option<Option<String>>,
    /// Agree (true) or not (false) to order updates on WhatsApp; true needs a phone number.
    #[serde(default)]
    pub notify_whatsapp: Option<bool>,
}

/// Reads a field that is there, null or not, as `Some`: with `#[serde(default)]` a field left
/// out is `None`, so that `null` (remove) and absent (keep) differ.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The contact settings a PATCH leads to from the current ones, or the field at fault.
fn updated_contact(
    current: &User,
    request: UpdateMeRequest,
) -> Result<(Option<Phone>, bool), ApiError> {
    let phone = match request.phone {
        Some(Some(raw)) => Some(Phone::parse(&raw).map_err(|e| {
            ApiError::new(ErrorCode::InvalidPhone).with_message(format!("phone: {e}"))
        })?),
        Some(None) => None,
        None => current
            .phone
            .as_deref()
            .and_then(|raw| Phone::parse(raw).ok()),
    };
    let notify_whatsapp = match request.notify_whatsapp {
        Some(wanted) => wanted,
        // Removing the number withdraws the consent that needed it.
        None => current.notify_whatsapp && phone.is_some(),
    };
    if notify_whatsapp && phone.is_none() {
        return Err(ApiError::invalid_field(
            "notify_whatsapp",
            "WhatsApp updates need a phone number: give `phone` too",
        ));
    }
    Ok((phone, notify_whatsapp))
}

/// `PATCH /api/v1/me`: sets or removes the caller's phone number and WhatsApp consent.
#[utoipa::path(
    patch, path = "/api/v1/me", tag = "users", request_body = UpdateMeRequest,
    security(("bearer" = ["profile:write"])),
    responses(
        (status = 200, description = "The account as it is now", body = UserView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "invalid_phone, or invalid_field (`notify_whatsapp` true without a phone number, an unknown field)", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn update_me(
    state: web::Data<AppState>,
    caller: Scoped<need::ProfileWrite>,
    body: Result<ApiJson<UpdateMeRequest>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    // The body is read only once the credential and its scope passed.
    let ApiJson(request) = body?;
    let current = state
        .store
        .user_by_id(caller.id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken))?;
    let (phone, notify_whatsapp) = updated_contact(&current, request)?;
    let user = state
        .store
        .set_user_contact(caller.id, phone.as_ref(), notify_whatsapp)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken))?;
    tracing::info!(
        user_id = %user.id,
        phone = phone.as_ref().map(Phone::masked).as_deref().unwrap_or("none"),
        notify_whatsapp,
        "contact settings changed"
    );
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}
