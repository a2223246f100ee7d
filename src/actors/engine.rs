//! [`Engine`]: the one handle the REST and WebSocket layers use. It places orders, routes every
//! command to the actor that owns the entity, and hands out bounded subscriptions. Behind it, a
//! region supervisor per region runs on its own event loop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::driver::DriverActor;
use super::error::EngineError;
use super::merchant::MerchantActor;
use super::order::OrderActor;
use super::protocol::{
    Accepts, AnswerOffer, BoardUpdate, CancelOrder, Canceller, CrashDriver, CrashMerchant,
    CrashOrder, CrashRegion, DriverAddr, DriverFeed, DriverStatus, GetDriverStatus, GetOrder,
    GoOffline, IndexSize, MarkReady, MerchantAccept, MerchantReject, OrderAddr, OrderFeed,
    Progress, ReportProgress, Retire, SessionClosed, SetAvailability, SubscribeBoard,
    SubscribeDriver, SubscribeOrder, UpdateLocation,
};
use super::registry::Registry;
use super::remote::{self, Call, Reply, RouteKey, Router};
use super::roster;
use super::services::{EngineHooks, Services};
use super::snapshot_writer;
use super::supervision::{Entity, FailedActor};
use crate::config::DispatchConfig;
use crate::domain::{MerchantId, NewOrder, Order, OrderId, OrderView, UserId};
use crate::geo::{LatLon, RegionId, RegionMap};
use crate::store::{Store, StoreError};

/// How long a command waits for a crashed actor to be restarted before answering
/// `unavailable`: attempts and the pause between them.
const RESTART_WAIT_ATTEMPTS: u32 = 40;
const RESTART_WAIT_MS: u64 = 25;

/// Route caches kept below this many entries (cleared when full: they refill from the store).
const ROUTE_CACHE_ENTRIES: usize = 100_000;

/// The dispatch engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    services: Arc<Services>,
    registry: Arc<Registry>,
    recovered: Arc<AtomicBool>,
    /// Set when regions are shared with other replicas: commands for their regions go there.
    router: Arc<OnceLock<Arc<Router>>>,
    routes: Arc<Routes>,
}

/// A driver's fix: latitude, longitude, and the app's timestamp (Unix ms).
type Fix = (f64, f64, Option<i64>);

/// Where this replica last saw entities, for routing: an order's and a merchant's region never
/// change; a driver's is where its last fix was, and a driver served by another replica keeps
/// going there while that subscription lives.
#[derive(Default)]
struct Routes {
    orders: Mutex<HashMap<OrderId, RegionId>>,
    merchants: Mutex<HashMap<MerchantId, RegionId>>,
    driver_regions: Mutex<HashMap<UserId, RegionId>>,
    /// Driver → (replica serving it, the subscription that binds it there).
    driver_nodes: Mutex<HashMap<UserId, (String, Uuid)>>,
    /// Drivers whose fix is being routed the slow way (not bound anywhere yet), one at a time,
    /// with the newest fix that came meanwhile.
    drivers_resolving: Mutex<HashMap<UserId, Option<Fix>>>,
}

fn remember<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, key: K, value: V) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= ROUTE_CACHE_ENTRIES {
        map.clear();
    }
    map.insert(key, value);
}

fn recall<K: std::hash::Hash + Eq, V: Clone>(map: &Mutex<HashMap<K, V>>, key: &K) -> Option<V> {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned()
}

/// A subscription made here, or through the router (its answer, feed, id and replica).
enum Subscribed<L, T> {
    Here(L),
    Routed(Box<Reply>, mpsc::Receiver<T>, Uuid, String),
}

/// Where a command runs.
enum Target {
    Here,
    Replica(String),
    /// Nobody holds the region now (its owner died and its lease has not expired or been
    /// claimed yet): the command waits for the next owner.
    Unowned,
}

impl Engine {
    /// Starts one event loop and one region supervisor per region, and the snapshot writer.
    /// Must run inside an actix system. Commands wait for [`Engine::recover`].
    pub fn start(config: DispatchConfig, store: Store, hooks: EngineHooks) -> Engine {
        let arbiters = config
            .regions
            .regions()
            .iter()
            .map(|region| (region.id().clone(), Arbiter::new().handle()))
            .collect();
        let snapshots = snapshot_writer::spawn(
            store.clone(),
            config.snapshot_batch,
            config.snapshot_interval,
        );
        let services = Services::new(config, hooks, store, snapshots);
        let registry = Registry::new(services.clone(), arbiters, roster::STARTERS);
        Engine {
            services,
            registry,
            recovered: Arc::new(AtomicBool::new(false)),
            router: Arc::new(OnceLock::new()),
            routes: Arc::new(Routes::default()),
        }
    }

    /// From now on, regions this replica does not hold are served by other replicas through
    /// `router`.
    pub fn attach_router(&self, router: Arc<Router>) {
        self.registry.sharing.store(true, Ordering::Release);
        let _ = self.router.set(router);
    }

