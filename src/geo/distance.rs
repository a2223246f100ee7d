//! Owns points on the Earth ([`LatLon`]), great-circle distance, and the local planar
//! projection that the region tests and the driver index run on.

use serde::{Deserialize, Serialize};

/// Mean Earth radius (IUGG R1). One degree of latitude is then 111_195 m.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Metres per degree of latitude (R·π/180, rounded to the metre), and of longitude at the
/// equator: what [`LatLon::offset_m`] steps by, and what the demo city is laid out with.
pub const METRES_PER_DEGREE_LAT: f64 = 111_195.0;

/// A point on the Earth in degrees (WGS84 latitude and longitude treated as spherical).
///
/// Build one with [`LatLon::new`], which validates. The fields are public for pattern matching
/// and serialisation, so a value built by hand or deserialised may be invalid; code that must
/// not misbehave on such values checks [`LatLon::is_valid`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

/// Why a latitude/longitude pair was rejected.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum InvalidLocation {
    #[error("latitude and longitude must be finite numbers")]
    NotFinite,
    #[error("latitude must be between -90 and 90")]
    LatitudeOutOfRange,
    #[error("longitude must be between -180 and 180")]
    LongitudeOutOfRange,
}

impl LatLon {
    /// Validated: both finite, lat in [-90, 90], lon in [-180, 180].
    pub fn new(lat: f64, lon: f64) -> Result<LatLon, InvalidLocation> {
        if !lat.is_finite() || !lon.is_finite() {
            return Err(InvalidLocation::NotFinite);
        }
        if !(-90.0..=90.0).contains(&lat) {
            return Err(InvalidLocation::LatitudeOutOfRange);
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(InvalidLocation::LongitudeOutOfRange);
        }
        Ok(LatLon { lat, lon })
    }

    /// Whether [`LatLon::new`] would accept these coordinates.
    pub fn is_valid(&self) -> bool {
        LatLon::new(self.lat, self.lon).is_ok()
    }

    /// The point `north_m` metres north and `east_m` metres east of this one (negative: south,
    /// west), stepping on the plane that touches the Earth here: a degree of latitude is
    /// [`METRES_PER_DEGREE_LAT`], a degree of longitude that times cos(latitude). Good to well
    /// under 1 % for the few kilometres a city spans; not meant near a pole or across ±180°, and
    /// not validated (see [`LatLon::is_valid`]). [`LatLon::offset_m_from`] is its inverse.
    pub fn offset_m(&self, north_m: f64, east_m: f64) -> LatLon {
        LatLon {
            lat: self.lat + north_m / METRES_PER_DEGREE_LAT,
            lon: self.lon + east_m / (METRES_PER_DEGREE_LAT * self.lat.to_radians().cos()),
        }
    }

    /// How far north and east of `origin` this point is, in metres, on the same plane as
    /// [`LatLon::offset_m`]: `origin.offset_m(n, e).offset_m_from(origin)` is `(n, e)`.
    pub fn offset_m_from(&self, origin: LatLon) -> (f64, f64) {
        (
            (self.lat - origin.lat) * METRES_PER_DEGREE_LAT,
            (self.lon - origin.lon) * METRES_PER_DEGREE_LAT * origin.lat.to_radians().cos(),
        )
    }

    /// The south-west and north-east corners of a box holding every point within `radius_m`
    /// (great-circle) of this one: a cheap pre-filter before exact distances. Near a pole, or
    /// when the box would cross ±180°, it spans every longitude.
    pub fn bounding_box(&self, radius_m: f64) -> (LatLon, LatLon) {
        let radius_m = radius_m.max(0.0);
        let dlat = (radius_m / EARTH_RADIUS_M).to_degrees();
        let min_lat = (self.lat - dlat).max(-90.0);
        let max_lat = (self.lat + dlat).min(90.0);
        let widest = self.lat.abs().max(min_lat.abs()).max(max_lat.abs());
        let cos = widest.to_radians().cos();
        let dlon = if cos > 1e-9 {
            (radius_m / (EARTH_RADIUS_M * cos)).to_degrees()
        } else {
            360.0
        };
        let (min_lon, max_lon) = if self.lon - dlon < -180.0 || self.lon + dlon > 180.0 {
            (-180.0, 180.0)
        } else {
            (self.lon - dlon, self.lon + dlon)
        };
        (
            LatLon {
                lat: min_lat,
                lon: min_lon,
            },
            LatLon {
                lat: max_lat,
                lon: max_lon,
            },
        )
    }
}

