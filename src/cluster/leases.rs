//! Region ownership across replicas: this process claims the leases of every region before its
//! dispatch starts (standing by while another replica holds them), renews them, rides out a
//! database outage, steps down from a region another replica took over, and gives them up on a
//! graceful stop so that a standby takes over at once.
//!
//! Without Redis, one replica runs all regions and the others stand by (not ready, so a load
//! balancer sends them nothing), taking over within the lease TTL when it dies. With Redis
//! ([`Cluster::share`]), every live replica holds its fair share of the regions (regions ÷ live
//! replicas), hands extras off cleanly when a replica joins, and claims the regions of one that
//! left or died; commands travel to the owner through Redis. Journal writes are fenced by the
//! lease epoch ([`Store::fence`]), so a replica that was paused past its lease cannot write.
//!
//! A database outage is a state, not an exit: while no renewal gets through, the leases are
//! [`LeaseState::Suspended`] (dispatch serves from memory; every write fails and says so). When
//! the database answers again, a lease nobody took is renewed under the same epoch and dispatch
//! carries on; a region another replica took is stepped down from as in a hand-off — the
//! replica keeps routing (with Redis) or goes back to standby (without).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ownership::Ownership;
use crate::actors::Engine;
use crate::geo::RegionId;
use crate::store::{Claim, Lease, Store, StoreError, unix_ms};

