//! The region supervisor: one per region, on its event loop. It keeps the R-tree of the
//! drivers available in its polygon plus the border band, answers "k nearest within r" for the
//! orders picked up in the region, and restarts the order, driver and merchant actors it owns
//! when they crash.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::protocol::{
    Candidate, CrashRegion, FindCandidates, IndexSize, MatchOutcome, Reannounce, RegionAddr,
    ReloadOrder, RemoveDriver, RequestMatch, Retire, UpsertDriver,
};
use super::registry::Registry;
use super::services::Services;
use super::supervision::{ChildCrashed, ChildGuard, Entity, Verdict};
use crate::domain::{OrderId, UserId};
use crate::geo::{DriverIndex, LatLon, RegionId, travel_secs};
use crate::maps::Maps;

/// How long to wait before reading a crashed or stale order again when the store could not be
/// read (a database outage): the order must come back once it can.
const ORDER_RELOAD_RETRY: Duration = Duration::from_millis(1_000);

pub struct RegionActor {
    id: RegionId,
    services: Arc<Services>,
    /// The live actors it restarts, and the drivers it asks to re-announce themselves.
    registry: Arc<Registry>,
    index: DriverIndex<UserId>,
    guard: ChildGuard,
    /// Requests waiting for the current batching window to close.
    batch: Vec<(RequestMatch, oneshot::Sender<MatchOutcome>)>,
}

impl RegionActor {
    /// Starts the supervisor of region `id` on the region's event loop.
    pub fn start(id: RegionId, registry: Arc<Registry>) -> RegionAddr {
        let arbiter = registry.arbiter(&id);
        RegionActor::start_in_arbiter(&arbiter, move |_| RegionActor::new(id, registry)).into()
    }

    fn new(id: RegionId, registry: Arc<Registry>) -> Self {
        let services = registry.services().clone();
        let projection = *services
            .config
            .regions
            .get(&id)
            .expect("region actors are started for configured regions")
            .projection();
        RegionActor {
            guard: registry.guard(Entity::Region(id.clone()), id.clone()),
            index: DriverIndex::new(projection),
            id,
            services,
            registry,
            batch: Vec::new(),
        }
    }

    /// The `k` nearest available drivers within `radius_m` of `pickup` (the R-tree, in
    /// microseconds), with straight-line pickup times. [`rank_by_road`] then re-ranks them.
    fn nearest(
        &self,
        pickup: LatLon,
        radius_m: f64,
        k: usize,
        exclude: &[UserId],
    ) -> Vec<Candidate> {
        let speed_kmh = self.services.config.average_speed_kmh;
        self.index
            .nearest_within(pickup, k, radius_m, |driver| exclude.contains(driver))
            .into_iter()
            .map(|n| Candidate {
                driver_id: n.key,
                location: n.location,
                distance_m: n.distance_m,
                pickup_eta_secs: travel_secs(n.distance_m, speed_kmh),
            })
            .collect()
    }

