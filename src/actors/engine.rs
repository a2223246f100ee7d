//! [`Engine`]: the one handle the REST and WebSocket layers use, and what every command runs
//! against. It owns the region supervisors (one event loop each), takes regions on and hands
//! them off, recovers open orders, and reaches the actor of an entity, waiting out a restart.
//! The commands themselves live in `commands/` and run through [`Engine::execute`]
//! (`command.rs`); where they run is decided in `target.rs`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::driver::DriverActor;
use super::error::EngineError;
use super::order::OrderActor;
use super::protocol::{
    Accepts, CrashDriver, CrashMerchant, CrashOrder, CrashRegion, DriverAddr, GetOrder, OrderAddr,
    Retire,
};
use super::registry::Registry;
use super::roster;
use super::router::Routing;
use super::routes::{Routes, recall};
use super::services::{EngineHooks, Services};
use super::snapshot_writer;
use super::supervision::{Entity, FailedActor};
use crate::config::{DispatchConfig, cpu_cores};
use crate::domain::{OrderId, OrderView, UserId};
use crate::geo::{RegionId, RegionMap};
use crate::store::{Store, StoreError};
use crate::tasks::Tasks;

/// How long a command waits for a crashed actor to be restarted before answering
/// `unavailable`: attempts, and the pause between them.
const RESTART_WAIT_ATTEMPTS: u32 = 40;
const RESTART_WAIT: Duration = Duration::from_millis(25);

