//! A driver's progress along a routed leg: the time left from a location fix, found by
//! projecting the fix onto the route's line, so that ETAs follow the road without asking the
//! router on every fix. A fix too far from the line means the driver strayed: re-route. Pure.

use super::Route;
use crate::geo::{LatLon, LocalProjection};

/// Farther than this from the route's line, a driver has left the route.
pub const OFF_ROUTE_M: f64 = 150.0;

/// One leg (to the pickup, or to the dropoff) and how far along it each point of its line is.
#[derive(Debug, Clone)]
pub struct LegProgress {
    projection: LocalProjection,
    /// The line in local metres.
    points: Vec<[f64; 2]>,
    /// Metres from the start to each point of the line.
    along_m: Vec<f64>,
    duration_secs: f64,
}

impl LegProgress {
    pub fn new(route: &Route) -> LegProgress {
        let origin = route
            .geometry
            .first()
            .copied()
            .unwrap_or(LatLon { lat: 0.0, lon: 0.0 });
        let projection = LocalProjection::new(origin);
        let points: Vec<[f64; 2]> = route
            .geometry
            .iter()
            .map(|p| projection.to_xy(*p))
            .collect();
        let mut along_m = Vec::with_capacity(points.len());
        let mut total = 0.0;
        for (i, p) in points.iter().enumerate() {
            if i > 0 {
                total += distance(points[i - 1], *p);
            }
            along_m.push(total);
        }
        LegProgress {
            projection,
            points,
            along_m,
            duration_secs: route.duration_secs.max(0.0),
        }
    }

    /// The whole leg's duration.
    pub fn duration_secs(&self) -> f64 {
        self.duration_secs
    }

    /// Seconds left from `at` to the end of the leg (the leg's duration spread over its length),
    /// or `None` when `at` is more than [`OFF_ROUTE_M`] from the line.
    pub fn remaining_secs(&self, at: LatLon) -> Option<f64> {
        let length_m = *self.along_m.last()?;
        let p = self.projection.to_xy(at);
        if self.points.len() == 1 || length_m <= 0.0 {
            return (distance(self.points[0], p) <= OFF_ROUTE_M).then_some(0.0);
        }
        let mut best: Option<(f64, f64)> = None; // (distance off the line, metres along)
        for (i, pair) in self.points.windows(2).enumerate() {
            let (off, t) = project(pair[0], pair[1], p);
            let along = self.along_m[i] + t * (self.along_m[i + 1] - self.along_m[i]);
            if best.is_none_or(|(b, _)| off < b) {
                best = Some((off, along));
            }
        }
        let (off, along) = best?;
        if off > OFF_ROUTE_M {
            return None;
        }
        let left = ((length_m - along) / length_m).clamp(0.0, 1.0);
        Some(left * self.duration_secs)
    }
}

fn distance(a: [f64; 2], b: [f64; 2]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// The distance from `p` to the segment `a`–`b`, and where along it (0..1) its foot lies.
fn project(a: [f64; 2], b: [f64; 2], p: [f64; 2]) -> (f64, f64) {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let length2 = dx * dx + dy * dy;
    let t = if length2 > 0.0 {
        (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let foot = [a[0] + t * dx, a[1] + t * dy];
    (distance(foot, p), t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg() -> (Route, LatLon, LatLon, LatLon) {
        // An L: 1 km north, then 1 km east; 200 s in all.
        let start = LatLon {
            lat: 60.0,
            lon: 24.0,
        };
        let corner = start.offset_m(1_000.0, 0.0);
        let end = corner.offset_m(0.0, 1_000.0);
        let route = Route {
            duration_secs: 200.0,
            distance_m: 2_000.0,
            geometry: vec![start, corner, end],
            by_road: true,
        };
        (route, start, corner, end)
    }

    #[test]
    fn at_the_start_the_whole_leg_is_left_and_at_the_end_none() {
        let (route, start, _, end) = leg();
        let progress = LegProgress::new(&route);
        assert!((progress.remaining_secs(start).unwrap() - 200.0).abs() < 1.0);
        assert!(progress.remaining_secs(end).unwrap() < 1.0);
    }

    #[test]
    fn time_left_follows_the_line_not_the_straight_distance() {
        let (route, _, corner, end) = leg();
        let progress = LegProgress::new(&route);
        // Halfway up the first side: 1.5 km of 2 km left, though the end is ~1.1 km away by air.
        let halfway = corner.offset_m(-500.0, 0.0);
        let left = progress.remaining_secs(halfway).unwrap();
        assert!((left - 150.0).abs() < 1.5, "{left}");
        assert!(progress.remaining_secs(corner.offset_m(10.0, 0.0)).unwrap() > 95.0);
        let _ = end;
    }

    #[test]
    fn a_fix_beside_the_line_counts_but_one_far_off_means_the_driver_strayed() {
        let (route, _, corner, _) = leg();
        let progress = LegProgress::new(&route);
        let beside = corner.offset_m(-500.0, 40.0);
        assert!(progress.remaining_secs(beside).is_some());
        let far = corner.offset_m(-500.0, -400.0);
        assert_eq!(progress.remaining_secs(far), None);
    }

    #[test]
    fn a_one_point_route_is_over_when_there() {
        let at = LatLon {
            lat: 60.0,
            lon: 24.0,
        };
        let route = Route {
            duration_secs: 0.0,
            distance_m: 0.0,
            geometry: vec![at],
            by_road: false,
        };
        let progress = LegProgress::new(&route);
        assert_eq!(progress.remaining_secs(at), Some(0.0));
        assert_eq!(progress.remaining_secs(at.offset_m(1_000.0, 0.0)), None);
    }

    #[test]
    fn an_empty_route_answers_none_instead_of_panicking() {
        let route = Route {
            duration_secs: 10.0,
            distance_m: 0.0,
            geometry: vec![],
            by_road: false,
        };
        assert_eq!(
            LegProgress::new(&route).remaining_secs(LatLon { lat: 1.0, lon: 1.0 }),
            None
        );
    }
}
