//! Owns geometry for dispatch: points and distances, service regions, the driver R-tree
//! index and travel-time estimates. Pure: no I/O, and nothing else of ours is imported.

pub mod distance;
pub mod eta;
pub mod index;
pub mod region;

pub use distance::{InvalidLocation, LatLon, LocalProjection, METRES_PER_DEGREE_LAT, haversine_m};
pub use eta::travel_secs;
pub use index::{DriverIndex, Neighbour};
pub use region::{DEFAULT_BORDER_BAND_M, Region, RegionError, RegionId, RegionMap};
