//! The driver actor: one per connected or recently active driver. It holds the driver's
//! location, availability, its one open offer and its one active order, keeps the driver in the
//! indexes of the regions whose band covers it while it is matchable, and decides which of two
//! simultaneous offers wins (the first it reserves).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::EngineError;
use super::feed::Feed;
use super::mailbox::SelfMessages;
use super::order::{self, OrderActor};
use super::region::{RemoveDriver, UpsertDriver};
use super::services::Services;
use super::supervision::{ChildGuard, Entity};
use crate::domain::{OrderId, OrderView, Position, UserId};
use crate::geo::{LatLon, RegionId};
use crate::store::{Snapshot, SnapshotKind};

/// Offers this driver saw expire, remembered so that a late accept is told `offer_expired`
/// rather than "no such offer".
/// How long to wait before reading a driver's active order again when the store could not be
/// read at start (a database outage).
const ACTIVE_ORDER_RETRY_MS: u64 = 1_000;
const REMEMBERED_EXPIRED_OFFERS: usize = 8;
/// A driver's location and availability are snapshotted at most this often; locations are not
/// journaled (they are worthless minutes later), only kept for a restart.
const DRIVER_SNAPSHOT_MIN_INTERVAL_SECS: u64 = 5;

/// An offer as the driver sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferView {
    pub offer_id: Uuid,
    pub order_id: OrderId,
    pub pickup: Position,
    pub dropoff: Position,
    pub expires_at: DateTime<Utc>,
}

/// What a driver's feed carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DriverFeed {
    /// A new offer to answer before `expires_at`.
    Offer(OfferView),
    /// The offer lapsed (timeout, or the order went away).
    OfferExpired { offer_id: Uuid },
    /// The driver accepted and the order is theirs.
    Assigned(OrderView),
    /// The active order changed.
    OrderUpdate(OrderView),
}

/// A driver's state as the engine reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriverStatus {
    pub driver_id: UserId,
    pub online: bool,
    pub available: bool,
    pub location: Option<Position>,
    pub offer: Option<OfferView>,
    pub active_order_id: Option<OrderId>,
}

/// What is snapshotted of a driver.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DriverSnapshot {
    location: Option<Position>,
    available: bool,
    last_fix_ms: Option<i64>,
}

/// A GPS fix. A fix older than the last accepted one is refused ([`EngineError::StaleLocation`]).
#[derive(Clone, Message)]
#[rtype(result = "Result<(), EngineError>")]
pub struct UpdateLocation {
    pub location: LatLon,
    /// When the fix was taken, unix milliseconds, if the app says.
    pub ts_ms: Option<i64>,
}

/// The driver goes on or off duty.
#[derive(Clone, Message)]
#[rtype(result = "DriverStatus")]
pub struct SetAvailability {
    pub available: bool,
}

/// The driver's app disconnected for good (after the grace period): out of the indexes until
/// it comes back. An active order stays assigned.
#[derive(Clone, Message)]
#[rtype(result = "()")]
pub struct GoOffline;

/// One of the driver's sockets closed. Unless a socket is open again when the grace period
/// ends, the driver goes offline (out of the indexes); an active order stays assigned.
#[derive(Clone, Message)]
#[rtype(result = "()")]
pub struct SessionClosed;

/// A feed of the driver's offers and order updates, with the current state; marks the driver
/// online.
#[derive(Clone, Message)]
#[rtype(result = "(DriverStatus, mpsc::Receiver<DriverFeed>)")]
pub struct SubscribeDriver;

/// The current state.
#[derive(Clone, Message)]
#[rtype(result = "DriverStatus")]
pub struct GetDriverStatus;

/// An order asks to hold an offer for this driver. `true` when the driver was free and is now
/// reserved for it; nothing reaches the driver until [`PublishOffer`] (after the journal).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct ReserveOffer {
    pub offer: OfferView,
}

/// The offer is journaled: show it to the driver.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishOffer {
    pub offer_id: Uuid,
}

/// The order no longer offers this (reservation not journaled, expired, or order gone).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WithdrawOffer {
    pub offer_id: Uuid,
    /// Tell the driver's app (`offer_expired`); false when it never saw the offer.
    pub notify: bool,
}

/// The driver answers the open offer. Accepting returns the assigned order.
#[derive(Clone, Message)]
#[rtype(result = "Result<Option<OrderView>, EngineError>")]
pub struct AnswerOffer {
    pub offer_id: Uuid,
    pub accept: bool,
}

