//! The Helsinki demo city's data, built into the binary so that `mealkitz demo --city helsinki`
//! works from any directory: the OpenStreetMap extract and its regions (`data/helsinki/`,
//! ODbL), written into a cache directory when not already there.

use std::io;
use std::path::{Path, PathBuf};

/// The extract of central Helsinki (© OpenStreetMap contributors, ODbL).
pub const MAP_DATA: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/helsinki/Helsinki.osm.pbf"
));
/// Its two service regions, west and east of 24.944 E.
pub const REGIONS_GEOJSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/helsinki/regions.geojson"
));
const MAP_DATA_FILE: &str = "Helsinki.osm.pbf";
const REGIONS_FILE: &str = "regions.geojson";

/// Where the files are on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Files {
    pub map_data: PathBuf,
    pub regions: PathBuf,
}

/// The cache directories to try, best first: `$MEALKITZ_CACHE_DIR/helsinki` (the one
/// `scripts/osrm.sh` uses), `$XDG_CACHE_HOME/mealkitz/helsinki`,
/// `$HOME/.cache/mealkitz/helsinki`, then the temporary directory.
fn cache_dirs() -> Vec<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut dirs = Vec::new();
    if let Some(dir) = var("MEALKITZ_CACHE_DIR") {
        dirs.push(dir.join("helsinki"));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        dirs.push(dir.join("mealkitz").join("helsinki"));
    }
    if let Some(home) = var("HOME") {
        dirs.push(home.join(".cache").join("mealkitz").join("helsinki"));
    }
    dirs.push(std::env::temp_dir().join("mealkitz").join("helsinki"));
    dirs
}

/// The files in the first cache directory that can hold them.
pub fn files() -> io::Result<Files> {
    let mut last = io::Error::other("no cache directory");
    for dir in cache_dirs() {
        match files_in(&dir) {
            Ok(files) => return Ok(files),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// The files in `dir`, written there unless an identical copy already is.
pub fn files_in(dir: &Path) -> io::Result<Files> {
    std::fs::create_dir_all(dir)?;
    let files = Files {
        map_data: dir.join(MAP_DATA_FILE),
        regions: dir.join(REGIONS_FILE),
    };
    ensure(&files.map_data, MAP_DATA)?;
    ensure(&files.regions, REGIONS_GEOJSON.as_bytes())?;
    Ok(files)
}

/// Writes `bytes` to `path` unless it holds them already; through a temporary file and a
/// rename, so a concurrent reader never sees half a file.
fn ensure(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if std::fs::read(path).is_ok_and(|held| held == bytes) {
        return Ok(());
    }
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mealkitz-helsinki-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_files_are_written_once_and_a_damaged_copy_is_replaced() {
        let dir = scratch("cache");
        let files = files_in(&dir).unwrap();
        assert_eq!(std::fs::read(&files.map_data).unwrap(), MAP_DATA);
        assert_eq!(
            std::fs::read_to_string(&files.regions).unwrap(),
            REGIONS_GEOJSON
        );
        let written = std::fs::metadata(&files.map_data)
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        files_in(&dir).unwrap();
        let again = std::fs::metadata(&files.map_data)
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(written, again, "an identical copy is left alone");

        std::fs::write(&files.map_data, b"truncated").unwrap();
        files_in(&dir).unwrap();
        assert_eq!(std::fs::read(&files.map_data).unwrap(), MAP_DATA);
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 2, "no partial files left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_embedded_regions_are_a_valid_service_area() {
        let regions = crate::geo::RegionMap::from_geojson(REGIONS_GEOJSON).unwrap();
        assert_eq!(regions.regions().len(), 2);
        assert!(MAP_DATA.len() > 100_000, "{}", MAP_DATA.len());
    }
}
