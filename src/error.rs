//! The error table: every error code the service answers with — over REST, in a WebSocket
//! `error` frame, or from one replica to another — on one row with its HTTP status, its default
//! message, whether a client should retry (and after how many seconds), and whether the router
//! resends a command its owner refused with it. It sits below every layer: the engine, the
//! router, the REST API and the sockets all map into it, so no code travels as a free string
//! inside the process and no layer keeps its own list. A new failure mode is one new row.

use std::fmt;

use serde::{Serialize, Serializer};

macro_rules! error_table {
    ($($variant:ident => $status:literal, $code:literal, $retry_after:expr, $resend:literal, $message:literal;)*) => {
        /// Every error code of the service.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The HTTP status it answers with.
            pub fn status_u16(self) -> u16 {
                match self { $(ErrorCode::$variant => $status),* }
            }

            /// The stable snake_case code clients match on.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),* }
            }

            pub fn default_message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message),* }
            }

            /// Seconds after which a client may try again (`Retry-After`), for a passing
            /// condition; `None` when the same request will fail the same way.
            pub fn retry_after_secs(self) -> Option<u64> {
                match self { $(ErrorCode::$variant => $retry_after),* }
            }

            /// Whether a command refused with it by its owner is sent again by the router (the
            /// owner is changing, restarting or briefly cut off), rather than answered.
            pub fn router_resends(self) -> bool {
                match self { $(ErrorCode::$variant => $resend),* }
            }
        }
    };
}