/// A step of the delivery the driver reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    PickedUp,
    Delivered,
}

impl Progress {
    /// Whether an order in `status` has already gone through this step.
    fn done_in(self, status: crate::domain::OrderStatus) -> bool {
        use crate::domain::OrderStatus;
        match self {
            Progress::PickedUp => matches!(status, OrderStatus::PickedUp | OrderStatus::Delivered),
            Progress::Delivered => status == OrderStatus::Delivered,
        }
    }
}

/// The driver reports picking up or delivering its active order.
#[derive(Clone, Message)]
#[rtype(result = "Result<OrderView, EngineError>")]
pub struct ReportProgress {
    pub order_id: OrderId,
    pub step: Progress,
}

/// The order the driver is assigned to (or offered) changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct OrderChanged {
    pub view: OrderView,
}

/// Sent by a recovering order: this driver is assigned to it, or holds its open offer.
#[derive(Message)]
#[rtype(result = "()")]
pub enum RestoreWork {
    Assigned(OrderId),
    Offer(OfferView),
}

/// A restarted region rebuilds its index: tell it where you are, if matchable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reannounce;

/// Test hook: the actor panics on receipt (fault injection must be enabled).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashDriver;

struct HeldOffer {
    view: OfferView,
    published: bool,
    timer: Option<SpawnHandle>,
}

pub struct DriverActor {
    id: UserId,
    services: Arc<Services>,
    guard: ChildGuard,
    /// Online: the app is connected (or has spoken since the last restart).
    online: bool,
    available: bool,
    location: Option<LatLon>,
    last_fix_ms: Option<i64>,
    /// Handing the driver to another replica: the last snapshot is being written.
    stepping_aside: bool,
    offer: Option<HeldOffer>,
    active_order: Option<OrderId>,
    /// Regions whose index holds this driver now.
    indexed_in: Vec<RegionId>,
    feed: Feed<DriverFeed>,
    last_snapshot: Option<Instant>,
    expired_offers: std::collections::VecDeque<Uuid>,
}

impl DriverActor {
    /// Starts the actor on the driver's home event loop. It loads its snapshot (last location
    /// and availability) and active order before handling anything, and comes up offline.
    pub fn start(id: UserId, services: Arc<Services>) -> Addr<DriverActor> {
        let home = services.home_of(&id);
        let arbiter = services.arbiter(&home);
        DriverActor::start_in_arbiter(&arbiter, move |_| DriverActor {
            guard: ChildGuard::new(Entity::Driver(id), home, services.clone()),
            id,
            services,
            online: false,
            available: false,
            location: None,
            last_fix_ms: None,
            stepping_aside: false,
            offer: None,
            active_order: None,
            indexed_in: Vec::new(),
            feed: Feed::new("driver"),
            last_snapshot: None,
            expired_offers: std::collections::VecDeque::new(),
        })
    }

    /// The active order could not be read at start (a database outage): read it again in a
    /// while, and until it succeeds, so that a driver restarted during an outage gets its order
    /// back (and is not offered another meanwhile once it is known).
    fn reload_active_order_later(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(Duration::from_millis(ACTIVE_ORDER_RETRY_MS), |act, ctx| {
            let store = act.services.store.clone();
            let id = act.id;
            ctx.spawn(
                async move { store.active_order_of_driver(id).await }
                    .into_actor(act)
                    .map(|active, act, ctx| match active {
                        Ok(active) => {
                            act.active_order = act.active_order.or(active);
                            act.reindex();
                        }
                        Err(_) => act.reload_active_order_later(ctx),
                    }),
            );
        });
    }

    /// Free for a new offer: online, on duty, located, and without an offer or an order.
    fn matchable(&self) -> bool {
        self.online
            && self.available
            && self.location.is_some()
            && self.offer.is_none()
            && self.active_order.is_none()
    }

    /// Stops so that another replica serves the driver: the snapshot is written first (the
    /// next actor starts from it), then the actor stops, which ends its feeds.
    fn step_aside(&mut self, ctx: &mut Context<Self>) {
        if self.stepping_aside {
            return;
        }
        self.stepping_aside = true;
        self.online = false;
        self.reindex();
        self.snapshot(true);
        let snapshots = self.services.snapshots.clone();
        ctx.wait(
            async move { snapshots.flush().await }
                .into_actor(self)
                .map(|(), act, ctx| {
                    act.guard.disarm();
                    ctx.stop();
                }),
        );
    }

