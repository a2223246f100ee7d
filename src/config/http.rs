//! The HTTP listener: where it binds and how many workers serve it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use clap::Args;

use super::values::whole;

/// Every interface, port 8000.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8000));
/// More worker threads than this is a typo, not a machine.
pub const MAX_HTTP_WORKERS: usize = 1024;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpArgs {
    /// Address and port to listen on.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_BIND",
        value_parser = socket_addr,
        default_value_t = DEFAULT_BIND
    )]
    pub bind: SocketAddr,
    /// HTTP worker threads; defaults to the number of CPU cores.
    #[arg(
        long,
        global = true,
        env = "MEALKITZ_HTTP_WORKERS",
        value_parser = whole(MAX_HTTP_WORKERS)
    )]
    pub http_workers: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    /// Worker threads serving HTTP and WebSockets.
    pub workers: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: DEFAULT_BIND,
            workers: cpu_cores(),
        }
    }
}

impl HttpArgs {
    pub fn to_config(&self) -> HttpConfig {
        HttpConfig {
            bind: self.bind,
            workers: self.http_workers.unwrap_or_else(cpu_cores),
        }
    }
}

/// The cores this process may run on (2 when that cannot be read).
pub fn cpu_cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn socket_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not an IP address and port such as 0.0.0.0:8000"))
}
