//! The OpenAPI description of every route (`GET /openapi.json`) and the Swagger UI (`/docs`),
//! served from assets inside the binary.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    api_keys, audit, checkout, error, health, maps, merchants, oauth, oidc, orders, pages, pay,
    payments, users, webhooks, whatsapp,
};
use crate::domain;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "MealKitz Dispatch API",
        version = "1",
        description = "Checkout, orders and their notifications, merchants, menus and webhooks, \
            payments, and the handshakes of the real-time WebSockets (their messages are \
            described in docs/protocol.md). Every error \
            is `{\"error\":{\"code\",\"message\"}}`; see docs/api.md for the table of codes."
    ),
    paths(
        health::health, health::ready, health::metrics,
        users::register, users::login, users::me, users::update_me, users::whatsapp_link,
        merchants::create, merchants::nearby, merchants::mine, merchants::regions, merchants::get,
        merchants::open, merchants::close,
        merchants::set_menu, merchants::menu,
        webhooks::create, webhooks::list, webhooks::delete, webhooks::rotate_secret,
        webhooks::deliveries, webhooks::retry,
        checkout::checkout, orders::list, orders::get, orders::payment, orders::cancel,
        orders::notifications,
        payments::webhook, payments::attention,
        whatsapp::verify, whatsapp::receive, pay::show, pay::pay,
        maps::geocode, maps::reverse, maps::streets, maps::info,
        api_keys::create, api_keys::list, api_keys::revoke, audit::list,
        oauth::create_client, oauth::list_clients, oauth::revoke_client,
        oauth::rotate_signing_key, oauth::token::token, oauth::jwks, oauth::metadata,
        openapi_json,
        pages::index, pages::merchant, pages::keys, pages::order, pages::track, pages::driver, pages::pay,
        pages::asset,
        oidc::info, oidc::login, oidc::callback,
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail,
        health::Health, health::Readiness,
        users::RegisterRequest, users::LoginRequest, users::UserView, users::SessionView,
        users::WhatsAppLinkView,
        users::UpdateMeRequest,
        merchants::CreateMerchantRequest, merchants::MerchantView, merchants::NearbyMerchant,
        merchants::NearbyMerchants, merchants::SetMenuRequest, merchants::MenuItemInput,
        merchants::MenuView, merchants::MenuItemView, merchants::MyMerchants,
        checkout::CheckoutRequest, checkout::CheckoutLine, checkout::DropoffInput, orders::CancelRequest,
        orders::OrderPage, orders::PaymentView, orders::PaymentEventView, orders::NotificationList,
        crate::store::NotificationSummary,
        webhooks::CreateWebhookRequest, webhooks::WebhookView, webhooks::WebhookWithSecret,
        webhooks::WebhookList, webhooks::LastDelivery, webhooks::DeliveryList,
        webhooks::RetryAccepted, crate::store::Delivery, crate::store::DeliveryAttempt,
        pay::PayLinkView, pay::PayItem, pay::PayMethod, pay::PayRequest,
        payments::WebhookEvent, payments::WebhookData, payments::WebhookAck,
        payments::AttentionPayment, payments::AttentionPayments,
        maps::GeocodeResults, maps::Bounds, maps::MapInfo,
        crate::maps::Place, crate::maps::Streets, crate::maps::streets::Street,
        oidc::OidcInfo,
        domain::OrderView, domain::OrderItem, domain::Position, domain::HistoryEntry,
        api_keys::CreateApiKeyRequest, api_keys::ApiKeyView, api_keys::CreatedApiKey,
        api_keys::ApiKeyList, audit::AuditPage, crate::store::AuditEntry,
        oauth::CreateClientRequest, oauth::ClientView, oauth::CreatedClient, oauth::ClientList,
        oauth::RotatedKey, oauth::token::TokenRequest, oauth::token::TokenResponse,
        oauth::token::OAuthErrorBody,
        oauth::ServerMetadata, super::auth::signing::Jwks, super::auth::signing::Jwk,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "service", description = "Health, readiness, metrics, this document"),
        (name = "users", description = "Accounts and login"),
        (name = "merchants", description = "Merchants and menus"),
        (name = "webhooks", description = "Merchants' webhook endpoints (Standard Webhooks): registration, secrets, deliveries; see docs/notifications.md"),
        (name = "orders", description = "Checkout and orders"),
        (name = "whatsapp", description = "The WhatsApp Business webhook (verification and signed deliveries: messages into the inbox, statuses onto sent messages) and the payment links the conversation sends"),
        (name = "payments", description = "Gateway webhooks, and payments that need an operator"),
        (name = "maps", description = "Geocoding, streets and the map the pages draw (OpenStreetMap data, ODbL)"),
        (name = "websockets", description = "Handshakes of the real-time sockets"),
        (name = "integrations", description = "API keys, the audit log, OAuth2 clients and signing keys; see docs/integrations.md"),
        (name = "pages", description = "The web pages and their assets"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT or API key")
                        .description(Some(scopes_description()))
                        .build(),
                ),
            );
        }
    }
}

/// Every operation that takes a bearer credential can also answer 401 (no valid credential),
/// 403 (`insufficient_scope`: the credential lacks the scope the operation states) and 429 (an
/// API key over its request limit); added here once rather than on every route.
fn credential_answers(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, Response, ResponseBuilder};
    let answer = |description: &str| -> RefOr<Response> {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content_ref(
                    "application/json",
                    utoipa::openapi::Ref::from_schema_name("ErrorBody"),
                )
                .build(),
        )
    };
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            if operation.security.is_none() {
                continue;
            }
            let responses = &mut operation.responses.responses;
            responses
                .entry("401".into())
                .or_insert_with(|| answer("No valid credential"));
            match responses.get_mut("403") {
                Some(RefOr::T(forbidden)) => forbidden
                    .description
                    .push_str("; or insufficient_scope: the credential lacks the stated scope"),
                Some(RefOr::Ref(_)) => {}
                None => {
                    responses.insert(
                        "403".into(),
                        answer("insufficient_scope: the credential lacks the stated scope"),
                    );
                }
            }
            responses
                .entry("429".into())
                .or_insert_with(|| answer("rate_limited: an API key over its request limit"));
        }
    }
}

/// The bearer scheme's description: the credentials it takes and every scope (the names each
/// operation's security requirement lists).
fn scopes_description() -> String {
    let mut text = String::from(
        "A person's login token (POST /api/v1/sessions: every scope their role can use), an API \
         key (`mk_live_…`, `mk_test_…`) or an integration access token (POST /oauth/token), each \
         limited to its scopes. An operation lists the scope it needs; without it: 403 \
         `insufficient_scope`. Scopes:",
    );
    for scope in domain::Scope::ALL {
        text.push_str(&format!("\n- `{}`: {}", scope.as_str(), scope.describe()));
    }
    text
}

/// The whole document served: the API's own routes merged with the parts other layers
/// document (the gateway's handshakes), put together once at start-up.
pub struct Document(pub utoipa::openapi::OpenApi);

impl Document {
    /// [`ApiDoc`] with `parts` merged in, and the answers every protected operation can give.
    pub fn with_parts(parts: impl IntoIterator<Item = utoipa::openapi::OpenApi>) -> Document {
        let mut document = ApiDoc::openapi();
        for part in parts {
            document.merge(part);
        }
        credential_answers(&mut document);
        Document(document)
    }
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi_json(document: actix_web::web::Data<Document>) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(&document.0)
}
