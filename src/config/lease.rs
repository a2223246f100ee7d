//! This replica in the cluster: its name in region leases and how long a lease lasts.

use std::time::Duration;

use clap::Args;

use super::values::{secs_text, whole_secs};

/// How long a region lease lasts unless renewed, by default.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Longest accepted lease: an hour, the longest regions of a dead replica stay without an owner.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(3_600);
/// A node id is a Redis key part and a log field: short and printable.
pub const MAX_NODE_ID_BYTES: usize = 128;

#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// This replica's name in region leases. Unset: the host name (a pod's name) and a random
    /// suffix, new at every start.
    #[arg(long, global = true, env = "MEALKITZ_NODE_ID", value_parser = node_name)]
    pub node_id: Option<String>,
    /// Seconds a region lease lasts unless renewed (every third of it): how long regions of a
    /// replica that died stay without an owner.
    #[arg(
        long = "lease-ttl-secs",
        value_name = "SECS",
        global = true,
        env = "MEALKITZ_LEASE_TTL_SECS",
        value_parser = whole_secs(MAX_LEASE_TTL),
        default_value = secs_text(DEFAULT_LEASE_TTL)
    )]
    pub lease_ttl: Duration,
}

impl LeaseArgs {
    /// This start's node id: the given name, or the host name, with a fresh suffix.
    pub fn node_id(&self) -> String {
        match self.node_id.as_deref() {
            None | Some("") => generated_node_id(),
            // A fixed name must still differ between starts: a restarted process must not
            // take its predecessor's leases for its own.
            Some(id) => format!("{id}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        }
    }
}

/// A node id for this process: the host name (in Kubernetes, the pod's name) and a random
/// suffix, so a restarted process never mistakes its predecessor's leases for its own.
pub fn generated_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "mealkitz".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

/// A name of printable ASCII without spaces; blank means "generate one".
fn node_name(raw: &str) -> Result<String, String> {
    let id = raw.trim();
    if id.len() <= MAX_NODE_ID_BYTES && id.chars().all(|c| c.is_ascii_graphic()) {
        Ok(id.to_owned())
    } else {
        Err(format!(
            "must be at most {MAX_NODE_ID_BYTES} printable ASCII characters without spaces"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_node_id_still_differs_between_starts() {
        let args = LeaseArgs {
            node_id: Some("replica-a".to_owned()),
            lease_ttl: DEFAULT_LEASE_TTL,
        };
        let (first, second) = (args.node_id(), args.node_id());
        assert!(first.starts_with("replica-a-"), "{first}");
        assert_ne!(first, second);
        assert!(node_name("two words").is_err());
    }
}