/// How often a standby looks whether the regions came free (a graceful stop releases them at
/// once), unless the TTL is shorter still.
const STANDBY_POLL: Duration = Duration::from_millis(500);
/// How soon a membership heartbeat that failed is tried again (the regular beat is a third of
/// the lease TTL).
const HEARTBEAT_RETRY: Duration = Duration::from_millis(500);

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
    /// Every region is ours (with Redis: this replica has joined and holds its share).
    Held,
    /// The leases are held but the database has not taken a renewal since
    /// `unreachable_since_ms`: dispatch keeps serving from memory and every write fails. Past
    /// `lapses_at_ms` another replica may claim them; this one renews or steps down when the
    /// database answers.
    Suspended {
        unreachable_since_ms: i64,
        lapses_at_ms: i64,
    },
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
            LeaseState::Suspended {
                unreachable_since_ms,
                lapses_at_ms,
            } => {
                let now_ms = unix_ms();
                let down_secs = (now_ms - unreachable_since_ms).max(0) / 1000;
                Some(if now_ms >= *lapses_at_ms {
                    format!(
                        "database unreachable for {down_secs} s; region leases lapsed \
                         (dispatch resumes when the database answers, unless another replica \
                         took them)"
                    )
                } else {
                    format!(
                        "database unreachable for {down_secs} s; region leases lapse in {} s",
                        (lapses_at_ms - now_ms + 999) / 1000
                    )
                })
            }
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
    /// The last time this replica stepped down from a region another one took over, for
    /// `/ready`: what happened and when.
    stepped_down: Mutex<Option<String>>,
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
            stepped_down: Mutex::new(None),
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

    /// Shares the regions with the other live replicas until released: every beat it renews
    /// its leases; every round (twice a second) it reads the leases and the live replicas, and
    /// hands off one region above its fair share or claims one free region below it, recovering
    /// its orders. While the database does not answer, the leases are suspended; a region
    /// another replica took meanwhile is stepped down from, and this replica routes its work.
    pub async fn share(&self, engine: &Engine) {
        let mut renewed_at_ms = unix_ms();
        let joined_at = Instant::now();
        let mut beat_at: Option<Instant> = None;
        loop {
            let released = self.released.lock().await;
            if *released {
                return;
            }
            if beat_at.is_none_or(|at| at.elapsed() >= self.beat()) {
                match self.renew_shared().await {
                    Ok(lost) => {
                        for region in &lost {
                            self.step_down(engine, region).await;
                        }
                        self.resume_after_outage();
                        renewed_at_ms = unix_ms();
                        beat_at = Some(Instant::now());
                    }
                    Err(error) if !self.held_regions().is_empty() => {
                        self.suspend(&error, renewed_at_ms, self.held_regions().len());
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot join the cluster yet");
                    }
                }
            }
            let suspended = matches!(self.state(), LeaseState::Suspended { .. });
            let mut moved = false;
            if beat_at.is_some() && !suspended {
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
                tokio::time::sleep(self.beat().min(STANDBY_POLL)).await;
            }
        }
    }

    /// Renews this replica's leases; returns the regions it held that another replica took.
    async fn renew_shared(&self) -> Result<Vec<String>, StoreError> {
        let renewed = self.store.renew_regions(&self.node, self.ttl).await?;
        Ok(self
            .held_regions()
            .into_iter()
            .filter(|region| !renewed.contains(region))
            .collect())
    }

    /// A renewal did not get through: the leases are suspended (once), and lapse a TTL after
    /// the last renewal. Dispatch keeps serving from memory; writes fail meanwhile.
    fn suspend(&self, error: &StoreError, renewed_at_ms: i64, held: usize) {
        metrics::gauge!("cluster_regions_suspended").set(held as f64);
        if matches!(self.state(), LeaseState::Suspended { .. }) {
            tracing::debug!(error = %error, "region leases still not renewed");
            return;
        }
        tracing::warn!(
            node = %self.node,
            error = %error,
            "cannot renew region leases: the database is unreachable; dispatch keeps serving \
             from memory, writes fail until it answers"
        );
        self.state.send_replace(LeaseState::Suspended {
            unreachable_since_ms: unix_ms(),
            lapses_at_ms: renewed_at_ms + self.ttl.as_millis() as i64,
        });
    }

    /// A renewal got through: leases that were suspended are held again (under the same epochs:
    /// nobody took them).
    fn resume_after_outage(&self) {
        if let LeaseState::Suspended {
            unreachable_since_ms,
            ..
        } = self.state()
        {
            let down_ms = unix_ms() - unreachable_since_ms;
            tracing::info!(node = %self.node, down_ms, "the database answers again; region leases renewed under the same epochs");
            metrics::histogram!("cluster_lease_suspension_seconds").record(down_ms as f64 / 1e3);
            self.state.send_replace(LeaseState::Held);
        }
        metrics::gauge!("cluster_regions_suspended").set(0.0);
    }

    /// Another replica took `region` over (this one could not renew in time): stops its work
    /// as a hand-off does, without writing under the stale epoch, and routes it from now on.
    async fn step_down(&self, engine: &Engine, region: &str) {
        self.store.refence(&self.node, region, None);
        engine.deactivate_region(&RegionId::from(region)).await;
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(region);
        // Unowned until the next round reads who holds it: commands wait for that.
        self.ownership.set(region, None, 0);
        metrics::counter!("cluster_regions_stepped_down_total").increment(1);
        metrics::gauge!("cluster_regions_owned").set(self.held_regions().len() as f64);
        self.note_step_down(&format!("region {region}"));
    }

    fn note_step_down(&self, what: &str) {
        let note = format!(
            "stepped down from {what} at {}: another replica took it over while this one could \
             not renew",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        tracing::warn!(node = %self.node, "{note}");
        *self.stepped_down.lock().unwrap_or_else(|e| e.into_inner()) = Some(note);
    }

    /// The last step-down from a region taken over, for `/ready`.
    pub fn step_down_note(&self) -> Option<String> {
        self.stepped_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

    /// Watches the state.
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

    /// Keeps this replica's row in `cluster_members` fresh, every third of the TTL, in every
    /// mode (sharing, holding every region, standing by) until released: other parts of the
    /// service ask whether a replica is alive. Also tells whether the store answers
    /// (`store_available`).
    pub async fn heartbeat(&self) {
        loop {
            let released = self.released.lock().await;
            if *released {
                return;
            }
            let beat = self.store.heartbeat_member(&self.node, self.ttl).await;
            drop(released);
            let next = match beat {
                Ok(()) => {
                    metrics::gauge!("store_available").set(1.0);
                    self.beat()
                }
                Err(error) => {
                    metrics::gauge!("store_available").set(0.0);
                    tracing::debug!(error = %error, "cannot mark this replica alive");
                    // Soon again: until a beat lands (at start, before the store is migrated)
                    // other replicas take this one for dead and its checkouts' keys for free.
                    self.beat().min(HEARTBEAT_RETRY)
                }
            };
            tokio::time::sleep(next).await;
        }
    }

    /// Runs every region alone (no Redis) until released: claims them all (standing by while
    /// another replica holds one), recovers their orders, and holds them; when another replica
    /// took a region over, steps down and stands by again. Never gives up.
    pub async fn serve_alone(&self, engine: &Engine) {
        loop {
            if self.claim().await.is_none() {
                return;
            }
            while let Err(error) = engine.recover().await {
                tracing::warn!(error = %error, "cannot recover open orders yet");
                tokio::time::sleep(self.beat().min(Duration::from_secs(1))).await;
            }
            if !self.hold(engine).await {
                return;
            }
        }
    }

    /// Claims every region, standing by while another replica holds one; then fences the
    /// store's journal writes with the granted epochs. `None` once released.
    pub async fn claim(&self) -> Option<Vec<Lease>> {
        loop {
            let released = self.released.lock().await;
            if *released {
                return None;
            }
            let outcome = match self.held_elsewhere().await {
                Some(held) => Ok(held),
                None => {
                    self.store
                        .claim_regions(&self.node, &self.regions, self.ttl)
                        .await
                }
            };
            drop(released);
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
                    return Some(leases);
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
            tokio::time::sleep(self.beat().min(STANDBY_POLL)).await;
        }
    }

    /// Renews the leases every third of the TTL until they are released (`false`) or another
    /// replica took a region over (`true`: this one has stepped down and stands by). While the
    /// database does not answer, the leases are suspended and dispatch serves from memory;
    /// when it answers, leases nobody took are renewed under the same epochs.
    pub async fn hold(&self, engine: &Engine) -> bool {
        let mut renewed_at_ms = unix_ms();
        loop {
            tokio::time::sleep(self.beat()).await;
            let released = self.released.lock().await;
            if *released {
                return false;
            }
            let renewed = self.store.renew_regions(&self.node, self.ttl).await;
            drop(released);
            match renewed {
                Ok(held) if held.len() >= self.regions.len() => {
                    self.resume_after_outage();
                    renewed_at_ms = unix_ms();
                }
                Ok(held) => {
                    let taken: Vec<&str> = self
                        .regions
                        .iter()
                        .filter(|region| !held.contains(region))
                        .map(String::as_str)
                        .collect();
                    self.stand_by(engine, &taken).await;
                    return true;
                }
                Err(error) => self.suspend(&error, renewed_at_ms, self.regions.len()),
            }
        }
    }

    /// Another replica took `taken` over: without Redis a replica runs all regions or none, so
    /// this one stops every region's work (as a hand-off does, never writing under the stale
    /// epochs), gives back the leases it still holds so the new owner can claim them all, and
    /// stands by.
    async fn stand_by(&self, engine: &Engine, taken: &[&str]) {
        // No journal write from here on: the taken regions' epochs are stale, and the others go.
        self.store.fence(&self.node, &[]);
        engine.stand_by().await;
        metrics::counter!("cluster_regions_stepped_down_total").increment(taken.len() as u64);
        metrics::gauge!("cluster_regions_owned").set(0.0);
        metrics::gauge!("cluster_regions_suspended").set(0.0);
        self.note_step_down(&format!("region {}", taken.join(", ")));
        let released = self.released.lock().await;
        if !*released && let Err(error) = self.store.release_regions(&self.node).await {
            tracing::warn!(error = %error, "cannot release the remaining region leases; they expire on their own");
        }
        drop(released);
        self.state.send_replace(LeaseState::Claiming);
    }

    /// Gives the leases up (a graceful stop, after the last snapshots are written).
    pub async fn release(&self) {
        let mut released = self.released.lock().await;
        *released = true;
        if let Err(error) = self.store.leave_cluster(&self.node).await {
            tracing::warn!(error = %error, "cannot leave the cluster; this replica's row expires on its own");
        }
        // Only leases still ours are touched (a standby holds none).
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