/// Great-circle distance in metres.
///
/// Haversine on a sphere of radius [`EARTH_RADIUS_M`]; within 0.5 % of the ellipsoidal
/// distance anywhere, which is far below the noise of a phone GPS and of average-speed ETAs.
/// Invalid inputs (non-finite) give NaN rather than a panic.
pub fn haversine_m(a: LatLon, b: LatLon) -> f64 {
    HaversineFrom::new(a).to(b)
}

/// [`haversine_m`] from one fixed point to many: the fixed point's cosine is computed once.
/// Bit-for-bit the same results as `haversine_m`, which is built on it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HaversineFrom {
    from: LatLon,
    phi1: f64,
    cos_phi1: f64,
}

impl HaversineFrom {
    pub(crate) fn new(from: LatLon) -> Self {
        let phi1 = from.lat.to_radians();
        HaversineFrom {
            from,
            phi1,
            cos_phi1: phi1.cos(),
        }
    }

    pub(crate) fn to(&self, b: LatLon) -> f64 {
        let phi2 = b.lat.to_radians();
        let half_dphi = (phi2 - self.phi1) * 0.5;
        let half_dlambda = (b.lon - self.from.lon).to_radians() * 0.5;
        let s_phi = half_dphi.sin();
        let s_lambda = half_dlambda.sin();
        let h = s_phi * s_phi + self.cos_phi1 * phi2.cos() * s_lambda * s_lambda;
        // Rounding can push h a hair above 1 for antipodal points, and asin would then give NaN.
        2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
    }
}

/// Equirectangular projection around an origin, to planar metres: x = R·Δλ·cos φ0, y = R·Δφ.
///
/// Cheap (no trigonometry per point) and accurate over a city. Only the east–west scale is
/// wrong away from the origin latitude: the true scale is cos φ where the projection uses
/// cos φ0. The relative distance error is therefore about tan|φ0|·|Δφ| (Δφ in radians) for
/// points within Δφ of the origin latitude; [`LocalProjection::max_relative_error`] gives a
/// strict bound. For the demo city (origin latitude 40.75°, points within 10.5 km of a
/// region's centre: half a 15 km region plus the 3 km border band) that is ≈ 0.14 %, i.e. 4 m
/// over a 3 km search radius.
///
/// Longitude differences are wrapped to [-180°, 180°], so a projection near the antimeridian
/// stays continuous; the projection is meaningless near the poles (cos φ0 → 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LocalProjection {
    origin: LatLon,
    /// cos φ0, cached: it is the only trigonometry the projection needs.
    cos_lat0: f64,
    /// Metres per radian east–west at the origin latitude, R·cos φ0.
    x_scale_m: f64,
}

/// Below this cos φ0 (origin within ~0.0006° of a pole) longitudes are indistinguishable, and
/// the inverse projection would divide by almost zero.
const MIN_COS_LAT0: f64 = 1e-8;

impl LocalProjection {
    /// A projection centred on `origin`. An invalid origin (only constructible by bypassing
    /// [`LatLon::new`]) is replaced by (0, 0) so the projection never yields NaN.
    pub fn new(origin: LatLon) -> LocalProjection {
        let origin = if origin.is_valid() {
            origin
        } else {
            LatLon { lat: 0.0, lon: 0.0 }
        };
        let cos_lat0 = origin.lat.to_radians().cos().max(0.0);
        LocalProjection {
            origin,
            cos_lat0,
            x_scale_m: EARTH_RADIUS_M * cos_lat0,
        }
    }

    pub fn origin(&self) -> LatLon {
        self.origin
    }

    /// Planar metres east (x) and north (y) of the origin.
    pub fn to_xy(&self, p: LatLon) -> [f64; 2] {
        let dlon = wrap_degrees(p.lon - self.origin.lon);
        [
            self.x_scale_m * dlon.to_radians(),
            EARTH_RADIUS_M * (p.lat - self.origin.lat).to_radians(),
        ]
    }

