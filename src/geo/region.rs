//! Owns service regions: their polygons, which region a point falls in, which regions' border
//! bands cover it, and the GeoJSON they are loaded from and drawn with.

use std::collections::HashSet;
use std::fmt;

use ::geo::{
    Area, BoundingRect, Coord, Distance, Euclidean, Intersects, LineString, MapCoords,
    MultiPolygon, Point, Polygon, Rect, Validation,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::distance::{EARTH_RADIUS_M, InvalidLocation, LatLon, LocalProjection};

/// A region's name, unique within a [`RegionMap`] (e.g. "nw").
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegionId(pub String);

impl RegionId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RegionId {
    fn from(id: &str) -> Self {
        RegionId(id.to_owned())
    }
}

impl From<String> for RegionId {
    fn from(id: String) -> Self {
        RegionId(id)
    }
}

/// How far past its border a region still looks for drivers and takes orders: a driver 1 km
/// across the line is a better pick than one 8 km inside it.
pub const DEFAULT_BORDER_BAND_M: f64 = 3_000.0;

/// Demo city centre latitude (Manhattan, roughly).
pub const DEMO_CITY_CENTRE_LAT_DEG: f64 = 40.75;
/// Demo city centre longitude.
pub const DEMO_CITY_CENTRE_LON_DEG: f64 = -73.98;
/// Side of the demo city's square.
pub const DEMO_CITY_SIDE_M: f64 = 30_000.0;
/// Metres per degree of latitude used to lay out the demo city (R·π/180, rounded): the one
/// metre offsets use, so that a point so many metres from the centre lands where the demo
/// regions' edges say.
const DEMO_METRES_PER_DEGREE_M: f64 = super::distance::METRES_PER_DEGREE_LAT;

/// Relative slack on the degree-space bounding-box pre-check, so rounding can never reject a
/// point that the exact planar test would accept.
const BBOX_SLACK: f64 = 1e-9;

/// Why a regions file was rejected. Feature numbers are 0-based indices into `features`.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("regions are not valid JSON: {0}")]
    NotJson(String),
    #[error("regions must be a GeoJSON FeatureCollection with a `features` array")]
    NotFeatureCollection,
    #[error("regions FeatureCollection has no features")]
    Empty,
    #[error("feature {index} is not a GeoJSON Feature object")]
    NotAFeature { index: usize },
    #[error("feature {index} has no string `id` property")]
    MissingId { index: usize },
    #[error("feature {index} has an empty `id` property")]
    EmptyId { index: usize },
    #[error("duplicate region id \"{id}\"")]
    DuplicateId { id: String },
    #[error("feature {index} \"{id}\" geometry is {found}, not a Polygon or MultiPolygon")]
    UnsupportedGeometry {
        index: usize,
        id: String,
        found: String,
    },
    #[error("feature {index} \"{id}\" has malformed coordinates: {detail}")]
    MalformedCoordinates {
        index: usize,
        id: String,
        detail: String,
    },
    #[error("feature {index} \"{id}\" has a coordinate out of range [{lon}, {lat}]: {reason}")]
    CoordinateOutOfRange {
        index: usize,
        id: String,
        lon: f64,
        lat: f64,
        reason: InvalidLocation,
    },
    #[error(
        "feature {index} \"{id}\" has a ring with {positions} positions; a closed ring needs at least 4"
    )]
    RingTooShort {
        index: usize,
        id: String,
        positions: usize,
    },
    #[error("feature {index} \"{id}\" has a ring whose first and last positions differ")]
    RingNotClosed { index: usize, id: String },
    #[error("feature {index} \"{id}\" geometry is invalid: {reason}")]
    InvalidGeometry {
        index: usize,
        id: String,
        reason: String,
    },
}

/// One service region.
///
/// Regions must not cross the antimeridian (±180° longitude) nor come within their border band
/// of it: the bounding-box pre-check works in unwrapped degrees.
#[derive(Clone, Debug)]
pub struct Region {
    id: RegionId,
    /// In degrees: x = lon, y = lat.
    polygon: MultiPolygon<f64>,
    /// Centred on the bounding-box centre, which keeps the projection error smallest.
    projection: LocalProjection,
    /// `polygon` in the projection's planar metres; the border band is measured here, because
    /// point-to-edge distance in degrees would be meaningless.
    planar: MultiPolygon<f64>,
    /// Bounding box in degrees, for a cheap reject before the polygon tests.
    bbox: Rect<f64>,
    /// Degrees of longitude per planar metre east–west (1 / (R·cos φ0), as degrees); turns a
    /// band in metres into a bounding-box expansion that matches the planar test exactly.
    lon_deg_per_m: f64,
    /// Whether the source geometry was a single Polygon, so GeoJSON goes back out as it came in.
    single: bool,
}

