//! The driver actor: one per connected or recently active driver. It holds the driver's
//! location, availability, its one open offer and its one active order, keeps the driver in the
//! indexes of the regions whose band covers it while it is matchable, and decides which of two
//! simultaneous offers wins (the first it reserves).
//!
//! Two files: this one holds the driver's state and what keeps it true (the indexes, the
//! snapshot, the offer's timer); [`handlers`] holds how each message changes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::EngineError;
use super::feed::Feed;
use super::mailbox::SelfMessages;
use super::protocol::{
    DriverAddr, DriverFeed, DriverStatus, OfferView, OrderAddr, RemoveDriver, UpsertDriver,
    WithdrawOffer,
};
use super::registry::Registry;
use super::services::Services;
use super::supervision::{ChildGuard, Entity};
use crate::domain::{OrderId, Position, UserId};
use crate::geo::{LatLon, RegionId};
use crate::store::{Snapshot, SnapshotKind};

/// How long to wait before reading a driver's active order again when the store could not be
/// read at start (a database outage).
const ACTIVE_ORDER_RETRY: Duration = Duration::from_millis(1_000);
/// Offers this driver saw expire, remembered so that a late accept is told `offer_expired`
/// rather than "no such offer".
const REMEMBERED_EXPIRED_OFFERS: usize = 8;
/// A driver's location and availability are snapshotted at most this often; locations are not
/// journaled (they are worthless minutes later), only kept for a restart.
const DRIVER_SNAPSHOT_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// What is snapshotted of a driver.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DriverSnapshot {
    location: Option<Position>,
    available: bool,
    last_fix_ms: Option<i64>,
}

struct HeldOffer {
    view: OfferView,
    published: bool,
    timer: Option<SpawnHandle>,
}

pub struct DriverActor {
    id: UserId,
    services: Arc<Services>,
    /// The orders it answers and reports to, and the regions whose indexes hold it.
    registry: Arc<Registry>,
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
    pub fn start(id: UserId, registry: Arc<Registry>) -> DriverAddr {
        let home = registry.home_of(&id);
        let arbiter = registry.arbiter(&home);
        DriverActor::start_in_arbiter(&arbiter, move |_| DriverActor {
            guard: registry.guard(Entity::Driver(id), home),
            id,
            services: registry.services().clone(),
            registry,
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
        .into()
    }

    /// The active order could not be read at start (a database outage): read it again in a
    /// while, and until it succeeds, so that a driver restarted during an outage gets its order
    /// back (and is not offered another meanwhile once it is known).
    fn reload_active_order_later(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(ACTIVE_ORDER_RETRY, |act, ctx| {
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
        self.registry.is_sharing()
            && self.offer.is_none()
            && self.active_order.is_none()
            && self.location.is_some_and(|location| {
                self.services
                    .config
                    .regions
                    .locate(location)
                    .is_some_and(|region| !self.registry.is_active(region.id()))
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
                && let Some(addr) = self.registry.region(region)
            {
                addr.do_send(RemoveDriver { driver_id: self.id });
            }
        }
        if let Some(location) = self.location {
            for region in &wanted {
                if let Some(addr) = self.registry.region(region) {
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
        let due = self
            .last_snapshot
            .is_none_or(|at| at.elapsed() >= DRIVER_SNAPSHOT_MIN_INTERVAL);
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
        self.feed.publish(&DriverFeed::Offer(Box::new(view)));
    }

    fn order_addr(&self, order_id: &OrderId) -> Result<OrderAddr, EngineError> {
        self.registry
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
        self.registry
            .drivers
            .remove_if(&self.id, &ctx.address().into());
        self.guard.disarm();
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

mod handlers;
