//! A simulated driver's way to its next stop: the route's polyline, walked a given number of
//! metres at a time, ending exactly at the stop. Pure.

use crate::domain::Position;
use crate::geo::{LatLon, haversine_m};

/// A route's last point closer than this to the stop is the stop (routers snap stops to the
/// nearest road; the driver still walks the last metres to the door).
const SAME_POINT_M: f64 = 0.5;

/// The rest of the way to `target`.
#[derive(Debug, Clone, PartialEq)]
pub struct Walk {
    target: Position,
    /// Points still ahead, the last one `target`.
    path: Vec<Position>,
    next: usize,
}

/// A domain position as a geometry point.
pub(super) fn point(p: Position) -> LatLon {
    LatLon {
        lat: p.lat,
        lon: p.lon,
    }
}

/// One step of `metres` from `from` towards `to` (at most to `to`).
pub fn step(from: Position, to: Position, metres: f64) -> Position {
    let distance = haversine_m(point(from), point(to));
    if distance <= metres || distance < 1e-6 {
        return to;
    }
    let f = (metres / distance).max(0.0);
    Position {
        lat: from.lat + (to.lat - from.lat) * f,
        lon: from.lon + (to.lon - from.lon) * f,
    }
}

impl Walk {
    /// Along `geometry` (a route's polyline, possibly empty or a single point), then on to
    /// `target`. With no usable geometry it is the straight line to `target`.
    pub fn new(geometry: &[LatLon], target: Position) -> Walk {
        let mut path: Vec<Position> = geometry
            .iter()
            .filter(|p| p.is_valid())
            .map(|p| Position {
                lat: p.lat,
                lon: p.lon,
            })
            .collect();
        match path.last_mut() {
            Some(last) if haversine_m(point(*last), point(target)) < SAME_POINT_M => {
                *last = target;
            }
            _ => path.push(target),
        }
        Walk {
            target,
            path,
            next: 0,
        }
    }

    /// The stop this walk ends at.
    pub fn target(&self) -> Position {
        self.target
    }

    /// True once the stop is reached.
    pub fn arrived(&self) -> bool {
        self.next >= self.path.len()
    }

    /// Moves `metres` along the way from `at`: the new position, and the metres left over
    /// when the stop was reached within them (0 while still on the way).
    pub fn advance(&mut self, mut at: Position, metres: f64) -> (Position, f64) {
        let mut budget = if metres.is_finite() {
            metres.max(0.0)
        } else {
            0.0
        };
        while let Some(&next) = self.path.get(self.next) {
            let distance = haversine_m(point(at), point(next));
            if distance <= budget {
                budget -= distance;
                at = next;
                self.next += 1;
            } else {
                return (step(at, next, budget), 0.0);
            }
        }
        (at, budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon { lat, lon }
    }

    fn pos(p: LatLon) -> Position {
        Position {
            lat: p.lat,
            lon: p.lon,
        }
    }

    /// An L-shaped route in Helsinki: 500 m north, then 300 m east.
    fn l_route() -> (Vec<LatLon>, Position) {
        let start = ll(60.168, 24.940);
        let corner = start.offset_m(500.0, 0.0);
        let end = corner.offset_m(0.0, 300.0);
        (vec![start, corner, end], pos(end))
    }

    #[test]
    fn the_driver_follows_the_polyline_round_the_corner() {
        let (route, target) = l_route();
        let mut walk = Walk::new(&route, target);
        let mut at = pos(route[0]);
        // 400 m: still on the first leg, due north of the start.
        (at, _) = walk.advance(at, 400.0);
        assert!((at.lon - route[0].lon).abs() < 1e-9, "{at:?}");
        assert!((haversine_m(route[0], point(at)) - 400.0).abs() < 1.0);
        // 200 m more: past the corner, 100 m east of it, due east (not cutting across).
        (at, _) = walk.advance(at, 200.0);
        assert!((at.lat - route[1].lat).abs() < 1e-9, "{at:?}");
        assert!((haversine_m(route[1], point(at)) - 100.0).abs() < 1.0);
        assert!(!walk.arrived());
    }

    #[test]
    fn the_walk_ends_exactly_at_the_stop_and_reports_the_metres_to_spare() {
        let (route, target) = l_route();
        let mut walk = Walk::new(&route, target);
        let (at, spare) = walk.advance(pos(route[0]), 850.0);
        assert!(walk.arrived());
        assert_eq!(at, target);
        assert!((spare - 50.0).abs() < 1.0, "{spare}");
        // Arrived stays arrived.
        let (again, spare) = walk.advance(at, 10.0);
        assert_eq!(again, target);
        assert!((spare - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_route_snapped_to_the_road_still_ends_at_the_door() {
        let (mut route, target) = l_route();
        // The router ends 20 m short, on the road.
        let last = route.len() - 1;
        route[last] = route[last].offset_m(0.0, -20.0);
        let mut walk = Walk::new(&route, target);
        let (at, _) = walk.advance(pos(route[0]), 10_000.0);
        assert!(walk.arrived());
        assert_eq!(at, target);
    }

    #[test]
    fn an_empty_or_one_point_route_is_the_straight_line() {
        let from = ll(60.170, 24.945);
        let target = pos(from.offset_m(300.0, 400.0));
        for route in [vec![], vec![from], vec![ll(f64::NAN, 24.0)]] {
            let mut walk = Walk::new(&route, target);
            let (at, spare) = walk.advance(pos(from), 250.0);
            assert_eq!(spare, 0.0);
            assert!(
                (haversine_m(from, point(at)) - 250.0).abs() < 1.0,
                "{route:?}"
            );
            assert!((haversine_m(point(at), point(target)) - 250.0).abs() < 1.0);
            let (at, _) = walk.advance(at, 300.0);
            assert!(walk.arrived());
            assert_eq!(at, target);
        }
    }

    #[test]
    fn a_bad_step_length_does_not_move_the_driver() {
        let (route, target) = l_route();
        let mut walk = Walk::new(&route, target);
        let start = pos(route[0]);
        for metres in [-5.0, f64::NAN, f64::INFINITY] {
            let (at, spare) = walk.advance(start, metres);
            assert_eq!((at, spare), (start, 0.0));
        }
        assert!(!walk.arrived());
    }
}