impl Region {
    /// Builds a region from a validated polygon in degrees; `index` is for error messages.
    fn build(
        index: usize,
        id: RegionId,
        polygon: MultiPolygon<f64>,
        single: bool,
    ) -> Result<Region, RegionError> {
        let invalid = |reason: String| RegionError::InvalidGeometry {
            index,
            id: id.0.clone(),
            reason,
        };
        polygon
            .check_validation()
            .map_err(|e| invalid(e.to_string()))?;
        let bbox = polygon
            .bounding_rect()
            .ok_or_else(|| invalid("it has no coordinates".to_owned()))?;
        let centre = bbox.center();
        let projection = LocalProjection::new(LatLon {
            lat: centre.y,
            lon: centre.x,
        });
        let planar = polygon.map_coords(|c| {
            let [x, y] = projection.to_xy(LatLon { lat: c.y, lon: c.x });
            Coord { x, y }
        });
        // Collinear rings can pass validation yet enclose nothing; such a region would silently
        // never match. One square metre is far below any real service area.
        if planar.unsigned_area() < 1.0 {
            return Err(invalid("it has zero area".to_owned()));
        }
        let cos_lat0 = centre.y.to_radians().cos();
        let lon_deg_per_m = (1.0 / (EARTH_RADIUS_M * cos_lat0)).to_degrees();
        Ok(Region {
            id,
            polygon,
            projection,
            planar,
            bbox,
            lon_deg_per_m,
            single,
        })
    }

    pub fn id(&self) -> &RegionId {
        &self.id
    }

    /// Inside the polygon (boundary counts as inside).
    pub fn contains(&self, p: LatLon) -> bool {
        p.is_valid()
            && self.bbox_admits(p, 0.0)
            && self.polygon.intersects(&Point::new(p.lon, p.lat))
    }

    /// Inside the polygon or within `band_m` metres of it (planar distance in the region's
    /// projection). A negative or NaN band counts as zero.
    pub fn covers(&self, p: LatLon, band_m: f64) -> bool {
        let band_m = if band_m > 0.0 { band_m } else { 0.0 };
        if !p.is_valid() || !self.bbox_admits(p, band_m) {
            return false;
        }
        if self.polygon.intersects(&Point::new(p.lon, p.lat)) {
            return true;
        }
        if band_m == 0.0 {
            return false;
        }
        let xy = Point::from(self.projection.to_xy(p));
        Euclidean.distance(&xy, &self.planar) <= band_m
    }

    pub fn projection(&self) -> &LocalProjection {
        &self.projection
    }

    /// Exterior rings as lists of LatLon, for drawing maps later.
    pub fn outline(&self) -> Vec<Vec<LatLon>> {
        self.polygon
            .iter()
            .map(|poly| poly.exterior().coords().map(|c| to_latlon(*c)).collect())
            .collect()
    }

    /// Centre of the bounding box, which is also the projection's origin.
    pub fn centre(&self) -> LatLon {
        self.projection.origin()
    }

    /// Upper bound of the projection's relative distance error over this region plus a border
    /// band of `band_m`; callers may warn when it is large (above ~0.5 %), since band tests and
    /// the driver index's planar search then lose accuracy.
    pub fn projection_error_bound(&self, band_m: f64) -> f64 {
        let half_height_m =
            EARTH_RADIUS_M * (self.bbox.height() * 0.5).to_radians() + band_m.max(0.0);
        self.projection.max_relative_error(half_height_m)
    }

    /// Whether `p` lies in the bounding box grown by `band_m`. Exact with respect to the planar
    /// band test: the projection is linear in degrees, so a box grown by `band_m` in the plane
    /// is this box grown by `band_m / R` radians of latitude and `band_m / (R·cos φ0)` of
    /// longitude.
    fn bbox_admits(&self, p: LatLon, band_m: f64) -> bool {
        let grow = 1.0 + BBOX_SLACK;
        let dlat = (band_m / EARTH_RADIUS_M).to_degrees() * grow + BBOX_SLACK;
        let dlon = band_m * self.lon_deg_per_m * grow + BBOX_SLACK;
        let (min, max) = (self.bbox.min(), self.bbox.max());
        // Written so that an infinite `dlon` (origin at a pole) admits every longitude.
        p.lat >= min.y - dlat
            && p.lat <= max.y + dlat
            && p.lon >= min.x - dlon
            && p.lon <= max.x + dlon
    }

