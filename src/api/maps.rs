//! The maps routes: addresses from typed text and from a point, the streets inside a box, and
//! what the pages need to know to draw a map. Every route wants a signed-in user of any role.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::auth::{Scoped, need};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::state::AppState;
use crate::geo::LatLon;
use crate::maps::{Health, OSM_ATTRIBUTION, Place, Streets};

/// Longest geocoding query, in characters.
pub const GEOCODE_QUERY_MAX_CHARS: usize = 200;
/// Most answers one geocoding query returns (and the default).
pub const GEOCODE_MAX_RESULTS: usize = 10;
/// Widest and tallest street box, in degrees.
pub const STREETS_BOX_MAX_DEG: f64 = 0.5;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct GeocodeParams {
    /// What the user typed: `Mannerheimintie 5`, `aleksanterinkatu 52 helsinki`, `mannerh`
    /// (1 to 200 characters).
    pub q: Option<String>,
    /// `LAT,LON`: among equally good answers, the nearest first.
    pub near: Option<String>,
    /// Most answers wanted, 1 to 10 (default 10; more is capped at 10).
    pub limit: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ReverseParams {
    pub lat: Option<String>,
    pub lon: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StreetsParams {
    /// `SOUTH,WEST,NORTH,EAST` in degrees, at most 0.5° on a side.
    pub bbox: Option<String>,
}

/// Places matching a typed address, best first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GeocodeResults {
    pub results: Vec<Place>,
}

/// A box on the map, in degrees.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bounds {
    pub south: f64,
    pub west: f64,
    pub north: f64,
    pub east: f64,
}

/// What the pages need to draw a map.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MapInfo {
    /// The routing provider: `osrm` or `straight_line`.
    pub provider: String,
    /// `ok`, `degraded: <why>` (OSRM failing, straight lines stand in) or `straight_line`.
    pub routing: String,
    /// Whether `/api/v1/geocode` can answer (an offline map is loaded).
    pub geocoding: bool,
    /// Whether `/api/v1/map/streets` can answer.
    pub streets: bool,
    /// What the offline map covers; null without one.
    pub bounds: Option<Bounds>,
    /// An XYZ raster tile URL the pages may draw (`MEALKITZ_MAP_TILES_URL`); null when unset.
    pub tiles_url: Option<String>,
    /// The map data's licence, to show beside any map.
    pub attribution: String,
}

fn invalid_location(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidLocation).with_message(message.into())
}

/// `text` as a coordinate, or why not.
fn coordinate(name: &str, text: Option<&str>) -> Result<f64, ApiError> {
    let text = text.ok_or_else(|| invalid_location(format!("{name} is required")))?;
    text.trim()
        .parse::<f64>()
        .map_err(|_| invalid_location(format!("{name} must be a number of degrees")))
}

/// `LAT,LON` as a valid point, or why not.
fn point(name: &str, text: &str) -> Result<LatLon, ApiError> {
    let (lat, lon) = text
        .split_once(',')
        .ok_or_else(|| invalid_location(format!("{name} must be LAT,LON")))?;
    let lat = coordinate(&format!("{name} latitude"), Some(lat))?;
    let lon = coordinate(&format!("{name} longitude"), Some(lon))?;
    LatLon::new(lat, lon).map_err(|e| invalid_location(format!("{name}: {e}")))
}

/// Addresses, streets and places for typed text, best first.
#[utoipa::path(
    get, path = "/api/v1/geocode", tag = "maps",
    params(GeocodeParams), security(("bearer" = ["maps:read"])),
    responses(
        (status = 200, description = "At most `limit` answers, best first (none when nothing matches)", body = GeocodeResults),
        (status = 400, description = "A query parameter is repeated (invalid_query)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 422, description = "`q` empty or too long, `limit` not 1 to 10 (invalid_field), `near` not a point (invalid_location)", body = ErrorBody),
        (status = 503, description = "No map data is loaded (maps_unavailable)", body = ErrorBody),
    )
)]
pub async fn geocode(
    state: web::Data<AppState>,
    _caller: Scoped<need::MapsRead>,
    params: web::Query<GeocodeParams>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let query = params.q.as_deref().unwrap_or("").trim();
    if query.is_empty() || query.chars().count() > GEOCODE_QUERY_MAX_CHARS {
        return Err(ApiError::invalid_field(
            "q",
            format!("must be 1 to {GEOCODE_QUERY_MAX_CHARS} characters"),
        ));
    }
    let near = params
        .near
        .as_deref()
        .map(|near| point("near", near))
        .transpose()?;
    let limit = match params.limit.as_deref() {
        None => GEOCODE_MAX_RESULTS,
        Some(limit) => match limit.trim().parse::<u64>() {
            Ok(n) if n >= 1 => (n as usize).min(GEOCODE_MAX_RESULTS),
            _ => {
                return Err(ApiError::invalid_field(
                    "limit",
                    format!("must be a whole number from 1 to {GEOCODE_MAX_RESULTS}"),
                ));
            }
        },
    };
    let results = state.maps.geocode(query, near, limit)?;
    metrics::histogram!("maps_geocode_seconds").record(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().json(GeocodeResults { results }))
}

