//! Dispatch: the service area, how an order searches for drivers and how long one has to
//! answer, and how the actors behind them persist and recover. Matching and this replica's
//! leases are their own small parts, flattened in here because [`DispatchConfig`] carries them.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use clap::builder::{OsStringValueParser, TypedValueParser};

use super::error::ConfigError;
use super::lease::{DEFAULT_LEASE_TTL, LeaseArgs, generated_node_id};
use super::matching::{Matching, MatchingArgs};
use super::values::{
    millis_text, positive, positive_secs, secs_text, whole, whole_millis, whole_secs,
};
use crate::geo::RegionMap;

/// A region indexes drivers this far outside its polygon, by default.
pub const DEFAULT_BORDER_BAND_M: f64 = 3_000.0;
/// The first search radius around the pickup, by default.
pub const DEFAULT_SEARCH_RADIUS_M: f64 = 3_000.0;
/// The largest search radius, by default.
pub const DEFAULT_MAX_SEARCH_RADIUS_M: f64 = 12_000.0;
/// How much the radius grows after a search that found nobody, by default.
pub const DEFAULT_SEARCH_RADIUS_STEP_M: f64 = 3_000.0;
/// Pause between searches while nobody is found, by default.
pub const DEFAULT_SEARCH_RETRY: Duration = Duration::from_secs(3);
/// Nearest drivers considered per search, by default.
pub const DEFAULT_CANDIDATES: usize = 10;
/// Average driving speed for pickup-time estimates, by default: city traffic.
pub const DEFAULT_AVERAGE_SPEED_KMH: f64 = 25.0;
/// How long a driver has to answer an offer, by default.
pub const DEFAULT_OFFER_TIMEOUT: Duration = Duration::from_secs(30);
/// An order still searching after this long is counted as stale, by default.
pub const DEFAULT_STALE_SEARCH: Duration = Duration::from_secs(600);
/// Snapshots written per batch at most, by default.
pub const DEFAULT_SNAPSHOT_BATCH: usize = 256;
/// Longest a snapshot waits for its batch, by default.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// Restarts of one actor within the window after which it is marked failed, by default.
pub const DEFAULT_RESTART_LIMIT: u32 = 5;
/// The window for counting restarts, by default.
pub const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long a driver whose socket dropped stays matchable, by default.
pub const DEFAULT_DRIVER_GRACE: Duration = Duration::from_secs(60);