    /// Closes the window: assigns the batch's orders to drivers so that the total estimated
    /// pickup time is least (and as many orders as possible get one), then answers each. The
    /// candidates come from the R-tree now; their pickup times from one many-to-many table of
    /// the maps service (every candidate driver to every pickup), off the actor's loop.
    fn run_batch(&mut self, ctx: &mut Context<Self>) {
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            return;
        }
        let sets: Vec<Vec<Candidate>> = batch
            .iter()
            .map(|(request, _)| {
                self.nearest(
                    request.pickup,
                    request.radius_m,
                    request.k,
                    &request.exclude,
                )
            })
            .collect();
        let maps = self.services.maps.clone();
        let eta_factor = self.services.eta_factor(&self.id);
        ctx.spawn(
            async move {
                let started = std::time::Instant::now();
                let pickups: Vec<LatLon> = batch.iter().map(|(r, _)| r.pickup).collect();
                let (drivers, cost, sets) = batch_costs(&maps, &pickups, sets, eta_factor).await;
                let assigned = crate::domain::assignment::assign(&cost);
                metrics::histogram!("dispatch_batch_orders").record(batch.len() as f64);
                metrics::histogram!("dispatch_batch_solve_seconds")
                    .record(started.elapsed().as_secs_f64());
                for (((_, reply), set), column) in batch.into_iter().zip(&sets).zip(assigned) {
                    let outcome = match column {
                        Some(column) => set
                            .iter()
                            .find(|c| c.driver_id == drivers[column])
                            .copied()
                            .map_or(MatchOutcome::Outbid, MatchOutcome::Driver),
                        None if set.is_empty() => MatchOutcome::NoneInRange,
                        None => MatchOutcome::Outbid,
                    };
                    let _ = reply.send(outcome);
                }
            }
            .into_actor(self),
        );
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
        for (_, driver) in self.registry.drivers.all() {
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
    type Result = ResponseFuture<Vec<Candidate>>;

    /// The nearest drivers by air, ranked by road: one one-to-k table call, which never
    /// stalls dispatch (the maps service answers by straight line when OSRM is slow or down).
    fn handle(&mut self, msg: FindCandidates, _: &mut Self::Context) -> Self::Result {
        let nearest = self.nearest(msg.pickup, msg.radius_m, msg.k, &msg.exclude);
        let maps = self.services.maps.clone();
        let eta_factor = self.services.eta_factor(&self.id);
        Box::pin(rank_by_road(maps, msg.pickup, nearest, eta_factor))
    }
}

impl Handler<RequestMatch> for RegionActor {
    type Result = ResponseFuture<MatchOutcome>;

    fn handle(&mut self, msg: RequestMatch, ctx: &mut Self::Context) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        if self.batch.is_empty() {
            let window = match self.services.config.matching {
                crate::config::Matching::Batched { window } => window,
                crate::config::Matching::Greedy => std::time::Duration::ZERO,
            };
            ctx.run_later(window, |act, ctx| act.run_batch(ctx));
        }
        self.batch.push((msg, reply));
        Box::pin(async move { answer.await.unwrap_or(MatchOutcome::NoneInRange) })
    }
}

impl Handler<IndexSize> for RegionActor {
    type Result = usize;

    fn handle(&mut self, _: IndexSize, _: &mut Self::Context) -> usize {
        self.index.len()
    }
}

impl RegionActor {
    /// Rebuilds order `order_id` from its journal (and newest snapshot) and starts it afresh on
    /// this region's event loop. While the store cannot be read (a database outage) it tries
    /// again every [`ORDER_RELOAD_RETRY`], so that no order stays down because of an outage;
    /// it stops trying when the region is handed off (this supervisor stops with it).
    fn reload_order(&mut self, order_id: OrderId, ctx: &mut Context<Self>) {
        let store = self.services.store.clone();
        ctx.spawn(
            async move { store.load_order(order_id).await }
                .into_actor(self)
                .map(move |loaded, act, ctx| match loaded {
                    Ok(Some(order)) if order.is_open() => {
                        let addr = act.registry.start_recovered_order(order);
                        act.registry.orders.insert(order_id, addr);
                        tracing::info!(order_id = %order_id, "order actor restarted from its journal");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(
                            order_id = %order_id,
                            error = %error,
                            retry_in_ms = ORDER_RELOAD_RETRY.as_millis() as u64,
                            "cannot reload an order yet"
                        );
                        ctx.run_later(
                            ORDER_RELOAD_RETRY,
                            move |act, ctx| act.reload_order(order_id, ctx),
                        );
                    }
                }),
        );
    }
}

impl Handler<ReloadOrder> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: ReloadOrder, ctx: &mut Self::Context) {
        self.reload_order(msg.order_id, ctx);
    }
}

impl Handler<Retire> for RegionActor {
    type Result = bool;