    fn to_geojson(&self) -> Value {
        let polygon_coords = |poly: &Polygon<f64>| -> Value {
            std::iter::once(poly.exterior())
                .chain(poly.interiors())
                .map(|ring| ring.coords().map(|c| json!([c.x, c.y])).collect::<Value>())
                .collect()
        };
        let geometry = match (self.single, self.polygon.0.as_slice()) {
            (true, [poly]) => json!({ "type": "Polygon", "coordinates": polygon_coords(poly) }),
            _ => json!({
                "type": "MultiPolygon",
                "coordinates": self.polygon.iter().map(polygon_coords).collect::<Value>(),
            }),
        };
        json!({
            "type": "Feature",
            "properties": { "id": self.id.as_str() },
            "geometry": geometry,
        })
    }
}

fn to_latlon(c: Coord<f64>) -> LatLon {
    LatLon { lat: c.y, lon: c.x }
}

/// The service area: every region, in file order.
#[derive(Clone, Debug)]
pub struct RegionMap {
    regions: Vec<Region>,
}

impl RegionMap {
    /// Parses a GeoJSON FeatureCollection of Polygon/MultiPolygon features, each with a string
    /// `properties.id` (GeoJSON positions are [lon, lat]). Parse with serde_json::Value by hand
    /// (no geojson crate).
    ///
    /// Rings must be closed and have at least 4 positions (RFC 7946); positions may carry an
    /// altitude, which is ignored. Polygons must be valid (no self-intersections, holes inside
    /// the shell) so that point-in-polygon answers mean something.
    pub fn from_geojson(text: &str) -> Result<RegionMap, RegionError> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| RegionError::NotJson(e.to_string()))?;
        if doc.get("type").and_then(Value::as_str) != Some("FeatureCollection") {
            return Err(RegionError::NotFeatureCollection);
        }
        let features = doc
            .get("features")
            .and_then(Value::as_array)
            .ok_or(RegionError::NotFeatureCollection)?;
        if features.is_empty() {
            return Err(RegionError::Empty);
        }
        let mut seen = HashSet::with_capacity(features.len());
        let mut regions = Vec::with_capacity(features.len());
        for (index, feature) in features.iter().enumerate() {
            if feature.get("type").and_then(Value::as_str) != Some("Feature") {
                return Err(RegionError::NotAFeature { index });
            }
            let id = feature
                .get("properties")
                .and_then(|p| p.get("id"))
                .and_then(Value::as_str)
                .ok_or(RegionError::MissingId { index })?;
            if id.is_empty() {
                return Err(RegionError::EmptyId { index });
            }
            if !seen.insert(id) {
                return Err(RegionError::DuplicateId { id: id.to_owned() });
            }
            let (polygon, single) = parse_geometry(index, id, feature.get("geometry"))?;
            regions.push(Region::build(index, RegionId::from(id), polygon, single)?);
        }
        Ok(RegionMap { regions })
    }

    /// The built-in demo city: the 30 km × 30 km box centred on lat 40.75, lon −73.98, split into
    /// a 2 × 2 grid with ids "nw", "ne", "sw", "se". Convert km to degrees with
    /// 111.195 km per degree of latitude and 111.195·cos(40.75°) per degree of longitude, so the box
    /// is 30 km on each side as measured by haversine at the centre.
    pub fn demo_city() -> RegionMap {
        let (lat0, lon0) = (DEMO_CITY_CENTRE_LAT_DEG, DEMO_CITY_CENTRE_LON_DEG);
        let half_m = DEMO_CITY_SIDE_M / 2.0;
        let dlat = half_m / DEMO_METRES_PER_DEGREE_M;
        let dlon = half_m / (DEMO_METRES_PER_DEGREE_M * lat0.to_radians().cos());
        let cell = |id: &str, south: f64, west: f64| {
            let rect = Rect::new(
                Coord { x: west, y: south },
                Coord {
                    x: west + dlon,
                    y: south + dlat,
                },
            );
            Region::build(
                0,
                RegionId::from(id),
                MultiPolygon::new(vec![rect.to_polygon()]),
                true,
            )
        };
        let cells = [
            cell("nw", lat0, lon0 - dlon),
            cell("ne", lat0, lon0),
            cell("sw", lat0 - dlat, lon0 - dlon),
            cell("se", lat0 - dlat, lon0),
        ];
        RegionMap {
            // A 15 km square is always valid; `flatten` only satisfies the types.
            regions: cells.into_iter().flatten().collect(),
        }
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub fn get(&self, id: &RegionId) -> Option<&Region> {
        self.regions.iter().find(|r| &r.id == id)
    }

    /// The region whose polygon holds `p` (the first in file order if polygons touch), or None:
    /// outside the service area.
    pub fn locate(&self, p: LatLon) -> Option<&Region> {
        self.regions.iter().find(|r| r.contains(p))
    }

    /// Every region whose polygon-plus-band covers `p` (1–4 regions near a corner, 0 outside).
    pub fn covering(&self, p: LatLon, band_m: f64) -> impl Iterator<Item = &Region> {
        self.regions.iter().filter(move |r| r.covers(p, band_m))
    }

    /// The regions' GeoJSON back (a FeatureCollection), for the web map later.
    pub fn to_geojson(&self) -> Value {
        json!({
            "type": "FeatureCollection",
            "features": self.regions.iter().map(Region::to_geojson).collect::<Vec<_>>(),
        })
    }
}

