//! Commands from a driver's app, or about a driver: fixes, duty, offers, progress, status; and
//! the region's index size. A fix and a closed socket also travel best-effort (cast).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::actors::command::{Command, Op, command};
use crate::actors::engine::Engine;
use crate::actors::error::EngineError;
use crate::actors::protocol::{self as driver, DriverStatus, IndexSize, Progress};
use crate::actors::router::RouteKey;
use crate::actors::routes::remember;
use crate::actors::target::Target;
use crate::actors::wire;
use crate::domain::{OrderId, OrderView, UserId};
use crate::geo::{LatLon, RegionId};

/// This subject's rows of the op table.
pub const OPS: &[Op] = &[
    command::<DriverLocation>(),
    command::<DriverAvailability>(),
    command::<DriverOffline>(),
    command::<DriverDisconnected>(),
    command::<AnswerOffer>(),
    command::<PickedUp>(),
    command::<Delivered>(),
    command::<ReadDriverStatus>(),
    command::<IndexedDrivers>(),
];

/// A driver's GPS fix. Coordinates must be valid; a fix older than the last is refused.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriverLocation {
    pub driver: UserId,
    pub lat: f64,
    pub lon: f64,
    /// The app's timestamp (Unix ms).
    pub ts_ms: Option<i64>,
}

impl Command for DriverLocation {
    const OP: &'static str = "driver_location";
    const CHANGES_STATE: bool = true;
    type Output = ();

    fn route(&self, engine: &Engine) -> Result<RouteKey, EngineError> {
        engine.note_driver_fix(self.driver, LatLon::new(self.lat, self.lon)?);
        Ok(RouteKey::Driver(self.driver))
    }

    async fn run(self, engine: &Engine) -> Result<(), EngineError> {
        let location = LatLon::new(self.lat, self.lon)?;
        let message = driver::UpdateLocation {
            location,
            ts_ms: self.ts_ms,
        };
        engine.call_driver(self.driver, message).await?
    }

    /// Only to a driver actor running here, never starting one (the driver may have moved on).
    fn run_cast(self, engine: &Engine) -> bool {
        engine.registry.drivers.get(&self.driver).is_some() && self.send_nowait(engine).is_ok()
    }
}

impl DriverLocation {
    /// Hands the fix to the driver's actor here without waiting for it.
    fn send_nowait(self, engine: &Engine) -> Result<(), EngineError> {
        engine.ensure_ready()?;
        let location = LatLon::new(self.lat, self.lon)?;
        engine.driver(self.driver).do_send(driver::UpdateLocation {
            location,
            ts_ms: self.ts_ms,
        });
        Ok(())
    }
}

impl Engine {
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

    /// A driver's GPS fix, without waiting for the driver's actor: the hot path of the driver
    /// app's socket. The coordinates are checked here; a stale fix is dropped (and counted) by
    /// the actor. Ordering with the driver's other messages is kept (one mailbox). A driver
    /// served by another replica gets it best-effort.
    pub fn driver_location_nowait(&self, fix: DriverLocation) -> Result<(), EngineError> {
        self.ensure_ready()?;
        let location = LatLon::new(fix.lat, fix.lon)?;
        let driver = fix.driver;
        self.note_driver_fix(driver, location);
        let Some(router) = self.router() else {
            return fix.send_nowait(self);
        };
        match self.driver_bound(router, driver) {
            Some(Target::Here) => fix.send_nowait(self),
            Some(Target::Replica(node)) => {
                router.cast(&node, wire::encode_call(DriverLocation::OP, &fix)?);
                Ok(())
            }
            None | Some(Target::Unowned) => {
                // Not served anywhere known yet: find where (it may take the store), one fix
                // at a time; of the fixes that come meanwhile the newest goes next.
                {
                    let mut resolving = self
                        .routes
                        .drivers_resolving
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if let Some(next) = resolving.get_mut(&driver) {
                        if next.replace((fix.lat, fix.lon, fix.ts_ms)).is_some() {
                            metrics::counter!("route_casts_dropped_total", "reason" => "superseded")
                                .increment(1);
                        }
                        return Ok(());
                    }
                    resolving.insert(driver, None);
                }
                let engine = self.clone();
                actix_web::rt::spawn(async move {
                    let mut next = Some((fix.lat, fix.lon, fix.ts_ms));
                    while let Some((lat, lon, ts_ms)) = next {
                        let fix = DriverLocation {
                            driver,
                            lat,
                            lon,
                            ts_ms,
                        };
                        if let Err(error) = engine.execute(fix).await {
                            tracing::debug!(%driver, error = %error, "driver fix not delivered");
                        }
                        let mut resolving = engine
                            .routes
                            .drivers_resolving
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        next = resolving.get_mut(&driver).and_then(Option::take);
                        if next.is_none() {
                            resolving.remove(&driver);
                        }
                    }
                });
                Ok(())
            }
        }
    }

