//! Region ownership across replicas: this process claims the leases of every region before its
//! dispatch starts (standing by while another replica holds them), renews them, notices when it
//! has lost them, and gives them up on a graceful stop so that a standby takes over at once.
//!
//! One replica runs all regions; the others stand by (not ready, so a load balancer sends them
//! nothing) and take over within the lease TTL when it dies. Journal writes are fenced by the
//! lease epoch ([`Store::fence`]), so a replica that was paused past its lease cannot write.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::{Claim, Lease, Store, unix_ms};

/// How often a standby looks whether the regions came free (a graceful stop releases them at
/// once), unless the TTL is shorter still.
const STANDBY_POLL_MS: u64 = 500;

/// Where this replica stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Not claimed yet (the database may still be down).
    Claiming,
    /// Another replica holds a region; this one waits to take over.
    Standby {
        region_id: String,
        owner: String,
        expires_in_ms: i64,
    },
    /// Every region is ours.
    Held,
    /// We held the regions and lost them: dispatch here must stop.
    Lost(String),
}

impl LeaseState {
    /// Why dispatch is not running here, for `/ready`; `None` while the leases are held.
    pub fn not_ready_reason(&self) -> Option<String> {
        match self {
            LeaseState::Held => None,
            LeaseState::Claiming => Some("claiming region leases".to_owned()),
            LeaseState::Standby {
                region_id,
                owner,
                expires_in_ms,
            } => Some(format!(
                "standby: region {region_id} is leased to {owner} (expires in {} s unless renewed)",
                (expires_in_ms.max(&0) + 999) / 1000
            )),
            LeaseState::Lost(why) => Some(format!("region leases lost: {why}")),
        }
    }
}

/// This replica's leases.
pub struct Cluster {
    node: String,
    ttl: Duration,
    regions: Vec<String>,
    store: Store,
    state: watch::Sender<LeaseState>,
    /// Logged standby once per holder, not every retry.
    last_holder: Mutex<Option<String>>,
    /// Held across each renewal and the release, so a renewal cannot extend released leases;
    /// true once released.
    released: tokio::sync::Mutex<bool>,
}

impl Cluster {
    pub fn new(node: String, ttl: Duration, regions: Vec<String>, store: Store) -> Cluster {
        Cluster {
            node,
            ttl,
            regions,
            store,
            state: watch::Sender::new(LeaseState::Claiming),
            last_holder: Mutex::new(None),
            released: tokio::sync::Mutex::new(false),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// Watches the state (e.g. for [`LeaseState::Lost`]).
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    /// How often leases are renewed, and a standby tries to claim.
    fn beat(&self) -> Duration {
        self.ttl / 3
    }

    /// Whether some region is leased to another replica now, by a plain read: a standby looks
    /// often, and only a claim that may succeed takes the locks that briefly hold up the
    /// owner's journal writes.
    async fn held_elsewhere(&self) -> Option<Claim> {
        let leases = self.store.region_leases().await.ok()?;
        let now_ms = unix_ms();
        leases
            .into_iter()
            .find(|(region, owner, _, expires_at_ms)| {
                self.regions.contains(region) && *owner != self.node && *expires_at_ms > now_ms
            })
            .map(|(region_id, owner, _, expires_at_ms)| Claim::Held {
                region_id,
                owner,
                expires_at_ms,
            })
    }

    /// Claims every region, standing by while another replica holds one; then fences the
    /// store's journal writes with the granted epochs.
    pub async fn claim(&self) -> Vec<Lease> {
        loop {
            let outcome = match self.held_elsewhere().await {
                Some(held) => Ok(held),
                None => {
                    self.store
                        .claim_regions(&self.node, &self.regions, self.ttl)
                        .await
                }
            };
            match outcome {
                Ok(Claim::Granted(leases)) => {
                    self.store.fence(&self.node, &leases);
                    let epochs: Vec<String> = leases
                        .iter()
                        .map(|l| format!("{}@{}", l.region_id, l.epoch))
                        .collect();
                    tracing::info!(node = %self.node, leases = %epochs.join(","), "region leases claimed");
                    metrics::gauge!("cluster_regions_owned").set(leases.len() as f64);
                    self.state.send_replace(LeaseState::Held);
                    return leases;
                }
                Ok(Claim::Held {
                    region_id,
                    owner,
                    expires_at_ms,
                }) => {
                    let mut last = self.last_holder.lock().unwrap_or_else(|e| e.into_inner());
                    if last.as_deref() != Some(owner.as_str()) {
                        tracing::info!(node = %self.node, holder = %owner, region = %region_id, "standing by: regions are leased to another replica");
                        *last = Some(owner.clone());
                    }
                    drop(last);
                    self.state.send_replace(LeaseState::Standby {
                        region_id,
                        owner,
                        expires_in_ms: expires_at_ms - unix_ms(),
                    });
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot claim region leases yet");
                }
            }
            tokio::time::sleep(self.beat().min(Duration::from_millis(STANDBY_POLL_MS))).await;
        }
    }

    /// Renews the leases every third of the TTL until they are released or lost: another
    /// replica took a region over, or no renewal succeeded for a whole TTL (then another replica
    /// may have). Returns why they were lost.
    pub async fn hold(&self) -> Option<String> {
        let mut renewed_at = Instant::now();
        loop {
            tokio::time::sleep(self.beat()).await;
            let released = self.released.lock().await;
            if *released {
                return None;
            }
            let renewed = self.store.renew_regions(&self.node, self.ttl).await;
            drop(released);
            let why = match renewed {
                Ok(held) if held as usize >= self.regions.len() => {
                    renewed_at = Instant::now();
                    continue;
                }
                Ok(held) => format!(
                    "another replica took {} of {} regions over",
                    self.regions.len() - held as usize,
                    self.regions.len()
                ),
                Err(error) if renewed_at.elapsed() < self.ttl => {
                    tracing::warn!(error = %error, "cannot renew region leases; retrying");
                    continue;
                }
                Err(error) => format!(
                    "not renewed for {} s ({error})",
                    renewed_at.elapsed().as_secs()
                ),
            };
            tracing::error!(node = %self.node, reason = %why, "region leases lost; this replica stops dispatching");
            metrics::gauge!("cluster_regions_owned").set(0.0);
            self.state.send_replace(LeaseState::Lost(why.clone()));
            return Some(why);
        }
    }

    /// Gives the leases up (a graceful stop, after the last snapshots are written).
    pub async fn release(&self) {
        let mut released = self.released.lock().await;
        *released = true;
        if self.state() != LeaseState::Held {
            return;
        }
        match self.store.release_regions(&self.node).await {
            Ok(()) => tracing::info!(node = %self.node, "region leases released"),
            Err(error) => {
                tracing::warn!(error = %error, "cannot release region leases; they expire on their own")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_names_the_holder_and_rounds_the_wait_up() {
        let state = LeaseState::Standby {
            region_id: "ne".into(),
            owner: "pod-a-1234".into(),
            expires_in_ms: 1_200,
        };
        let reason = state.not_ready_reason().unwrap();
        assert!(reason.contains("pod-a-1234"), "{reason}");
        assert!(reason.contains("2 s"), "{reason}");
        assert_eq!(LeaseState::Held.not_ready_reason(), None);
    }
}
