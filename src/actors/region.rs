//! The region supervisor: one per region, on its own event loop. It keeps the R-tree of the
//! drivers available in its polygon plus the border band, answers "k nearest within r" for the
//! orders picked up in the region, and restarts the order, driver and merchant actors it owns
//! when they crash.

use std::sync::Arc;

use actix::prelude::*;

use super::driver::{DriverActor, Reannounce};
use super::merchant::MerchantActor;
use super::order::OrderActor;
use super::services::Services;
use super::supervision::{ChildGuard, Entity, Verdict};
use crate::domain::UserId;
use crate::geo::{DriverIndex, LatLon, RegionId, travel_secs};

/// Puts a driver into the index, or moves it there. Sent by the driver's actor whenever it is
/// matchable and its location changes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpsertDriver {
    pub driver_id: UserId,
    pub location: LatLon,
}

/// Takes a driver out of the index (it went offline, took an offer, or left the band).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveDriver {
    pub driver_id: UserId,
}

/// A driver who could take an order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub driver_id: UserId,
    pub distance_m: f64,
    /// Estimated time to reach the pickup, at the configured average speed.
    pub pickup_eta_secs: f64,
}

/// The `k` best available drivers within `radius_m` of `pickup`, by estimated pickup time,
/// leaving out `exclude` (drivers who already passed on this order).
#[derive(Message)]
#[rtype(result = "Vec<Candidate>")]
pub struct FindCandidates {
    pub pickup: LatLon,
    pub radius_m: f64,
    pub k: usize,
    pub exclude: Vec<UserId>,
}

/// A supervised child of this region ended abnormally: restart it or give up on it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildCrashed {
    pub entity: Entity,
}

/// How many drivers the index holds (for tests and operators).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct IndexSize;

/// Test hook: the region panics on receipt (fault injection must be enabled).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashRegion;

pub struct RegionActor {
    id: RegionId,
    services: Arc<Services>,
    index: DriverIndex<UserId>,
    guard: ChildGuard,
}

impl RegionActor {
    pub fn new(id: RegionId, services: Arc<Services>) -> Self {
        let projection = *services
            .config
            .regions
            .get(&id)
            .expect("region actors are started for configured regions")
            .projection();
        RegionActor {
            guard: ChildGuard::new(Entity::Region(id.clone()), id.clone(), services.clone()),
            index: DriverIndex::new(projection),
            id,
            services,
        }
    }

    fn publish_size(&self) {
        metrics::gauge!("dispatch_available_drivers", "region" => self.id.to_string())
            .set(self.index.len() as f64);
    }
}

impl Actor for RegionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.services.config.fault_injection
            && self.services.faults.take(&Entity::Region(self.id.clone()))
        {
            panic!("injected fault: region {} panics on start", self.id);
        }
        // Location updates come by `do_send` (never waiting on the mailbox); queries wait.
        ctx.set_mailbox_capacity(1024);
        // After a restart the index is empty: every driver actor re-announces itself, and the
        // ones inside this region's band come back.
        for (_, driver) in self.services.drivers.all() {
            driver.do_send(Reannounce);
        }
        self.publish_size();
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.guard.disarm();
    }
}

impl Handler<UpsertDriver> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: UpsertDriver, _: &mut Self::Context) {
        let fresh = !self.index.contains(&msg.driver_id);
        self.index.upsert(msg.driver_id, msg.location);
        if fresh {
            self.publish_size();
        }
    }
}

impl Handler<RemoveDriver> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveDriver, _: &mut Self::Context) {
        if self.index.remove(&msg.driver_id) {
            self.publish_size();
        }
    }
}

impl Handler<FindCandidates> for RegionActor {
    type Result = MessageResult<FindCandidates>;

    fn handle(&mut self, msg: FindCandidates, _: &mut Self::Context) -> Self::Result {
        let speed_kmh = self.services.config.average_speed_kmh;
        let neighbours = self
            .index
            .nearest_within(msg.pickup, msg.k, msg.radius_m, |driver| {
                msg.exclude.contains(driver)
            });
        // With one average speed the ETA order is the distance order; the ETA is what a
        // smarter estimator (traffic, vehicle) would change, so rank by it.
        let mut candidates: Vec<Candidate> = neighbours
            .into_iter()
            .map(|n| Candidate {
                driver_id: n.key,
                distance_m: n.distance_m,
                pickup_eta_secs: travel_secs(n.distance_m, speed_kmh),
            })
            .collect();
        candidates.sort_by(|a, b| a.pickup_eta_secs.total_cmp(&b.pickup_eta_secs));
        MessageResult(candidates)
    }
}

impl Handler<IndexSize> for RegionActor {
    type Result = usize;

    fn handle(&mut self, _: IndexSize, _: &mut Self::Context) -> usize {
        self.index.len()
    }
}

impl Handler<CrashRegion> for RegionActor {
    type Result = ();

    fn handle(&mut self, _: CrashRegion, _: &mut Self::Context) {
        if self.services.config.fault_injection {
            panic!("injected fault: region {} panics", self.id);
        }
    }
}

impl Handler<ChildCrashed> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: ChildCrashed, ctx: &mut Self::Context) {
        if self.services.supervision.judge(&msg.entity) != Verdict::Restart {
            return;
        }
        let services = self.services.clone();
        let region = self.id.clone();
        match msg.entity {
            Entity::Order(order_id) => {
                // Rebuild from the journal (and newest snapshot), then start afresh on this
                // region's event loop.
                let store = services.store.clone();
                ctx.spawn(
                    async move { store.load_order(order_id).await }
                        .into_actor(self)
                        .map(move |loaded, act, _| match loaded {
                            Ok(Some(order)) if order.is_open() => {
                                let addr = OrderActor::start_recovered(order, act.services.clone());
                                act.services.orders.insert(order_id, addr);
                                tracing::info!(order_id = %order_id, "order actor restarted");
                            }
                            Ok(_) => {}
                            Err(error) => tracing::error!(
                                order_id = %order_id,
                                error = %error,
                                "cannot reload a crashed order"
                            ),
                        }),
                );
            }
            Entity::Driver(driver_id) => {
                let addr = DriverActor::start(driver_id, services.clone());
                services.drivers.insert(driver_id, addr);
                tracing::info!(driver_id = %driver_id, region = %region, "driver actor restarted");
            }
            Entity::Merchant(merchant_id) => {
                let addr = MerchantActor::start(merchant_id, services.clone());
                services.merchants.insert(merchant_id, addr);
                tracing::info!(merchant_id = %merchant_id, "merchant actor restarted");
            }
            Entity::Region(_) => {}
        }
    }
}