    /// The region is handed off: its supervisor and index stop.
    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) -> bool {
        self.guard.disarm();
        ctx.stop();
        true
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
        if self.registry.supervision.judge(&msg.entity) != Verdict::Restart {
            return;
        }
        let registry = self.registry.clone();
        let region = self.id.clone();
        match msg.entity {
            Entity::Order(order_id) => self.reload_order(order_id, ctx),
            Entity::Driver(driver_id) => {
                let addr = registry.start_driver(driver_id);
                registry.drivers.insert(driver_id, addr);
                tracing::info!(driver_id = %driver_id, region = %region, "driver actor restarted");
            }
            Entity::Merchant(merchant_id) => {
                let addr = registry.start_merchant(merchant_id);
                registry.merchants.insert(merchant_id, addr);
                tracing::info!(merchant_id = %merchant_id, "merchant actor restarted");
            }
            Entity::Region(_) => {}
        }
    }
}

/// Re-ranks `candidates` by their travel time to `pickup` from one table call (drivers as
/// sources, the pickup as the destination: one-way streets count), scaled by the region's
/// learned correction `eta_factor`.
pub async fn rank_by_road(
    maps: Arc<Maps>,
    pickup: LatLon,
    mut candidates: Vec<Candidate>,
    eta_factor: f64,
) -> Vec<Candidate> {
    if maps.by_road() && !candidates.is_empty() {
        let sources: Vec<LatLon> = candidates.iter().map(|c| c.location).collect();
        let table = maps.table(&sources, &[pickup]).await;
        for (candidate, row) in candidates.iter_mut().zip(&table.secs) {
            if let Some(secs) = row.first() {
                candidate.pickup_eta_secs = *secs;
            }
        }
    }
    // Without a road router the R-tree's straight-line times stand (no second computation).
    for candidate in &mut candidates {
        candidate.pickup_eta_secs *= eta_factor;
    }
    candidates.sort_by(|a, b| a.pickup_eta_secs.total_cmp(&b.pickup_eta_secs));
    candidates
}

/// The batch's cost matrix from one many-to-many table: the distinct candidate drivers (the
/// columns), each order's row of pickup times (`None` where the driver is not its candidate),
/// and the candidate sets with their road times filled in.
async fn batch_costs(
    maps: &Maps,
    pickups: &[LatLon],
    mut sets: Vec<Vec<Candidate>>,
    eta_factor: f64,
) -> (Vec<UserId>, Vec<Vec<Option<f64>>>, Vec<Vec<Candidate>>) {
    let mut drivers: Vec<UserId> = Vec::new();
    let mut locations: Vec<LatLon> = Vec::new();
    let mut column_of: HashMap<UserId, usize> = HashMap::new();
    for set in &sets {
        for candidate in set {
            column_of.entry(candidate.driver_id).or_insert_with(|| {
                drivers.push(candidate.driver_id);
                locations.push(candidate.location);
                drivers.len() - 1
            });
        }
    }
    let table = if maps.by_road() && !locations.is_empty() {
        Some(maps.table(&locations, pickups).await)
    } else {
        None
    };
    for (row, set) in sets.iter_mut().enumerate() {
        for candidate in set.iter_mut() {
            let column = column_of[&candidate.driver_id];
            if let Some(secs) = table
                .as_ref()
                .and_then(|t| t.secs.get(column))
                .and_then(|r| r.get(row))
            {
                candidate.pickup_eta_secs = *secs;
            }
            // Without a road router the R-tree's straight-line time stands.
            candidate.pickup_eta_secs *= eta_factor;
        }
    }
    let cost = sets
        .iter()
        .map(|set| {
            let mut row = vec![None; drivers.len()];
            for candidate in set {
                row[column_of[&candidate.driver_id]] = Some(candidate.pickup_eta_secs);
            }
            row
        })
        .collect();
    (drivers, cost, sets)
}
