//! The maps service: travel times and routes (OSRM over HTTP, or the straight line), forward and
//! reverse geocoding and the street network (an offline map read from an OpenStreetMap extract).
//!
//! Dispatch and the pages reach maps through [`Maps`] only. Its travel-time calls never fail:
//! when OSRM is not configured, slow, down or its breaker is open, the answer is the straight-line
//! estimate and says so (`by_road: false`), and `maps_fallbacks_total` counts it. Geocoding and
//! streets need the offline map (`MEALKITZ_MAP_DATA`); without it they answer
//! [`MapsError::Unavailable`].
//! - [`osrm`]: the OSRM HTTP client (`/table/v1/driving`, `/route/v1/driving`), with a deadline on
//!   every call and the [`breaker`] in front of it.
//! - [`offline`]: reads an `.osm.pbf` extract into a [`geocoder::Gazetteer`] and a
//!   [`streets::StreetMap`].
//! - [`geocoder`]: the address index — typed text to places, places near a point. Pure.
//! - [`streets`]: the street network as compact polylines, queried by bounding box. Pure.
//! - [`progress`]: a driver's progress along a routed leg, for ETAs without a call per fix. Pure.
//! - [`corrections`]: learned per-region, per-hour ETA corrections. Pure.

pub mod breaker;
pub mod corrections;
pub mod geocoder;
pub mod offline;
pub mod osrm;
pub mod progress;
pub mod streets;
mod types;

use std::sync::Arc;

use crate::config::MapsConfig;
use crate::geo::{LatLon, haversine_m, travel_secs};

pub use geocoder::{Gazetteer, Place};
pub use streets::{StreetMap, Streets};
pub use types::{Health, MapsError, OSM_ATTRIBUTION, Route, Table};

/// The maps service one process uses.
pub struct Maps {
    speed_kmh: f64,
    osrm: Option<osrm::Osrm>,
    map: Option<Arc<offline::OfflineMap>>,
}

impl Maps {
    /// Straight lines at `speed_kmh`, no geocoding: the zero-install default.
    pub fn straight_line(speed_kmh: f64) -> Maps {
        Maps {
            speed_kmh,
            osrm: None,
            map: None,
        }
    }

    /// The maps `config` describes: OSRM when its URL is set, the offline map when its extract
    /// is (read now: call it off the event loop). Straight lines at `speed_kmh` otherwise.
    pub fn from_config(config: &MapsConfig, speed_kmh: f64) -> Result<Maps, String> {
        let mut maps = Maps::straight_line(speed_kmh);
        if let Some(url) = &config.osrm_url {
            maps = maps.with_osrm(osrm::Osrm::new(url, config.osrm_timeout)?);
        }
        if let Some(path) = &config.map_data {
            let started = std::time::Instant::now();
            let map = offline::OfflineMap::load(path)?;
            tracing::info!(
                path = %path.display(),
                addresses = map.gazetteer.len(),
                streets = map.streets.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "map data read"
            );
            maps = maps.with_map(Arc::new(map));
        }
        Ok(maps)
    }

    /// With OSRM in front of the straight line.
    pub fn with_osrm(mut self, osrm: osrm::Osrm) -> Maps {
        self.osrm = Some(osrm);
        self
    }

    /// With an offline map for geocoding and streets.
    pub fn with_map(mut self, map: Arc<offline::OfflineMap>) -> Maps {
        self.map = Some(map);
        self
    }

    /// True when travel times come from a road router (OSRM), not only the straight line.
    pub fn by_road(&self) -> bool {
        self.osrm.is_some()
    }

