//! The simulated city and its demand, drawn from one seed: the same seed gives the same
//! merchants, drivers, customers and orders (times, places, baskets). Two cities: the synthetic
//! one (30 km × 30 km around New York coordinates, the engine's default regions) and Helsinki
//! (the OpenStreetMap extract in `data/helsinki/`, real streets and addresses).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::domain::Position;
use crate::geo::LatLon;

/// Which city to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CityKind {
    /// A square around New York coordinates: the engine's default regions, no map data.
    #[default]
    Synthetic,
    /// Central Helsinki on real roads and addresses (engine started with
    /// `--regions data/helsinki/regions.geojson --map-data data/helsinki/Helsinki.osm.pbf`).
    Helsinki,
}

impl CityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CityKind::Synthetic => "synthetic",
            CityKind::Helsinki => "helsinki",
        }
    }
}

/// Where a city's people are: a rectangle around a centre, and how far orders travel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    centre: LatLon,
    half_north_m: f64,
    half_east_m: f64,
    /// How far from its merchant an order is delivered: between these distances.
    dropoff_min_m: f64,
    dropoff_max_m: f64,
    /// How far (degrees either way) an idle driver drifts from where it started.
    wander_deg: f64,
}

/// How far inside its map data (or its regions) a city's people are placed.
pub const AREA_MARGIN_M: f64 = 100.0;

/// The synthetic city: half its side is the demo regions' less a margin, so everything stays
/// inside the service area.
const SYNTHETIC: Area = Area {
    centre: LatLon {
        lat: 40.75,
        lon: -73.98,
    },
    half_north_m: 13_000.0,
    half_east_m: 13_000.0,
    dropoff_min_m: 800.0,
    dropoff_max_m: 4_500.0,
    wander_deg: 0.01,
};

/// Central Helsinki: the extract spans about 60.164–60.179 N, 24.935–24.953 E (≈ 1.67 km ×
/// 1.0 km); the people stay [`AREA_MARGIN_M`] inside it, where the street network is whole.
const HELSINKI: Area = Area {
    centre: LatLon {
        lat: 60.1715,
        lon: 24.944,
    },
    half_north_m: 730.0,
    half_east_m: 400.0,
    dropoff_min_m: 300.0,
    dropoff_max_m: 1_200.0,
    wander_deg: 0.002,
};

impl Area {
    /// A point `north_m`, `east_m` from the centre.
    fn offset(&self, north_m: f64, east_m: f64) -> Position {
        let LatLon { lat, lon } = self.centre.offset_m(north_m, east_m);
        Position { lat, lon }
    }

    fn anywhere(&self, rng: &mut StdRng) -> Position {
        self.offset(
            rng.random_range(-self.half_north_m..self.half_north_m),
            rng.random_range(-self.half_east_m..self.half_east_m),
        )
    }

    /// The south-west and north-east corners.
    pub fn bounds(&self) -> (LatLon, LatLon) {
        (
            self.centre.offset_m(-self.half_north_m, -self.half_east_m),
            self.centre.offset_m(self.half_north_m, self.half_east_m),
        )
    }

    /// Whether `p` is inside the area.
    pub fn contains(&self, p: Position) -> bool {
        let (sw, ne) = self.bounds();
        (sw.lat..=ne.lat).contains(&p.lat) && (sw.lon..=ne.lon).contains(&p.lon)
    }

    /// Whether `p` is inside the area grown by `margin_m` on every side.
    pub fn contains_within(&self, p: Position, margin_m: f64) -> bool {
        let (sw, ne) = self.bounds();
        let (sw, ne) = (
            sw.offset_m(-margin_m, -margin_m),
            ne.offset_m(margin_m, margin_m),
        );
        (sw.lat..=ne.lat).contains(&p.lat) && (sw.lon..=ne.lon).contains(&p.lon)
    }

    /// The point of the area nearest to `p`.
    pub fn clamp(&self, p: Position) -> Position {
        let (sw, ne) = self.bounds();
        Position {
            lat: p.lat.clamp(sw.lat, ne.lat),
            lon: p.lon.clamp(sw.lon, ne.lon),
        }
    }

