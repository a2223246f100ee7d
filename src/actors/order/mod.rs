//! The order actor: the single writer of one open order. Every change is decided against the
//! state machine, journaled, and only then applied and announced — to the order's subscribers,
//! the merchant's board and the driver. It also runs the order's dispatch: search the region's
//! index, reserve the best free driver, journal the offer, publish it, expire it, move on.
//!
//! Three files, because the actor is large and has two halves that change for different
//! reasons: this one holds its state and the write path every change takes (`commit`, then
//! `install`); [`offers`] holds dispatch — the search, the offer and its end (accepted,
//! declined, expired); [`handlers`] holds the other commands, each a check and a `commit`.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use chrono::Utc;
use uuid::Uuid;

use super::error::EngineError;
use super::feed::Feed;
use super::protocol::{
    BoardUpdate, OrderAddr, OrderChanged, OrderFeed, ReloadOrder, WithdrawOffer,
};
use super::registry::Registry;
use super::services::Services;
use super::supervision::{ChildGuard, Entity};
use crate::domain::{
    Change, DispatchStatus, JournalEntry, MerchantId, Order, OrderView, TransitionError,
};
use crate::geo::RegionId;
use crate::store::{Snapshot, SnapshotKind, StoreError};

/// Look for a driver now (self-sent).
#[derive(Message)]
#[rtype(result = "()")]
struct SearchTick;

/// The offer's deadline passed (self-sent).
#[derive(Message)]
#[rtype(result = "()")]
struct ExpireOffer {
    offer_id: Uuid,
}

pub struct OrderActor {
    order: Order,
    services: Arc<Services>,
    /// The drivers, merchant and region it offers to, updates and searches.
    registry: Arc<Registry>,
    guard: ChildGuard,
    feed: Feed<OrderFeed>,
    /// Started from the journal after a restart: re-issue offers, resume the search.
    recovered: bool,
    /// Current search radius; grows while nobody is found.
    radius_m: f64,
    /// Merchant acceptance, for the dispatch latency metric (until the first offer).
    accepted_at: Option<Instant>,
    offer_timer: Option<SpawnHandle>,
    search_timer: Option<SpawnHandle>,
    counted_searching: bool,
    counted_stale: bool,
    last_driver_location: Option<OrderFeed>,
    /// Everyone in reach has passed on this order: ask them again rather than wait forever.
    second_round: bool,
    /// Stopping because the journal is ahead of this actor: the supervisor rebuilds it.
    reload_on_stop: bool,
    /// The routed leg its driver is on, for road ETAs.
    legs: legs::Legs,
    /// A snapshot of the order as it will be then, taken one snapshot interval after the first
    /// change not yet in one (see [`OrderActor::snapshot_later`]).
    snapshot_timer: Option<SpawnHandle>,
}

type Reply = Result<OrderView, EngineError>;

fn done<T: 'static>(value: T) -> ResponseActFuture<OrderActor, T> {
    Box::pin(fut::ready(value))
}

impl OrderActor {
    /// Starts the actor of a freshly placed order on its region's event loop.
    pub fn start(order: Order, registry: Arc<Registry>) -> OrderAddr {
        Self::start_with(order, registry, false)
    }

    /// Starts the actor of an order rebuilt from the journal.
    pub fn start_recovered(order: Order, registry: Arc<Registry>) -> OrderAddr {
        Self::start_with(order, registry, true)
    }

    fn start_with(order: Order, registry: Arc<Registry>, recovered: bool) -> OrderAddr {
        let region = RegionId(order.region_id.clone());
        let arbiter = registry.arbiter(&region);
        OrderActor::start_in_arbiter(&arbiter, move |_| OrderActor {
            guard: registry.guard(Entity::Order(order.id), region),
            radius_m: registry.services().config.search_radius_m,
            order,
            services: registry.services().clone(),
            registry,
            feed: Feed::new("order"),
            recovered,
            accepted_at: None,
            offer_timer: None,
            search_timer: None,
            counted_searching: false,
            counted_stale: false,
            last_driver_location: None,
            second_round: false,
            reload_on_stop: false,
            legs: Default::default(),
            snapshot_timer: None,
        })
        .into()
    }