/// The address nearest a point (within 100 m), else the nearest street or place.
#[utoipa::path(
    get, path = "/api/v1/geocode/reverse", tag = "maps",
    params(ReverseParams), security(("bearer" = ["maps:read"])),
    responses(
        (status = 200, body = Place),
        (status = 400, description = "A query parameter is repeated (invalid_query)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 422, description = "`lat`/`lon` missing or out of range (invalid_location)", body = ErrorBody),
        (status = 503, description = "No map data is loaded, or nothing is known near the point (maps_unavailable)", body = ErrorBody),
    )
)]
pub async fn reverse(
    state: web::Data<AppState>,
    _caller: Scoped<need::MapsRead>,
    params: web::Query<ReverseParams>,
) -> Result<HttpResponse, ApiError> {
    let lat = coordinate("lat", params.lat.as_deref())?;
    let lon = coordinate("lon", params.lon.as_deref())?;
    let at = LatLon::new(lat, lon).map_err(|e| invalid_location(e.to_string()))?;
    let place = state.maps.reverse(at)?;
    Ok(HttpResponse::Ok().json(place))
}

/// The box `SOUTH,WEST,NORTH,EAST`, or why not.
fn bbox(text: Option<&str>) -> Result<(LatLon, LatLon), ApiError> {
    let invalid = |problem: &str| ApiError::invalid_field("bbox", problem);
    let text = text.ok_or_else(|| invalid("is required (SOUTH,WEST,NORTH,EAST)"))?;
    let values: Vec<f64> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| invalid("must be four numbers: SOUTH,WEST,NORTH,EAST"))?;
    let &[south, west, north, east] = values.as_slice() else {
        return Err(invalid("must be four numbers: SOUTH,WEST,NORTH,EAST"));
    };
    let (Ok(south_west), Ok(north_east)) = (LatLon::new(south, west), LatLon::new(north, east))
    else {
        return Err(invalid(
            "latitudes must be within -90..90 and longitudes within -180..180",
        ));
    };
    if south > north || west > east {
        return Err(invalid(
            "south must not be above north, nor west east of east",
        ));
    }
    if north - south > STREETS_BOX_MAX_DEG || east - west > STREETS_BOX_MAX_DEG {
        return Err(ApiError::invalid_field(
            "bbox",
            format!("must be at most {STREETS_BOX_MAX_DEG}° on a side"),
        ));
    }
    Ok((south_west, north_east))
}

/// The streets crossing a box, as `[lat, lon]` polylines (at most 5000 ways: over that, the
/// minor classes are left out first).
#[utoipa::path(
    get, path = "/api/v1/map/streets", tag = "maps",
    params(StreetsParams), security(("bearer" = ["maps:read"])),
    responses(
        (status = 200, description = "Minor classes first, so that drawn in order the main roads lie on top", body = Streets),
        (status = 400, description = "A query parameter is repeated (invalid_query)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 422, description = "`bbox` malformed or over 0.5° on a side (invalid_field)", body = ErrorBody),
        (status = 503, description = "No map data is loaded (maps_unavailable)", body = ErrorBody),
    )
)]
pub async fn streets(
    state: web::Data<AppState>,
    _caller: Scoped<need::MapsRead>,
    params: web::Query<StreetsParams>,
) -> Result<HttpResponse, ApiError> {
    let (south_west, north_east) = bbox(params.bbox.as_deref())?;
    let streets = state.maps.streets(south_west, north_east)?;
    Ok(HttpResponse::Ok().json(streets))
}

/// What the pages need to draw a map: the providers, what the map covers, the tile URL.
#[utoipa::path(
    get, path = "/api/v1/map", tag = "maps", security(("bearer" = ["maps:read"])),
    responses((status = 200, body = MapInfo), (status = 401, body = ErrorBody))
)]
pub async fn info(state: web::Data<AppState>, _caller: Scoped<need::MapsRead>) -> HttpResponse {
    let maps = &state.maps;
    let routing = match maps.health() {
        Health::Ok => "ok".to_owned(),
        Health::Degraded(reason) => format!("degraded: {reason}"),
        Health::StraightLine => "straight_line".to_owned(),
    };
    HttpResponse::Ok().json(MapInfo {
        provider: maps.provider().to_owned(),
        routing,
        geocoding: maps.has_map(),
        streets: maps.has_map(),
        bounds: maps.bounds().map(|(south_west, north_east)| Bounds {
            south: south_west.lat,
            west: south_west.lon,
            north: north_east.lat,
            east: north_east.lon,
        }),
        tiles_url: state.map_tiles_url.clone(),
        attribution: OSM_ATTRIBUTION.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bbox_is_four_numbers_south_west_north_east_at_most_half_a_degree() {
        let (sw, ne) = bbox(Some("60.16, 24.93,60.18,24.96")).unwrap();
        assert_eq!(
            (sw.lat, sw.lon, ne.lat, ne.lon),
            (60.16, 24.93, 60.18, 24.96)
        );
        for bad in [
            None,
            Some(""),
            Some("60.16,24.93,60.18"),
            Some("60.16,24.93,60.18,24.96,1"),
            Some("a,b,c,d"),
            Some("NaN,24.93,60.18,24.96"),
            Some("60.18,24.93,60.16,24.96"),
            Some("60.16,24.96,60.18,24.93"),
            Some("60.0,24.0,60.6,24.1"),
            Some("60.0,24.0,60.1,24.6"),
            Some("95,24,96,24.1"),
        ] {
            let error = bbox(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert_eq!(error.code(), ErrorCode::InvalidField, "{bad:?}");
        }
    }

    #[test]
    fn near_is_lat_comma_lon_within_range() {
        let p = point("near", " 60.17 , 24.94 ").unwrap();
        assert_eq!((p.lat, p.lon), (60.17, 24.94));
        for bad in [
            "60.17",
            "60.17;24.94",
            "x,24.94",
            "91,24",
            "60,181",
            "inf,24",
        ] {
            let error = point("near", bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(error.code(), ErrorCode::InvalidLocation, "{bad}");
        }
    }
}
