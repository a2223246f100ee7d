//! The street network as compact polylines, queried by bounding box. Pure.
//! (Interface fixed; the index is being built.)

use serde::{Deserialize, Serialize};

use crate::geo::LatLon;

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

/// The streets inside a bounding box, with the data's attribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Streets {
    pub attribution: String,
    pub streets: Vec<Street>,
}

/// Every street of the loaded map.
#[derive(Debug, Default)]
pub struct StreetMap {
    streets: Vec<Street>,
}

impl StreetMap {
    pub fn new(streets: Vec<Street>) -> StreetMap {
        StreetMap { streets }
    }

    pub fn len(&self) -> usize {
        self.streets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streets.is_empty()
    }

    /// The streets crossing the box from `south_west` to `north_east`.
    pub fn within(&self, _south_west: LatLon, _north_east: LatLon) -> Streets {
        Streets {
            attribution: super::OSM_ATTRIBUTION.to_owned(),
            streets: Vec::new(),
        }
    }
}