    /// A socket of the driver closed: it goes offline after the grace period unless it
    /// reconnects.
    pub fn driver_disconnected(&self, driver: UserId) {
        let closed = DriverDisconnected { driver };
        if let Some(router) = self.router()
            && let Some(Target::Replica(node)) = self.driver_bound(router, driver)
            && let Ok(call) = wire::encode_call(DriverDisconnected::OP, &closed)
        {
            router.cast(&node, call);
            return;
        }
        closed.run_cast(self);
    }
}

/// The driver goes on or off duty. Matchable once on duty with a location.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriverAvailability {
    pub driver: UserId,
    pub available: bool,
}

impl Command for DriverAvailability {
    const OP: &'static str = "driver_availability";
    const CHANGES_STATE: bool = true;
    type Output = DriverStatus;

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Driver(self.driver))
    }

    async fn run(self, engine: &Engine) -> Result<DriverStatus, EngineError> {
        let message = driver::SetAvailability {
            available: self.available,
        };
        engine.call_driver(self.driver, message).await
    }
}

/// The driver's app is gone (after its grace period): out of the indexes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriverOffline {
    pub driver: UserId,
}

impl Command for DriverOffline {
    const OP: &'static str = "driver_offline";
    const CHANGES_STATE: bool = true;
    type Output = ();

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Driver(self.driver))
    }

    async fn run(self, engine: &Engine) -> Result<(), EngineError> {
        engine.call_driver(self.driver, driver::GoOffline).await
    }
}

/// A socket of the driver closed (see [`Engine::driver_disconnected`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriverDisconnected {
    pub driver: UserId,
}

impl Command for DriverDisconnected {
    const OP: &'static str = "driver_disconnected";
    const CHANGES_STATE: bool = true;
    type Output = ();

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Driver(self.driver))
    }

    async fn run(self, engine: &Engine) -> Result<(), EngineError> {
        self.run_cast(engine);
        Ok(())
    }

    fn run_cast(self, engine: &Engine) -> bool {
        if let Some(addr) = engine.registry.drivers.get(&self.driver) {
            addr.do_send(driver::SessionClosed);
        }
        true
    }
}

/// The driver answers its open offer: accepted, the order is assigned to it (and answered);
/// declined, the order goes to the next candidate (answered with nothing).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnswerOffer {
    pub driver: UserId,
    pub offer_id: Uuid,
    pub accept: bool,
}

impl Command for AnswerOffer {
    const OP: &'static str = "answer_offer";
    const CHANGES_STATE: bool = true;
    type Output = Option<OrderView>;

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Driver(self.driver))
    }

    async fn run(self, engine: &Engine) -> Result<Option<OrderView>, EngineError> {
        let message = driver::AnswerOffer {
            offer_id: self.offer_id,
            accept: self.accept,
        };
        let answered = engine.call_driver(self.driver, message).await??;
        match self.accept {
            true => answered.ok_or(EngineError::OfferNotFound).map(Some),
            false => Ok(None),
        }
    }
}

/// Reports a step of the driver's active order to its actor.
async fn report(
    engine: &Engine,
    who: UserId,
    order_id: OrderId,
    step: Progress,
) -> Result<OrderView, EngineError> {
    let message = driver::ReportProgress { order_id, step };
    engine.call_driver(who, message).await?
}

/// The driver collected its active order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PickedUp {
    pub driver: UserId,
    pub order_id: OrderId,
}

impl Command for PickedUp {
    const OP: &'static str = "picked_up";
    const CHANGES_STATE: bool = true;
    type Output = OrderView;

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Driver(self.driver))
    }

    async fn run(self, engine: &Engine) -> Result<OrderView, EngineError> {
        report(engine, self.driver, self.order_id, Progress::PickedUp).await
    }
}

/// The driver delivered its active order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivered {
    pub driver: UserId,
    pub order_id: OrderId,
}

impl Command for Delivered {
    const OP: &'static str = "delivered";
    const CHANGES_STATE: bool = true;
    type Output = OrderView;

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Driver(self.driver))
    }

    async fn run(self, engine: &Engine) -> Result<OrderView, EngineError> {
        report(engine, self.driver, self.order_id, Progress::Delivered).await
    }
}

/// A driver's state, as the engine sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadDriverStatus {
    pub driver: UserId,
}

impl Command for ReadDriverStatus {
    const OP: &'static str = "driver_status";
    const CHANGES_STATE: bool = false;
    type Output = DriverStatus;

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Driver(self.driver))
    }

    async fn run(self, engine: &Engine) -> Result<DriverStatus, EngineError> {
        engine
            .call_driver(self.driver, driver::GetDriverStatus)
            .await
    }
}

/// Drivers in a region's index now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexedDrivers {
    pub region: RegionId,
}

impl Command for IndexedDrivers {
    const OP: &'static str = "indexed_drivers";
    const CHANGES_STATE: bool = false;
    type Output = usize;

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Region(self.region.clone()))
    }

    async fn run(self, engine: &Engine) -> Result<usize, EngineError> {
        let region = self.region;
        let restarting = || EngineError::Unavailable(format!("region {region} is restarting"));
        let addr = engine.registry.region(&region).ok_or_else(restarting)?;
        addr.send(IndexSize).await.map_err(|_| restarting())
    }
}