/// The earth's circumference: no distance setting is longer.
pub const EARTH_CIRCUMFERENCE_M: f64 = 40_000_000.0;
/// Largest border band: a thousand kilometres.
pub const MAX_BORDER_BAND_M: f64 = 1_000_000.0;
/// No delivery vehicle is faster.
pub const MAX_AVERAGE_SPEED_KMH: f64 = 500.0;
/// Largest number of drivers one search considers.
pub const MAX_CANDIDATES: usize = 1_000;
/// Largest snapshot batch.
pub const MAX_SNAPSHOT_BATCH: usize = 100_000;
/// Largest restart limit.
pub const MAX_RESTART_LIMIT: u32 = 1_000_000;
/// More engine threads than this is a typo, not a machine.
pub const MAX_ENGINE_THREADS: usize = 1_024;
const HOUR: Duration = Duration::from_secs(3_600);
const DAY: Duration = Duration::from_secs(86_400);
const WEEK: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Dispatch")]
pub struct DispatchArgs {
    /// GeoJSON FeatureCollection of region polygons (each with an `id`); unset: the demo city.
    // Any text is a path here (even an empty one): reading it is where it fails, naming it.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_REGIONS",
        value_parser = OsStringValueParser::new().map(PathBuf::from)
    )]
    pub regions: Option<PathBuf>,
    /// How far outside its polygon a region still indexes drivers, in metres.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_BORDER_BAND_M",
        value_parser = positive(MAX_BORDER_BAND_M),
        default_value_t = DEFAULT_BORDER_BAND_M
    )]
    pub border_band_m: f64,
    /// First search radius around the pickup, in metres.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_SEARCH_RADIUS_M",
        value_parser = positive(EARTH_CIRCUMFERENCE_M),
        default_value_t = DEFAULT_SEARCH_RADIUS_M
    )]
    pub search_radius_m: f64,
    /// Largest search radius, in metres.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_MAX_SEARCH_RADIUS_M",
        value_parser = positive(EARTH_CIRCUMFERENCE_M),
        default_value_t = DEFAULT_MAX_SEARCH_RADIUS_M
    )]
    pub max_search_radius_m: f64,
    /// How much the radius grows after a search that found nobody, in metres.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_SEARCH_RADIUS_STEP_M",
        value_parser = positive(EARTH_CIRCUMFERENCE_M),
        default_value_t = DEFAULT_SEARCH_RADIUS_STEP_M
    )]
    pub search_radius_step_m: f64,
    /// Pause between searches while nobody is found, in milliseconds.
    #[arg(
        long = "search-retry-ms",
        value_name = "MS",
        global = true,
        env = "MEALKITZ_SEARCH_RETRY_MS",
        value_parser = whole_millis(HOUR),
        default_value = millis_text(DEFAULT_SEARCH_RETRY)
    )]
    pub search_retry: Duration,
    /// Nearest drivers considered per search.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_CANDIDATES",
        value_parser = whole(MAX_CANDIDATES),
        default_value_t = DEFAULT_CANDIDATES
    )]
    pub candidates: usize,
    /// Average driving speed for pickup-time estimates, in km/h.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_AVERAGE_SPEED_KMH",
        value_parser = positive(MAX_AVERAGE_SPEED_KMH),
        default_value_t = DEFAULT_AVERAGE_SPEED_KMH
    )]
    pub average_speed_kmh: f64,
    /// How long a driver has to answer an offer, in seconds (fractions allowed).
    #[arg(
        long = "offer-timeout-secs",
        value_name = "SECS",
        global = true,
        env = "MEALKITZ_OFFER_TIMEOUT_SECS",
        value_parser = positive_secs(DAY),
        default_value = secs_text(DEFAULT_OFFER_TIMEOUT)
    )]
    pub offer_timeout: Duration,
    /// An order still searching after this many seconds is counted as stale.
    #[arg(
        long = "stale-search-secs",
        value_name = "SECS",
        global = true,
        env = "MEALKITZ_STALE_SEARCH_SECS",
        value_parser = whole_secs(WEEK),
        default_value = secs_text(DEFAULT_STALE_SEARCH)
    )]
    pub stale_search: Duration,
    /// Snapshots written per batch at most; a full batch is written at once.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_SNAPSHOT_BATCH",
        value_parser = whole(MAX_SNAPSHOT_BATCH),
        default_value_t = DEFAULT_SNAPSHOT_BATCH
    )]
    pub snapshot_batch: usize,
    /// Longest a snapshot waits before its batch is written, and the most often an open order
    /// is snapshotted, in milliseconds.
    #[arg(
        long = "snapshot-interval-ms",
        value_name = "MS",
        global = true,
        env = "MEALKITZ_SNAPSHOT_INTERVAL_MS",
        value_parser = whole_millis(HOUR),
        default_value = millis_text(DEFAULT_SNAPSHOT_INTERVAL)
    )]
    pub snapshot_interval: Duration,
    /// Restarts of one actor within the window after which it is marked failed.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_RESTART_LIMIT",
        value_parser = whole(MAX_RESTART_LIMIT),
        default_value_t = DEFAULT_RESTART_LIMIT
    )]
    pub restart_limit: u32,
    /// The window for counting restarts, in seconds.
    #[arg(
        long = "restart-window-secs",
        value_name = "SECS",
        global = true,
        env = "MEALKITZ_RESTART_WINDOW_SECS",
        value_parser = whole_secs(DAY),
        default_value = secs_text(DEFAULT_RESTART_WINDOW)
    )]
    pub restart_window: Duration,
    /// How long a driver whose socket dropped stays matchable, waiting for it to reconnect.
    #[arg(
        long = "driver-grace-secs",
        value_name = "SECS",
        global = true,
        env = "MEALKITZ_DRIVER_GRACE_SECS",
        value_parser = whole_secs(DAY),
        default_value = secs_text(DEFAULT_DRIVER_GRACE)
    )]
    pub driver_grace: Duration,
    /// Event loops (threads) the regions' actors run on; unset: half the CPU cores (at least one,
    /// at most one per region).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_ENGINE_THREADS",
        value_parser = whole(MAX_ENGINE_THREADS)
    )]
    pub engine_threads: Option<usize>,
    #[command(flatten)]
    pub matching: MatchingArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// How orders find drivers, and how the actors behind them persist and recover.
