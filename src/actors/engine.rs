//! [`Engine`]: the one handle the REST and WebSocket layers use. It places orders, routes every
//! command to the actor that owns the entity, and hands out bounded subscriptions. Behind it, a
//! region supervisor per region runs on its own event loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::EngineError;
use super::driver::{
    AnswerOffer, CrashDriver, DriverActor, DriverFeed, DriverStatus, GetDriverStatus, GoOffline,
    Progress, ReportProgress, SessionClosed, SetAvailability, SubscribeDriver, UpdateLocation,
};
use super::merchant::{BoardUpdate, CrashMerchant, MerchantActor, SubscribeBoard};
use super::order::{
    CancelOrder, Canceller, CrashOrder, GetOrder, MarkReady, MerchantAccept, MerchantReject,
    OrderActor, OrderFeed, SubscribeOrder,
};
use super::region::{CrashRegion, IndexSize};
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

/// The dispatch engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    services: Arc<Services>,
    recovered: Arc<AtomicBool>,
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
        let services = Services::new(config, hooks, store, snapshots, arbiters);
        for id in services.region_ids() {
            services.start_region(id);
        }
        Engine {
            services,
            recovered: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Rebuilds every open order from its snapshot and journal and restarts its actor: offers
    /// that were open are issued again with their remaining time, searches resume, assigned
    /// drivers get their order back when they reconnect. Returns how many orders came back.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let started = Instant::now();
        // Read everything first, all regions at once, and only then start actors: restarted
        // orders wake their drivers' actors, whose own reads would otherwise compete with these.
        let loads = self.services.region_ids().into_iter().map(|region| {
            let store = self.services.store.clone();
            async move { store.open_orders(region.as_str()).await }
        });
        let regions = futures_util::future::try_join_all(loads).await?;
        let read = started.elapsed();
        let mut recovered = 0;
        for orders in regions {
            recovered += orders.len();
            for order in orders {
                let services = self.services.clone();
                self.services.orders.get_or_start(order.id, move || {
                    OrderActor::start_recovered(order, services)
                });
            }
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

    /// Hands a checked-out order to dispatch: journals it as `placed`, starts its actor and puts
    /// it on the merchant's board. Placing the same order id again returns the order as it is.
    pub async fn place_order(&self, new: NewOrder) -> Result<OrderView, EngineError> {
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
        if self.services.orders.get(&id).is_some() {
            return self.order(id).await;
        }
        let (order, entry) = Order::place(new, region.id().to_string(), crate::store::now());
        match self.services.store.create_order(&order, &entry).await {
            Ok(()) => {
                if let Some(events) = &self.services.hooks.order_events {
                    events.publish(&order, std::slice::from_ref(&entry));
                }
            }
            Err(StoreError::Duplicate(_)) => return self.order(id).await,
            Err(error) => return Err(EngineError::Store(error)),
        }
        let view = order.view();
        let merchant_id = order.merchant_id;
        let services = self.services.clone();
        self.services
            .orders
            .get_or_start(id, move || OrderActor::start(order, services));
        let services = self.services.clone();
        self.services
            .merchants
            .get_or_start(merchant_id, || MerchantActor::start(merchant_id, services))
            .do_send(BoardUpdate {
                version: 1,
                view: view.clone(),
            });
        metrics::counter!("orders_placed_total").increment(1);
        Ok(view)
    }

    /// Sends `message` to the order's actor, waiting out a restart in progress.
    async fn call_order<M>(&self, id: OrderId, message: M) -> Result<OrderView, EngineError>
    where
        M: Message<Result = Result<OrderView, EngineError>> + Clone + Send + 'static,
        OrderActor: Handler<M>,
    {
        self.ensure_ready()?;
        for _ in 0..RESTART_WAIT_ATTEMPTS {
            if let Some(addr) = self.services.orders.get(&id)
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
        if self.services.supervision.is_failed(&Entity::Order(id)) {
            return Err(EngineError::Failed(format!("order {id}")));
        }
        if self.services.orders.get(&id).is_some() {
            return Ok(());
        }
        match self.services.store.load_order(id).await? {
            None => Err(EngineError::OrderNotFound),
            Some(order) if !order.is_open() => Err(EngineError::OrderClosed(order.status())),
            Some(_) => Ok(()),
        }
    }

    /// The merchant accepts with a preparation time; dispatch starts looking for a driver.
    pub async fn merchant_accept(
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

    /// The merchant rejects the order.
    pub async fn merchant_reject(
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

    /// The merchant marks the order ready for pickup.
    pub async fn merchant_ready(
        &self,
        merchant_id: MerchantId,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        self.call_order(order_id, MarkReady { merchant_id }).await
    }

    /// Cancels the order (the customer before acceptance; an admin before pickup).
    pub async fn cancel_order(
        &self,
        order_id: OrderId,
        by: Canceller,
        reason: String,
    ) -> Result<OrderView, EngineError> {
        self.call_order(order_id, CancelOrder { by, reason }).await
    }

    fn driver(&self, id: UserId) -> Addr<DriverActor> {
        let services = self.services.clone();
        self.services
            .drivers
            .get_or_start(id, move || DriverActor::start(id, services))
    }

    /// Sends `message` to the driver's actor (starting it if needed), waiting out a restart.
    async fn call_driver<M>(&self, id: UserId, message: M) -> Result<M::Result, EngineError>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        DriverActor: Handler<M>,
    {
        self.ensure_ready()?;
        for _ in 0..RESTART_WAIT_ATTEMPTS {
            if self.services.supervision.is_failed(&Entity::Driver(id)) {
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

    /// A driver's GPS fix. Coordinates must be valid; a fix older than the last is refused.
    pub async fn driver_location(
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

    /// A driver's GPS fix, without waiting for the driver's actor: the hot path of the driver
    /// app's socket. The coordinates are checked here; a stale fix is dropped (and counted) by
    /// the actor. Ordering with the driver's other messages is kept (one mailbox).
    pub fn driver_location_nowait(
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

    /// The driver goes on or off duty. Matchable once on duty with a location.
    pub async fn driver_availability(
        &self,
        driver: UserId,
        available: bool,
    ) -> Result<DriverStatus, EngineError> {
        self.call_driver(driver, SetAvailability { available })
            .await
    }

    /// The driver's app is gone (after its grace period): out of the indexes.
    pub async fn driver_offline(&self, driver: UserId) -> Result<(), EngineError> {
        self.call_driver(driver, GoOffline).await
    }

    /// A socket of the driver closed: it goes offline after the grace period unless it
    /// reconnects.
    pub fn driver_disconnected(&self, driver: UserId) {
        if let Some(addr) = self.services.drivers.get(&driver) {
            addr.do_send(SessionClosed);
        }
    }

    /// The driver accepts its open offer: the order is assigned to it.
    pub async fn accept_offer(
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

    /// The driver declines its open offer: the order goes to the next candidate.
    pub async fn decline_offer(&self, driver: UserId, offer_id: Uuid) -> Result<(), EngineError> {
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

    /// The driver collected its active order.
    pub async fn picked_up(
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

    /// The driver delivered its active order.
    pub async fn delivered(
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

    /// A driver's state, as the engine sees it.
    pub async fn driver_status(&self, driver: UserId) -> Result<DriverStatus, EngineError> {
        self.call_driver(driver, GetDriverStatus).await
    }

    /// The driver's feed (offers, assignment, order updates), its state, and its active order.
    pub async fn subscribe_driver(
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
        if let Some(addr) = self.services.orders.get(&id)
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

    /// The order now and a feed of its changes (and of its driver's location). For a closed
    /// order the feed ends at once.
    pub async fn subscribe_order(
        &self,
        id: OrderId,
    ) -> Result<(OrderView, mpsc::Receiver<OrderFeed>), EngineError> {
        self.ensure_ready()?;
        for _ in 0..RESTART_WAIT_ATTEMPTS {
            if let Some(addr) = self.services.orders.get(&id)
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

    /// The merchant's board (every open order) and a feed of changes to it.
    pub async fn subscribe_board(
        &self,
        merchant_id: MerchantId,
    ) -> Result<(Vec<OrderView>, mpsc::Receiver<OrderView>), EngineError> {
        self.ensure_ready()?;
        for _ in 0..RESTART_WAIT_ATTEMPTS {
            if self
                .services
                .supervision
                .is_failed(&Entity::Merchant(merchant_id))
            {
                return Err(EngineError::Failed(format!("merchant {merchant_id}")));
            }
            let services = self.services.clone();
            let addr = self
                .services
                .merchants
                .get_or_start(merchant_id, || MerchantActor::start(merchant_id, services));
            if let Ok(subscription) = addr.send(SubscribeBoard).await {
                return Ok(subscription);
            }
            tokio::time::sleep(Duration::from_millis(RESTART_WAIT_MS)).await;
        }
        Err(EngineError::Unavailable(format!(
            "merchant {merchant_id} is restarting"
        )))
    }

    /// Drivers in a region's index now.
    pub async fn indexed_drivers(&self, region: &RegionId) -> Result<usize, EngineError> {
        let addr = self
            .services
            .region(region)
            .ok_or_else(|| EngineError::Unavailable(format!("region {region} is restarting")))?;
        addr.send(IndexSize)
            .await
            .map_err(|_| EngineError::Unavailable(format!("region {region} is restarting")))
    }

    /// Actors that crash-looped and were left down, for an admin to look at.
    pub fn failed_actors(&self) -> Vec<FailedActor> {
        self.services.supervision.failed()
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
                if let Some(addr) = self.services.orders.get(id) {
                    addr.do_send(CrashOrder);
                }
            }
            Entity::Driver(id) => self.driver(*id).do_send(CrashDriver),
            Entity::Merchant(id) => {
                if let Some(addr) = self.services.merchants.get(id) {
                    addr.do_send(CrashMerchant);
                }
            }
            Entity::Region(id) => {
                if let Some(addr) = self.services.region(id) {
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
        self.services.stop_all();
        self.services.snapshots.flush().await;
    }
}