    fn region_label(&self) -> String {
        self.order.region_id.clone()
    }

    fn searching(&self) -> bool {
        self.order.state.status.is_dispatchable()
            && self.order.state.dispatch == DispatchStatus::Searching
    }

    /// Keeps the per-region gauges of searching (and stale searching) orders in step.
    fn sync_gauges(&mut self, stopping: bool) {
        let searching = self.searching() && !stopping;
        if searching != self.counted_searching {
            let gauge =
                metrics::gauge!("dispatch_searching_orders", "region" => self.region_label());
            if searching {
                gauge.increment(1.0);
            } else {
                gauge.decrement(1.0);
            }
            self.counted_searching = searching;
        }
        let stale = searching && self.search_age() > self.services.config.stale_search;
        if stale != self.counted_stale {
            let gauge =
                metrics::gauge!("dispatch_searching_stale_orders", "region" => self.region_label());
            if stale {
                tracing::warn!(order_id = %self.order.id, "order still searching for a driver");
                gauge.increment(1.0);
            } else {
                gauge.decrement(1.0);
            }
            self.counted_stale = stale;
        }
    }

    /// How long since dispatch first started searching for this order.
    fn search_age(&self) -> std::time::Duration {
        self.order
            .history
            .iter()
            .find(|h| h.dispatch_status == Some(DispatchStatus::Searching))
            .and_then(|h| (Utc::now() - h.at).to_std().ok())
            .unwrap_or_default()
    }

    /// Decides `changes` in order, journals them in one transaction, and only then applies and
    /// announces them. The actor handles nothing else meanwhile (callers wrap this in an
    /// `AtomicResponse`).
    fn commit(&mut self, changes: Vec<Change>) -> ResponseActFuture<Self, Reply> {
        let (next, entries) = match self.decide_all(changes) {
            Ok(decided) => decided,
            Err(error) => return done(Err(EngineError::Transition(error))),
        };
        let store = self.services.store.clone();
        Box::pin(
            async move { store.append(&next, &entries).await.map(|()| (next, entries)) }
                .into_actor(self)
                .map(|written, act, ctx| match written {
                    Ok((next, entries)) => {
                        if let Some(events) = &act.services.hooks.order_events {
                            events.publish(&next, &entries);
                        }
                        act.install(next, ctx);
                        Ok(act.order.view())
                    }
                    // The journal moved on without this actor: a write whose answer was lost (the
                    // connection dropped in an outage) committed after all. Its state is stale;
                    // the region's supervisor rebuilds it from the journal, and the caller
                    // retries against that.
                    Err(StoreError::Conflict(why)) => {
                        tracing::warn!(order_id = %act.order.id, reason = %why, "the journal is ahead of this order's actor; reloading it");
                        act.reload_on_stop = true;
                        ctx.stop();
                        Err(EngineError::Unavailable(format!(
                            "order {} is restarting",
                            act.order.id
                        )))
                    }
                    Err(error) => {
                        tracing::warn!(order_id = %act.order.id, error = %error, "journal write failed");
                        Err(EngineError::Store(error))
                    }
                }),
        )
    }

    /// Adopts a journaled state and tells everyone who needs to know.
    fn install(&mut self, next: Order, ctx: &mut Context<Self>) {
        let previous_offer = self.order.offer;
        self.order = next;
        if self.order.offer.is_none()
            && let Some(timer) = self.offer_timer.take()
        {
            ctx.cancel_future(timer);
        }
        self.legs_after_change();
        let view = self.order.view();
        self.feed
            .publish(&OrderFeed::Update(Box::new(view.clone())));
        self.announce(&view, true);
        if let Some(offer) = previous_offer
            && self.order.offer.is_none()
            && !self.order.state.status.is_dispatchable()
            && let Some(driver) = self.registry.drivers.get(&offer.driver_id)
        {
            driver.do_send(WithdrawOffer {
                offer_id: offer.offer_id,
                notify: true,
            });
        }
        self.snapshot_later(ctx);
        self.sync_gauges(false);
        if !self.order.is_open() {
            if let Some(closed) = &self.services.hooks.order_closed {
                closed.notify_one();
            }
            ctx.stop();
        }
    }

