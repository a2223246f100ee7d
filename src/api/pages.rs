//! The web pages, served from assets compiled into the binary: the landing page, the merchant
//! board, the customer's checkout, order tracking, the driver app, and paying a WhatsApp basket. Plain HTML, CSS and
//! JavaScript modules; nothing is loaded from anywhere else.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use super::error::{ApiError, ErrorCode};
use super::state::AppState;

/// Only our own origin: no CDN, no inline script, no third-party connection; images also from
/// the raster tile server when one is configured (`MEALKITZ_MAP_TILES_URL`).
fn content_security_policy(tiles_url: Option<&str>) -> String {
    let tiles = tiles_url.map(tile_origin).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:{tiles}; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    )
}

/// ` scheme://host[:port]` of a tile URL template, a `{s}` subdomain as `*`.
fn tile_origin(url: &str) -> String {
    let origin: Vec<&str> = url.splitn(4, '/').take(3).collect();
    format!(" {}", origin.join("/").replace("{s}", "*"))
}

macro_rules! assets {
    ($($name:literal => $mime:literal),* $(,)?) => {
        /// Every static asset: name, content type, bytes.
        const ASSETS: &[(&str, &str, &str)] = &[
            $(($name, $mime, include_str!(concat!("../../web/", $name)))),*
        ];
    };
}

assets! {
    "index.html" => "text/html; charset=utf-8",
    "merchant.html" => "text/html; charset=utf-8",
    "order.html" => "text/html; charset=utf-8",
    "track.html" => "text/html; charset=utf-8",
    "driver.html" => "text/html; charset=utf-8",
    "pay.html" => "text/html; charset=utf-8",
    "keys.html" => "text/html; charset=utf-8",
    "app.css" => "text/css; charset=utf-8",
    "common.js" => "text/javascript; charset=utf-8",
    "map.js" => "text/javascript; charset=utf-8",
    "merchant.js" => "text/javascript; charset=utf-8",
    "order.js" => "text/javascript; charset=utf-8",
    "track.js" => "text/javascript; charset=utf-8",
    "driver.js" => "text/javascript; charset=utf-8",
    "pay.js" => "text/javascript; charset=utf-8",
    "keys.js" => "text/javascript; charset=utf-8",
    "icon.svg" => "image/svg+xml",
}

fn serve(state: &AppState, name: &str) -> Result<HttpResponse, ApiError> {
    let (_, mime, body) = ASSETS
        .iter()
        .find(|(asset, _, _)| *asset == name)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    Ok(HttpResponse::Ok()
        .content_type(*mime)
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            content_security_policy(state.map_tiles_url.as_deref()),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(*body))
}

/// `GET /`: what this is, and the way in.
#[utoipa::path(get, path = "/", tag = "pages", responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn index(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    serve(&state, "index.html")
}

/// `GET /keys`: a merchant's API keys (make, list, revoke).
#[utoipa::path(get, path = "/keys", tag = "pages", responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn keys(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    serve(&state, "keys.html")
}

/// `GET /merchant`: the live order board.
#[utoipa::path(get, path = "/merchant", tag = "pages", responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn merchant(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    serve(&state, "merchant.html")
}

/// `GET /order`: the customer's checkout.
#[utoipa::path(get, path = "/order", tag = "pages", responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn order(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    serve(&state, "order.html")
}

/// `GET /track/{order_id}`: live tracking of one order.
#[utoipa::path(
    get, path = "/track/{order_id}", tag = "pages",
    params(("order_id" = String, Path)),
    responses((status = 200, description = "HTML page (it checks access itself)", content_type = "text/html"))
)]
pub async fn track(
    state: web::Data<AppState>,
    _: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    serve(&state, "track.html")
}

/// `GET /driver`: the driver app.
#[utoipa::path(get, path = "/driver", tag = "pages", responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn driver(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    serve(&state, "driver.html")
}

/// `GET /pay/{token}`: paying a WhatsApp basket through its payment link.
#[utoipa::path(
    get, path = "/pay/{token}", tag = "pages",
    params(("token" = String, Path)),
    responses((status = 200, description = "HTML page (it reads the link itself)", content_type = "text/html"))
)]
pub async fn pay(
    state: web::Data<AppState>,
    _: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    serve(&state, "pay.html")
}

/// `GET /assets/{name}`: the pages' styles and scripts.
#[utoipa::path(
    get, path = "/assets/{name}", tag = "pages",
    params(("name" = String, Path)),
    responses((status = 200, description = "CSS or JavaScript"), (status = 404, body = super::error::ErrorBody))
)]
pub async fn asset(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    if name.ends_with(".html") {
        return Err(ApiError::new(ErrorCode::NotFound));
    }
    serve(&state, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_tiles_images_come_from_this_origin_only() {
        let policy = content_security_policy(None);
        assert!(policy.contains("img-src 'self' data:;"), "{policy}");
    }

    #[test]
    fn a_tile_server_is_allowed_for_images_and_nothing_else() {
        let policy =
            content_security_policy(Some("https://tiles.example.org:8443/osm/{z}/{x}/{y}.png"));
        assert!(
            policy.contains("img-src 'self' data: https://tiles.example.org:8443;"),
            "{policy}"
        );
        assert!(policy.contains("connect-src 'self';"), "{policy}");
        let policy = content_security_policy(Some("https://{s}.tile.example/{z}/{x}/{y}.png"));
        assert!(
            policy.contains("img-src 'self' data: https://*.tile.example;"),
            "{policy}"
        );
    }
}
