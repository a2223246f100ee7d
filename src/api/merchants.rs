//! Merchants and menus: create a merchant, open and close it, set and read its menu, find
//! merchants near a point.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{AuthUser, Scoped, need};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::ApiJson;
use super::state::AppState;
use crate::domain::{Cents, MerchantId, Position, Role, UserId};
use crate::geo::{LatLon, haversine_m};
use crate::store::{MenuItem, Merchant};

/// Longest merchant or item name, in characters.
pub const NAME_MAX_CHARS: usize = 100;
/// Longest address, in characters.
pub const ADDRESS_MAX_CHARS: usize = 300;
/// Most items on one menu.
pub const MENU_MAX_ITEMS: usize = 200;
/// Highest price of one item, in cents.
pub const PRICE_MAX_CENTS: i64 = 1_000_000;
/// Search radius when none is given, and the largest allowed, in metres.
pub const NEARBY_DEFAULT_RADIUS_M: f64 = 5_000.0;
pub const NEARBY_MAX_RADIUS_M: f64 = 50_000.0;
/// Most merchants one search returns.
pub const NEARBY_MAX_RESULTS: usize = 50;

/// A merchant as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MerchantView {
    #[schema(value_type = String, format = Uuid)]
    pub id: MerchantId,
    #[schema(value_type = String, format = Uuid)]
    pub owner_id: UserId,
    pub name: String,
    pub address: String,
    pub location: Position,
    /// A closed merchant takes no orders.
    pub is_open: bool,
    pub created_at: DateTime<Utc>,
}

impl From<Merchant> for MerchantView {
    fn from(m: Merchant) -> Self {
        MerchantView {
            id: m.id,
            owner_id: m.owner_id,
            name: m.name,
            address: m.address,
            location: m.location,
            is_open: m.is_open,
            created_at: m.created_at,
        }
    }
}