    /// Snapshots only speed up recovery, which rebuilds open orders (the journal holds every
    /// fact), so an open order is snapshotted once a snapshot interval at most: the interval
    /// after its first change not yet in a snapshot, as it is then — not once a transition (an
    /// order makes eight or more, most within a minute). A closed order is never rebuilt: its
    /// pending snapshot is dropped, unwritten if the writer still holds it.
    fn snapshot_later(&mut self, ctx: &mut Context<Self>) {
        if !self.order.is_open() {
            // The actor stops now; a timer still due finds the order closed and does nothing.
            self.services
                .snapshots
                .forget(SnapshotKind::Order, self.order.id.as_uuid());
            return;
        }
        if self.snapshot_timer.is_some() {
            return;
        }
        let interval = self.services.config.snapshot_interval;
        self.snapshot_timer = Some(ctx.run_later(interval, |act, _| {
            act.snapshot_timer = None;
            if !act.order.is_open() {
                return;
            }
            if let Ok(snapshot) = Snapshot::of(
                SnapshotKind::Order,
                act.order.id.as_uuid(),
                act.order.version,
                &act.order,
            ) {
                act.services.snapshots.send(snapshot);
            }
        }));
    }

    /// Tells the merchant's board (which keeps the newest version it saw) and the assigned
    /// driver the order as it is now. With `start_board` false a board that is not running is
    /// left alone: one started later reads its orders from the store.
    fn announce(&self, view: &OrderView, start_board: bool) {
        let merchant_id = self.order.merchant_id;
        let board = match start_board {
            true => Some(
                self.registry
                    .merchants
                    .get_or_start(merchant_id, || self.registry.start_merchant(merchant_id)),
            ),
            false => self.registry.merchants.get(&merchant_id),
        };
        if let Some(board) = board {
            board.do_send(BoardUpdate {
                version: self.order.version,
                view: view.clone(),
            });
        }
        if let Some(driver_id) = self.order.driver_id
            && let Some(driver) = self.registry.drivers.get(&driver_id)
        {
            driver.do_send(OrderChanged { view: view.clone() });
        }
    }

    /// Decides `changes` in order on a copy of the order: the order they would make and their
    /// journal entries, or the first refusal. Nothing changes here.
    fn decide_all(
        &self,
        changes: impl IntoIterator<Item = Change>,
    ) -> Result<(Order, Vec<JournalEntry>), TransitionError> {
        let now = crate::store::now();
        let mut next = self.order.clone();
        let entries = changes
            .into_iter()
            .map(|change| {
                let entry = next.decide(change, now)?;
                next.apply(&entry)?;
                Ok(entry)
            })
            .collect::<Result<Vec<_>, TransitionError>>()?;
        Ok((next, entries))
    }

    /// Whether `changes` would be accepted now, in order.
    fn accepts(&self, changes: &[Change]) -> bool {
        self.decide_all(changes.iter().cloned()).is_ok()
    }

    fn check_merchant(&self, merchant_id: MerchantId) -> Result<(), EngineError> {
        if self.order.merchant_id == merchant_id {
            Ok(())
        } else {
            Err(EngineError::OrderNotFound)
        }
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.services.config.fault_injection
            && self.services.faults.take(&Entity::Order(self.order.id))
        {
            panic!("injected fault: order {} panics on start", self.order.id);
        }
        self.sync_gauges(false);
        if self.recovered {
            self.resume(ctx);
        }
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.sync_gauges(true);
        self.registry
            .orders
            .remove_if(&self.order.id, &ctx.address().into());
        self.guard.disarm();
        if self.reload_on_stop
            && let Some(supervisor) = self.registry.region(self.guard.supervisor())
        {
            supervisor.do_send(ReloadOrder {
                order_id: self.order.id,
            });
        }
    }
}

macro_rules! atomic {
    ($future:expr) => {
        AtomicResponse::new($future)
    };
}

mod handlers;
mod legs;
mod offers;
mod road_eta;
