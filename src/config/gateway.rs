//! The WebSocket gateway's policies: which browser origins may connect, how fast a socket may
//! send, and the heartbeat that finds dead ones.

use std::time::Duration;

use clap::Args;

use super::values::whole;

/// Interval between the server's pings on every WebSocket.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// A WebSocket silent (no frame, not even a pong) for this long is closed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);
/// Messages per second one socket may send, by default.
pub const DEFAULT_WS_RATE_PER_SEC: u32 = 20;
/// Above this the limit protects nothing.
pub const MAX_WS_RATE_PER_SEC: u32 = 100_000;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "WebSockets")]
pub struct GatewayArgs {
    /// Origins allowed to open WebSockets from a browser, comma-separated (e.g.
    /// https://app.example.com); unset: the same origin only; `*`: any.
    #[arg(long, global = true, env = "MEALKITZ_ALLOWED_ORIGINS", value_parser = origins)]
    pub allowed_origins: Option<Origins>,
    /// Messages per second one socket may send; the excess is dropped.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_WS_RATE_PER_SEC",
        value_parser = whole(MAX_WS_RATE_PER_SEC),
        default_value_t = DEFAULT_WS_RATE_PER_SEC
    )]
    pub ws_rate_per_sec: u32,
}

/// The browser origins of `--allowed-origins`, checked and lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    /// Origins without a trailing slash, e.g. `https://app.example.com`.
    pub list: Vec<String>,
    /// `*` was among them.
    pub any: bool,
}

/// The WebSocket gateway's policies.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Browser origins allowed to connect. Empty: only the origin the request was sent to.
    pub allowed_origins: Vec<String>,
    /// Any origin (`*`).
    pub any_origin: bool,
    /// Messages per second one socket may send before the excess is dropped.
    pub rate_per_sec: u32,
    /// Ping interval ([`HEARTBEAT_INTERVAL`]; shorter only in tests).
    pub heartbeat_interval: Duration,
    /// Silence after which a socket is closed ([`CLIENT_TIMEOUT`]; shorter only in tests).
    pub client_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            allowed_origins: Vec::new(),
            any_origin: false,
            rate_per_sec: DEFAULT_WS_RATE_PER_SEC,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            client_timeout: CLIENT_TIMEOUT,
        }
    }
}

impl GatewayArgs {
    pub fn to_config(&self) -> GatewayConfig {
        let origins = self.allowed_origins.clone().unwrap_or_default();
        GatewayConfig {
            allowed_origins: origins.list,
            any_origin: origins.any,
            rate_per_sec: self.ws_rate_per_sec,
            ..GatewayConfig::default()
        }
    }
}

/// A comma-separated list of `http(s)://host[:port]` origins, or `*`.
fn origins(raw: &str) -> Result<Origins, String> {
    let mut origins = Origins::default();
    for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if origin == "*" {
            origins.any = true;
            continue;
        }
        let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin
                .trim_end_matches('/')
                .contains(|c: char| c.is_whitespace())
            && origin.splitn(4, '/').nth(3).is_none_or(str::is_empty);
        if !valid {
            return Err(format!(
                "{origin:?} is not an origin such as https://app.example.com"
            ));
        }
        origins
            .list
            .push(origin.trim_end_matches('/').to_ascii_lowercase());
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_lower_cased_without_their_trailing_slash() {
        let parsed = origins("https://App.example.com/, *, ,http://localhost:3000").unwrap();
        assert_eq!(
            parsed.list,
            ["https://app.example.com", "http://localhost:3000"]
        );
        assert!(parsed.any);
    }
}