#[derive(Clone)]
pub struct DispatchConfig {
    /// The service area, split into regions.
    pub regions: Arc<RegionMap>,
    /// A region indexes drivers this far outside its polygon, so a driver near a border can
    /// serve the neighbouring region.
    pub border_band_m: f64,
    pub search_radius_m: f64,
    pub max_search_radius_m: f64,
    pub search_radius_step_m: f64,
    /// Pause between searches while nobody is found.
    pub search_retry: Duration,
    /// Nearest drivers considered per search (k).
    pub candidates: usize,
    pub average_speed_kmh: f64,
    /// How long a driver has to answer an offer.
    pub offer_timeout: Duration,
    /// An order searching longer than this is counted as stale (it keeps searching).
    pub stale_search: Duration,
    /// Snapshots per batch write at most.
    pub snapshot_batch: usize,
    /// Longest a snapshot waits before it is written; an open order is snapshotted once this
    /// long after its first change not yet in a snapshot.
    pub snapshot_interval: Duration,
    /// More restarts than this within `restart_window` mark an actor failed instead of looping.
    pub restart_limit: u32,
    pub restart_window: Duration,
    /// A driver whose socket dropped stays matchable this long, waiting for it to come back.
    pub driver_grace: Duration,
    /// Event loops (threads) the regions' actors run on; `None`: half the CPU cores. Regions
    /// share them round-robin when there are fewer than regions.
    pub engine_threads: Option<usize>,
    /// How orders are matched to drivers.
    pub matching: Matching,
    /// This replica's name in region leases; unique per process start.
    pub node_id: String,
    /// How long a region lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// Lets tests make actors panic on purpose. Never set from the command line.
    pub fault_injection: bool,
}