    /// A spot near `start` for an idle driver to drift to, inside the area.
    pub fn wander_spot(&self, start: Position, rng: &mut StdRng) -> Position {
        self.clamp(Position {
            lat: start.lat + rng.random_range(-self.wander_deg..self.wander_deg),
            lon: start.lon + rng.random_range(-self.wander_deg..self.wander_deg),
        })
    }
}

/// One order of the demand.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedOrder {
    /// Seconds after the start at which the customer checks out.
    pub at_secs: f64,
    pub customer: usize,
    pub merchant: usize,
    pub dropoff: Position,
    /// (menu line, quantity)
    pub lines: Vec<(usize, u32)>,
}

/// Everything the seed decides.
#[derive(Debug, Clone)]
pub struct City {
    pub kind: CityKind,
    pub area: Area,
    pub merchants: Vec<Position>,
    pub drivers: Vec<Position>,
    /// Each driver's speed, km/h.
    pub driver_speeds_kmh: Vec<f64>,
    pub customers: usize,
    pub orders: Vec<PlannedOrder>,
}

/// Lines on every simulated menu.
pub const MENU: &[(&str, i64)] = &[
    ("Ramen kit", 1_250),
    ("Gyoza (6)", 599),
    ("Miso soup", 350),
    ("Veggie bowl kit", 1_100),
];

