//! Addresses typed into a request (a merchant's, a checkout's dropoff) turned into a point by the
//! maps service, for requests that give an address and no coordinates.

use super::error::{ApiError, ErrorCode};
use crate::domain::Position;
use crate::geo::LatLon;
use crate::maps::{Maps, MapsError};

/// The best match for `address` (toward `near` when given); `field` names it in errors: 422
/// when nothing matches, 503 `maps_unavailable` without map data.
pub fn locate(
    maps: &Maps,
    field: &str,
    address: &str,
    near: Option<LatLon>,
) -> Result<Position, ApiError> {
    match maps.geocode(address, near, 1) {
        Ok(found) => found
            .first()
            .map(|place| Position {
                lat: place.lat,
                lon: place.lon,
            })
            .ok_or_else(|| {
                ApiError::invalid_field(field, "no place matches this address; give lat and lon")
            }),
        Err(MapsError::Unavailable(why)) => Err(ApiError::new(ErrorCode::MapsUnavailable)
            .with_message(format!("Cannot look up {field}: {why}; give lat and lon."))),
    }
}