/// Context for coordinate errors inside one feature.
struct FeatureCtx<'a> {
    index: usize,
    id: &'a str,
}

impl FeatureCtx<'_> {
    fn malformed(&self, detail: &str) -> RegionError {
        RegionError::MalformedCoordinates {
            index: self.index,
            id: self.id.to_owned(),
            detail: detail.to_owned(),
        }
    }
}

/// The feature's geometry as a MultiPolygon, and whether it was a single Polygon.
fn parse_geometry(
    index: usize,
    id: &str,
    geometry: Option<&Value>,
) -> Result<(MultiPolygon<f64>, bool), RegionError> {
    let unsupported = |found: &str| RegionError::UnsupportedGeometry {
        index,
        id: id.to_owned(),
        found: found.to_owned(),
    };
    let geometry = match geometry {
        None | Some(Value::Null) => return Err(unsupported("missing")),
        Some(g) => g,
    };
    let ctx = FeatureCtx { index, id };
    let coords = || {
        geometry
            .get("coordinates")
            .ok_or_else(|| ctx.malformed("no `coordinates` member"))
    };
    match geometry.get("type").and_then(Value::as_str) {
        Some("Polygon") => Ok((
            MultiPolygon::new(vec![parse_polygon(&ctx, coords()?)?]),
            true,
        )),
        Some("MultiPolygon") => {
            let polys = coords()?
                .as_array()
                .ok_or_else(|| ctx.malformed("a MultiPolygon's coordinates must be an array"))?;
            if polys.is_empty() {
                return Err(ctx.malformed("a MultiPolygon needs at least one polygon"));
            }
            let polys = polys
                .iter()
                .map(|p| parse_polygon(&ctx, p))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((MultiPolygon::new(polys), false))
        }
        Some(other) => Err(unsupported(&format!("a {other}"))),
        None => Err(unsupported("untyped")),
    }
}

fn parse_polygon(ctx: &FeatureCtx<'_>, value: &Value) -> Result<Polygon<f64>, RegionError> {
    let rings = value
        .as_array()
        .ok_or_else(|| ctx.malformed("a polygon must be an array of rings"))?;
    let mut rings = rings.iter().map(|r| parse_ring(ctx, r));
    let exterior = rings
        .next()
        .ok_or_else(|| ctx.malformed("a polygon needs at least one ring"))??;
    let interiors = rings.collect::<Result<Vec<_>, _>>()?;
    Ok(Polygon::new(exterior, interiors))
}

fn parse_ring(ctx: &FeatureCtx<'_>, value: &Value) -> Result<LineString<f64>, RegionError> {
    let positions = value
        .as_array()
        .ok_or_else(|| ctx.malformed("a ring must be an array of positions"))?;
    let coords = positions
        .iter()
        .map(|p| parse_position(ctx, p))
        .collect::<Result<Vec<_>, _>>()?;
    if coords.len() < 4 {
        return Err(RegionError::RingTooShort {
            index: ctx.index,
            id: ctx.id.to_owned(),
            positions: coords.len(),
        });
    }
    if coords.first() != coords.last() {
        return Err(RegionError::RingNotClosed {
            index: ctx.index,
            id: ctx.id.to_owned(),
        });
    }
    Ok(LineString::new(coords))
}

