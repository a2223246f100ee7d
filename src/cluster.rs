//! Region ownership across replicas: this process claims the leases of every region before its
//! dispatch starts (standing by while another replica holds them), renews them, notices when it
//! has lost them, and gives them up on a graceful stop so that a standby takes over at once.
//!
//! Without Redis, one replica runs all regions and the others stand by (not ready, so a load
//! balancer sends them nothing), taking over within the lease TTL when it dies. With Redis
//! ([`Cluster::share`]), every live replica holds its fair share of the regions (regions ÷ live
//! replicas), hands extras off cleanly when a replica joins, and claims the regions of one that
//! left or died; commands travel to the owner through Redis. Journal writes are fenced by the
//! lease epoch ([`Store::fence`]), so a replica that was paused past its lease cannot write.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::actors::Engine;
use crate::actors::remote::Ownership;
use crate::geo::RegionId;
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
    /// Who holds each region, as last read (for routing).
    ownership: Arc<Ownership>,
    /// While sharing: the regions this replica holds, and their epochs.
    held: Mutex<BTreeMap<String, i64>>,
}

/// How many regions `node` should hold: `regions` ÷ live replicas, the remainder going one
/// each to the replicas that hold the most now (ties by node id), so that a join moves as few
/// regions as possible. Every replica computes the same answer from the same lease table.
pub fn fair_share(
    node: &str,
    members: &[String],
    holdings: &HashMap<String, usize>,
    regions: usize,
) -> usize {
    let mut members: Vec<&str> = members.iter().map(String::as_str).collect();
    if !members.contains(&node) {
        members.push(node);
    }
    let base = regions / members.len();
    let extra = regions % members.len();
    let held = |member: &str| holdings.get(member).copied().unwrap_or(0);
    members.sort_by(|a, b| held(b).cmp(&held(a)).then(a.cmp(b)));
    let rank = members
        .iter()
        .position(|member| *member == node)
        .unwrap_or(0);
    base + usize::from(rank < extra)
}

impl Cluster {
    pub fn new(node: String, ttl: Duration, regions: Vec<String>, store: Store) -> Cluster {
        metrics::gauge!("cluster_regions_total").set(regions.len() as f64);
        Cluster {
            node,
            ttl,
            regions,
            store,
            state: watch::Sender::new(LeaseState::Claiming),
            last_holder: Mutex::new(None),
            released: tokio::sync::Mutex::new(false),
            ownership: Arc::new(Ownership::default()),
            held: Mutex::new(BTreeMap::new()),
        }
    }

    /// Who holds each region, as this replica last read it.
    pub fn ownership(&self) -> Arc<Ownership> {
        self.ownership.clone()
    }

    fn held_regions(&self) -> Vec<String> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Shares the regions with the other live replicas until released or lost: every beat it
    /// marks this replica alive and renews its leases; every round (twice a second) it reads
    /// the leases and the live replicas, and hands off one region above its fair share or
    /// claims one free region below it, recovering its orders. Returns why the leases were
    /// lost.
    pub async fn share(&self, engine: &Engine) -> Option<String> {
        let mut renewed_at = Instant::now();
        let joined_at = Instant::now();
        let mut beat_at: Option<Instant> = None;
        loop {
            let released = self.released.lock().await;
            if *released {
                return None;
            }
            if beat_at.is_none_or(|at| at.elapsed() >= self.beat()) {
                match self.renew_shared().await {
                    Ok(Ok(())) => {
                        renewed_at = Instant::now();
                        beat_at = Some(renewed_at);
                    }
                    Ok(Err(why)) => return Some(self.lose(why)),
                    Err(error) if renewed_at.elapsed() < self.ttl => {
                        tracing::warn!(error = %error, "cannot renew region leases; retrying");
                    }
                    Err(error) if !self.held_regions().is_empty() => {
                        return Some(self.lose(format!(
                            "not renewed for {} s ({error})",
                            renewed_at.elapsed().as_secs()
                        )));
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot join the cluster yet");
                    }
                }
            }
            let mut moved = false;
            if beat_at.is_some() {
                match self.rebalance(engine).await {
                    Ok(changed) => {
                        moved = changed;
                        // Ready once a round finds nothing to move (this replica holds its
                        // share, or waits for others to hand theirs off), or after two TTLs
                        // of trying: it routes what it does not hold.
                        let settled = !changed || joined_at.elapsed() >= 2 * self.ttl;
                        if settled && self.state() != LeaseState::Held {
                            self.state.send_replace(LeaseState::Held);
                            engine.set_ready();
                        }
                    }
                    Err(error) => tracing::warn!(error = %error, "cannot rebalance regions now"),
                }
            }
            drop(released);
            if !moved {
                tokio::time::sleep(self.beat().min(Duration::from_millis(STANDBY_POLL_MS))).await;
            }
        }
    }

    /// Marks this replica alive and renews its leases. `Ok(Err)`: a lease was taken over.
    async fn renew_shared(&self) -> Result<Result<(), String>, crate::store::StoreError> {
        self.store.heartbeat_member(&self.node, self.ttl).await?;
        let renewed = self.store.renew_regions(&self.node, self.ttl).await?;
        let lost: Vec<String> = self
            .held_regions()
            .into_iter()
            .filter(|region| !renewed.contains(region))
            .collect();
        if lost.is_empty() {
            Ok(Ok(()))
        } else {
            Ok(Err(format!(
                "another replica took region {} over",
                lost.join(", ")
            )))
        }
    }

