//! The registry of live actors: which order, driver and merchant actors run here and at which
//! address, the region supervisors, which regions this replica holds, and the event loops they
//! run on. It also keeps the crash bookkeeping and the engine's own supervisor, which restarts
//! crashed regions. Lookups take a lock for a map read and never across an `.await`.
//!
//! It names no actor type: entries are [`super::protocol`] addresses, and actors are started
//! through [`Starters`], filled in by [`super::roster`]. So the actors can import the registry
//! without the registry importing them back.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};

use actix::prelude::*;

use super::protocol::{Address, DriverAddr, MerchantAddr, OrderAddr, RegionAddr, Retire};
use super::services::Services;
use super::supervision::{ChildCrashed, ChildGuard, Entity, Supervision, Verdict};
use crate::domain::{MerchantId, Order, OrderId, UserId};
use crate::geo::RegionId;

/// A map of live actors, keyed by entity id.
pub struct Directory<K, H> {
    entries: RwLock<HashMap<K, H>>,
}

impl<K, H> Default for Directory<K, H> {
    fn default() -> Self {
        Directory {
            entries: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Copy, H: Address> Directory<K, H> {
    pub fn get(&self, key: &K) -> Option<H> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|addr| addr.connected())
            .cloned()
    }

    pub fn insert(&self, key: K, addr: H) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, addr);
    }

    /// Removes `key` only if it still maps to `addr` (a restarted actor may have replaced it).
    pub fn remove_if(&self, key: &K, addr: &H) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.get(key) == Some(addr) {
            entries.remove(key);
        }
    }

    /// Returns the live actor for `key`, or starts one with `start` and registers it.
    pub fn get_or_start(&self, key: K, start: impl FnOnce() -> H) -> H {
        if let Some(addr) = self.get(&key) {
            return addr;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if let Some(addr) = entries.get(&key).filter(|a| a.connected()) {
            return addr.clone();
        }
        let addr = start();
        entries.insert(key, addr.clone());
        addr
    }

    /// Every registered actor.
    pub fn all(&self) -> Vec<(K, H)> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, a)| (*k, a.clone()))
            .collect()
    }

    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The entry of the actor for `key`, for that actor to hold.
    pub fn registration(self: &Arc<Self>, key: K) -> Registration<K, H> {
        Registration {
            directory: self.clone(),
            key,
        }
    }
}

/// An actor's own entry in its directory: all it needs of the registry to leave it when it
/// stops.
pub struct Registration<K, H> {
    directory: Arc<Directory<K, H>>,
    key: K,
}

impl<K: Eq + Hash + Copy, H: Address> Registration<K, H> {
    /// Leaves the directory, unless a newer actor for the same key has replaced `addr`.
    pub fn release(&self, addr: &H) {
        self.directory.remove_if(&self.key, addr);
    }
}

/// How the registry starts each kind of actor (on the right event loop, registered nowhere
/// yet). Filled in by [`super::roster`], the one file that names every actor type, so that
/// this file — which every actor imports — names none.
pub struct Starters {
    /// An order rebuilt from its journal.
    pub recovered_order: fn(Order, Arc<Registry>) -> OrderAddr,
    pub driver: fn(UserId, Arc<Registry>) -> DriverAddr,
    pub merchant: fn(MerchantId, Arc<Registry>) -> MerchantAddr,
    pub region: fn(RegionId, Arc<Registry>) -> RegionAddr,
}

/// The live actors and regions of this replica.
pub struct Registry {
    /// Handed to every actor the registry starts.
    services: Arc<Services>,
    starters: Starters,
    /// Crash bookkeeping shared by all regions, so a region restart does not reset it.
    pub supervision: Supervision,
    pub orders: Arc<Directory<OrderId, OrderAddr>>,
    pub drivers: Arc<Directory<UserId, DriverAddr>>,
    pub merchants: Arc<Directory<MerchantId, MerchantAddr>>,
    regions: RwLock<HashMap<RegionId, RegionAddr>>,
    /// The regions whose commands this replica takes now (all of them unless regions are
    /// shared with other replicas).
    active: RwLock<HashSet<RegionId>>,
    /// Whether regions are shared with other replicas (then an idle driver whose fixes leave
    /// this replica's regions is handed to their owner).
    pub sharing: AtomicBool,
    /// Each region's event loop (thread; regions may share one); a region's actors run on it.
    arbiters: Vec<(RegionId, ArbiterHandle)>,
    /// The supervisor of the region supervisors (see [`RootSupervisor`]): every child's guard
    /// reports here.
    crashes: Recipient<ChildCrashed>,
}

impl Registry {
    /// An empty registry over the regions' event loops (one per region, or shared). Must run
    /// inside an actix system.
    pub fn new(
        services: Arc<Services>,
        arbiters: Vec<(RegionId, ArbiterHandle)>,
        starters: Starters,
    ) -> Arc<Registry> {
        Arc::new_cyclic(|registry: &Weak<Registry>| {
            let registry = registry.clone();
            let (_, home) = arbiters.first().expect("at least one region");
            let root = RootSupervisor::start_in_arbiter(home, move |_| RootSupervisor { registry });
            Registry {
                supervision: Supervision::new(
                    services.config.restart_limit,
                    services.config.restart_window,
                ),
                services,
                starters,
                orders: Arc::default(),
                drivers: Arc::default(),
                merchants: Arc::default(),
                regions: RwLock::new(HashMap::new()),
                active: RwLock::new(HashSet::new()),
                sharing: AtomicBool::new(false),
                arbiters,
                crashes: root.recipient(),
            }
        })
    }

