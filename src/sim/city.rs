//! The simulated city and its demand, drawn from one seed: the same seed gives the same
//! merchants, drivers, customers and orders (times, places, baskets).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::domain::Position;
use crate::geo::LatLon;

/// Half the demo city's side, less a margin so everything stays inside the service area.
const CITY_HALF_SIDE_M: f64 = 13_000.0;
const CENTRE: LatLon = LatLon {
    lat: 40.75,
    lon: -73.98,
};
/// How far from its merchant an order is delivered: between these distances.
const DROPOFF_MIN_M: f64 = 800.0;
const DROPOFF_MAX_M: f64 = 4_500.0;

/// A point `north_m`, `east_m` from the demo city's centre.
pub fn offset(north_m: f64, east_m: f64) -> Position {
    let LatLon { lat, lon } = CENTRE.offset_m(north_m, east_m);
    Position { lat, lon }
}

fn anywhere(rng: &mut StdRng) -> Position {
    offset(
        rng.random_range(-CITY_HALF_SIDE_M..CITY_HALF_SIDE_M),
        rng.random_range(-CITY_HALF_SIDE_M..CITY_HALF_SIDE_M),
    )
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
        seed: u64,
        merchants: usize,
        drivers: usize,
        customers: usize,
        orders_per_minute: f64,
        duration_secs: f64,
    ) -> City {
        let mut rng = StdRng::seed_from_u64(seed);
        let merchant_spots: Vec<Position> = (0..merchants).map(|_| anywhere(&mut rng)).collect();
        let driver_spots: Vec<Position> = (0..drivers).map(|_| anywhere(&mut rng)).collect();
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
                let distance = rng.random_range(DROPOFF_MIN_M..DROPOFF_MAX_M);
                let bearing = rng.random_range(0.0..std::f64::consts::TAU);
                let origin = merchant_spots[merchant];
                let (north_m, east_m) = LatLon {
                    lat: origin.lat,
                    lon: origin.lon,
                }
                .offset_m_from(CENTRE);
                let north = north_m + distance * bearing.cos();
                let east = east_m + distance * bearing.sin();
                let dropoff = offset(
                    north.clamp(-CITY_HALF_SIDE_M, CITY_HALF_SIDE_M),
                    east.clamp(-CITY_HALF_SIDE_M, CITY_HALF_SIDE_M),
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
        let a = City::new(7, 10, 50, 20, 600.0, 120.0);
        let b = City::new(7, 10, 50, 20, 600.0, 120.0);
        assert_eq!(a.merchants, b.merchants);
        assert_eq!(a.drivers, b.drivers);
        assert_eq!(a.orders, b.orders);
        assert_eq!(a.demand_fingerprint(), b.demand_fingerprint());
        let c = City::new(8, 10, 50, 20, 600.0, 120.0);
        assert_ne!(a.demand_fingerprint(), c.demand_fingerprint());
    }

    #[test]
    fn demand_follows_the_rate_and_stays_in_the_city() {
        let city = City::new(1, 5, 5, 5, 600.0, 600.0);
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
}