    fn lose(&self, why: String) -> String {
        tracing::error!(node = %self.node, reason = %why, "region leases lost; this replica stops dispatching");
        metrics::gauge!("cluster_regions_owned").set(0.0);
        self.state.send_replace(LeaseState::Lost(why.clone()));
        why
    }

    /// One round: reads who holds what, then hands off or claims a region towards this
    /// replica's fair share. Returns whether it moved one.
    async fn rebalance(&self, engine: &Engine) -> Result<bool, crate::store::StoreError> {
        let leases = self.store.region_leases().await?;
        let members = self.store.live_members().await?;
        self.ownership.update(&leases);
        let now_ms = unix_ms();
        let mut holdings: HashMap<String, usize> = HashMap::new();
        for (region, owner, _, expires_at_ms) in &leases {
            if *expires_at_ms > now_ms && self.regions.contains(region) {
                *holdings.entry(owner.clone()).or_default() += 1;
            }
        }
        let target = fair_share(&self.node, &members, &holdings, self.regions.len());
        let mine = self.held_regions();
        metrics::gauge!("cluster_live_replicas").set(members.len() as f64);
        // One region per round, so that a round (a recovery, or the stop of a region's
        // actors) stays well inside the renewal beat.
        if mine.len() > target {
            if let Some(region) = mine.last() {
                self.hand_off(engine, region).await?;
            }
        } else if mine.len() < target {
            let free: Vec<&String> = self
                .regions
                .iter()
                .filter(|region| {
                    !leases
                        .iter()
                        .any(|(id, _, _, expires_at_ms)| id == *region && *expires_at_ms > now_ms)
                })
                .collect();
            if let Some(region) = free.first() {
                self.take_on(engine, region).await?;
            }
        }
        let now_held = self.held_regions();
        metrics::gauge!("cluster_regions_owned").set(now_held.len() as f64);
        Ok(now_held != mine)
    }

    /// Claims a free region and recovers its orders; gives it back if recovery fails.
    async fn take_on(&self, engine: &Engine, region: &str) -> Result<(), crate::store::StoreError> {
        let lease = match self
            .store
            .claim_regions(&self.node, &[region.to_owned()], self.ttl)
            .await?
        {
            Claim::Granted(mut leases) if leases.len() == 1 => leases.remove(0),
            // Another replica was quicker.
            _ => return Ok(()),
        };
        self.store.refence(&self.node, region, Some(lease.epoch));
        self.ownership.set(
            region,
            Some(&self.node),
            unix_ms() + self.ttl.as_millis() as i64,
        );
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(region.to_owned(), lease.epoch);
        let id = RegionId::from(region);
        match engine.activate_region(&id).await {
            Ok(orders) => {
                tracing::info!(node = %self.node, region, epoch = lease.epoch, orders, "region lease claimed");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(region, error = %error, "cannot recover the region's orders; giving it back");
                self.hand_off(engine, region).await?;
                Err(error)
            }
        }
    }

    /// Hands a region off: stops taking its work, lets its actors stop and their snapshots be
    /// written, then releases the lease so the next owner claims it at once.
    async fn hand_off(
        &self,
        engine: &Engine,
        region: &str,
    ) -> Result<(), crate::store::StoreError> {
        engine.deactivate_region(&RegionId::from(region)).await;
        self.store.refence(&self.node, region, None);
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(region);
        self.store.release_region(&self.node, region).await?;
        self.ownership.set(region, None, 0);
        tracing::info!(node = %self.node, region, "region lease released for another replica");
        Ok(())
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
            let why = match renewed.map(|held| held.len()) {
                Ok(held) if held >= self.regions.len() => {
                    renewed_at = Instant::now();
                    continue;
                }
                Ok(held) => format!(
                    "another replica took {} of {} regions over",
                    self.regions.len() - held,
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
        if let Err(error) = self.store.leave_cluster(&self.node).await {
            tracing::warn!(error = %error, "cannot leave the cluster; this replica's row expires on its own");
        }
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

    fn share_of(node: &str, members: &[&str], held: &[(&str, usize)], regions: usize) -> usize {
        let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        let holdings = held.iter().map(|(m, n)| (m.to_string(), *n)).collect();
        fair_share(node, &members, &holdings, regions)
    }

    #[test]
    fn fair_share_gives_the_remainder_to_the_replicas_holding_most() {
        // Alone, a replica takes everything.
        assert_eq!(share_of("a", &["a"], &[], 4), 4);
        // A second replica: two each; the first hands two off.
        assert_eq!(share_of("a", &["a", "b"], &[("a", 4)], 4), 2);
        assert_eq!(share_of("b", &["a", "b"], &[("a", 4)], 4), 2);
        // A third: 2/1/1, the extra staying where regions already are.
        let held = [("a", 2), ("b", 2)];
        let shares: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|n| share_of(n, &["a", "b", "c"], &held, 4))
            .collect();
        assert_eq!(shares, [2, 1, 1]);
        let held = [("a", 1), ("b", 2), ("c", 1)];
        assert_eq!(share_of("b", &["a", "b", "c"], &held, 4), 2);
        assert_eq!(share_of("a", &["a", "b", "c"], &held, 4), 1);
        // A fourth: one each.
        for node in ["a", "b", "c", "d"] {
            assert_eq!(share_of(node, &["a", "b", "c", "d"], &held, 4), 1);
        }
        // More replicas than regions: some hold none.
        let held = [("a", 1), ("b", 1)];
        assert_eq!(share_of("c", &["a", "b", "c"], &held, 2), 0);
        // A replica not yet in the member list counts itself.
        assert_eq!(share_of("z", &["a"], &[("a", 4)], 4), 2);
    }

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
