//! How orders are matched to drivers: one at a time as they come, or collected for a window and
//! assigned together.

use std::fmt;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::values::{millis_text, name_of, one_of, whole_millis};

/// Each order takes the best free driver at once, by default.
pub const DEFAULT_MATCHING: MatchingMode = MatchingMode::Greedy;
/// How long batched matching collects orders, by default.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_secs(2);
/// A longer window keeps the first order of a batch waiting too long.
pub const MAX_BATCH_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Args)]
pub struct MatchingArgs {
    /// How orders are matched to drivers: greedy (each order takes the best free driver at
    /// once) or batched (orders collected for a window, then assigned together).
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_MATCHING",
        value_parser = one_of::<MatchingMode>,
        default_value_t = DEFAULT_MATCHING
    )]
    pub matching: MatchingMode,
    /// The batching window, in milliseconds (batched matching only).
    #[arg(
        long = "batch-window-ms",
        value_name = "MS",
        global = true,
        env = "MEALKITZ_BATCH_WINDOW_MS",
        value_parser = whole_millis(MAX_BATCH_WINDOW),
        default_value = millis_text(DEFAULT_BATCH_WINDOW)
    )]
    pub batch_window: Duration,
}

/// The `--matching` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MatchingMode {
    Greedy,
    Batched,
}

impl fmt::Display for MatchingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&name_of(self))
    }
}

/// How orders are matched to drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matching {
    /// Each order, when it needs a driver, takes the best free one at once.
    Greedy,
    /// Orders that need a driver are collected for `window`, then assigned together to minimise
    /// the total estimated pickup time.
    Batched { window: Duration },
}

impl Matching {
    pub fn new(mode: MatchingMode, window: Duration) -> Matching {
        match mode {
            MatchingMode::Greedy => Matching::Greedy,
            MatchingMode::Batched => Matching::Batched { window },
        }
    }
}

impl Default for Matching {
    fn default() -> Self {
        Matching::new(DEFAULT_MATCHING, DEFAULT_BATCH_WINDOW)
    }
}

impl MatchingArgs {
    pub fn to_config(&self) -> Matching {
        Matching::new(self.matching, self.batch_window)
    }
}
