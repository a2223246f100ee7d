//! Reads an OpenStreetMap extract (`.osm.pbf`) into the gazetteer and the street map.
//! (Interface fixed; the reader is being built.)

use std::path::Path;

use super::geocoder::Gazetteer;
use super::streets::StreetMap;
use crate::geo::LatLon;

/// A city's map, read once at start.
#[derive(Debug)]
pub struct OfflineMap {
    pub gazetteer: Gazetteer,
    pub streets: StreetMap,
    /// South-west and north-east corners of what was read.
    pub bounds: (LatLon, LatLon),
}

impl OfflineMap {
    /// Reads the extract at `path`.
    pub fn load(path: &Path) -> Result<OfflineMap, String> {
        Err(format!(
            "{}: reading map data is not built yet",
            path.display()
        ))
    }
}
