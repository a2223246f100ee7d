//! The HTTP surface: routes, the state handlers share, extractors, auth and the error table.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod checkout;
pub mod error;
pub mod extract;
pub mod health;
pub mod idempotent;
pub mod key_answers;
pub mod limits;
pub mod locate;
pub mod maps;
pub mod menu_cache;
pub mod merchants;
pub mod middleware;
pub mod oauth;
pub mod oidc;
pub mod openapi;
pub mod orders;
pub mod pages;
pub mod pay;
pub mod payments;
pub mod state;
pub mod users;
pub mod webhooks;
pub mod whatsapp;

pub use state::AppState;

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use self::error::{ApiError, ErrorCode};

/// A resource whose unsupported methods answer 405 in the standard error shape.
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::new(ErrorCode::MethodNotAllowed).error_response()
}

/// The answer for a path no route matches.
pub async fn not_found() -> HttpResponse {
    ApiError::new(ErrorCode::NotFound).error_response()
}

/// Registers every REST route, the pages, and the extractor error handlers (the WebSocket
/// routes are the gateway's: [`crate::gateway::routes::configure`]).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::PathConfig::default().error_handler(|_, _| ApiError::new(ErrorCode::NotFound).into()),
    )
    .app_data(web::PayloadConfig::new(extract::MAX_BODY_BYTES))
    .app_data(
        web::QueryConfig::default().error_handler(|error, _: &HttpRequest| {
            ApiError::new(ErrorCode::InvalidQuery)
                .with_message(format!("The query string is invalid: {error}"))
                .into()
        }),
    )
    .service(resource("/health").route(web::get().to(health::health)))
    .service(resource("/ready").route(web::get().to(health::ready)))
    .service(resource("/metrics").route(web::get().to(health::metrics)))
    .service(resource("/openapi.json").route(web::get().to(openapi::openapi_json)))
    .service(resource("/").route(web::get().to(pages::index)))
    .service(resource("/merchant").route(web::get().to(pages::merchant)))
    .service(resource("/keys").route(web::get().to(pages::keys)))
    .service(resource("/order").route(web::get().to(pages::order)))
    .service(resource("/track/{order_id}").route(web::get().to(pages::track)))
    .service(resource("/driver").route(web::get().to(pages::driver)))
    .service(resource("/pay/{token}").route(web::get().to(pages::pay)))
    .service(resource("/assets/{name}").route(web::get().to(pages::asset)))
    .service(resource("/oauth/token").route(web::post().to(oauth::token::token)))
    .service(resource("/.well-known/jwks.json").route(web::get().to(oauth::jwks)))
    .service(
        resource("/.well-known/oauth-authorization-server").route(web::get().to(oauth::metadata)),
    )
    .service(resource("/auth/oidc").route(web::get().to(oidc::info)))
    .service(resource("/auth/oidc/login").route(web::get().to(oidc::login)))
    .service(resource("/auth/oidc/callback").route(web::get().to(oidc::callback)))
    .service(
        resource("/webhooks/whatsapp")
            .route(web::get().to(whatsapp::verify))
            .route(web::post().to(whatsapp::receive)),
    )
    .service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
            .config(utoipa_swagger_ui::Config::from("/openapi.json")),
    )
    .service(
        web::scope("/api/v1")
            .service(resource("/users").route(web::post().to(users::register)))
            .service(resource("/sessions").route(web::post().to(users::login)))
            .service(
                resource("/me")
                    .route(web::get().to(users::me))
                    .route(web::patch().to(users::update_me)),
            )
            .service(resource("/me/merchants").route(web::get().to(merchants::mine)))
            .service(
                resource("/oauth-clients")
                    .route(web::post().to(oauth::create_client))
                    .route(web::get().to(oauth::list_clients)),
            )
            .service(
                resource("/oauth-clients/{client_id}")
                    .route(web::delete().to(oauth::revoke_client)),
            )
            .service(
                resource("/signing-keys/rotate").route(web::post().to(oauth::rotate_signing_key)),
            )
            .service(resource("/me/whatsapp-link").route(web::post().to(users::whatsapp_link)))
            .service(
                resource("/api-keys")
                    .route(web::post().to(api_keys::create))
                    .route(web::get().to(api_keys::list)),
            )
            .service(resource("/api-keys/{key_id}").route(web::delete().to(api_keys::revoke)))
            .service(resource("/audit").route(web::get().to(audit::list)))
            .service(resource("/regions").route(web::get().to(merchants::regions)))
            .service(
                resource("/merchants")
                    .route(web::post().to(merchants::create))
                    .route(web::get().to(merchants::nearby)),
            )
            .service(resource("/merchants/{merchant_id}").route(web::get().to(merchants::get)))
            .service(
                resource("/merchants/{merchant_id}/open").route(web::post().to(merchants::open)),
            )
            .service(
                resource("/merchants/{merchant_id}/close").route(web::post().to(merchants::close)),
            )
            .service(
                resource("/merchants/{merchant_id}/menu")
                    .route(web::put().to(merchants::set_menu))
                    .route(web::get().to(merchants::menu)),
            )
            .service(
                resource("/merchants/{merchant_id}/webhooks")
                    .route(web::post().to(webhooks::create))
                    .route(web::get().to(webhooks::list)),
            )
            .service(
                resource("/merchants/{merchant_id}/webhooks/{webhook_id}")
                    .route(web::delete().to(webhooks::delete)),
            )
            .service(
                resource("/merchants/{merchant_id}/webhooks/{webhook_id}/rotate-secret")
                    .route(web::post().to(webhooks::rotate_secret)),
            )
            .service(
                resource("/merchants/{merchant_id}/webhooks/{webhook_id}/deliveries")
                    .route(web::get().to(webhooks::deliveries)),
            )
            .service(
                resource(
                    "/merchants/{merchant_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
                )
                .route(web::post().to(webhooks::retry)),
            )
            .service(
                resource("/orders")
                    .route(web::post().to(checkout::checkout))
                    .route(web::get().to(orders::list)),
            )
            .service(resource("/orders/{order_id}").route(web::get().to(orders::get)))
            .service(resource("/orders/{order_id}/payment").route(web::get().to(orders::payment)))
            .service(resource("/orders/{order_id}/cancel").route(web::post().to(orders::cancel)))
            .service(
                resource("/orders/{order_id}/notifications")
                    .route(web::get().to(orders::notifications)),
            )
            .service(
                resource("/pay/{token}")
                    .route(web::get().to(pay::show))
                    .route(web::post().to(pay::pay)),
            )
            .service(resource("/payments/webhook").route(web::post().to(payments::webhook)))
            .service(resource("/payments/attention").route(web::get().to(payments::attention)))
            .service(resource("/geocode").route(web::get().to(maps::geocode)))
            .service(resource("/geocode/reverse").route(web::get().to(maps::reverse)))
            .service(resource("/map").route(web::get().to(maps::info)))
            .service(resource("/map/streets").route(web::get().to(maps::streets))),
    );
}