/// How long a stop waits for the snapshot writer's last write.
const SNAPSHOT_WRITER_STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs `attempt` until it answers: `Ok(None)` means the actor is restarting (tried again after
/// a pause), anything else is the answer. Gives up as `unavailable` after about a second.
pub(crate) async fn wait_out_restart<T, Fut>(
    kind: &str,
    id: impl std::fmt::Display,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, EngineError>
where
    Fut: std::future::Future<Output = Result<Option<T>, EngineError>>,
{
    for _ in 0..RESTART_WAIT_ATTEMPTS {
        if let Some(answer) = attempt().await? {
            return Ok(answer);
        }
        tokio::time::sleep(RESTART_WAIT).await;
    }
    Err(EngineError::Unavailable(format!(
        "{kind} {id} is restarting"
    )))
}

/// The dispatch engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) services: Arc<Services>,
    pub(crate) registry: Arc<Registry>,
    recovered: Arc<AtomicBool>,
    /// Set when regions are shared with other replicas: commands for their regions go there.
    router: Arc<OnceLock<Arc<dyn Routing>>>,
    pub(crate) routes: Arc<Routes>,
    /// The engine's own background work (the snapshot writer): stopped and waited for last.
    tasks: Tasks,
}

/// How many event loops run `regions` regions on a machine of `cores` cores: `threads` if set,
/// else half the cores (the HTTP workers, as many as the cores, take the other half of the
/// work); at least one, at most one per region.
fn event_loops(threads: Option<usize>, regions: usize, cores: usize) -> usize {
    threads.unwrap_or(cores / 2).clamp(1, regions.max(1))
}

impl Engine {
    /// Starts the event loops (see [`event_loops`]; regions share them round-robin), one region
    /// supervisor per region, and the snapshot writer.
    /// Must run inside an actix system. Commands wait for [`Engine::recover`].
    pub fn start(
        config: DispatchConfig,
        store: Store,
        hooks: EngineHooks,
        maps: Arc<crate::maps::Maps>,
    ) -> Engine {
        let regions = config.regions.regions();
        let loops: Vec<ArbiterHandle> =
            (0..event_loops(config.engine_threads, regions.len(), cpu_cores()))
                .map(|_| Arbiter::new().handle())
                .collect();
        let arbiters = regions
            .iter()
            .zip(loops.iter().cycle())
            .map(|(region, handle)| (region.id().clone(), handle.clone()))
            .collect();
        let tasks = Tasks::new();
        let snapshots = snapshot_writer::spawn(
            &tasks,
            store.clone(),
            config.snapshot_batch,
            config.snapshot_interval,
        );
        let services = Services::new(config, hooks, store.clone(), snapshots, maps);
        services.eta.spawn_saver(&tasks, store);
        let registry = Registry::new(services.clone(), arbiters, roster::STARTERS);
        Engine {
            services,
            registry,
            tasks,
            recovered: Arc::new(AtomicBool::new(false)),
            router: Arc::new(OnceLock::new()),
            routes: Arc::new(Routes::default()),
        }
    }

    /// From now on, regions this replica does not hold are served by other replicas through
    /// `router`.
    pub fn attach_router(&self, router: Arc<dyn Routing>) {
        self.registry.sharing.store(true, Ordering::Release);
        let _ = self.router.set(router);
    }

    pub(crate) fn router(&self) -> Option<&dyn Routing> {
        self.router.get().map(|router| &**router)
    }

    /// Takes region `region` on (its lease was granted): starts its supervisor, rebuilds its open
    /// orders from their snapshots and journals, and then takes its commands. Returns how many
    /// orders came back.
    pub async fn activate_region(&self, region: &RegionId) -> Result<usize, StoreError> {
        let started = Instant::now();
        // An actor of the region left from before a hand-off holds an older state: it stops
        // before the journal is read, so that nothing it commits is missed; the journal wins.
        let none = Arc::new(HashSet::new());
        for (_, addr) in self.registry.orders.all() {
            let _ = addr
                .send(Retire {
                    region: region.clone(),
                    orders: none.clone(),
                    all: false,
                })
                .await;
        }
        let orders = self.services.store.open_orders(region.as_str()).await?;
        self.registry.start_region(region.clone());
        let count = orders.len();
        for order in orders {
            let registry = self.registry.clone();
            self.registry
                .orders
                .insert(order.id, OrderActor::start_recovered(order, registry));
        }
        self.registry.set_active(region, true);
        metrics::gauge!("dispatch_recovery_seconds").set(started.elapsed().as_secs_f64());
        tracing::info!(region = %region, orders = count, elapsed_ms = started.elapsed().as_millis() as u64, "region taken on");
        Ok(count)
    }

    /// Hands region `region` off (a rebalance): takes no more commands for it, stops its orders
    /// and the drivers and merchants working there, writes their pending snapshots, and leaves
    /// the journal as the new owner will read it. Sessions whose feeds end subscribe again and
    /// reach the new owner.
    pub async fn deactivate_region(&self, region: &RegionId) {
        let started = Instant::now();
        self.registry.set_active(region, false);
        let mut retired = HashSet::new();
        let none = Arc::new(HashSet::new());
        for (id, addr) in self.registry.orders.all() {
            let message = Retire {
                region: region.clone(),
                orders: none.clone(),
                all: false,
            };
            if let Ok(true) = addr.send(message).await {
                retired.insert(id);
            }
        }
        let orders = Arc::new(retired);
        for (_, addr) in self.registry.drivers.all() {
            let _ = addr
                .send(Retire {
                    region: region.clone(),
                    orders: orders.clone(),
                    all: false,
                })
                .await;
        }
        for (id, addr) in self.registry.merchants.all() {
            // A merchant of the region goes even with an empty board: its next orders are
            // placed on the region's next owner, and its board must be read there.
            // From the route cache only (a store read per merchant would stall the round): a
            // merchant with a board subscription was routed, so its region is cached; one
            // without is retired by its orders, or idles out.
            let located_here = recall(&self.routes.merchants, &id).as_ref() == Some(region);
            let _ = addr
                .send(Retire {
                    region: region.clone(),
                    orders: orders.clone(),
                    all: located_here,
                })
                .await;
        }
        self.registry.stop_region(region).await;
        self.services.snapshots.flush().await;
        tracing::info!(region = %region, orders = orders.len(), elapsed_ms = started.elapsed().as_millis() as u64, "region handed off");
    }

    /// Steps down from every region (another replica took one over, and without Redis a
    /// replica runs all or none): each is handed off as in a rebalance, and commands wait for
    /// [`Engine::recover`] again.
    pub async fn stand_by(&self) {
        self.recovered.store(false, Ordering::Release);
        for region in self.registry.region_ids() {
            self.deactivate_region(&region).await;
        }
    }

    /// Runs `work` on one of the engine's event loops, chosen by `key`.
    pub(crate) fn spawn_spread(
        &self,
        key: u64,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.registry.arbiter_by(key).spawn(work);
    }

    /// Marks the engine as taking commands (the cluster has made its first round).
    pub fn set_ready(&self) {
        self.recovered.store(true, Ordering::Release);
    }

    /// Rebuilds every open order from its snapshot and journal and restarts its actor: offers
    /// that were open are issued again with their remaining time, searches resume, assigned
    /// drivers get their order back when they reconnect. Returns how many orders came back.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let started = Instant::now();
        // Read everything first, all regions at once, and only then start actors: restarted
        // orders wake their drivers' actors, whose own reads would otherwise compete with these.
        let loads = self.registry.region_ids().into_iter().map(|region| {
            let store = self.services.store.clone();
            async move { store.open_orders(region.as_str()).await }
        });
        let (regions, ()) = futures_util::join!(
            futures_util::future::try_join_all(loads),
            self.services.eta.load(&self.services.store)
        );
        let regions = regions?;
        let read = started.elapsed();
        for id in self.registry.region_ids() {
            self.registry.start_region(id);
        }
        let mut recovered = 0;
        for orders in regions {
            recovered += orders.len();
            for order in orders {
                let registry = self.registry.clone();
                self.registry.orders.get_or_start(order.id, move || {
                    OrderActor::start_recovered(order, registry)
                });
            }
        }
        for id in self.registry.region_ids() {
            self.registry.set_active(&id, true);
        }
        self.recovered.store(true, Ordering::Release);
        let elapsed = started.elapsed();
        metrics::gauge!("dispatch_recovery_seconds").set(elapsed.as_secs_f64());
        tracing::info!(
            orders = recovered,
            read_ms = read.as_millis() as u64,
            elapsed_ms = elapsed.as_millis() as u64,
            "dispatch recovered open orders"
        );
        Ok(recovered)
    }

    /// Whether recovery has run and commands are taken.
    pub fn is_ready(&self) -> bool {
        self.recovered.load(Ordering::Acquire)
    }

    pub fn regions(&self) -> &RegionMap {
        &self.services.config.regions
    }

    pub(crate) fn ensure_ready(&self) -> Result<(), EngineError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(EngineError::Recovering)
        }
    }

    /// Sends `message` to the order's actor, waiting out a restart in progress.
    pub(crate) async fn call_order<M>(
        &self,
        id: OrderId,
        message: M,
    ) -> Result<OrderView, EngineError>
    where
        M: Message<Result = Result<OrderView, EngineError>> + Clone + Send + 'static,
        OrderAddr: Accepts<M>,
    {
        self.ensure_ready()?;
        wait_out_restart("order", id, || async {
            if let Some(addr) = self.registry.orders.get(&id)
                && let Ok(reply) = addr.send(message.clone()).await
            {
                return reply.map(Some);
            }
            self.check_not_live_order(id).await.map(|()| None)
        })
        .await
    }

    /// For an order without a live actor: why not. `Ok` means it is open and restarting.
    pub(crate) async fn check_not_live_order(&self, id: OrderId) -> Result<(), EngineError> {
        if self.registry.supervision.is_failed(&Entity::Order(id)) {
            return Err(EngineError::Failed(format!("order {id}")));
        }
        if self.registry.orders.get(&id).is_some() {
            return Ok(());
        }
        match self.services.store.load_order(id).await? {
            None => Err(EngineError::OrderNotFound),
            Some(order) if !order.is_open() => Err(EngineError::OrderClosed(order.status())),
            Some(order)
                if !self
                    .registry
                    .is_active(&RegionId::from(order.region_id.as_str())) =>
            {
                Err(EngineError::NotOwner(format!("region {}", order.region_id)))
            }
            Some(_) => Ok(()),
        }
    }

    pub(crate) fn driver(&self, id: UserId) -> DriverAddr {
        let registry = self.registry.clone();
        self.registry
            .drivers
            .get_or_start(id, move || DriverActor::start(id, registry))
    }

    /// Sends `message` to the driver's actor (starting it if needed), waiting out a restart.
    pub(crate) async fn call_driver<M>(
        &self,
        id: UserId,
        message: M,
    ) -> Result<M::Result, EngineError>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        DriverAddr: Accepts<M>,
    {
        self.ensure_ready()?;
        wait_out_restart("driver", id, || async {
            if self.registry.supervision.is_failed(&Entity::Driver(id)) {
                return Err(EngineError::Failed(format!("driver {id}")));
            }
            Ok(self.driver(id).send(message.clone()).await.ok())
        })
        .await
    }

    /// The order now: from its actor while open, else from the journal.
    pub async fn order(&self, id: OrderId) -> Result<OrderView, EngineError> {
        if let Some(addr) = self.registry.orders.get(&id)
            && let Ok(view) = addr.send(GetOrder).await
        {
            return Ok(view);
        }
        self.services
            .store
            .load_order(id)
            .await?
            .map(|order| order.view())
            .ok_or(EngineError::OrderNotFound)
    }

    /// Actors that crash-looped and were left down, for an admin to look at.
    pub fn failed_actors(&self) -> Vec<FailedActor> {
        self.registry.supervision.failed()
    }

    /// Test hook (only with `fault_injection` on): makes `target` panic now and again on each of
    /// its next `more_restarts` restarts.
    #[doc(hidden)]
    pub async fn inject_panic(
        &self,
        target: Entity,
        more_restarts: u32,
    ) -> Result<(), EngineError> {
        if !self.services.config.fault_injection {
            return Err(EngineError::Unavailable(
                "fault injection is disabled".to_owned(),
            ));
        }
        self.services
            .faults
            .panic_on_start(target.clone(), more_restarts);
        match &target {
            Entity::Order(id) => {
                if let Some(addr) = self.registry.orders.get(id) {
                    addr.do_send(CrashOrder);
                }
            }
            Entity::Driver(id) => self.driver(*id).do_send(CrashDriver),
            Entity::Merchant(id) => {
                if let Some(addr) = self.registry.merchants.get(id) {
                    addr.do_send(CrashMerchant);
                }
            }
            Entity::Region(id) => {
                if let Some(addr) = self.registry.region(id) {
                    addr.do_send(CrashRegion);
                }
            }
        }
        Ok(())
    }

    /// Graceful stop: takes no more commands, lets every actor stop once its work in hand is
    /// done, and writes pending snapshots and the ETA corrections learned since their last
    /// save. The event loops end with the process; stopping them here would drop work in
    /// flight (and its database connections) mid-way.
    pub async fn shutdown(&self) {
        self.recovered.store(false, Ordering::Release);
        self.registry.stop_all();
        self.services.snapshots.flush().await;
        self.services.eta.save(&self.services.store).await;
        if !self.tasks.stop(SNAPSHOT_WRITER_STOP_GRACE).await {
            tracing::warn!("the snapshot writer did not finish within its grace");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::event_loops;

    #[test]
    fn regions_share_half_the_cores_unless_the_setting_says_otherwise() {
        // Unset: half the cores, at least one, at most one per region.
        assert_eq!(event_loops(None, 4, 2), 1);
        assert_eq!(event_loops(None, 4, 1), 1);
        assert_eq!(event_loops(None, 4, 6), 3);
        assert_eq!(event_loops(None, 4, 64), 4);
        assert_eq!(event_loops(None, 2, 8), 2);
        // Set: as set, within the same bounds.
        assert_eq!(event_loops(Some(2), 4, 2), 2);
        assert_eq!(event_loops(Some(4), 4, 2), 4);
        assert_eq!(event_loops(Some(8), 4, 2), 4);
        assert_eq!(event_loops(Some(0), 4, 2), 1);
    }
}