    /// Inverse of [`LocalProjection::to_xy`]. Latitude is clamped to [-90, 90] and longitude
    /// wrapped to [-180, 180], so any finite input gives a valid point; a non-finite coordinate
    /// maps to the origin's.
    pub fn to_latlon(&self, xy: [f64; 2]) -> LatLon {
        let [x, y] = xy;
        let lat = if y.is_finite() {
            (self.origin.lat + (y / EARTH_RADIUS_M).to_degrees()).clamp(-90.0, 90.0)
        } else {
            self.origin.lat
        };
        let lon = if x.is_finite() && self.cos_lat0 >= MIN_COS_LAT0 {
            wrap_degrees(self.origin.lon + (x / self.x_scale_m).to_degrees())
        } else {
            self.origin.lon
        };
        LatLon { lat, lon }
    }

    /// Upper bound of the relative distance error |planar / great-circle − 1| for points within
    /// `half_extent_m` metres of the origin (north/south); used to warn about regions too large
    /// for the projection and by the driver index to widen its planar search just enough.
    ///
    /// Along any path the ratio of projected to true east–west scale is cos φ0 / cos φ, whose
    /// logarithm is ∫ tan over [φ0, φ] ≤ tan(|φ0| + Δφ)·Δφ; north–south scale is exact. So
    /// the ratio of distances lies within exp(±tan(|φ0| + Δφ)·Δφ). The Δφ² margin covers the
    /// great circle between two points bulging slightly poleward, out of the latitude band.
    /// Infinite when the band reaches a pole, or for a non-finite extent.
    pub fn max_relative_error(&self, half_extent_m: f64) -> f64 {
        let dphi = half_extent_m.abs() / EARTH_RADIUS_M;
        let lat_max = self.origin.lat.abs().to_radians() + dphi;
        if !dphi.is_finite() || lat_max >= std::f64::consts::FRAC_PI_2 {
            return f64::INFINITY;
        }
        (lat_max.tan() * dphi).exp_m1() + dphi * dphi
    }
}

