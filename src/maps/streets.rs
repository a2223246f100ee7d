//! The street network as compact polylines, queried by bounding box. Pure.
//!
//! Every street is kept whole (a box returns the ways that cross it, not clipped pieces), its
//! bounding box in an R-tree. An answer holds at most [`STREETS_MAX_WAYS`] ways: when a box
//! holds more, the minor classes (paths, then service roads, then residential streets…) are
//! left out first, so a zoomed-out map still shows its main roads.

use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};
use serde::{Deserialize, Serialize};

use super::types::OSM_ATTRIBUTION;
use crate::geo::LatLon;

/// Most ways one answer holds.
pub const STREETS_MAX_WAYS: usize = 5_000;

/// Decimal places kept in a street's coordinates: 1e-5° is about a metre.
pub const STREET_POINT_DECIMALS: i32 = 5;

/// One street (an OSM way with a `highway` tag) as a polyline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Street {
    /// `motorway`, `primary`, `secondary`, `tertiary`, `residential`, … (OSM's `highway`).
    pub class: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `[lat, lon]` pairs, rounded to 5 decimals (about a metre).
    pub points: Vec<[f64; 2]>,
}

impl Street {
    /// A street of `class` through `points`, its coordinates rounded to
    /// [`STREET_POINT_DECIMALS`] and repeated points (after rounding) dropped.
    pub fn new(class: &str, name: Option<String>, points: &[LatLon]) -> Street {
        let scale = 10f64.powi(STREET_POINT_DECIMALS);
        let mut rounded: Vec<[f64; 2]> = Vec::with_capacity(points.len());
        for p in points {
            let point = [
                (p.lat * scale).round() / scale,
                (p.lon * scale).round() / scale,
            ];
            if rounded.last() != Some(&point) {
                rounded.push(point);
            }
        }
        Street {
            class: class.to_owned(),
            name,
            points: rounded,
        }
    }
}

/// The streets inside a bounding box, with the data's attribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Streets {
    pub attribution: String,
    /// Minor classes first, so that drawn in order the main roads lie on top.
    pub streets: Vec<Street>,
}

/// How important a `highway` class is on a map: 0 for the main roads, up to
/// [`MINOR_RANK`]; `None` for the classes not drawn (construction, platforms, corridors…).
pub fn class_rank(class: &str) -> Option<u8> {
    Some(match class {
        "motorway" | "trunk" | "primary" | "motorway_link" | "trunk_link" | "primary_link" => 0,
        "secondary" | "secondary_link" => 1,
        "tertiary" | "tertiary_link" => 2,
        "unclassified" | "residential" | "living_street" | "road" => 3,
        "pedestrian" | "service" => 4,
        "footway" | "cycleway" | "path" | "steps" | "track" | "bridleway" => MINOR_RANK,
        _ => return None,
    })
}

/// The rank of the least important classes drawn.
pub const MINOR_RANK: u8 = 5;

type Indexed = GeomWithData<Rectangle<[f64; 2]>, usize>;

/// Every street of the loaded map.
#[derive(Debug, Default)]
pub struct StreetMap {
    streets: Vec<Street>,
    /// Each street's class rank, by index into `streets`.
    ranks: Vec<u8>,
    /// Each street's bounding box as `[lon, lat]` corners, holding its index.
    tree: RTree<Indexed>,
}

impl StreetMap {
    /// The map of `streets`; those with fewer than two points or a class not drawn
    /// ([`class_rank`]) are left out.
    pub fn new(streets: Vec<Street>) -> StreetMap {
        let streets: Vec<(Street, u8)> = streets
            .into_iter()
            .filter(|s| s.points.len() >= 2)
            .filter_map(|s| class_rank(&s.class).map(|rank| (s, rank)))
            .collect();
        let boxes = streets
            .iter()
            .enumerate()
            .map(|(i, (street, _))| {
                let (lower, upper) = extent(&street.points);
                GeomWithData::new(Rectangle::from_corners(lower, upper), i)
            })
            .collect();
        let (streets, ranks) = streets.into_iter().unzip();
        StreetMap {
            streets,
            ranks,
            tree: RTree::bulk_load(boxes),
        }
    }

    pub fn len(&self) -> usize {
        self.streets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streets.is_empty()
    }

    /// The streets crossing the box from `south_west` to `north_east`, at most
    /// [`STREETS_MAX_WAYS`].
    pub fn within(&self, south_west: LatLon, north_east: LatLon) -> Streets {
        self.within_at_most(south_west, north_east, STREETS_MAX_WAYS)
    }