//   variant                   status  code                          client retry  router resends
error_table! {
    MalformedJson             => 400, "malformed_json",             None,    false, "The request body is not valid JSON.";
    InvalidQuery              => 400, "invalid_query",              None,    false, "The query string is invalid.";
    BadRequest                => 400, "bad_request",                None,    false, "The request is malformed.";
    MissingToken              => 401, "missing_token",              None,    false, "Authenticate with the header Authorization: Bearer <token>.";
    InvalidToken              => 401, "invalid_token",              None,    false, "The token is malformed, forged, or for an account that no longer exists.";
    TokenExpired              => 401, "token_expired",              None,    false, "The token has expired; log in again.";
    InvalidCredentials        => 401, "invalid_credentials",        None,    false, "The email or password is wrong.";
    Forbidden                 => 403, "forbidden",                  None,    false, "Your account may not do this.";
    InsufficientScope         => 403, "insufficient_scope",         None,    false, "This key or token lacks the scope this needs.";
    MerchantNotInGrant        => 403, "merchant_not_in_grant",      None,    false, "This key or token is limited to another merchant.";
    NotFound                  => 404, "not_found",                  None,    false, "There is nothing here.";
    MethodNotAllowed          => 405, "method_not_allowed",         None,    false, "This method is not allowed on this resource.";
    EmailTaken                => 409, "email_taken",                None,    false, "An account with this email already exists.";
    Conflict                  => 409, "conflict",                   None,    false, "The request conflicts with the current state.";
    PayloadTooLarge           => 413, "payload_too_large",          None,    false, "The request body is larger than 64 KiB.";
    UnsupportedMediaType      => 415, "unsupported_media_type",     None,    false, "Send the body as JSON with Content-Type: application/json.";
    InvalidField              => 422, "invalid_field",              None,    false, "A field of the request is missing or invalid.";
    OutsideServiceArea        => 422, "outside_service_area",       None,    false, "The location is outside the service area.";
    InvalidLocation           => 422, "invalid_location",           None,    false, "Latitude must be within -90..90 and longitude within -180..180.";
    InvalidTransition         => 409, "invalid_transition",         None,    false, "The order is not in a state that allows this.";
    OfferExpired              => 409, "offer_expired",              None,    false, "The offer has expired.";
    DriverBusy                => 409, "driver_busy",                None,    false, "The driver already has an offer or an order.";
    StaleLocation             => 409, "stale_location",             None,    false, "The location is older than the last one received.";
    BadMessage                => 400, "bad_message",                None,    false, "The WebSocket message is not understood.";
    IdempotencyKeyRequired    => 400, "idempotency_key_required",   None,    false, "Send an Idempotency-Key header (a unique string per checkout).";
    InvalidIdempotencyKey     => 400, "invalid_idempotency_key",    None,    false, "The Idempotency-Key must be 1 to 255 visible ASCII characters.";
    IdempotencyKeyReused      => 422, "idempotency_key_reused",     None,    false, "This Idempotency-Key was used with a different request.";
    RequestInProgress         => 409, "request_in_progress",        Some(1), false, "A request with this Idempotency-Key is still being processed by a live server; retry shortly with the same key.";
    CheckoutAbandoned         => 410, "checkout_abandoned",         None,    false, "This checkout was not finished in time and was given up; any hold on the card was released. Check out again with a new Idempotency-Key.";
    MerchantClosed            => 409, "merchant_closed",            None,    false, "The merchant is closed and takes no orders.";
    DropoffTooFar             => 422, "dropoff_too_far",            None,    false, "The dropoff is too far from the merchant.";
    PaymentDeclined           => 402, "payment_declined",           None,    false, "The card was declined.";
    InsufficientFunds         => 402, "insufficient_funds",         None,    false, "The card was declined for insufficient funds.";
    PaymentGatewayUnavailable => 503, "payment_gateway_unavailable", None,   false, "The payment gateway is unavailable; try again shortly.";
    InvalidSignature          => 400, "invalid_signature",          None,    false, "The webhook signature is missing, malformed, expired or wrong.";
    WebhookUrlRefused         => 422, "webhook_url_refused",        None,    false, "Webhook URLs must be https:// addresses on the public internet (not private, loopback or link-local).";
    WhatsappSignatureInvalid  => 401, "whatsapp_signature_invalid", None,    false, "The X-Hub-Signature-256 header is missing or does not match the body under the app secret.";
    WhatsappWebhookDisabled   => 503, "whatsapp_webhook_disabled",  None,    false, "The WhatsApp webhook is not configured (MEALKITZ_WHATSAPP_APP_SECRET).";
    PayLinkNotFound           => 404, "pay_link_not_found",         None,    false, "There is no such payment link.";
    PayLinkExpired            => 410, "pay_link_expired",           None,    false, "This payment link has expired (links last 30 minutes); ask for a new one in the WhatsApp chat.";
    PayLinkUsed               => 410, "pay_link_used",              None,    false, "This payment link was used: its order is placed.";
    InvalidScope              => 422, "invalid_scope",              None,    false, "A scope is unknown, or not one the account may hold.";
    ApiKeyNotFound            => 404, "api_key_not_found",          None,    false, "There is no such API key.";
    OauthClientNotFound       => 404, "oauth_client_not_found",     None,    false, "There is no such OAuth client.";
    OidcNotConfigured         => 404, "oidc_not_configured",        None,    false, "Sign-in with an OpenID provider is not configured (MEALKITZ_OIDC_ISSUER).";
    OidcLoginFailed           => 400, "oidc_login_failed",          None,    false, "The sign-in with the OpenID provider failed or expired; start again.";
    OidcProviderUnavailable   => 503, "oidc_provider_unavailable",  Some(5), false, "The OpenID provider cannot be reached; try again shortly.";
    InvalidPhone              => 422, "invalid_phone",              None,    false, "Phone numbers must be in international E.164 form: +, the country code and the number (+358401234567).";
    MapsUnavailable           => 503, "maps_unavailable",           None,    false, "No maps provider can answer this (no map data is loaded).";
    WebhooksDisabled          => 503, "webhooks_disabled",          None,    false, "Webhooks are not configured (MEALKITZ_WEBHOOK_SECRET).";
    RateLimited               => 429, "rate_limited",               None,    false, "Too many requests; slow down.";
    Internal                  => 500, "internal_error",             None,    false, "Something went wrong on our side; it has been logged.";
    StoreUnavailable          => 503, "store_unavailable",          Some(1), true,  "The database is not available right now; try again shortly.";
    DispatchUnavailable       => 503, "dispatch_unavailable",       Some(1), true,  "Dispatch is briefly unavailable; try again shortly.";
    ActorFailed               => 503, "actor_failed",               Some(1), false, "This order failed repeatedly and awaits an operator.";
    NotReady                  => 503, "not_ready",                  None,    false, "The service is not ready.";
}

impl ErrorCode {
    /// The row for a code string (one read off the wire), if the table has one.
    pub fn from_code(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialized as its code string.
impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_with_an_error_status_and_a_message() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "duplicate code {name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name} is not snake_case"
            );
            assert!((400..600).contains(&code.status_u16()), "{name}");
            assert!(!code.default_message().is_empty(), "{name} has no message");
            assert_eq!(ErrorCode::from_code(name), Some(*code));
        }
    }

    #[test]
    fn only_passing_conditions_are_resent_or_retried() {
        for code in ErrorCode::ALL {
            if code.router_resends() {
                assert_eq!(code.status_u16(), 503, "{code} is resent but not a 503");
                assert!(code.retry_after_secs().is_some(), "{code}");
            }
        }
        assert!(ErrorCode::DispatchUnavailable.router_resends());
        assert!(!ErrorCode::OfferExpired.router_resends());
        assert_eq!(ErrorCode::from_code("no_such_code"), None);
    }
}
