//! What the maps service answers with, shared by its providers: travel-time tables, routes,
//! the routing provider's health, its one error, and OpenStreetMap's attribution.

use serde::{Deserialize, Serialize};

use crate::geo::LatLon;

/// OpenStreetMap's licence, shown wherever map data is.
pub const OSM_ATTRIBUTION: &str = "© OpenStreetMap contributors, ODbL";

/// Why a maps question has no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapsError {
    /// No provider can answer it (no offline map loaded, or nothing matched a reverse lookup).
    #[error("{0}")]
    Unavailable(String),
}

/// Travel times from every source to every destination, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// `secs[source][destination]`; always finite.
    pub secs: Vec<Vec<f64>>,
    /// True when OSRM answered; false for the straight-line estimate.
    pub by_road: bool,
}

/// One route through two or more points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub duration_secs: f64,
    pub distance_m: f64,
    /// The line to draw and to follow, from the first point to the last.
    pub geometry: Vec<LatLon>,
    /// True when OSRM answered; false for the straight line.
    pub by_road: bool,
}

/// The state of the routing provider, for `/ready` and the metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Straight line: nothing to be down.
    StraightLine,
    /// OSRM answers.
    Ok,
    /// OSRM is failing; the straight line stands in. The reason says why.
    Degraded(String),
}