    /// Whether the driver, free of work, is in a region this replica does not hold while
    /// regions are shared.
    fn left_our_regions(&self) -> bool {
        self.services.is_sharing()
            && self.offer.is_none()
            && self.active_order.is_none()
            && self.location.is_some_and(|location| {
                self.services
                    .config
                    .regions
                    .locate(location)
                    .is_some_and(|region| !self.services.is_active(region.id()))
            })
    }

    /// Puts the driver into (or takes it out of) the regions' indexes to match its state.
    fn reindex(&mut self) {
        let wanted: Vec<RegionId> = match (self.matchable(), self.location) {
            (true, Some(location)) => self
                .services
                .config
                .regions
                .covering(location, self.services.config.border_band_m)
                .map(|region| region.id().clone())
                .collect(),
            _ => Vec::new(),
        };
        for region in &self.indexed_in {
            if !wanted.contains(region)
                && let Some(addr) = self.services.region(region)
            {
                addr.do_send(RemoveDriver { driver_id: self.id });
            }
        }
        if let Some(location) = self.location {
            for region in &wanted {
                if let Some(addr) = self.services.region(region) {
                    addr.do_send(UpsertDriver {
                        driver_id: self.id,
                        location,
                    });
                }
            }
        }
        self.indexed_in = wanted;
    }

    fn status(&self) -> DriverStatus {
        DriverStatus {
            driver_id: self.id,
            online: self.online,
            available: self.available,
            location: self.location.map(|l| Position {
                lat: l.lat,
                lon: l.lon,
            }),
            offer: self.offer.as_ref().map(|held| held.view.clone()),
            active_order_id: self.active_order,
        }
    }

    fn snapshot(&mut self, force: bool) {
        let due = self.last_snapshot.is_none_or(|at| {
            at.elapsed() >= Duration::from_secs(DRIVER_SNAPSHOT_MIN_INTERVAL_SECS)
        });
        if !(force || due) {
            return;
        }
        self.last_snapshot = Some(Instant::now());
        let state = DriverSnapshot {
            location: self.location.map(|l| Position {
                lat: l.lat,
                lon: l.lon,
            }),
            available: self.available,
            last_fix_ms: self.last_fix_ms,
        };
        let version = Utc::now().timestamp_micros();
        if let Ok(snapshot) = Snapshot::of(SnapshotKind::Driver, self.id.as_uuid(), version, &state)
        {
            self.services.snapshots.send(snapshot);
        }
    }

    fn clear_offer(&mut self, ctx: &mut Context<Self>, offer_id: Uuid, notify: bool) -> bool {
        let Some(held) = self.offer.take_if(|held| held.view.offer_id == offer_id) else {
            return false;
        };
        if let Some(timer) = held.timer {
            ctx.cancel_future(timer);
        }
        if notify && held.published {
            self.feed.publish(&DriverFeed::OfferExpired { offer_id });
            if self.expired_offers.len() == REMEMBERED_EXPIRED_OFFERS {
                self.expired_offers.pop_front();
            }
            self.expired_offers.push_back(offer_id);
        }
        self.reindex();
        true
    }

    fn publish_offer(&mut self, ctx: &mut Context<Self>) {
        let Some(held) = self.offer.as_mut() else {
            return;
        };
        held.published = true;
        let view = held.view.clone();
        let offer_id = view.offer_id;
        // The driver's side of the deadline: after it, an accept is refused here without asking
        // the order (which expires the offer on its own clock as well).
        let remaining = (view.expires_at - Utc::now()).to_std().unwrap_or_default();
        // Through the mailbox, so that it never runs while an accept is being answered.
        held.timer = Some(ctx.enqueue_later(
            WithdrawOffer {
                offer_id,
                notify: true,
            },
            remaining,
        ));
        self.feed.publish(&DriverFeed::Offer(view));
    }

    fn order_addr(&self, order_id: &OrderId) -> Result<Addr<OrderActor>, EngineError> {
        self.services
            .orders
            .get(order_id)
            .ok_or_else(|| EngineError::Unavailable(format!("order {order_id} is restarting")))
    }
}