impl City {
    pub fn new(
        kind: CityKind,
        seed: u64,
        merchants: usize,
        drivers: usize,
        customers: usize,
        orders_per_minute: f64,
        duration_secs: f64,
    ) -> City {
        let area = match kind {
            CityKind::Synthetic => SYNTHETIC,
            CityKind::Helsinki => HELSINKI,
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let merchant_spots: Vec<Position> =
            (0..merchants).map(|_| area.anywhere(&mut rng)).collect();
        let driver_spots: Vec<Position> = (0..drivers).map(|_| area.anywhere(&mut rng)).collect();
        let speeds = (0..drivers).map(|_| rng.random_range(20.0..32.0)).collect();
        // Poisson arrivals: exponential gaps at the given rate.
        let rate_per_sec = orders_per_minute / 60.0;
        let mut orders = Vec::new();
        let mut at = 0.0;
        if rate_per_sec > 0.0 && merchants > 0 && customers > 0 {
            loop {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                at += -u.ln() / rate_per_sec;
                if at >= duration_secs {
                    break;
                }
                let merchant = rng.random_range(0..merchants);
                let distance = rng.random_range(area.dropoff_min_m..area.dropoff_max_m);
                let bearing = rng.random_range(0.0..std::f64::consts::TAU);
                let origin = merchant_spots[merchant];
                let (north_m, east_m) = LatLon {
                    lat: origin.lat,
                    lon: origin.lon,
                }
                .offset_m_from(area.centre);
                let north = north_m + distance * bearing.cos();
                let east = east_m + distance * bearing.sin();
                let dropoff = area.offset(
                    north.clamp(-area.half_north_m, area.half_north_m),
                    east.clamp(-area.half_east_m, area.half_east_m),
                );
                let line_count = rng.random_range(1..=3);
                let lines = (0..line_count)
                    .map(|_| (rng.random_range(0..MENU.len()), rng.random_range(1..=2)))
                    .collect();
                // Round-robin, so that no customer orders in bursts (checkouts are rate-limited
                // per customer, as they would be for a real one).
                let customer = orders.len() % customers;
                orders.push(PlannedOrder {
                    at_secs: at,
                    customer,
                    merchant,
                    dropoff,
                    lines,
                });
            }
        }
        City {
            kind,
            area,
            merchants: merchant_spots,
            drivers: driver_spots,
            driver_speeds_kmh: speeds,
            customers,
            orders,
        }
    }

    /// A short fingerprint of the demand (FNV-1a over every order), to show two runs with the
    /// same seed asked for exactly the same orders.
    pub fn demand_fingerprint(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for order in &self.orders {
            eat(&order.at_secs.to_bits().to_le_bytes());
            eat(&(order.customer as u64).to_le_bytes());
            eat(&(order.merchant as u64).to_le_bytes());
            eat(&order.dropoff.lat.to_bits().to_le_bytes());
            eat(&order.dropoff.lon.to_bits().to_le_bytes());
            for (line, quantity) in &order.lines {
                eat(&(*line as u64).to_le_bytes());
                eat(&quantity.to_le_bytes());
            }
        }
        format!("{hash:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_city_and_demand() {
        for kind in [CityKind::Synthetic, CityKind::Helsinki] {
            let a = City::new(kind, 7, 10, 50, 20, 600.0, 120.0);
            let b = City::new(kind, 7, 10, 50, 20, 600.0, 120.0);
            assert_eq!(a.merchants, b.merchants);
            assert_eq!(a.drivers, b.drivers);
            assert_eq!(a.orders, b.orders);
            assert_eq!(a.demand_fingerprint(), b.demand_fingerprint());
            let c = City::new(kind, 8, 10, 50, 20, 600.0, 120.0);
            assert_ne!(a.demand_fingerprint(), c.demand_fingerprint());
        }
    }

    #[test]
    fn the_synthetic_city_is_the_one_earlier_versions_drew() {
        // Recorded before Helsinki was added: a seed keeps meaning the same city and demand.
        let city = City::new(CityKind::Synthetic, 7, 20, 200, 12, 60.0, 60.0);
        assert_eq!(city.demand_fingerprint(), "a7574e29b2f345b2");
        assert_eq!(
            (city.merchants[0].lat, city.merchants[0].lon),
            (40.64017717867254, -74.0395430811435)
        );
        assert_eq!(
            (city.drivers[0].lat, city.drivers[0].lon),
            (40.68306380688103, -73.92847184517923)
        );
        let other = City::new(CityKind::Synthetic, 1, 20, 200, 12, 60.0, 60.0);
        assert_eq!(other.demand_fingerprint(), "6d98eadb667aab46");
    }

    #[test]
    fn demand_follows_the_rate_and_stays_in_the_city() {
        let city = City::new(CityKind::Synthetic, 1, 5, 5, 5, 600.0, 600.0);
        // 6,000 expected; Poisson noise is ~1.3 %.
        assert!(
            (5_700..=6_300).contains(&city.orders.len()),
            "{}",
            city.orders.len()
        );
        let regions = crate::geo::RegionMap::demo_city();
        for order in &city.orders {
            let p = crate::geo::LatLon::new(order.dropoff.lat, order.dropoff.lon).unwrap();
            assert!(regions.locate(p).is_some());
        }
        assert!(city.orders.windows(2).all(|w| w[0].at_secs <= w[1].at_secs));
    }

    #[test]
    fn everyone_in_helsinki_is_inside_the_extract_and_its_regions() {
        let regions = crate::geo::RegionMap::from_geojson(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/helsinki/regions.geojson"
        )))
        .unwrap();
        // The extract's own extent (data/helsinki/README.md).
        let in_extract =
            |p: Position| (60.164..=60.179).contains(&p.lat) && (24.935..=24.953).contains(&p.lon);
        let city = City::new(CityKind::Helsinki, 3, 30, 200, 10, 600.0, 600.0);
        assert!(city.orders.len() > 5_000, "{}", city.orders.len());
        let everyone = city
            .merchants
            .iter()
            .chain(&city.drivers)
            .chain(city.orders.iter().map(|o| &o.dropoff));
        for p in everyone {
            assert!(in_extract(*p), "{p:?} is outside the extract");
            assert!(city.area.contains(*p), "{p:?}");
            let at = LatLon::new(p.lat, p.lon).unwrap();
            assert!(regions.locate(at).is_some(), "{p:?} is outside the regions");
        }
        // Spread over the extract, not bunched in a corner: both regions have merchants.
        let west = city.merchants.iter().filter(|m| m.lon < 24.944).count();
        assert!(west > 0 && west < city.merchants.len(), "{west}");
    }

    #[test]
    fn an_idle_driver_never_wanders_out_of_the_city() {
        let area = HELSINKI;
        let mut rng = StdRng::seed_from_u64(5);
        let (sw, _) = area.bounds();
        let corner = Position {
            lat: sw.lat,
            lon: sw.lon,
        };
        for _ in 0..1_000 {
            let spot = area.wander_spot(corner, &mut rng);
            assert!(area.contains(spot), "{spot:?}");
        }
    }
}
