//! What every dispatch actor shares: configuration, the store, the snapshot writer, supervision
//! bookkeeping, and the registry of live actors by entity. Registry lookups take a lock for a
//! map read and never across an `.await`.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use actix::prelude::*;

use super::driver::DriverActor;
use super::merchant::MerchantActor;
use super::order::OrderActor;
use super::region::{ChildCrashed, RegionActor};
use super::snapshot_writer::SnapshotSender;
use super::supervision::{Entity, Faults, Supervision, Verdict};
use crate::config::DispatchConfig;
use crate::domain::{MerchantId, OrderId, UserId};
use crate::geo::RegionId;
use crate::store::Store;

/// A map of live actors, keyed by entity id.
pub struct Directory<K, A: Actor> {
    entries: RwLock<HashMap<K, Addr<A>>>,
}

impl<K: Eq + Hash + Copy, A: Actor> Default for Directory<K, A> {
    fn default() -> Self {
        Directory {
            entries: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Copy, A: Actor> Directory<K, A> {
    pub fn get(&self, key: &K) -> Option<Addr<A>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|addr| addr.connected())
            .cloned()
    }

    pub fn insert(&self, key: K, addr: Addr<A>) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, addr);
    }

    /// Removes `key` only if it still maps to `addr` (a restarted actor may have replaced it).
    pub fn remove_if(&self, key: &K, addr: &Addr<A>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.get(key) == Some(addr) {
            entries.remove(key);
        }
    }

    /// Returns the live actor for `key`, or starts one with `start` and registers it.
    pub fn get_or_start(&self, key: K, start: impl FnOnce() -> Addr<A>) -> Addr<A> {
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
    pub fn all(&self) -> Vec<(K, Addr<A>)> {
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
}

/// The region is handed to another replica: an actor working there stops (answering whether
/// it did). `orders` are the orders of the region that stopped, for drivers working on them.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Retire {
    pub region: RegionId,
    pub orders: Arc<HashSet<OrderId>>,
    /// Stop whatever the actor works on (it belongs to the region, as the engine knows).
    pub all: bool,
}

/// What the engine tells the rest of the service about.
#[derive(Clone, Default)]
pub struct EngineHooks {
    /// Notified whenever an order reaches a final status (delivered, rejected, cancelled):
    /// settlement then makes the money follow.
    pub order_closed: Option<Arc<tokio::sync::Notify>>,
    /// Given every journaled transition, for the order-event stream (when Redis is set).
    pub order_events: Option<crate::bus::events::OrderEventSink>,
}

/// Shared by every dispatch actor.
pub struct Services {
    pub config: DispatchConfig,
    pub hooks: EngineHooks,
    pub store: Store,
    pub snapshots: SnapshotSender,
    pub supervision: Supervision,
    pub faults: Faults,
    pub orders: Directory<OrderId, OrderActor>,
    pub drivers: Directory<UserId, DriverActor>,
    pub merchants: Directory<MerchantId, MerchantActor>,
    regions: RwLock<HashMap<RegionId, Addr<RegionActor>>>,
    /// The regions whose commands this replica takes now (all of them unless regions are
    /// shared with other replicas).
    active: RwLock<HashSet<RegionId>>,
    /// Whether regions are shared with other replicas (then an idle driver whose fixes leave
    /// this replica's regions is handed to their owner).
    pub sharing: AtomicBool,
    /// One event loop (thread) per region; a region's actors run on its arbiter.
    arbiters: Vec<(RegionId, ArbiterHandle)>,
}

impl Services {
    pub fn new(
        config: DispatchConfig,
        hooks: EngineHooks,
        store: Store,
        snapshots: SnapshotSender,
        arbiters: Vec<(RegionId, ArbiterHandle)>,
    ) -> Arc<Services> {
        Arc::new(Services {
            hooks,
            supervision: Supervision::new(config.restart_limit, config.restart_window),
            config,
            store,
            snapshots,
            faults: Faults::default(),
            orders: Directory::default(),
            drivers: Directory::default(),
            merchants: Directory::default(),
            regions: RwLock::new(HashMap::new()),
            active: RwLock::new(HashSet::new()),
            sharing: AtomicBool::new(false),
            arbiters,
        })
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

    pub fn region(&self, id: &RegionId) -> Option<Addr<RegionActor>> {
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

    /// Starts (or restarts) the actor of region `id` on its arbiter.
    pub fn start_region(self: &Arc<Self>, id: RegionId) -> Addr<RegionActor> {
        let services = self.clone();
        let region_id = id.clone();
        let addr = RegionActor::start_in_arbiter(&self.arbiter(&id), move |_| {
            RegionActor::new(region_id, services)
        });
        self.regions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, addr.clone());
        addr
    }

    /// A supervised actor ended abnormally. Regions are restarted here (their supervisor is
    /// the engine); other actors are reported to the region that owns them.
    pub fn child_crashed(self: &Arc<Self>, entity: Entity, region: RegionId) {
        tracing::warn!(entity = %entity, region = %region, "actor crashed");
        if let Entity::Region(id) = &entity {
            match self.supervision.judge(&entity) {
                Verdict::Restart => {
                    self.start_region(id.clone());
                }
                Verdict::GiveUp { .. } => {}
            }
            return;
        }
        match self.region(&region) {
            Some(supervisor) => supervisor.do_send(ChildCrashed { entity }),
            None => tracing::error!(entity = %entity, "no supervisor to restart a crashed actor"),
        }
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