    fn router(&self) -> Option<&Arc<Router>> {
        self.router.get()
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
        let regions = futures_util::future::try_join_all(loads).await?;
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

    fn ensure_ready(&self) -> Result<(), EngineError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(EngineError::Recovering)
        }
    }

    /// [`Engine::place_order`], run on this replica.
    pub(crate) async fn place_order_local(&self, new: NewOrder) -> Result<OrderView, EngineError> {
        self.ensure_ready()?;
        let pickup = LatLon::new(new.pickup.lat, new.pickup.lon)?;
        let dropoff = LatLon::new(new.dropoff.lat, new.dropoff.lon)?;
        let regions = &self.services.config.regions;
        let region = regions
            .locate(pickup)
            .ok_or(EngineError::OutsideServiceArea)?;
        regions
            .locate(dropoff)
            .ok_or(EngineError::OutsideServiceArea)?;
        let id = new.id;
        if !self.registry.is_active(region.id()) {
            return Err(EngineError::NotOwner(format!("region {}", region.id())));
        }
        if self.registry.orders.get(&id).is_some() {
            return self.order(id).await;
        }
        let (order, entry) = Order::place(new, region.id().to_string(), crate::store::now());
        let order = match self.services.store.create_order(&order, &entry).await {
            Ok(()) => {
                if let Some(events) = &self.services.hooks.order_events {
                    events.publish(&order, std::slice::from_ref(&entry));
                }
                order
            }
            Err(StoreError::Duplicate(_)) => match self.services.store.load_order(id).await? {
                // An earlier attempt's write committed but its answer was lost (the database
                // went away at the commit): no actor runs the order and no board knows it.
                // Adopt it now, as if it had just been placed.
                Some(stored) if stored.is_open() && self.registry.orders.get(&id).is_none() => {
                    tracing::info!(order_id = %id, "order found written by an earlier attempt; adopted");
                    stored
                }
                _ => return self.order(id).await,
            },
            Err(error) => return Err(EngineError::Store(error)),
        };
        let view = order.view();
        if !self.registry.is_active(region.id()) {
            // Handed off while it was written: journaled under our lease, so the next owner
            // recovers it; no actor of ours may outlive the hand-off.
            return Ok(view);
        }
        let merchant_id = order.merchant_id;
        let order_version = order.version;
        let registry = self.registry.clone();
        let actor = self
            .registry
            .orders
            .get_or_start(id, move || OrderActor::start(order, registry));
        if !self.registry.is_active(region.id()) {
            // The hand-off's sweep may have run between the check above and the start.
            actor.do_send(Retire {
                region: region.id().clone(),
                orders: Arc::new(HashSet::new()),
                all: true,
            });
            return Ok(view);
        }
        let registry = self.registry.clone();
        self.registry
            .merchants
            .get_or_start(merchant_id, || MerchantActor::start(merchant_id, registry))
            .do_send(BoardUpdate {
                version: order_version,
                view: view.clone(),
            });
        metrics::counter!("orders_placed_total").increment(1);
        Ok(view)
    }

    /// Sends `message` to the order's actor, waiting out a restart in progress.
    async fn call_order<M>(&self, id: OrderId, message: M) -> Result<OrderView, EngineError>
    where
        M: Message<Result = Result<OrderView, EngineError>> + Clone + Send + 'static,
        OrderAddr: Accepts<M>,
    {
        self.ensure_ready()?;
        for _ in 0..RESTART_WAIT_ATTEMPTS {
            if let Some(addr) = self.registry.orders.get(&id)
                && let Ok(reply) = addr.send(message.clone()).await
            {
                return reply;
            }
            self.check_not_live_order(id).await?;
            tokio::time::sleep(Duration::from_millis(RESTART_WAIT_MS)).await;
        }
        Err(EngineError::Unavailable(format!(
            "order {id} is restarting"
        )))
    }

    /// For an order without a live actor: why not. `Ok` means it is open and restarting.
    async fn check_not_live_order(&self, id: OrderId) -> Result<(), EngineError> {
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

    /// [`Engine::merchant_accept`], run on this replica.
    pub(crate) async fn merchant_accept_local(
        &self,
        merchant_id: MerchantId,
        order_id: OrderId,
        prep_minutes: u32,
    ) -> Result<OrderView, EngineError> {
        self.call_order(
            order_id,
            MerchantAccept {
                merchant_id,
                prep_minutes,
            },
        )
        .await
    }

    /// [`Engine::merchant_reject`], run on this replica.
    pub(crate) async fn merchant_reject_local(
        &self,
        merchant_id: MerchantId,
        order_id: OrderId,
        reason: String,
    ) -> Result<OrderView, EngineError> {
        self.call_order(
            order_id,
            MerchantReject {
                merchant_id,
                reason,
            },
        )
        .await
    }

    /// [`Engine::merchant_ready`], run on this replica.
    pub(crate) async fn merchant_ready_local(
        &self,
        merchant_id: MerchantId,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        self.call_order(order_id, MarkReady { merchant_id }).await
    }

    /// [`Engine::cancel_order`], run on this replica.
    pub(crate) async fn cancel_order_local(
        &self,
        order_id: OrderId,
        by: Canceller,
        reason: String,
    ) -> Result<OrderView, EngineError> {
        self.call_order(order_id, CancelOrder { by, reason }).await
    }

    fn driver(&self, id: UserId) -> DriverAddr {
        let registry = self.registry.clone();
        self.registry
            .drivers
            .get_or_start(id, move || DriverActor::start(id, registry))
    }

    /// Sends `message` to the driver's actor (starting it if needed), waiting out a restart.
    async fn call_driver<M>(&self, id: UserId, message: M) -> Result<M::Result, EngineError>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        DriverAddr: Accepts<M>,
    {
        self.ensure_ready()?;
        for _ in 0..RESTART_WAIT_ATTEMPTS {
            if self.registry.supervision.is_failed(&Entity::Driver(id)) {
                return Err(EngineError::Failed(format!("driver {id}")));
            }
            if let Ok(reply) = self.driver(id).send(message.clone()).await {
                return Ok(reply);
            }
            tokio::time::sleep(Duration::from_millis(RESTART_WAIT_MS)).await;
        }
        Err(EngineError::Unavailable(format!(
            "driver {id} is restarting"
        )))
    }

    /// [`Engine::driver_location`], run on this replica.
    pub(crate) async fn driver_location_local(
        &self,
        driver: UserId,
        lat: f64,
        lon: f64,
        ts_ms: Option<i64>,
    ) -> Result<(), EngineError> {
        let location = LatLon::new(lat, lon)?;
        self.call_driver(driver, UpdateLocation { location, ts_ms })
            .await?
    }

    /// [`Engine::driver_location_nowait`], run on this replica.
    fn driver_location_nowait_local(
        &self,
        driver: UserId,
        lat: f64,
        lon: f64,
        ts_ms: Option<i64>,
    ) -> Result<(), EngineError> {
        self.ensure_ready()?;
        let location = LatLon::new(lat, lon)?;
        self.driver(driver)
            .do_send(UpdateLocation { location, ts_ms });
        Ok(())
    }

    /// [`Engine::driver_availability`], run on this replica.
    pub(crate) async fn driver_availability_local(
        &self,
        driver: UserId,
        available: bool,
    ) -> Result<DriverStatus, EngineError> {
        self.call_driver(driver, SetAvailability { available })
            .await
    }

    /// [`Engine::driver_offline`], run on this replica.
    pub(crate) async fn driver_offline_local(&self, driver: UserId) -> Result<(), EngineError> {
        self.call_driver(driver, GoOffline).await
    }

    /// [`Engine::driver_disconnected`], run on this replica.
    fn driver_disconnected_local(&self, driver: UserId) {
        if let Some(addr) = self.registry.drivers.get(&driver) {
            addr.do_send(SessionClosed);
        }
    }

    /// [`Engine::accept_offer`], run on this replica.
    pub(crate) async fn accept_offer_local(
        &self,
        driver: UserId,
        offer_id: Uuid,
    ) -> Result<OrderView, EngineError> {
        let accepted = self
            .call_driver(
                driver,
                AnswerOffer {
                    offer_id,
                    accept: true,
                },
            )
            .await??;
        accepted.ok_or(EngineError::OfferNotFound)
    }

    /// [`Engine::decline_offer`], run on this replica.
    pub(crate) async fn decline_offer_local(
        &self,
        driver: UserId,
        offer_id: Uuid,
    ) -> Result<(), EngineError> {
        self.call_driver(
            driver,
            AnswerOffer {
                offer_id,
                accept: false,
            },
        )
        .await??;
        Ok(())
    }

    /// [`Engine::picked_up`], run on this replica.
    pub(crate) async fn picked_up_local(
        &self,
        driver: UserId,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        self.call_driver(
            driver,
            ReportProgress {
                order_id,
                step: Progress::PickedUp,
            },
        )
        .await?
    }

    /// [`Engine::delivered`], run on this replica.
    pub(crate) async fn delivered_local(
        &self,
        driver: UserId,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        self.call_driver(
            driver,
            ReportProgress {
                order_id,
                step: Progress::Delivered,
            },
        )
        .await?
    }

    /// [`Engine::driver_status`], run on this replica.
    pub(crate) async fn driver_status_local(
        &self,
        driver: UserId,
    ) -> Result<DriverStatus, EngineError> {
        self.call_driver(driver, GetDriverStatus).await
    }

    /// [`Engine::subscribe_driver`], run on this replica.
    pub(crate) async fn subscribe_driver_local(
        &self,
        driver: UserId,
    ) -> Result<(DriverStatus, Option<OrderView>, mpsc::Receiver<DriverFeed>), EngineError> {
        let (status, feed) = self.call_driver(driver, SubscribeDriver).await?;
        let active = match status.active_order_id {
            Some(order_id) => Some(self.order(order_id).await?),
            None => None,
        };
        Ok((status, active, feed))
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

    /// [`Engine::subscribe_order`], run on this replica.
    pub(crate) async fn subscribe_order_local(
        &self,
        id: OrderId,
    ) -> Result<(OrderView, mpsc::Receiver<OrderFeed>), EngineError> {
        self.ensure_ready()?;
        for _ in 0..RESTART_WAIT_ATTEMPTS {
            if let Some(addr) = self.registry.orders.get(&id)
                && let Ok(subscription) = addr.send(SubscribeOrder).await
            {
                return Ok(subscription);
            }
            match self.check_not_live_order(id).await {
                Err(EngineError::OrderClosed(_)) => {
                    let view = self.order(id).await?;
                    let (_, closed) = mpsc::channel(1);
                    return Ok((view, closed));
                }
                Err(error) => return Err(error),
                Ok(()) => tokio::time::sleep(Duration::from_millis(RESTART_WAIT_MS)).await,
            }
        }
        Err(EngineError::Unavailable(format!(
            "order {id} is restarting"
        )))
    }

    /// [`Engine::subscribe_board`], run on this replica.
    pub(crate) async fn subscribe_board_local(
        &self,
        merchant_id: MerchantId,
    ) -> Result<(Vec<OrderView>, mpsc::Receiver<OrderView>), EngineError> {
        self.ensure_ready()?;
        let region = match self.registry.is_sharing() {
            true => self.merchant_region(merchant_id).await?,
            false => None,
        };
        if let Some(region) = &region
            && !self.registry.is_active(region)
        {
            return Err(EngineError::NotOwner(format!("region {region}")));
        }
        for _ in 0..RESTART_WAIT_ATTEMPTS {
            if self
                .registry
                .supervision
                .is_failed(&Entity::Merchant(merchant_id))
            {
                return Err(EngineError::Failed(format!("merchant {merchant_id}")));
            }
            let registry = self.registry.clone();
            let addr = self
                .registry
                .merchants
                .get_or_start(merchant_id, || MerchantActor::start(merchant_id, registry));
            if let Ok(subscription) = addr.send(SubscribeBoard).await {
                // Handed off meanwhile: the board is read at the next owner, and this actor,
                // started after the hand-off's sweep, must not linger.
                if let Some(region) = region
                    && !self.registry.is_active(&region)
                {
                    addr.do_send(Retire {
                        region: region.clone(),
                        orders: Arc::new(HashSet::new()),
                        all: true,
                    });
                    return Err(EngineError::NotOwner(format!("region {region}")));
                }
                return Ok(subscription);
            }
            tokio::time::sleep(Duration::from_millis(RESTART_WAIT_MS)).await;
        }
        Err(EngineError::Unavailable(format!(
            "merchant {merchant_id} is restarting"
        )))
    }

    /// [`Engine::indexed_drivers`], run on this replica.
    pub(crate) async fn indexed_drivers_local(
        &self,
        region: &RegionId,
    ) -> Result<usize, EngineError> {
        let addr = self
            .registry
            .region(region)
            .ok_or_else(|| EngineError::Unavailable(format!("region {region} is restarting")))?;
        addr.send(IndexSize)
            .await
            .map_err(|_| EngineError::Unavailable(format!("region {region} is restarting")))
    }

    // ---- Routing: every command runs on the replica that holds its entity's region. ----

    /// Where a command about `key` runs: here when regions are not shared or this replica
    /// holds the region, else on its owner.
    async fn target(&self, key: &RouteKey) -> Result<Target, EngineError> {
        let Some(router) = self.router() else {
            return Ok(Target::Here);
        };
        let region = match key {
            RouteKey::Driver(driver) => return self.driver_target(router, *driver).await,
            RouteKey::Region(region) => region.clone(),
            RouteKey::Order(id) => match recall(&self.routes.orders, id) {
                Some(region) => region,
                None => {
                    let region = self
                        .services
                        .store
                        .order_region(*id)
                        .await?
                        .ok_or(EngineError::OrderNotFound)?;
                    let region = RegionId::from(region);
                    remember(&self.routes.orders, *id, region.clone());
                    region
                }
            },
            RouteKey::Merchant(id) => match self.merchant_region(*id).await? {
                Some(region) => region,
                // An unknown merchant has an empty board, served here.
                None => return Ok(Target::Here),
            },
        };
        Ok(self.region_target(router, &region))
    }

    fn region_target(&self, router: &Router, region: &RegionId) -> Target {
        if self.registry.is_active(region) {
            return Target::Here;
        }
        match router.ownership().owner(region.as_str()) {
            Some(owner) if owner != router.node() => Target::Replica(owner),
            // Ours, still recovering: answered here (`recovering`).
            Some(_) => Target::Here,
            None => Target::Unowned,
        }
    }

    async fn merchant_region(&self, id: MerchantId) -> Result<Option<RegionId>, EngineError> {
        if let Some(region) = recall(&self.routes.merchants, &id) {
            return Ok(Some(region));
        }
        let Some(merchant) = self.services.store.merchant(id).await? else {
            return Ok(None);
        };
        let region = LatLon::new(merchant.location.lat, merchant.location.lon)
            .ok()
            .and_then(|point| self.regions().locate(point))
            .map(|region| region.id().clone());
        if let Some(region) = &region {
            remember(&self.routes.merchants, id, region.clone());
        }
        Ok(region)
    }

    /// A driver is served where its actor is: here if it runs here, else where its live
    /// subscription is; otherwise by the owner of its active order's region (a driver works
    /// next to its order), else of the region of its last fix or stored location; a driver
    /// known nowhere is served here.
    async fn driver_target(&self, router: &Router, driver: UserId) -> Result<Target, EngineError> {
        if let Some(target) = self.driver_bound(router, driver) {
            return Ok(target);
        }
        let store = &self.services.store;
        let region = match store.active_order_of_driver(driver).await? {
            Some(order) => store.order_region(order).await?.map(RegionId::from),
            None => match recall(&self.routes.driver_regions, &driver) {
                Some(region) => Some(region),
                None => super::driver::last_known_location(store, driver)
                    .await
                    .and_then(|point| self.regions().locate(point))
                    .map(|region| region.id().clone()),
            },
        };
        Ok(match region {
            Some(region) => self.region_target(router, &region),
            None => Target::Here,
        })
    }

    /// Where the driver's actor is known to run: here, or at the replica serving its live
    /// subscription.
    fn driver_bound(&self, router: &Router, driver: UserId) -> Option<Target> {
        if self.registry.drivers.get(&driver).is_some() {
            return Some(Target::Here);
        }
        let (node, sub) = recall(&self.routes.driver_nodes, &driver)?;
        if router.has_feed(sub) {
            return Some(Target::Replica(node));
        }
        self.routes
            .driver_nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&driver);
        None
    }

    /// Runs `call` where `key` lives.
    async fn dispatch(&self, key: RouteKey, call: Call) -> Result<Reply, EngineError> {
        self.ensure_ready()?;
        match self.target(&key).await? {
            Target::Here => match self.execute_local(call.clone()).await {
                // Ours by the lease table but not taken on yet, or just handed off: resent
                // until the region settles, as a command from another replica would be.
                Err(EngineError::NotOwner(_)) if self.router().is_some() => {
                    let router = self.router().expect("checked");
                    router.call(call, || self.resolve(key.clone())).await
                }
                outcome => outcome,
            },
            Target::Replica(_) | Target::Unowned => {
                let Some(router) = self.router() else {
                    return self.execute_local(call).await;
                };
                router.call(call, || self.resolve(key.clone())).await
            }
        }
    }

    fn node(&self) -> String {
        self.router()
            .map(|router| router.node().to_owned())
            .unwrap_or_default()
    }

    /// Runs a best-effort command another replica sent (a driver's fix, a closed socket): only
    /// to a driver actor running here, never starting one (the driver may have moved on).
    pub(crate) fn execute_cast(&self, call: Call) {
        match call {
            Call::DriverLocation {
                driver,
                lat,
                lon,
                ts_ms,
            } if self.registry.drivers.get(&driver).is_some() => {
                let _ = self.driver_location_nowait_local(driver, lat, lon, ts_ms);
            }
            Call::DriverDisconnected { driver } => self.driver_disconnected_local(driver),
            _ => {
                metrics::counter!("route_casts_dropped_total", "reason" => "not_here").increment(1)
            }
        }
    }

    /// [`Engine::execute`], run on this replica.
    pub(crate) async fn execute_local(&self, call: Call) -> Result<Reply, EngineError> {
        let order = |view: OrderView| Reply::Order { order: view };
        match call {
            Call::PlaceOrder { order: new } => self.place_order_local(new).await.map(order),
            Call::MerchantAccept {
                merchant_id,
                order_id,
                prep_minutes,
            } => self
                .merchant_accept_local(merchant_id, order_id, prep_minutes)
                .await
                .map(order),
            Call::MerchantReject {
                merchant_id,
                order_id,
                reason,
            } => self
                .merchant_reject_local(merchant_id, order_id, reason)
                .await
                .map(order),
            Call::MerchantReady {
                merchant_id,
                order_id,
            } => self
                .merchant_ready_local(merchant_id, order_id)
                .await
                .map(order),
            Call::CancelOrder {
                order_id,
                by,
                reason,
            } => self
                .cancel_order_local(order_id, by, reason)
                .await
                .map(order),
            Call::GetOrder { order_id } => self.order(order_id).await.map(order),
            Call::DriverLocation {
                driver,
                lat,
                lon,
                ts_ms,
            } => self
                .driver_location_local(driver, lat, lon, ts_ms)
                .await
                .map(|()| Reply::Done),
            Call::DriverAvailability { driver, available } => self
                .driver_availability_local(driver, available)
                .await
                .map(|status| Reply::Driver { status }),
            Call::DriverOffline { driver } => self
                .driver_offline_local(driver)
                .await
                .map(|()| Reply::Done),
            Call::DriverDisconnected { driver } => {
                self.driver_disconnected_local(driver);
                Ok(Reply::Done)
            }
            Call::AnswerOffer {
                driver,
                offer_id,
                accept: true,
            } => self.accept_offer_local(driver, offer_id).await.map(order),
            Call::AnswerOffer {
                driver,
                offer_id,
                accept: false,
            } => self
                .decline_offer_local(driver, offer_id)
                .await
                .map(|()| Reply::Done),
            Call::PickedUp { driver, order_id } => {
                self.picked_up_local(driver, order_id).await.map(order)
            }
            Call::Delivered { driver, order_id } => {
                self.delivered_local(driver, order_id).await.map(order)
            }
            Call::DriverStatus { driver } => self
                .driver_status_local(driver)
                .await
                .map(|status| Reply::Driver { status }),
            Call::IndexedDrivers { region } => self
                .indexed_drivers_local(&region)
                .await
                .map(|count| Reply::Count { count }),
            Call::SubscribeOrder { .. }
            | Call::SubscribeBoard { .. }
            | Call::SubscribeDriver { .. } => Err(EngineError::Unavailable(
                "a subscription cannot be run without a subscriber".to_owned(),
            )),
        }
    }

    /// Hands a checked-out order to dispatch: journals it as `placed`, starts its actor and puts
    /// it on the merchant's board. Placing the same order id again returns the order as it is.
    pub async fn place_order(&self, new: NewOrder) -> Result<OrderView, EngineError> {
        self.ensure_ready()?;
        let pickup = LatLon::new(new.pickup.lat, new.pickup.lon)?;
        let region = self
            .regions()
            .locate(pickup)
            .ok_or(EngineError::OutsideServiceArea)?
            .id()
            .clone();
        if self.router().is_some() {
            remember(&self.routes.orders, new.id, region.clone());
        }
        into_order(
            self.dispatch(RouteKey::Region(region), Call::PlaceOrder { order: new })
                .await?,
        )
    }

    /// The merchant accepts with a preparation time; dispatch starts looking for a driver.
    pub async fn merchant_accept(
        &self,
        merchant_id: MerchantId,
        order_id: OrderId,
        prep_minutes: u32,
    ) -> Result<OrderView, EngineError> {
        let call = Call::MerchantAccept {
            merchant_id,
            order_id,
            prep_minutes,
        };
        into_order(self.dispatch(RouteKey::Order(order_id), call).await?)
    }

    /// The merchant rejects the order.
    pub async fn merchant_reject(
        &self,
        merchant_id: MerchantId,
        order_id: OrderId,
        reason: String,
    ) -> Result<OrderView, EngineError> {
        let call = Call::MerchantReject {
            merchant_id,
            order_id,
            reason,
        };
        into_order(self.dispatch(RouteKey::Order(order_id), call).await?)
    }

    /// The merchant marks the order ready for pickup.
    pub async fn merchant_ready(
        &self,
        merchant_id: MerchantId,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        let call = Call::MerchantReady {
            merchant_id,
            order_id,
        };
        into_order(self.dispatch(RouteKey::Order(order_id), call).await?)
    }

    /// Cancels the order (the customer before acceptance; an admin before pickup).
    pub async fn cancel_order(
        &self,
        order_id: OrderId,
        by: Canceller,
        reason: String,
    ) -> Result<OrderView, EngineError> {
        let call = Call::CancelOrder {
            order_id,
            by,
            reason,
        };
        into_order(self.dispatch(RouteKey::Order(order_id), call).await?)
    }

    /// Notes the region of a driver's fix, which decides where an idle driver is served.
    /// On the socket's hot path: the map is written only when the region changes.
    fn note_driver_fix(&self, driver: UserId, location: LatLon) {
        if self.router().is_none() {
            return;
        }
        let Some(region) = self.regions().locate(location) else {
            return;
        };
        let known = self
            .routes
            .driver_regions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&driver)
            .is_some_and(|known| known == region.id());
        if !known {
            remember(&self.routes.driver_regions, driver, region.id().clone());
        }
    }

    /// A driver's GPS fix. Coordinates must be valid; a fix older than the last is refused.
    pub async fn driver_location(
        &self,
        driver: UserId,
        lat: f64,
        lon: f64,
        ts_ms: Option<i64>,
    ) -> Result<(), EngineError> {
        self.note_driver_fix(driver, LatLon::new(lat, lon)?);
        let call = Call::DriverLocation {
            driver,
            lat,
            lon,
            ts_ms,
        };
        self.dispatch(RouteKey::Driver(driver), call)
            .await
            .map(drop)
    }

    /// A driver's GPS fix, without waiting for the driver's actor: the hot path of the driver
    /// app's socket. The coordinates are checked here; a stale fix is dropped (and counted) by
    /// the actor. Ordering with the driver's other messages is kept (one mailbox). A driver
    /// served by another replica gets it best-effort.
    pub fn driver_location_nowait(
        &self,
        driver: UserId,
        lat: f64,
        lon: f64,
        ts_ms: Option<i64>,
    ) -> Result<(), EngineError> {
        self.ensure_ready()?;
        let location = LatLon::new(lat, lon)?;
        self.note_driver_fix(driver, location);
        if let Some(router) = self.router() {
            match self.driver_bound(router, driver) {
                Some(Target::Here) => {}
                Some(Target::Replica(node)) => {
                    let call = Call::DriverLocation {
                        driver,
                        lat,
                        lon,
                        ts_ms,
                    };
                    router.cast(&node, call);
                    return Ok(());
                }
                None | Some(Target::Unowned) => {
                    // Not served anywhere known yet: find where (it may take the store), one
                    // fix at a time; of the fixes that come meanwhile the newest goes next.
                    {
                        let mut resolving = self
                            .routes
                            .drivers_resolving
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        if let Some(next) = resolving.get_mut(&driver) {
                            if next.replace((lat, lon, ts_ms)).is_some() {
                                metrics::counter!("route_casts_dropped_total", "reason" => "superseded")
                                    .increment(1);
                            }
                            return Ok(());
                        }
                        resolving.insert(driver, None);
                    }
                    let engine = self.clone();
                    actix_web::rt::spawn(async move {
                        let mut fix = Some((lat, lon, ts_ms));
                        while let Some((lat, lon, ts_ms)) = fix {
                            if let Err(error) =
                                engine.driver_location(driver, lat, lon, ts_ms).await
                            {
                                tracing::debug!(%driver, error = %error, "driver fix not delivered");
                            }
                            let mut resolving = engine
                                .routes
                                .drivers_resolving
                                .lock()
                                .unwrap_or_else(|e| e.into_inner());
                            fix = resolving.get_mut(&driver).and_then(Option::take);
                            if fix.is_none() {
                                resolving.remove(&driver);
                            }
                        }
                    });
                    return Ok(());
                }
            }
        }
        self.driver_location_nowait_local(driver, lat, lon, ts_ms)
    }

    /// The driver goes on or off duty. Matchable once on duty with a location.
    pub async fn driver_availability(
        &self,
        driver: UserId,
        available: bool,
    ) -> Result<DriverStatus, EngineError> {
        let call = Call::DriverAvailability { driver, available };
        into_status(self.dispatch(RouteKey::Driver(driver), call).await?)
    }

    /// The driver's app is gone (after its grace period): out of the indexes.
    pub async fn driver_offline(&self, driver: UserId) -> Result<(), EngineError> {
        self.dispatch(RouteKey::Driver(driver), Call::DriverOffline { driver })
            .await
            .map(drop)
    }

    /// A socket of the driver closed: it goes offline after the grace period unless it
    /// reconnects.
    pub fn driver_disconnected(&self, driver: UserId) {
        if let Some(router) = self.router()
            && let Some(Target::Replica(node)) = self.driver_bound(router, driver)
        {
            router.cast(&node, Call::DriverDisconnected { driver });
            return;
        }
        self.driver_disconnected_local(driver);
    }

    /// The driver accepts its open offer: the order is assigned to it.
    pub async fn accept_offer(
        &self,
        driver: UserId,
        offer_id: Uuid,
    ) -> Result<OrderView, EngineError> {
        let call = Call::AnswerOffer {
            driver,
            offer_id,
            accept: true,
        };
        into_order(self.dispatch(RouteKey::Driver(driver), call).await?)
    }

    /// The driver declines its open offer: the order goes to the next candidate.
    pub async fn decline_offer(&self, driver: UserId, offer_id: Uuid) -> Result<(), EngineError> {
        let call = Call::AnswerOffer {
            driver,
            offer_id,
            accept: false,
        };
        self.dispatch(RouteKey::Driver(driver), call)
            .await
            .map(drop)
    }

    /// The driver collected its active order.
    pub async fn picked_up(
        &self,
        driver: UserId,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        let call = Call::PickedUp { driver, order_id };
        into_order(self.dispatch(RouteKey::Driver(driver), call).await?)
    }

    /// The driver delivered its active order.
    pub async fn delivered(
        &self,
        driver: UserId,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        let call = Call::Delivered { driver, order_id };
        into_order(self.dispatch(RouteKey::Driver(driver), call).await?)
    }

    /// A driver's state, as the engine sees it.
    pub async fn driver_status(&self, driver: UserId) -> Result<DriverStatus, EngineError> {
        into_status(
            self.dispatch(RouteKey::Driver(driver), Call::DriverStatus { driver })
                .await?,
        )
    }

    /// Drivers in a region's index now.
    pub async fn indexed_drivers(&self, region: &RegionId) -> Result<usize, EngineError> {
        let call = Call::IndexedDrivers {
            region: region.clone(),
        };
        match self
            .dispatch(RouteKey::Region(region.clone()), call)
            .await?
        {
            Reply::Count { count } => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// The driver's feed (offers, assignment, order updates), its state, and its active order.
    pub async fn subscribe_driver(
        &self,
        driver: UserId,
    ) -> Result<(DriverStatus, Option<OrderView>, mpsc::Receiver<DriverFeed>), EngineError> {
        let subscribed = self
            .subscribe_where(
                RouteKey::Driver(driver),
                || self.subscribe_driver_local(driver),
                |sub| Call::SubscribeDriver { driver, sub },
                None,
                remote::driver_sink,
            )
            .await?;
        match subscribed {
            Subscribed::Here(local) => Ok(local),
            Subscribed::Routed(reply, feed, sub, node) => {
                remember(&self.routes.driver_nodes, driver, (node, sub));
                match *reply {
                    Reply::DriverFeed { status, active } => Ok((status, active, feed)),
                    other => Err(unexpected(other)),
                }
            }
        }
    }

    /// Subscribes where `key` lives: `local` here, else `call` through the router, with the
    /// feed delivered into a sink made by `sink`.
    async fn subscribe_where<L, T, Fut>(
        &self,
        key: RouteKey,
        local: impl Fn() -> Fut,
        call: impl Fn(Uuid) -> Call,
        region: Option<String>,
        sink: fn(mpsc::Sender<T>) -> remote::FeedSink,
    ) -> Result<Subscribed<L, T>, EngineError>
    where
        Fut: std::future::Future<Output = Result<L, EngineError>>,
    {
        self.ensure_ready()?;
        let target = self.target(&key).await?;
        let Some(router) = self.router() else {
            return local().await.map(Subscribed::Here);
        };
        if let Target::Here = target {
            // Not ours after all (the region is being handed over): through the router.
            match local().await {
                Err(EngineError::NotOwner(_)) => {}
                outcome => return outcome.map(Subscribed::Here),
            }
        }
        let (reply, feed, sub, node) = router
            .subscribe(call, region, sink, || self.resolve(key.clone()))
            .await?;
        Ok(Subscribed::Routed(Box::new(reply), feed, sub, node))
    }

    /// The replica a resent command goes to.
    async fn resolve(&self, key: RouteKey) -> Result<Option<String>, EngineError> {
        Ok(match self.target(&key).await? {
            Target::Replica(node) => Some(node),
            Target::Here => Some(self.node()),
            Target::Unowned => None,
        })
    }

    /// The order now and a feed of its changes (and of its driver's location). For a closed
    /// order the feed ends at once.
    pub async fn subscribe_order(
        &self,
        id: OrderId,
    ) -> Result<(OrderView, mpsc::Receiver<OrderFeed>), EngineError> {
        let subscribed = self
            .subscribe_where(
                RouteKey::Order(id),
                || self.subscribe_order_local(id),
                |sub| Call::SubscribeOrder { order_id: id, sub },
                recall(&self.routes.orders, &id).map(|r| r.to_string()),
                remote::order_sink,
            )
            .await?;
        match subscribed {
            Subscribed::Here(local) => Ok(local),
            Subscribed::Routed(reply, feed, ..) => into_order(*reply).map(|view| (view, feed)),
        }
    }

    /// The merchant's board (every open order) and a feed of changes to it.
    pub async fn subscribe_board(
        &self,
        merchant_id: MerchantId,
    ) -> Result<(Vec<OrderView>, mpsc::Receiver<OrderView>), EngineError> {
        let subscribed = self
            .subscribe_where(
                RouteKey::Merchant(merchant_id),
                || self.subscribe_board_local(merchant_id),
                |sub| Call::SubscribeBoard { merchant_id, sub },
                recall(&self.routes.merchants, &merchant_id).map(|r| r.to_string()),
                remote::board_sink,
            )
            .await?;
        match subscribed {
            Subscribed::Here(local) => Ok(local),
            Subscribed::Routed(reply, feed, ..) => match *reply {
                Reply::Board { orders } => Ok((orders, feed)),
                other => Err(unexpected(other)),
            },
        }
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
    /// done, and writes pending snapshots. The event loops end with the process; stopping them
    /// here would drop work in flight (and its database connections) mid-way.
    pub async fn shutdown(&self) {
        self.recovered.store(false, Ordering::Release);
        self.registry.stop_all();
        self.services.snapshots.flush().await;
    }
}

fn unexpected(reply: Reply) -> EngineError {
    EngineError::Unavailable(format!("unexpected answer from another replica: {reply:?}"))
}

fn into_order(reply: Reply) -> Result<OrderView, EngineError> {
    match reply {
        Reply::Order { order } => Ok(order),
        other => Err(unexpected(other)),
    }
}

fn into_status(reply: Reply) -> Result<DriverStatus, EngineError> {
    match reply {
        Reply::Driver { status } => Ok(status),
        other => Err(unexpected(other)),
    }
}
