//! The maps service: where OSRM answers and how long dispatch waits for it, the OpenStreetMap
//! extract read at start for addresses and streets, and raster tiles for the pages.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::values::{http_url, whole_millis};

/// How long a travel-time or route call to OSRM may take before the straight line answers.
pub const DEFAULT_OSRM_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest accepted OSRM deadline.
pub const MAX_OSRM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Maps")]
pub struct MapsArgs {
    /// OSRM's base URL (`http://osrm:5000`): road travel times for matching and ETAs. Unset:
    /// straight lines at the average speed.
    #[arg(long, global = true, env = "MEALKITZ_OSRM_URL", value_parser = http_url)]
    pub osrm_url: Option<String>,
    /// Deadline of one OSRM call, in milliseconds; past it the straight line answers.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_OSRM_TIMEOUT_MS",
        value_parser = whole_millis(MAX_OSRM_TIMEOUT),
        default_value = "250"
    )]
    pub osrm_timeout_ms: Duration,
    /// An OpenStreetMap extract (`city.osm.pbf`) read at start: addresses for geocoding and the
    /// streets the pages draw. Unset: no geocoding (503 maps_unavailable) and no streets.
    #[arg(long, global = true, env = "MEALKITZ_MAP_DATA", value_parser = existing_file)]
    pub map_data: Option<PathBuf>,
    /// An XYZ raster tile URL (`https://tiles.example/{z}/{x}/{y}.png`) the pages may draw under
    /// the streets. Unset: streets from the extract only.
    #[arg(long, global = true, env = "MEALKITZ_MAP_TILES_URL", value_parser = tile_url)]
    pub map_tiles_url: Option<String>,
}

/// What the maps settings become.
#[derive(Debug, Clone, PartialEq)]
pub struct MapsConfig {
    pub osrm_url: Option<String>,
    pub osrm_timeout: Duration,
    pub map_data: Option<PathBuf>,
    pub map_tiles_url: Option<String>,
}

impl Default for MapsConfig {
    fn default() -> Self {
        MapsConfig {
            osrm_url: None,
            osrm_timeout: DEFAULT_OSRM_TIMEOUT,
            map_data: None,
            map_tiles_url: None,
        }
    }
}

impl MapsArgs {
    pub fn to_config(&self) -> MapsConfig {
        MapsConfig {
            osrm_url: self.osrm_url.clone(),
            osrm_timeout: self.osrm_timeout_ms,
            map_data: self.map_data.clone(),
            map_tiles_url: self.map_tiles_url.clone(),
        }
    }
}

/// An http(s) URL holding `{z}`, `{x}` and `{y}`.
fn tile_url(raw: &str) -> Result<String, String> {
    let url = http_url(raw)?;
    if ["{z}", "{x}", "{y}"].iter().all(|part| url.contains(part)) {
        Ok(url)
    } else {
        Err(format!("{raw:?} must contain {{z}}, {{x}} and {{y}}"))
    }
}

/// A file that exists now (read at start).
fn existing_file(raw: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(raw.trim());
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{raw:?} is not a readable file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osrm_urls_must_be_http_and_lose_their_trailing_slash() {
        assert_eq!(http_url("http://osrm:5000/").unwrap(), "http://osrm:5000");
        assert!(http_url("osrm:5000").is_err());
        assert!(http_url("http://").is_err());
        assert!(http_url("ftp://osrm").is_err());
    }

    #[test]
    fn a_tile_url_names_zoom_x_and_y() {
        assert!(tile_url("https://t.example/{z}/{x}/{y}.png").is_ok());
        assert!(tile_url("https://t.example/{z}/{x}.png").is_err());
    }

    #[test]
    fn map_data_must_exist() {
        assert!(existing_file("/no/such/city.osm.pbf").is_err());
        assert!(existing_file("Cargo.toml").is_ok());
    }
}
