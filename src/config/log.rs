//! Logs: their format. Levels come from `RUST_LOG`, read by tracing itself.

use std::fmt;

use clap::{Args, ValueEnum};

use super::values::{name_of, one_of};

/// Readable in a terminal by default; `json` for a log pipeline.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Pretty;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logs")]
pub struct LogArgs {
    /// Log format: pretty or json. Levels come from RUST_LOG.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_LOG_FORMAT",
        value_parser = one_of::<LogFormat>,
        default_value_t = DEFAULT_LOG_FORMAT
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&name_of(self))
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: DEFAULT_LOG_FORMAT,
        }
    }
}

impl LogArgs {
    pub fn to_config(&self) -> LogConfig {
        LogConfig {
            format: self.log_format,
        }
    }
}