/// A merchant found near a point.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NearbyMerchant {
    #[serde(flatten)]
    pub merchant: MerchantView,
    /// Great-circle distance from the point searched.
    pub distance_m: f64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NearbyMerchants {
    /// Nearest first.
    pub merchants: Vec<NearbyMerchant>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MyMerchants {
    pub merchants: Vec<MerchantView>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateMerchantRequest {
    pub name: String,
    pub address: String,
    /// Left out, the address is geocoded (503 `maps_unavailable` without map data).
    pub location: Option<Position>,
}

/// One item on a menu.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MenuItemView {
    pub id: Uuid,
    pub name: String,
    #[schema(value_type = i64)]
    pub price_cents: Cents,
}

impl From<MenuItem> for MenuItemView {
    fn from(item: MenuItem) -> Self {
        MenuItemView {
            id: item.id,
            name: item.name,
            price_cents: item.price_cents,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MenuView {
    #[schema(value_type = String, format = Uuid)]
    pub merchant_id: MerchantId,
    pub items: Vec<MenuItemView>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MenuItemInput {
    pub name: String,
    pub price_cents: i64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SetMenuRequest {
    /// The whole menu, in display order; it replaces the current one.
    pub items: Vec<MenuItemInput>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct NearbyQuery {
    pub lat: f64,
    pub lon: f64,
    /// Search radius in metres (default 5000, at most 50000).
    pub radius_m: Option<f64>,
}

fn text_field(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err(ApiError::invalid_field(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// A valid point inside the service area, or why not.
pub fn service_point(
    state: &AppState,
    field: &str,
    position: Position,
) -> Result<LatLon, ApiError> {
    let point = LatLon::new(position.lat, position.lon).map_err(|e| {
        ApiError::new(ErrorCode::InvalidLocation).with_message(format!("{field}: {e}"))
    })?;
    if state.engine.regions().locate(point).is_none() {
        return Err(ApiError::new(ErrorCode::OutsideServiceArea)
            .with_message(format!("{field}: the location is outside the service area")));
    }
    Ok(point)
}

/// The merchant `id`, which the caller must own.
async fn owned_merchant(
    state: &AppState,
    caller: &AuthUser,
    id: MerchantId,
) -> Result<Merchant, ApiError> {
    let merchant = state
        .store
        .merchant(id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound).with_message("No such merchant."))?;
    caller.require_merchant(id)?;
    if merchant.owner_id != caller.id {
        return Err(ApiError::new(ErrorCode::Forbidden)
            .with_message("Only the merchant's owner may do this."));
    }
    Ok(merchant)
}

/// Creates a merchant owned by the caller.
#[utoipa::path(
    post, path = "/api/v1/merchants", tag = "merchants",
    request_body = CreateMerchantRequest,
    security(("bearer" = ["merchants:write"])),
    responses(
        (status = 201, description = "Created, open for orders", body = MerchantView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "Not a merchant", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "A field is invalid, or the location is outside the service area", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Scoped<need::MerchantsWrite>,
    body: Result<ApiJson<CreateMerchantRequest>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    // The body is read only once the credential and its scope passed.
    let ApiJson(request) = body?;
    caller.require(&[Role::Merchant])?;
    if caller.grant.merchant.is_some() {
        return Err(ApiError::new(ErrorCode::MerchantNotInGrant).with_message(
            "This key or token is limited to one merchant; it cannot create others.",
        ));
    }
    let name = text_field("name", &request.name, NAME_MAX_CHARS)?;
    let address = text_field("address", &request.address, ADDRESS_MAX_CHARS)?;
    let location = match request.location {
        Some(location) => location,
        None => super::locate::locate(&state.maps, "address", &address, None)?,
    };
    service_point(&state, "location", location)?;
    let merchant = state
        .store
        .create_merchant(caller.id, &name, &address, location)
        .await?;
    tracing::info!(merchant_id = %merchant.id, owner_id = %caller.id, "merchant created");
    Ok(HttpResponse::Created().json(MerchantView::from(merchant)))
}

/// The merchants the caller owns.
#[utoipa::path(
    get, path = "/api/v1/me/merchants", tag = "merchants", security(("bearer" = ["profile:read"])),
    responses((status = 200, body = MyMerchants), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn mine(
    state: web::Data<AppState>,
    caller: Scoped<need::ProfileRead>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Merchant])?;
    let merchants = state.store.merchants_of_owner(caller.id).await?;
    Ok(HttpResponse::Ok().json(MyMerchants {
        merchants: merchants
            .into_iter()
            .filter(|m| caller.may_reach(m.id))
            .map(MerchantView::from)
            .collect(),
    }))
}

/// The service area: every region's polygon, as a GeoJSON FeatureCollection (for maps).
#[utoipa::path(
    get, path = "/api/v1/regions", tag = "merchants",
    responses((status = 200, description = "GeoJSON FeatureCollection; each feature has an `id` property", content_type = "application/geo+json"))
)]
pub async fn regions(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/geo+json")
        .body(state.engine.regions().to_geojson().to_string())
}

/// One merchant.
#[utoipa::path(
    get, path = "/api/v1/merchants/{merchant_id}", tag = "merchants",
    params(("merchant_id" = Uuid, Path)),
    responses((status = 200, body = MerchantView), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<MerchantId>,
) -> Result<HttpResponse, ApiError> {
    let merchant = state
        .store
        .merchant(path.into_inner())
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound).with_message("No such merchant."))?;
    Ok(HttpResponse::Ok().json(MerchantView::from(merchant)))
}

async fn set_open(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: MerchantId,
    open: bool,
) -> Result<HttpResponse, ApiError> {
    let mut merchant = owned_merchant(&state, &caller, id).await?;
    state.store.set_merchant_open(id, open).await?;
    state.menu_cache.forget(id);
    merchant.is_open = open;
    Ok(HttpResponse::Ok().json(MerchantView::from(merchant)))
}

/// Opens the merchant for orders (owner only).
#[utoipa::path(
    post, path = "/api/v1/merchants/{merchant_id}/open", tag = "merchants",
    params(("merchant_id" = Uuid, Path)), security(("bearer" = ["merchants:write"])),
    responses((status = 200, body = MerchantView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn open(
    state: web::Data<AppState>,
    caller: Scoped<need::MerchantsWrite>,
    path: web::Path<MerchantId>,
) -> Result<HttpResponse, ApiError> {
    set_open(state, caller.into_inner(), path.into_inner(), true).await
}

/// Closes the merchant: it takes no new orders (owner only).
#[utoipa::path(
    post, path = "/api/v1/merchants/{merchant_id}/close", tag = "merchants",
    params(("merchant_id" = Uuid, Path)), security(("bearer" = ["merchants:write"])),
    responses((status = 200, body = MerchantView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn close(
    state: web::Data<AppState>,
    caller: Scoped<need::MerchantsWrite>,
    path: web::Path<MerchantId>,
) -> Result<HttpResponse, ApiError> {
    set_open(state, caller.into_inner(), path.into_inner(), false).await
}

/// Replaces the menu (owner only).
#[utoipa::path(
    put, path = "/api/v1/merchants/{merchant_id}/menu", tag = "merchants",
    params(("merchant_id" = Uuid, Path)), request_body = SetMenuRequest, security(("bearer" = ["menu:write"])),
    responses(
        (status = 200, description = "The new menu, with item ids", body = MenuView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn set_menu(
    state: web::Data<AppState>,
    caller: Scoped<need::MenuWrite>,
    path: web::Path<MerchantId>,
    body: Result<ApiJson<SetMenuRequest>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    // The body is read only once the credential and its scope passed.
    let ApiJson(request) = body?;
    let merchant = owned_merchant(&state, &caller, path.into_inner()).await?;
    if request.items.len() > MENU_MAX_ITEMS {
        return Err(ApiError::invalid_field(
            "items",
            format!("at most {MENU_MAX_ITEMS} items"),
        ));
    }
    let mut items = Vec::with_capacity(request.items.len());
    for (i, item) in request.items.iter().enumerate() {
        let name = text_field(&format!("items[{i}].name"), &item.name, NAME_MAX_CHARS)?;
        if !(0..=PRICE_MAX_CENTS).contains(&item.price_cents) {
            return Err(ApiError::invalid_field(
                format!("items[{i}].price_cents"),
                format!("must be 0 to {PRICE_MAX_CENTS}"),
            ));
        }
        items.push((name, Cents(item.price_cents)));
    }
    let menu = state.store.replace_menu(merchant.id, &items).await?;
    state.menu_cache.forget(merchant.id);
    Ok(HttpResponse::Ok().json(MenuView {
        merchant_id: merchant.id,
        items: menu.into_iter().map(MenuItemView::from).collect(),
    }))
}

/// The merchant's menu (public).
#[utoipa::path(
    get, path = "/api/v1/merchants/{merchant_id}/menu", tag = "merchants",
    params(("merchant_id" = Uuid, Path)),
    responses((status = 200, body = MenuView), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn menu(
    state: web::Data<AppState>,
    path: web::Path<MerchantId>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if state.store.merchant(id).await?.is_none() {
        return Err(ApiError::new(ErrorCode::NotFound).with_message("No such merchant."));
    }
    let items = state.store.menu(id).await?;
    Ok(HttpResponse::Ok().json(MenuView {
        merchant_id: id,
        items: items.into_iter().map(MenuItemView::from).collect(),
    }))
}

/// Merchants near a point, nearest first (public).
#[utoipa::path(
    get, path = "/api/v1/merchants", tag = "merchants",
    params(NearbyQuery),
    responses((status = 200, body = NearbyMerchants), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn nearby(
    state: web::Data<AppState>,
    query: web::Query<NearbyQuery>,
) -> Result<HttpResponse, ApiError> {
    let center = LatLon::new(query.lat, query.lon)
        .map_err(|e| ApiError::new(ErrorCode::InvalidLocation).with_message(e.to_string()))?;
    let radius_m = query.radius_m.unwrap_or(NEARBY_DEFAULT_RADIUS_M);
    if !(radius_m > 0.0 && radius_m <= NEARBY_MAX_RADIUS_M) {
        return Err(ApiError::invalid_field(
            "radius_m",
            format!("must be above 0 and at most {NEARBY_MAX_RADIUS_M}"),
        ));
    }
    let (min, max) = center.bounding_box(radius_m);
    let candidates = state
        .store
        .merchants_in_box(
            Position {
                lat: min.lat,
                lon: min.lon,
            },
            Position {
                lat: max.lat,
                lon: max.lon,
            },
            10_000,
        )
        .await?;
    let mut merchants: Vec<NearbyMerchant> = candidates
        .into_iter()
        .filter_map(|merchant| {
            let at = LatLon::new(merchant.location.lat, merchant.location.lon).ok()?;
            let distance_m = haversine_m(center, at);
            (distance_m <= radius_m).then(|| NearbyMerchant {
                merchant: merchant.into(),
                distance_m: distance_m.round(),
            })
        })
        .collect();
    merchants.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
    merchants.truncate(NEARBY_MAX_RESULTS);
    Ok(HttpResponse::Ok().json(NearbyMerchants { merchants }))
}