    /// The name of the routing provider: `osrm` or `straight_line`.
    pub fn provider(&self) -> &'static str {
        if self.osrm.is_some() {
            "osrm"
        } else {
            "straight_line"
        }
    }

    /// Asks the routing provider now (for `/ready`): a success closes OSRM's breaker, so
    /// routing recovers by itself once OSRM is back.
    pub async fn probe(&self) -> Health {
        match &self.osrm {
            None => Health::StraightLine,
            Some(osrm) => osrm.probe().await,
        }
    }

    /// The routing provider's state as last seen.
    pub fn health(&self) -> Health {
        match &self.osrm {
            None => Health::StraightLine,
            Some(osrm) => osrm.health(),
        }
    }

    /// The straight-line seconds from `a` to `b`.
    pub fn straight_secs(&self, a: LatLon, b: LatLon) -> f64 {
        travel_secs(haversine_m(a, b), self.speed_kmh)
    }

    /// The straight-line table.
    pub fn straight_table(&self, sources: &[LatLon], destinations: &[LatLon]) -> Table {
        Table {
            secs: sources
                .iter()
                .map(|s| {
                    destinations
                        .iter()
                        .map(|d| self.straight_secs(*s, *d))
                        .collect()
                })
                .collect(),
            by_road: false,
        }
    }

    /// Travel times from each source to each destination: one OSRM table call, or the
    /// straight line when OSRM is not there or fails (counted). A cell OSRM cannot route is
    /// the straight line too.
    pub async fn table(&self, sources: &[LatLon], destinations: &[LatLon]) -> Table {
        if let (Some(osrm), false) = (&self.osrm, sources.is_empty() || destinations.is_empty()) {
            match osrm.table(sources, destinations).await {
                Ok(cells) => {
                    return Table {
                        secs: cells
                            .into_iter()
                            .zip(sources)
                            .map(|(row, s)| {
                                row.into_iter()
                                    .zip(destinations)
                                    .map(|(cell, d)| {
                                        cell.unwrap_or_else(|| self.straight_secs(*s, *d))
                                    })
                                    .collect()
                            })
                            .collect(),
                        by_road: true,
                    };
                }
                Err(reason) => fell_back("table", &reason),
            }
        }
        self.straight_table(sources, destinations)
    }

    /// The route through `points` (two or more): OSRM's, or the straight line through them.
    pub async fn route(&self, points: &[LatLon]) -> Route {
        if let (Some(osrm), true) = (&self.osrm, points.len() >= 2) {
            match osrm.route(points).await {
                Ok(route) => return route,
                Err(reason) => fell_back("route", &reason),
            }
        }
        let distance_m: f64 = points.windows(2).map(|w| haversine_m(w[0], w[1])).sum();
        Route {
            duration_secs: travel_secs(distance_m, self.speed_kmh),
            distance_m,
            geometry: points.to_vec(),
            by_road: false,
        }
    }

    fn offline(&self) -> Result<&offline::OfflineMap, MapsError> {
        self.map.as_deref().ok_or_else(|| {
            MapsError::Unavailable("no map data is loaded (MEALKITZ_MAP_DATA)".to_owned())
        })
    }

    /// Up to `limit` places matching `query`, best first; `near` breaks ties toward a point.
    pub fn geocode(
        &self,
        query: &str,
        near: Option<LatLon>,
        limit: usize,
    ) -> Result<Vec<Place>, MapsError> {
        Ok(self.offline()?.gazetteer.search(query, near, limit))
    }

    /// The address nearest to `at`.
    pub fn reverse(&self, at: LatLon) -> Result<Place, MapsError> {
        self.offline()?
            .gazetteer
            .nearest(at)
            .ok_or_else(|| MapsError::Unavailable("no address is known near that point".to_owned()))
    }

    /// The streets inside a bounding box (south-west, north-east corners).
    pub fn streets(&self, south_west: LatLon, north_east: LatLon) -> Result<Streets, MapsError> {
        Ok(self.offline()?.streets.within(south_west, north_east))
    }

    /// True when an offline map is loaded.
    pub fn has_map(&self) -> bool {
        self.map.is_some()
    }

    /// The south-west and north-east corners of the offline map, when one is loaded.
    pub fn bounds(&self) -> Option<(LatLon, LatLon)> {
        self.map.as_ref().map(|map| map.bounds)
    }
}

fn fell_back(call: &'static str, reason: &osrm::OsrmError) {
    metrics::counter!("maps_fallbacks_total", "call" => call, "reason" => reason.kind())
        .increment(1);
    tracing::debug!(call, reason = %reason, "OSRM did not answer; straight line used");
}