/// `deg` moved into [-180, 180] by whole turns.
fn wrap_degrees(deg: f64) -> f64 {
    if (-180.0..=180.0).contains(&deg) {
        deg
    } else {
        (deg + 180.0).rem_euclid(360.0) - 180.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounding_box_holds_every_point_within_the_radius() {
        let centre = LatLon::new(40.75, -73.98).unwrap();
        let (min, max) = centre.bounding_box(5_000.0);
        for bearing in 0..360 {
            let theta = f64::from(bearing).to_radians();
            // A point 4,999 m away in each direction (equirectangular step, then checked).
            let dlat = (4_999.0 * theta.cos() / EARTH_RADIUS_M).to_degrees();
            let dlon = (4_999.0 * theta.sin() / (EARTH_RADIUS_M * centre.lat.to_radians().cos()))
                .to_degrees();
            let p = LatLon::new(centre.lat + dlat, centre.lon + dlon).unwrap();
            if haversine_m(centre, p) <= 5_000.0 {
                assert!(
                    p.lat >= min.lat && p.lat <= max.lat && p.lon >= min.lon && p.lon <= max.lon,
                    "bearing {bearing}"
                );
            }
        }
        let (min, max) = LatLon::new(0.0, 179.99).unwrap().bounding_box(10_000.0);
        assert_eq!((min.lon, max.lon), (-180.0, 180.0));
    }
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    #[test]
    fn new_accepts_the_full_range_including_edges() {
        assert!(LatLon::new(90.0, 180.0).is_ok());
        assert!(LatLon::new(-90.0, -180.0).is_ok());
        assert_eq!(
            LatLon::new(40.75, -73.98),
            Ok(LatLon {
                lat: 40.75,
                lon: -73.98
            })
        );
    }

    #[test]
    fn new_rejects_non_finite_and_out_of_range_with_typed_errors() {
        assert_eq!(LatLon::new(f64::NAN, 0.0), Err(InvalidLocation::NotFinite));
        assert_eq!(
            LatLon::new(0.0, f64::INFINITY),
            Err(InvalidLocation::NotFinite)
        );
        assert_eq!(
            LatLon::new(90.1, 0.0),
            Err(InvalidLocation::LatitudeOutOfRange)
        );
        assert_eq!(
            LatLon::new(0.0, -180.5),
            Err(InvalidLocation::LongitudeOutOfRange)
        );
        assert_eq!(
            InvalidLocation::LatitudeOutOfRange.to_string(),
            "latitude must be between -90 and 90"
        );
    }

    #[test]
    fn is_valid_flags_hand_built_bad_values() {
        assert!(ll(1.0, 2.0).is_valid());
        assert!(
            !LatLon {
                lat: f64::NAN,
                lon: 0.0
            }
            .is_valid()
        );
        assert!(
            !LatLon {
                lat: 0.0,
                lon: 200.0
            }
            .is_valid()
        );
    }

    #[test]
    fn latlon_serialises_as_lat_lon_object() {
        let json = serde_json::to_string(&ll(40.75, -73.98)).unwrap();
        assert_eq!(json, r#"{"lat":40.75,"lon":-73.98}"#);
        let back: LatLon = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ll(40.75, -73.98));
    }

    #[test]
    fn an_offset_north_or_east_is_that_far_by_haversine() {
        let origin = ll(40.75, -73.98);
        for (north_m, east_m) in [
            (1_000.0, 0.0),
            (0.0, 1_000.0),
            (-5_000.0, 0.0),
            (0.0, -13_000.0),
        ] {
            let moved = origin.offset_m(north_m, east_m);
            let expected = f64::hypot(north_m, east_m);
            let d = haversine_m(origin, moved);
            assert!(
                (d - expected).abs() < expected * 1e-3,
                "({north_m}, {east_m}): {d}"
            );
        }
        let north = origin.offset_m(2_000.0, 0.0);
        assert_eq!(north.lon, origin.lon, "a step north keeps the longitude");
        assert!(north.lat > origin.lat);
        let west = origin.offset_m(0.0, -2_000.0);
        assert_eq!(west.lat, origin.lat, "a step west keeps the latitude");
        assert!(west.lon < origin.lon);
    }

    #[test]
    fn offset_m_from_undoes_offset_m() {
        let origin = ll(-33.87, 151.21);
        for (north_m, east_m) in [(0.0, 0.0), (750.0, -1_250.0), (-12_000.0, 9_000.0)] {
            let (n, e) = origin.offset_m(north_m, east_m).offset_m_from(origin);
            assert!((n - north_m).abs() < 1e-6, "north {n} for {north_m}");
            assert!((e - east_m).abs() < 1e-6, "east {e} for {east_m}");
        }
    }

    #[test]
    fn a_degree_of_latitude_is_the_rounded_earth_degree() {
        let exact = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
        assert!((METRES_PER_DEGREE_LAT - exact).abs() < 0.5, "{exact}");
        let one_degree = ll(10.0, 20.0).offset_m(METRES_PER_DEGREE_LAT, 0.0);
        assert!((one_degree.lat - 11.0).abs() < 1e-12);
    }

    #[test]
    fn haversine_one_degree_of_latitude_is_111_195_m() {
        let d = haversine_m(ll(0.0, 0.0), ll(1.0, 0.0));
        assert!((d - 111_195.0).abs() < 1.0, "{d}");
        let d = haversine_m(ll(40.0, -73.0), ll(41.0, -73.0));
        assert!((d - 111_195.0).abs() < 1.0, "{d}");
    }

    #[test]
    fn haversine_jfk_to_lax_is_about_3974_km() {
        let jfk = ll(40.6413, -73.7781);
        let lax = ll(33.9416, -118.4085);
        let d = haversine_m(jfk, lax);
        assert!((d / 3_974_000.0 - 1.0).abs() < 0.005, "{d}");
    }

    #[test]
    fn haversine_is_zero_for_same_point_symmetric_and_finite_for_antipodes() {
        let a = ll(12.3, 45.6);
        assert_eq!(haversine_m(a, a), 0.0);
        let b = ll(-7.0, 100.0);
        assert_eq!(haversine_m(a, b), haversine_m(b, a));
        let half_circumference = std::f64::consts::PI * EARTH_RADIUS_M;
        let d = haversine_m(ll(0.0, 0.0), ll(0.0, 180.0));
        assert!((d - half_circumference).abs() < 1e-6, "{d}");
        let d = haversine_m(ll(90.0, 0.0), ll(-90.0, 0.0));
        assert!((d - half_circumference).abs() < 1e-6, "{d}");
    }

    #[test]
    fn projection_maps_origin_to_zero_and_north_to_positive_y() {
        let p = LocalProjection::new(ll(40.75, -73.98));
        assert_eq!(p.to_xy(ll(40.75, -73.98)), [0.0, 0.0]);
        let [x, y] = p.to_xy(ll(40.76, -73.98));
        assert_eq!(x, 0.0);
        assert!((y - 1_111.95).abs() < 0.01, "{y}");
        let [x, _] = p.to_xy(ll(40.75, -73.97));
        assert!(x > 0.0);
    }

    #[test]
    fn projection_round_trips() {
        let p = LocalProjection::new(ll(40.75, -73.98));
        for q in [
            ll(40.75, -73.98),
            ll(40.9, -74.2),
            ll(40.6, -73.7),
            ll(41.5, -72.0),
        ] {
            let back = p.to_latlon(p.to_xy(q));
            assert!((back.lat - q.lat).abs() < 1e-12, "{back:?} vs {q:?}");
            assert!((back.lon - q.lon).abs() < 1e-12, "{back:?} vs {q:?}");
        }
    }

    #[test]
    fn projection_wraps_across_the_antimeridian() {
        let p = LocalProjection::new(ll(0.0, 179.9));
        let [x, _] = p.to_xy(ll(0.0, -179.9));
        // 0.2° east, not 359.8° west.
        assert!((x - 0.2 * 111_195.0).abs() < 1.0, "{x}");
        let back = p.to_latlon([x, 0.0]);
        assert!((back.lon + 179.9).abs() < 1e-9, "{back:?}");
    }

    #[test]
    fn to_latlon_clamps_and_never_returns_invalid_points() {
        let p = LocalProjection::new(ll(89.0, 0.0));
        let far_north = p.to_latlon([0.0, 1e7]);
        assert_eq!(far_north.lat, 90.0);
        assert!(far_north.is_valid());
        assert!(p.to_latlon([f64::NAN, f64::INFINITY]).is_valid());
        let pole = LocalProjection::new(ll(90.0, 10.0));
        assert!(pole.to_latlon([1_000.0, -1_000.0]).is_valid());
        let hand_built = LocalProjection::new(LatLon {
            lat: f64::NAN,
            lon: 0.0,
        });
        assert!(
            hand_built
                .to_latlon(hand_built.to_xy(ll(1.0, 1.0)))
                .is_valid()
        );
    }

    #[test]
    fn max_relative_error_matches_the_documented_demo_figure() {
        let p = LocalProjection::new(ll(40.75, -73.98));
        let bound = p.max_relative_error(10_500.0);
        assert!((0.0013..0.0015).contains(&bound), "{bound}");
        assert_eq!(p.max_relative_error(0.0), 0.0);
        assert!(p.max_relative_error(18_000.0) < 0.005);
        assert_eq!(p.max_relative_error(f64::NAN), f64::INFINITY);
        assert_eq!(p.max_relative_error(6_000_000.0), f64::INFINITY);
    }

    #[test]
    fn projected_distance_is_within_half_a_percent_of_haversine_over_the_demo_box() {
        // The demo box (30 km square at 40.75, -73.98) plus the 3 km border band: 18 km each way.
        let centre = ll(40.75, -73.98);
        let half_m = 18_000.0;
        let dlat = (half_m / EARTH_RADIUS_M).to_degrees();
        let dlon = dlat / centre.lat.to_radians().cos();
        let proj = LocalProjection::new(centre);
        let bound = proj.max_relative_error(half_m);
        let mut rng = StdRng::seed_from_u64(7);
        let mut point = || {
            ll(
                centre.lat + rng.random_range(-dlat..=dlat),
                centre.lon + rng.random_range(-dlon..=dlon),
            )
        };
        let mut worst = 0.0_f64;
        let mut checked = 0;
        for _ in 0..10_000 {
            let (a, b) = (point(), point());
            let truth = haversine_m(a, b);
            if truth <= 100.0 {
                continue;
            }
            let [ax, ay] = proj.to_xy(a);
            let [bx, by] = proj.to_xy(b);
            let planar = (ax - bx).hypot(ay - by);
            let err = (planar / truth - 1.0).abs();
            assert!(err < 0.005, "{a:?} {b:?}: {err}");
            assert!(
                err <= bound,
                "{a:?} {b:?}: {err} > documented bound {bound}"
            );
            worst = worst.max(err);
            checked += 1;
        }
        assert!(checked > 9_900);
        // The bound should be tight-ish, not vacuous.
        assert!(worst > bound / 4.0, "worst {worst}, bound {bound}");
    }
}