fn parse_position(ctx: &FeatureCtx<'_>, value: &Value) -> Result<Coord<f64>, RegionError> {
    let (lon, lat) = match value.as_array().map(Vec::as_slice) {
        Some([lon, lat, ..]) => match (lon.as_f64(), lat.as_f64()) {
            (Some(lon), Some(lat)) => (lon, lat),
            _ => return Err(ctx.malformed("a position must hold numbers")),
        },
        _ => return Err(ctx.malformed("a position must be an array [lon, lat]")),
    };
    LatLon::new(lat, lon).map_err(|reason| RegionError::CoordinateOutOfRange {
        index: ctx.index,
        id: ctx.id.to_owned(),
        lon,
        lat,
        reason,
    })?;
    Ok(Coord { x: lon, y: lat })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::distance::haversine_m;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const KM_PER_DEG: f64 = DEMO_METRES_PER_DEGREE_M / 1_000.0;

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    /// Demo box half-sides in degrees.
    fn demo_half() -> (f64, f64) {
        let dlat = 15.0 / KM_PER_DEG;
        let dlon = dlat / DEMO_CITY_CENTRE_LAT_DEG.to_radians().cos();
        (dlat, dlon)
    }

    /// A point `north_km`, `east_km` from the demo centre.
    fn demo_offset(north_km: f64, east_km: f64) -> LatLon {
        let lat = DEMO_CITY_CENTRE_LAT_DEG + north_km / KM_PER_DEG;
        let lon = DEMO_CITY_CENTRE_LON_DEG
            + east_km / (KM_PER_DEG * DEMO_CITY_CENTRE_LAT_DEG.to_radians().cos());
        ll(lat, lon)
    }

    fn ids<'a>(regions: impl Iterator<Item = &'a Region>) -> Vec<&'a str> {
        regions.map(|r| r.id().as_str()).collect()
    }

    fn located(map: &RegionMap, p: LatLon) -> Option<&str> {
        map.locate(p).map(|r| r.id().as_str())
    }

    fn square(lon: f64, lat: f64, side: f64) -> String {
        format!(
            "[[{lon},{lat}],[{lon2},{lat}],[{lon2},{lat2}],[{lon},{lat2}],[{lon},{lat}]]",
            lon2 = lon + side,
            lat2 = lat + side
        )
    }

    fn collection(features: &[String]) -> String {
        format!(
            r#"{{"type":"FeatureCollection","features":[{}]}}"#,
            features.join(",")
        )
    }

    fn polygon_feature(id: &str, ring: &str) -> String {
        format!(
            r#"{{"type":"Feature","properties":{{"id":"{id}"}},"geometry":{{"type":"Polygon","coordinates":[{ring}]}}}}"#
        )
    }

    fn err_message(text: &str) -> String {
        RegionMap::from_geojson(text).unwrap_err().to_string()
    }

    #[test]
    fn demo_city_has_four_regions_in_grid_order() {
        let map = RegionMap::demo_city();
        assert_eq!(ids(map.regions().iter()), ["nw", "ne", "sw", "se"]);
        assert!(map.get(&RegionId::from("se")).is_some());
        assert!(map.get(&RegionId::from("middle")).is_none());
    }

    #[test]
    fn demo_city_box_is_30_km_a_side_by_haversine() {
        let (dlat, dlon) = demo_half();
        let c = ll(DEMO_CITY_CENTRE_LAT_DEG, DEMO_CITY_CENTRE_LON_DEG);
        let ns = haversine_m(ll(c.lat - dlat, c.lon), ll(c.lat + dlat, c.lon));
        let ew = haversine_m(ll(c.lat, c.lon - dlon), ll(c.lat, c.lon + dlon));
        assert!((ns - 30_000.0).abs() < 5.0, "{ns}");
        assert!((ew - 30_000.0).abs() < 5.0, "{ew}");
    }

    #[test]
    fn demo_city_centre_is_located_in_exactly_one_region() {
        let map = RegionMap::demo_city();
        let centre = demo_offset(0.0, 0.0);
        // The centre is the shared corner of all four; file order breaks the tie.
        assert_eq!(located(&map, centre), Some("nw"));
        // A hair into each quadrant, exactly one polygon holds the point.
        for (n, e, id) in [
            (0.01, -0.01, "nw"),
            (0.01, 0.01, "ne"),
            (-0.01, -0.01, "sw"),
        ] {
            let p = demo_offset(n, e);
            assert_eq!(ids(map.regions().iter().filter(|r| r.contains(p))), [id]);
        }
        let p = demo_offset(-0.01, 0.01);
        assert_eq!(ids(map.regions().iter().filter(|r| r.contains(p))), ["se"]);
    }

    #[test]
    fn points_near_each_corner_of_the_box_are_inside() {
        let map = RegionMap::demo_city();
        for (n, e, id) in [
            (14.9, -14.9, "nw"),
            (14.9, 14.9, "ne"),
            (-14.9, -14.9, "sw"),
            (-14.9, 14.9, "se"),
        ] {
            assert_eq!(located(&map, demo_offset(n, e)), Some(id), "corner {id}");
        }
    }

    #[test]
    fn exact_box_corner_counts_as_inside() {
        let map = RegionMap::demo_city();
        let (dlat, dlon) = demo_half();
        let corner = ll(
            DEMO_CITY_CENTRE_LAT_DEG + dlat,
            DEMO_CITY_CENTRE_LON_DEG + dlon,
        );
        assert_eq!(located(&map, corner), Some("ne"));
    }

    #[test]
    fn a_point_100_km_away_is_in_no_region_and_covered_by_none() {
        let map = RegionMap::demo_city();
        let far = demo_offset(100.0, 0.0);
        assert!(map.locate(far).is_none());
        assert_eq!(map.covering(far, DEFAULT_BORDER_BAND_M).count(), 0);
        assert!(map.locate(ll(-33.9, 151.2)).is_none());
    }

    #[test]
    fn one_km_east_of_the_box_is_covered_by_east_regions_but_located_in_none() {
        let map = RegionMap::demo_city();
        for north_km in [5.0, -5.0, 0.0] {
            let p = demo_offset(north_km, 16.0);
            assert!(map.locate(p).is_none());
            let covering = ids(map.covering(p, DEFAULT_BORDER_BAND_M));
            let expected: &[&str] = match north_km {
                n if n > 0.0 => &["ne"],
                n if n < 0.0 => &["se"],
                _ => &["ne", "se"],
            };
            assert_eq!(covering, expected, "north {north_km} km");
            assert_eq!(map.covering(p, 500.0).count(), 0);
        }
    }

    #[test]
    fn one_km_west_of_the_nw_ne_border_is_in_nw_and_covered_by_both() {
        let map = RegionMap::demo_city();
        let p = demo_offset(7.5, -1.0);
        assert_eq!(located(&map, p), Some("nw"));
        assert_eq!(ids(map.covering(p, DEFAULT_BORDER_BAND_M)), ["nw", "ne"]);
        // 990, not 999: ne measures the 1 km in its own projection, ~1 m (0.1 %) short.
        assert_eq!(ids(map.covering(p, 990.0)), ["nw"]);
    }

    #[test]
    fn near_the_centre_all_four_regions_cover() {
        let map = RegionMap::demo_city();
        let p = demo_offset(1.0, 1.0);
        assert_eq!(located(&map, p), Some("ne"));
        assert_eq!(
            ids(map.covering(p, DEFAULT_BORDER_BAND_M)),
            ["nw", "ne", "sw", "se"]
        );
    }

    #[test]
    fn band_is_measured_in_metres_at_the_diagonal() {
        let map = RegionMap::demo_city();
        let ne = map.get(&RegionId::from("ne")).unwrap();
        // 2 km north and 2 km east of the box's NE corner: 2.83 km away.
        let p = demo_offset(17.0, 17.0);
        assert!(ne.covers(p, 2_900.0));
        assert!(!ne.covers(p, 2_800.0));
    }

    #[test]
    fn covers_and_contains_reject_invalid_points_and_treat_bad_bands_as_zero() {
        let map = RegionMap::demo_city();
        let nw = &map.regions()[0];
        assert!(!nw.contains(LatLon {
            lat: f64::NAN,
            lon: 0.0
        }));
        assert!(!nw.covers(
            LatLon {
                lat: 40.8,
                lon: f64::INFINITY
            },
            1e9
        ));
        let outside = demo_offset(16.0, -7.0);
        assert!(!nw.covers(outside, -5.0));
        assert!(!nw.covers(outside, f64::NAN));
        assert!(nw.covers(outside, f64::INFINITY));
        assert!(nw.covers(demo_offset(7.0, -7.0), f64::NAN));
    }

    #[test]
    fn region_centre_outline_and_projection_agree() {
        let map = RegionMap::demo_city();
        let nw = &map.regions()[0];
        let centre = nw.centre();
        let expected = demo_offset(7.5, -7.5);
        assert!((centre.lat - expected.lat).abs() < 1e-12);
        assert!((centre.lon - expected.lon).abs() < 1e-12);
        assert_eq!(nw.projection().origin(), centre);
        let outline = nw.outline();
        assert_eq!(outline.len(), 1);
        assert_eq!(outline[0].len(), 5);
        assert_eq!(outline[0].first(), outline[0].last());
        assert!(outline[0].iter().all(LatLon::is_valid));
    }

    #[test]
    fn region_projection_error_matches_the_documented_0_14_percent() {
        let map = RegionMap::demo_city();
        let mut rng = StdRng::seed_from_u64(11);
        for region in map.regions() {
            let bound = region.projection_error_bound(DEFAULT_BORDER_BAND_M);
            assert!((0.0013..0.0015).contains(&bound), "{bound}");
            let proj = region.projection();
            let o = proj.origin();
            let dlat = 10.5 / KM_PER_DEG;
            let dlon = dlat / o.lat.to_radians().cos();
            for _ in 0..1_000 {
                let mut pt = || {
                    ll(
                        o.lat + rng.random_range(-dlat..=dlat),
                        o.lon + rng.random_range(-dlon..=dlon),
                    )
                };
                let (a, b) = (pt(), pt());
                let truth = haversine_m(a, b);
                if truth > 100.0 {
                    let [ax, ay] = proj.to_xy(a);
                    let [bx, by] = proj.to_xy(b);
                    let err = ((ax - bx).hypot(ay - by) / truth - 1.0).abs();
                    assert!(err <= bound, "{err} > {bound}");
                }
            }
        }
    }

    #[test]
    fn to_geojson_round_trips_through_from_geojson() {
        let map = RegionMap::demo_city();
        let text = map.to_geojson().to_string();
        let back = RegionMap::from_geojson(&text).unwrap();
        assert_eq!(ids(back.regions().iter()), ["nw", "ne", "sw", "se"]);
        for (a, b) in map.regions().iter().zip(back.regions()) {
            assert_eq!(a.polygon, b.polygon);
            assert_eq!(a.centre(), b.centre());
        }
        assert_eq!(back.to_geojson(), map.to_geojson());
        assert_eq!(
            map.to_geojson()["features"][0]["geometry"]["type"],
            "Polygon"
        );
    }

    #[test]
    fn multipolygon_region_works_and_round_trips() {
        let multi = format!(
            r#"{{"type":"Feature","properties":{{"id":"islands","name":"ignored"}},
                "geometry":{{"type":"MultiPolygon","coordinates":[[{}],[{}]]}}}}"#,
            square(0.0, 0.0, 0.1),
            square(1.0, 0.0, 0.1)
        );
        let map = RegionMap::from_geojson(&collection(&[multi])).unwrap();
        assert_eq!(located(&map, ll(0.05, 0.05)), Some("islands"));
        assert_eq!(located(&map, ll(0.05, 1.05)), Some("islands"));
        assert_eq!(located(&map, ll(0.05, 0.5)), None);
        // The gap between the islands is ~100 km: a 3 km band doesn't bridge it.
        assert_eq!(
            map.covering(ll(0.05, 0.5), DEFAULT_BORDER_BAND_M).count(),
            0
        );
        assert_eq!(
            map.covering(ll(0.05, 0.12), DEFAULT_BORDER_BAND_M).count(),
            1
        );
        assert_eq!(map.regions()[0].outline().len(), 2);
        let json = map.to_geojson();
        assert_eq!(json["features"][0]["geometry"]["type"], "MultiPolygon");
        let back = RegionMap::from_geojson(&json.to_string()).unwrap();
        assert_eq!(back.regions()[0].polygon, map.regions()[0].polygon);
    }

    #[test]
    fn polygon_holes_are_outside_and_altitudes_are_ignored() {
        let feature = format!(
            r#"{{"type":"Feature","properties":{{"id":"ring"}},"geometry":{{"type":"Polygon",
                "coordinates":[{},{}]}}}}"#,
            "[[0,0,5],[1,0,5],[1,1,5],[0,1,5],[0,0,5]]",
            square(0.4, 0.4, 0.2)
        );
        let map = RegionMap::from_geojson(&collection(&[feature])).unwrap();
        assert_eq!(located(&map, ll(0.1, 0.1)), Some("ring"));
        assert_eq!(located(&map, ll(0.5, 0.5)), None);
        assert!(map.regions()[0].covers(ll(0.5, 0.5), 20_000.0));
    }

    #[test]
    fn geojson_errors_have_clear_one_line_messages() {
        let ok_ring = square(0.0, 0.0, 1.0);
        let with_geometry = |geometry: &str| {
            collection(&[format!(
                r#"{{"type":"Feature","properties":{{"id":"a"}},"geometry":{geometry}}}"#
            )])
        };
        let cases: Vec<(String, &str)> = vec![
            ("{not json".into(), "regions are not valid JSON: "),
            (
                r#"{"type":"Feature","features":[]}"#.into(),
                "regions must be a GeoJSON FeatureCollection with a `features` array",
            ),
            (
                r#"{"type":"FeatureCollection"}"#.into(),
                "regions must be a GeoJSON FeatureCollection with a `features` array",
            ),
            (
                "[1, 2]".into(),
                "regions must be a GeoJSON FeatureCollection",
            ),
            (collection(&[]), "regions FeatureCollection has no features"),
            (
                collection(&["42".into()]),
                "feature 0 is not a GeoJSON Feature object",
            ),
            (
                collection(&[
                    polygon_feature("a", &ok_ring),
                    format!(
                        r#"{{"type":"Feature","properties":{{"id":7}},"geometry":{{"type":"Polygon","coordinates":[{ok_ring}]}}}}"#
                    ),
                ]),
                "feature 1 has no string `id` property",
            ),
            (
                collection(&[r#"{"type":"Feature","geometry":null}"#.into()]),
                "feature 0 has no string `id` property",
            ),
            (
                collection(&[polygon_feature("", &ok_ring)]),
                "feature 0 has an empty `id` property",
            ),
            (
                collection(&[
                    polygon_feature("x", &ok_ring),
                    polygon_feature("x", &square(5.0, 5.0, 1.0)),
                ]),
                "duplicate region id \"x\"",
            ),
            (
                with_geometry(r#"{"type":"Point","coordinates":[0,0]}"#),
                "feature 0 \"a\" geometry is a Point, not a Polygon or MultiPolygon",
            ),
            (
                with_geometry("null"),
                "feature 0 \"a\" geometry is missing, not a Polygon or MultiPolygon",
            ),
            (
                with_geometry(r#"{"type":"Polygon"}"#),
                "feature 0 \"a\" has malformed coordinates: no `coordinates` member",
            ),
            (
                with_geometry(r#"{"type":"Polygon","coordinates":[[[0,0],[1,"x"],[1,1],[0,0]]]}"#),
                "feature 0 \"a\" has malformed coordinates: a position must hold numbers",
            ),
            (
                with_geometry(r#"{"type":"Polygon","coordinates":[[[0,0],[1],[1,1],[0,0]]]}"#),
                "feature 0 \"a\" has malformed coordinates: a position must be an array [lon, lat]",
            ),
            (
                with_geometry(r#"{"type":"Polygon","coordinates":[]}"#),
                "feature 0 \"a\" has malformed coordinates: a polygon needs at least one ring",
            ),
            (
                with_geometry(r#"{"type":"MultiPolygon","coordinates":[]}"#),
                "feature 0 \"a\" has malformed coordinates: a MultiPolygon needs at least one polygon",
            ),
            (
                with_geometry(r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,95],[0,0]]]}"#),
                "feature 0 \"a\" has a coordinate out of range [1, 95]: latitude must be between -90 and 90",
            ),
            (
                with_geometry(r#"{"type":"Polygon","coordinates":[[[0,0],[200,0],[1,1],[0,0]]]}"#),
                "feature 0 \"a\" has a coordinate out of range [200, 0]: longitude must be between -180 and 180",
            ),
            (
                with_geometry(r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,0]]]}"#),
                "feature 0 \"a\" has a ring with 3 positions; a closed ring needs at least 4",
            ),
            (
                with_geometry(r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}"#),
                "feature 0 \"a\" has a ring whose first and last positions differ",
            ),
            (
                with_geometry(
                    r#"{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]}"#,
                ),
                "feature 0 \"a\" geometry is invalid: polygon at index 0 is invalid: exterior ring has a self-intersection",
            ),
            (
                with_geometry(r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[2,0],[0,0]]]}"#),
                "feature 0 \"a\" geometry is invalid: ",
            ),
        ];
        for (text, expected) in cases {
            let message = err_message(&text);
            assert!(
                message.starts_with(expected),
                "for {text}\n got: {message}\nwant: {expected}"
            );
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn region_id_displays_and_serialises_as_a_plain_string() {
        let id = RegionId::from("nw");
        assert_eq!(id.to_string(), "nw");
        assert_eq!(id.as_str(), "nw");
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""nw""#);
        let back: RegionId = serde_json::from_str(r#""se""#).unwrap();
        assert_eq!(back, RegionId::from("se".to_owned()));
    }
}