impl fmt::Debug for DispatchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatchConfig")
            .field("regions", &self.regions.regions().len())
            .field("border_band_m", &self.border_band_m)
            .field("search_radius_m", &self.search_radius_m)
            .field("max_search_radius_m", &self.max_search_radius_m)
            .field("offer_timeout", &self.offer_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for DispatchConfig {
    /// The documented defaults, on the demo city.
    fn default() -> Self {
        DispatchConfig {
            regions: Arc::new(RegionMap::demo_city()),
            border_band_m: DEFAULT_BORDER_BAND_M,
            search_radius_m: DEFAULT_SEARCH_RADIUS_M,
            max_search_radius_m: DEFAULT_MAX_SEARCH_RADIUS_M,
            search_radius_step_m: DEFAULT_SEARCH_RADIUS_STEP_M,
            search_retry: DEFAULT_SEARCH_RETRY,
            candidates: DEFAULT_CANDIDATES,
            average_speed_kmh: DEFAULT_AVERAGE_SPEED_KMH,
            offer_timeout: DEFAULT_OFFER_TIMEOUT,
            stale_search: DEFAULT_STALE_SEARCH,
            snapshot_batch: DEFAULT_SNAPSHOT_BATCH,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            restart_limit: DEFAULT_RESTART_LIMIT,
            restart_window: DEFAULT_RESTART_WINDOW,
            driver_grace: DEFAULT_DRIVER_GRACE,
            engine_threads: None,
            matching: Matching::default(),
            node_id: generated_node_id(),
            lease_ttl: DEFAULT_LEASE_TTL,
            fault_injection: false,
        }
    }
}

impl DispatchArgs {
    /// Loads the regions file and checks the settings that depend on each other.
    pub fn to_config(&self) -> Result<DispatchConfig, ConfigError> {
        if self.max_search_radius_m < self.search_radius_m {
            return Err(ConfigError::of::<Self>(
                "max_search_radius_m",
                "must not be smaller than the search radius",
            ));
        }
        Ok(DispatchConfig {
            regions: Arc::new(self.region_map()?),
            border_band_m: self.border_band_m,
            search_radius_m: self.search_radius_m,
            max_search_radius_m: self.max_search_radius_m,
            search_radius_step_m: self.search_radius_step_m,
            search_retry: self.search_retry,
            candidates: self.candidates,
            average_speed_kmh: self.average_speed_kmh,
            offer_timeout: self.offer_timeout,
            stale_search: self.stale_search,
            snapshot_batch: self.snapshot_batch,
            snapshot_interval: self.snapshot_interval,
            restart_limit: self.restart_limit,
            restart_window: self.restart_window,
            driver_grace: self.driver_grace,
            engine_threads: self.engine_threads,
            matching: self.matching.to_config(),
            node_id: self.lease.node_id(),
            lease_ttl: self.lease.lease_ttl,
            fault_injection: false,
        })
    }

    fn region_map(&self) -> Result<RegionMap, ConfigError> {
        let Some(path) = &self.regions else {
            return Ok(RegionMap::demo_city());
        };
        let invalid = |problem: String| ConfigError::of::<Self>("regions", problem);
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        RegionMap::from_geojson(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    #[test]
    fn the_flags_defaults_are_the_runtime_defaults() {
        let parsed = Config::from_args(Vec::<&str>::new()).unwrap().dispatch;
        let default = DispatchConfig::default();
        assert_eq!(
            parsed.regions.regions().len(),
            default.regions.regions().len()
        );
        assert_eq!(
            (
                parsed.border_band_m,
                parsed.search_radius_m,
                parsed.max_search_radius_m,
                parsed.search_radius_step_m,
                parsed.average_speed_kmh,
            ),
            (
                default.border_band_m,
                default.search_radius_m,
                default.max_search_radius_m,
                default.search_radius_step_m,
                default.average_speed_kmh,
            )
        );
        assert_eq!(
            (
                parsed.search_retry,
                parsed.offer_timeout,
                parsed.stale_search,
                parsed.snapshot_interval,
                parsed.restart_window,
                parsed.driver_grace,
                parsed.lease_ttl,
            ),
            (
                default.search_retry,
                default.offer_timeout,
                default.stale_search,
                default.snapshot_interval,
                default.restart_window,
                default.driver_grace,
                default.lease_ttl,
            )
        );
        assert_eq!(
            (
                parsed.candidates,
                parsed.snapshot_batch,
                parsed.restart_limit
            ),
            (
                default.candidates,
                default.snapshot_batch,
                default.restart_limit
            )
        );
        assert_eq!(parsed.matching, default.matching);
        assert_eq!(parsed.engine_threads, default.engine_threads);
    }

    #[test]
    fn engine_threads_are_a_whole_number_of_at_least_one() {
        let config = Config::from_args(["--engine-threads", "2"])
            .unwrap()
            .dispatch;
        assert_eq!(config.engine_threads, Some(2));
        for bad in ["0", "two", "1.5", "100000"] {
            let err = Config::from_args(["--engine-threads", bad]).unwrap_err();
            assert_eq!(
                err.setting, "--engine-threads / MEALKITZ_ENGINE_THREADS",
                "{bad}"
            );
        }
    }

    #[test]
    fn batched_matching_takes_its_window_and_offers_take_fractions() {
        let config = Config::from_args([
            "--matching",
            "batched",
            "--batch-window-ms",
            "500",
            "--offer-timeout-secs",
            "1.5",
        ])
        .unwrap()
        .dispatch;
        assert_eq!(
            config.matching,
            Matching::Batched {
                window: Duration::from_millis(500)
            }
        );
        assert_eq!(config.offer_timeout, Duration::from_millis(1_500));
    }

    #[test]
    fn an_empty_regions_path_fails_where_it_is_read() {
        let err = Config::from_args(["--regions", ""]).unwrap_err();
        assert_eq!(err.setting, "--regions / MEALKITZ_REGIONS");
        assert!(err.problem.starts_with("cannot read"), "{err}");
    }
}