impl Actor for DriverActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.services.config.fault_injection
            && self.services.faults.take(&Entity::Driver(self.id))
        {
            panic!("injected fault: driver {} panics on start", self.id);
        }
        let store = self.services.store.clone();
        let id = self.id;
        // Nothing is handled until the persisted state is back.
        ctx.wait(
            async move {
                // Both at once: in a database outage each waits out the pool's acquire timeout,
                // and the driver's messages wait for them.
                tokio::join!(
                    store.snapshot_state::<DriverSnapshot>(SnapshotKind::Driver, id.as_uuid()),
                    store.active_order_of_driver(id)
                )
            }
            .into_actor(self)
            .map(|(snapshot, active), act, ctx| {
                match snapshot {
                    Ok(Some(snapshot)) => {
                        act.location = snapshot
                            .location
                            .and_then(|p| LatLon::new(p.lat, p.lon).ok());
                        act.available = snapshot.available;
                        act.last_fix_ms = snapshot.last_fix_ms;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(driver_id = %act.id, error = %error, "driver snapshot unreadable")
                    }
                }
                match active {
                    Ok(active) => act.active_order = act.active_order.or(active),
                    Err(error) => {
                        tracing::warn!(driver_id = %act.id, error = %error, "cannot load active order yet");
                        act.reload_active_order_later(ctx);
                    }
                }
            }),
        );
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        // Leave the indexes: a stopped driver must never be offered work.
        self.online = false;
        self.reindex();
        self.services.drivers.remove_if(&self.id, &ctx.address());
        self.guard.disarm();
    }
}

impl Handler<UpdateLocation> for DriverActor {
    type Result = Result<(), EngineError>;

    fn handle(&mut self, msg: UpdateLocation, ctx: &mut Self::Context) -> Self::Result {
        if let (Some(ts), Some(last)) = (msg.ts_ms, self.last_fix_ms)
            && ts < last
        {
            metrics::counter!("driver_locations_stale_total").increment(1);
            metrics::counter!("ws_messages_dropped_total", "kind" => "driver", "reason" => "stale_location")
                .increment(1);
            return Err(EngineError::StaleLocation);
        }
        if msg.ts_ms.is_some() {
            self.last_fix_ms = msg.ts_ms;
        }
        self.online = true;
        self.location = Some(msg.location);
        self.reindex();
        if let Some(order_id) = self.active_order
            && let Some(order) = self.services.orders.get(&order_id)
        {
            order.do_send(order::DriverMoved {
                driver_id: self.id,
                location: msg.location,
            });
        }
        if self.left_our_regions() {
            // Idle in a region another replica holds: its owner serves the driver from now on
            // (the session's feed ends, and it subscribes again there).
            self.step_aside(ctx);
            return Ok(());
        }
        self.snapshot(false);
        Ok(())
    }
}

impl Handler<super::services::Retire> for DriverActor {
    type Result = bool;

    /// Stops if the driver works in the region handed off (it is there, or its offer or order
    /// is), or its supervisor was that region.
    fn handle(&mut self, msg: super::services::Retire, ctx: &mut Self::Context) -> bool {
        let located_there = self.location.is_some_and(|location| {
            self.services
                .config
                .regions
                .locate(location)
                .is_some_and(|region| region.id() == &msg.region)
        });
        let retire = msg.all
            || located_there
            || self.guard.supervisor() == &msg.region
            || self.indexed_in.contains(&msg.region)
            || self.active_order.is_some_and(|id| msg.orders.contains(&id))
            || self
                .offer
                .as_ref()
                .is_some_and(|held| msg.orders.contains(&held.view.order_id));
        if retire {
            self.step_aside(ctx);
        }
        retire
    }
}

/// Where the driver was last seen, from its snapshot (for routing a driver not seen lately).
pub(super) async fn last_known_location(
    store: &crate::store::Store,
    driver: UserId,
) -> Option<LatLon> {
    let snapshot = store
        .snapshot_state::<DriverSnapshot>(SnapshotKind::Driver, driver.as_uuid())
        .await
        .ok()??;
    let position = snapshot.location?;
    LatLon::new(position.lat, position.lon).ok()
}

impl Handler<SetAvailability> for DriverActor {
    type Result = MessageResult<SetAvailability>;

    fn handle(&mut self, msg: SetAvailability, _: &mut Self::Context) -> Self::Result {
        self.online = true;
        self.available = msg.available;
        self.reindex();
        self.snapshot(true);
        MessageResult(self.status())
    }
}

impl Handler<GoOffline> for DriverActor {
    type Result = ();

