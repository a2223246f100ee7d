//! The address index: typed text to places, and the place nearest a point. Pure.
//! (Interface fixed; the index is being built.)

use serde::{Deserialize, Serialize};

use crate::geo::LatLon;

/// One place an address search can answer with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Place {
    /// What people read: `Mannerheimintie 5, Helsinki`.
    pub label: String,
    pub lat: f64,
    pub lon: f64,
}

/// What the index is built from: an address, a named street or a named place.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The street (`addr:street`) or the name of the street or place.
    pub name: String,
    /// `addr:housenumber`, when this is an address.
    pub housenumber: Option<String>,
    /// `addr:city` or the extract's city, when known.
    pub city: Option<String>,
    pub at: LatLon,
}

/// The searchable index of a city's addresses, streets and places.
#[derive(Debug, Default)]
pub struct Gazetteer {
    entries: Vec<Entry>,
}

impl Gazetteer {
    pub fn new(entries: Vec<Entry>) -> Gazetteer {
        Gazetteer { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Up to `limit` places for `query`, best first.
    pub fn search(&self, _query: &str, _near: Option<LatLon>, _limit: usize) -> Vec<Place> {
        Vec::new()
    }

    /// The address nearest to `at`.
    pub fn nearest(&self, _at: LatLon) -> Option<Place> {
        None
    }
}