    /// The dependencies of the actors this registry starts.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// The guard a supervised child holds: its crash reaches `supervisor`'s region (whichever
    /// incarnation of it runs then).
    pub fn guard(&self, entity: Entity, supervisor: RegionId) -> ChildGuard {
        ChildGuard::new(entity, supervisor, self.crashes.clone())
    }

    /// Starts the actor of an order rebuilt from the journal (not registered yet).
    pub fn start_recovered_order(self: &Arc<Self>, order: Order) -> OrderAddr {
        (self.starters.recovered_order)(order, self.clone())
    }

    /// Starts a driver's actor (not registered yet).
    pub fn start_driver(self: &Arc<Self>, id: UserId) -> DriverAddr {
        (self.starters.driver)(id, self.clone())
    }

    /// Starts a merchant's actor (not registered yet).
    pub fn start_merchant(self: &Arc<Self>, id: MerchantId) -> MerchantAddr {
        (self.starters.merchant)(id, self.clone())
    }

    /// One of the event loops, chosen by `key`.
    pub fn arbiter_by(&self, key: u64) -> ArbiterHandle {
        self.arbiters[(key % self.arbiters.len() as u64) as usize]
            .1
            .clone()
    }

    pub fn arbiter(&self, region: &RegionId) -> ArbiterHandle {
        self.arbiters
            .iter()
            .find(|(id, _)| id == region)
            .or_else(|| self.arbiters.first())
            .map(|(_, handle)| handle.clone())
            .expect("at least one region")
    }

    /// The region whose event loop runs (and supervises) a driver's or merchant's actor.
    /// Drivers roam and merchants need no location to open a board, so both are spread over
    /// the event loops of the regions this replica holds, by id rather than pinned to a place.
    pub fn home_of<K: Hash>(&self, key: &K) -> RegionId {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let hash = hasher.finish();
        let mut active: Vec<RegionId> = self
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        if active.is_empty() {
            let index = (hash % self.arbiters.len() as u64) as usize;
            return self.arbiters[index].0.clone();
        }
        active.sort();
        active.swap_remove((hash % active.len() as u64) as usize)
    }

    /// Whether this replica takes the commands of region `id` now.
    pub fn is_active(&self, id: &RegionId) -> bool {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    pub fn set_active(&self, id: &RegionId, active: bool) {
        let mut set = self.active.write().unwrap_or_else(|e| e.into_inner());
        if active {
            set.insert(id.clone());
        } else {
            set.remove(id);
        }
        metrics::gauge!("dispatch_regions_active").set(set.len() as f64);
    }

    /// Whether regions are shared with other replicas.
    pub fn is_sharing(&self) -> bool {
        self.sharing.load(Ordering::Acquire)
    }

    /// Stops the supervisor of region `id` (a hand-off): its index goes with it.
    pub async fn stop_region(&self, id: &RegionId) {
        let addr = self
            .regions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(addr) = addr {
            let _ = addr
                .send(Retire {
                    region: id.clone(),
                    orders: Arc::new(HashSet::new()),
                    all: true,
                })
                .await;
        }
    }

    pub fn region(&self, id: &RegionId) -> Option<RegionAddr> {
        self.regions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .filter(|a| a.connected())
            .cloned()
    }

    pub fn region_ids(&self) -> Vec<RegionId> {
        self.arbiters.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Starts (or restarts) the supervisor of region `id` on its arbiter.
    ///
    /// The new address is registered before the supervisor can run: it starts on its own event
    /// loop and at once asks every driver to re-announce itself, and a driver that answered
    /// to the region's previous (dead) address would be missing from the rebuilt index. So the
    /// map stays locked from the start until the insert (the start only posts to the loop; the
    /// supervisor's start-up reads no region address).
    pub fn start_region(self: &Arc<Self>, id: RegionId) -> RegionAddr {
        let mut regions = self.regions.write().unwrap_or_else(|e| e.into_inner());
        let addr = (self.starters.region)(id.clone(), self.clone());
        regions.insert(id, addr.clone());
        addr
    }

    /// Stops every actor (shutdown): registries are emptied so their mailboxes close.
    pub fn stop_all(&self) {
        self.orders.clear();
        self.drivers.clear();
        self.merchants.clear();
        self.regions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// The supervisor of the region supervisors, on the first region's event loop. Every guard
/// reports to it, because a child outlives the incarnation of its region that it knew: a
/// crashed region is restarted here, and any other crash is passed to the region that
/// supervises the child as it runs now.
struct RootSupervisor {
    registry: Weak<Registry>,
}

impl Actor for RootSupervisor {
    type Context = Context<Self>;
}

impl Handler<ChildCrashed> for RootSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildCrashed, _: &mut Self::Context) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        tracing::warn!(entity = %msg.entity, region = %msg.supervisor, "actor crashed");
        if let Entity::Region(id) = &msg.entity {
            match registry.supervision.judge(&msg.entity) {
                Verdict::Restart => {
                    registry.start_region(id.clone());
                }
                Verdict::GiveUp { .. } => {}
            }
            return;
        }
        match registry.region(&msg.supervisor) {
            Some(supervisor) => supervisor.do_send(msg),
            None => {
                tracing::error!(entity = %msg.entity, "no supervisor to restart a crashed actor")
            }
        }
    }
}