    fn handle(&mut self, _: GoOffline, _: &mut Self::Context) {
        self.online = false;
        self.reindex();
    }
}

impl Handler<SessionClosed> for DriverActor {
    type Result = ();

    fn handle(&mut self, _: SessionClosed, ctx: &mut Self::Context) {
        ctx.run_later(self.services.config.driver_grace, |act, _| {
            if act.online && !act.feed.has_subscribers() {
                tracing::info!(driver_id = %act.id, "driver offline after the grace period");
                act.online = false;
                act.reindex();
            }
        });
    }
}

impl Handler<SubscribeDriver> for DriverActor {
    type Result = MessageResult<SubscribeDriver>;

    fn handle(&mut self, _: SubscribeDriver, _: &mut Self::Context) -> Self::Result {
        self.online = true;
        self.reindex();
        MessageResult((self.status(), self.feed.subscribe()))
    }
}

impl Handler<GetDriverStatus> for DriverActor {
    type Result = MessageResult<GetDriverStatus>;

    fn handle(&mut self, _: GetDriverStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<ReserveOffer> for DriverActor {
    type Result = bool;

    fn handle(&mut self, msg: ReserveOffer, _: &mut Self::Context) -> bool {
        if !self.matchable() {
            return false;
        }
        self.offer = Some(HeldOffer {
            view: msg.offer,
            published: false,
            timer: None,
        });
        self.reindex();
        true
    }
}

impl Handler<PublishOffer> for DriverActor {
    type Result = ();

    fn handle(&mut self, msg: PublishOffer, ctx: &mut Self::Context) {
        if self
            .offer
            .as_ref()
            .is_some_and(|held| held.view.offer_id == msg.offer_id)
        {
            self.publish_offer(ctx);
        }
    }
}

impl Handler<WithdrawOffer> for DriverActor {
    type Result = ();

    fn handle(&mut self, msg: WithdrawOffer, ctx: &mut Self::Context) {
        self.clear_offer(ctx, msg.offer_id, msg.notify);
    }
}

impl Handler<AnswerOffer> for DriverActor {
    type Result = AtomicResponse<Self, Result<Option<OrderView>, EngineError>>;

    fn handle(&mut self, msg: AnswerOffer, ctx: &mut Self::Context) -> Self::Result {
        let ready = |result| AtomicResponse::new(Box::pin(fut::ready(result)));
        let Some(held) = self
            .offer
            .as_ref()
            .filter(|held| held.view.offer_id == msg.offer_id && held.published)
        else {
            if self.expired_offers.contains(&msg.offer_id) {
                return ready(Err(EngineError::OfferExpired));
            }
            return ready(Err(EngineError::OfferNotFound));
        };
        let order_id = held.view.order_id;
        if Utc::now() >= held.view.expires_at {
            self.clear_offer(ctx, msg.offer_id, true);
            return ready(Err(EngineError::OfferExpired));
        }
        let order = match self.order_addr(&order_id) {
            Ok(order) => order,
            Err(error) => return ready(Err(error)),
        };
        if !msg.accept {
            self.clear_offer(ctx, msg.offer_id, false);
            order.do_send(order::DeclineOffer {
                offer_id: msg.offer_id,
                driver_id: self.id,
            });
            return ready(Ok(None));
        }
        let request = order.send(order::AcceptOffer {
            offer_id: msg.offer_id,
            driver_id: self.id,
        });
        AtomicResponse::new(Box::pin(request.into_actor(self).map(
            move |answer, act, ctx| match answer {
                Ok(Ok(view)) => {
                    act.clear_offer(ctx, msg.offer_id, false);
                    act.active_order = Some(view.id);
                    act.reindex();
                    act.feed.publish(&DriverFeed::Assigned(view.clone()));
                    Ok(Some(view))
                }
                Ok(Err(error)) => {
                    act.clear_offer(ctx, msg.offer_id, false);
                    Err(error)
                }
                // The order is restarting; it re-issues its open offer when it is back.
                Err(_) => Err(EngineError::Unavailable(format!(
                    "order {order_id} is restarting"
                ))),
            },
        )))
    }
}

impl Handler<ReportProgress> for DriverActor {
    type Result = AtomicResponse<Self, Result<OrderView, EngineError>>;

    fn handle(&mut self, msg: ReportProgress, ctx: &mut Self::Context) -> Self::Result {
        let ready = |result| AtomicResponse::new(Box::pin(fut::ready(result)));
        if self.active_order != Some(msg.order_id) {
            // A report sent again (its answer was lost, or the order's replica changed) after
            // it took effect is answered with the order as it is: reports are idempotent.
            let store = self.services.store.clone();
            let driver = self.id;
            return AtomicResponse::new(Box::pin(
                async move { store.load_order(msg.order_id).await }
                    .into_actor(self)
                    .map(move |loaded, act, _| match loaded? {
                        Some(order)
                            if order.driver_id == Some(driver)
                                && msg.step.done_in(order.status()) =>
                        {
                            Ok(order.view())
                        }
                        // The order is this driver's and open, but this actor lost track of
                        // it (restarted while the database could not be read): it takes the
                        // order back, and the report, sent again, goes through.
                        Some(order)
                            if order.driver_id == Some(driver)
                                && order.is_open()
                                && act.active_order.is_none() =>
                        {
                            tracing::info!(driver_id = %driver, order_id = %order.id, "driver actor took its active order back");
                            act.active_order = Some(order.id);
                            act.reindex();
                            Err(EngineError::Unavailable(format!(
                                "driver {driver} is restarting"
                            )))
                        }
                        _ => Err(EngineError::OrderNotFound),
                    }),
            ));
        }
        let order = match self.order_addr(&msg.order_id) {
            Ok(order) => order,
            Err(_) if self.services.is_sharing() => {
                // The order runs on another replica (its region moved while this actor was
                // away from it): this actor steps aside so the report is sent there.
                self.step_aside(ctx);
                return ready(Err(EngineError::NotOwner(format!(
                    "order {} (another replica serves it)",
                    msg.order_id
                ))));
            }
            Err(error) => return ready(Err(error)),
        };
        type Pending = std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = Result<Result<OrderView, EngineError>, MailboxError>,
                    >,
            >,
        >;
        let request: Pending = match msg.step {
            Progress::PickedUp => Box::pin(order.send(order::ConfirmPickup { driver_id: self.id })),
            Progress::Delivered => {
                Box::pin(order.send(order::ConfirmDelivery { driver_id: self.id }))
            }
        };
        // The order's own `OrderChanged` (queued behind this reply) updates the feed and,
        // after delivery, frees the driver.
        AtomicResponse::new(Box::pin(request.into_actor(self).map(
            move |answer, _, _| match answer {
                Ok(reply) => reply,
                Err(_) => Err(EngineError::Unavailable(format!(
                    "order {} is restarting",
                    msg.order_id
                ))),
            },
        )))
    }
}

impl Handler<OrderChanged> for DriverActor {
    type Result = ();

    fn handle(&mut self, msg: OrderChanged, ctx: &mut Self::Context) {
        let view = msg.view;
        if let Some(offer_id) = self
            .offer
            .as_ref()
            .filter(|held| held.view.order_id == view.id && view.status.is_final())
            .map(|held| held.view.offer_id)
        {
            self.clear_offer(ctx, offer_id, true);
            return;
        }
        if self.active_order != Some(view.id) {
            return;
        }
        let finished = view.status.is_final();
        self.feed.publish(&DriverFeed::OrderUpdate(view));
        if finished {
            self.active_order = None;
            self.reindex();
        }
    }
}

impl Handler<RestoreWork> for DriverActor {
    type Result = ();

    fn handle(&mut self, msg: RestoreWork, ctx: &mut Self::Context) {
        match msg {
            RestoreWork::Assigned(order_id) => {
                self.active_order = Some(order_id);
            }
            RestoreWork::Offer(view) => {
                if self.active_order.is_some() {
                    return;
                }
                if let Some(held) = self.offer.take()
                    && let Some(timer) = held.timer
                {
                    ctx.cancel_future(timer);
                }
                self.offer = Some(HeldOffer {
                    view,
                    published: false,
                    timer: None,
                });
                self.publish_offer(ctx);
            }
        }
        self.reindex();
    }
}

impl Handler<Reannounce> for DriverActor {
    type Result = ();

    fn handle(&mut self, _: Reannounce, _: &mut Self::Context) {
        self.indexed_in.clear();
        self.reindex();
    }
}

impl Handler<CrashDriver> for DriverActor {
    type Result = ();

    fn handle(&mut self, _: CrashDriver, _: &mut Self::Context) {
        if self.services.config.fault_injection {
            panic!("injected fault: driver {} panics", self.id);
        }
    }
}