    /// The streets crossing the box, at most `max_ways`: whole classes are left out, least
    /// important first, until the rest fit; when even the main roads do not, the first
    /// `max_ways` of them (west to east).
    pub fn within_at_most(
        &self,
        south_west: LatLon,
        north_east: LatLon,
        max_ways: usize,
    ) -> Streets {
        let envelope = AABB::from_corners(
            [south_west.lon, south_west.lat],
            [north_east.lon, north_east.lat],
        );
        let mut found: Vec<usize> = self
            .tree
            .locate_in_envelope_intersecting(&envelope)
            .map(|item| item.data)
            .collect();
        // Main roads first (west to east within a class, for a stable answer), to cut the tail.
        found.sort_by(|&a, &b| {
            self.ranks[a]
                .cmp(&self.ranks[b])
                .then(self.streets[a].points[0][1].total_cmp(&self.streets[b].points[0][1]))
                .then(a.cmp(&b))
        });
        if found.len() > max_ways {
            let cut_rank = self.ranks[found[max_ways]];
            let whole_classes = found.partition_point(|&i| self.ranks[i] < cut_rank);
            found.truncate(if whole_classes > 0 {
                whole_classes
            } else {
                max_ways
            });
        }
        found.reverse();
        Streets {
            attribution: OSM_ATTRIBUTION.to_owned(),
            streets: found.into_iter().map(|i| self.streets[i].clone()).collect(),
        }
    }
}

/// The `[lon, lat]` corners of the box around `points` (`[lat, lon]` pairs; at least one).
fn extent(points: &[[f64; 2]]) -> ([f64; 2], [f64; 2]) {
    let mut lower = [f64::INFINITY, f64::INFINITY];
    let mut upper = [f64::NEG_INFINITY, f64::NEG_INFINITY];
    for &[lat, lon] in points {
        lower = [lower[0].min(lon), lower[1].min(lat)];
        upper = [upper[0].max(lon), upper[1].max(lat)];
    }
    (lower, upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    fn street(class: &str, name: &str, points: &[(f64, f64)]) -> Street {
        let points: Vec<LatLon> = points.iter().map(|&(lat, lon)| at(lat, lon)).collect();
        Street::new(class, Some(name.to_owned()), &points)
    }

    fn names(streets: &Streets) -> Vec<&str> {
        streets
            .streets
            .iter()
            .map(|s| s.name.as_deref().unwrap_or(""))
            .collect()
    }

    /// A grid of streets: a primary road across, residential streets and footpaths.
    fn town() -> StreetMap {
        StreetMap::new(vec![
            street("primary", "Main", &[(60.170, 24.930), (60.170, 24.950)]),
            street("residential", "West", &[(60.165, 24.932), (60.175, 24.932)]),
            street("residential", "East", &[(60.165, 24.948), (60.175, 24.948)]),
            street("footway", "Path", &[(60.168, 24.940), (60.172, 24.941)]),
            street(
                "construction",
                "Soon",
                &[(60.168, 24.940), (60.172, 24.941)],
            ),
            street("residential", "Far", &[(60.300, 25.100), (60.301, 25.101)]),
        ])
    }

    #[test]
    fn points_are_rounded_to_five_decimals_and_repeats_dropped() {
        let s = Street::new(
            "primary",
            None,
            &[
                at(60.1690123, 24.9381299),
                at(60.1690121, 24.9381301),
                at(60.17, 24.94),
            ],
        );
        assert_eq!(s.points, vec![[60.16901, 24.93813], [60.17, 24.94]]);
    }

    #[test]
    fn a_box_returns_the_streets_crossing_it_and_no_others() {
        let map = town();
        assert_eq!(map.len(), 5, "the construction way is not drawn");
        let found = map.within(at(60.169, 24.929), at(60.171, 24.935));
        assert_eq!(names(&found), vec!["West", "Main"]);
        assert_eq!(found.attribution, OSM_ATTRIBUTION);
        let all = map.within(at(60.16, 24.92), at(60.18, 24.96));
        assert_eq!(all.streets.len(), 4);
        assert!(!names(&all).contains(&"Far"));
        assert!(!names(&all).contains(&"Soon"));
    }

    #[test]
    fn a_box_with_nothing_in_it_returns_no_streets() {
        let found = town().within(at(10.0, 10.0), at(10.1, 10.1));
        assert!(found.streets.is_empty());
    }

    #[test]
    fn minor_classes_come_first_so_main_roads_are_drawn_on_top() {
        let all = town().within(at(60.16, 24.92), at(60.18, 24.96));
        assert_eq!(names(&all), vec!["Path", "East", "West", "Main"]);
    }

    #[test]
    fn over_the_cap_the_minor_classes_are_dropped_whole() {
        let map = town();
        let (sw, ne) = (at(60.16, 24.92), at(60.18, 24.96));
        assert_eq!(
            names(&map.within_at_most(sw, ne, 3)),
            vec!["East", "West", "Main"]
        );
        assert_eq!(names(&map.within_at_most(sw, ne, 2)), vec!["Main"]);
        assert_eq!(names(&map.within_at_most(sw, ne, 1)), vec!["Main"]);
        assert!(map.within_at_most(sw, ne, 0).streets.is_empty());
    }

    #[test]
    fn ways_with_fewer_than_two_points_are_left_out() {
        let map = StreetMap::new(vec![street("primary", "Dot", &[(60.17, 24.94)])]);
        assert!(map.is_empty());
    }

    #[test]
    fn unnamed_streets_serialise_without_a_name() {
        let s = Street::new("service", None, &[at(60.17, 24.94), at(60.171, 24.94)]);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"class": "service", "points": [[60.17, 24.94], [60.171, 24.94]]})
        );
    }
}
