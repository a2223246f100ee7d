//! The order actor: the single writer of one open order. Every change is decided against the
//! state machine, journaled, and only then applied and announced — to the order's subscribers,
//! the merchant's board and the driver. It also runs the order's dispatch: search the region's
//! index, reserve the best free driver, journal the offer, publish it, expire it, move on.

use std::sync::Arc;
use std::time::Instant;
use std::vec;

use actix::prelude::*;
use chrono::{Duration as ChronoDuration, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::EngineError;
use super::driver::{
    OfferView, OrderChanged, PublishOffer, ReserveOffer, RestoreWork, WithdrawOffer,
};
use super::feed::Feed;
use super::mailbox::SelfMessages;
use super::merchant::{BoardUpdate, MerchantActor};
use super::region::{Candidate, FindCandidates, MatchOutcome, ReloadOrder, RequestMatch};
use super::services::Services;
use super::supervision::{ChildGuard, Entity};
use crate::domain::{
    Change, DispatchStatus, JournalEntry, LapseReason, MerchantId, OpenOffer, Order, OrderStatus,
    OrderView, TransitionError, UserId,
};
use crate::geo::{LatLon, RegionId, haversine_m, travel_secs};
use crate::store::{Snapshot, SnapshotKind, StoreError};

/// What an order's subscribers receive.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OrderFeed {
    /// The order changed (journaled first).
    Update(OrderView),
    /// The assigned driver moved; not journaled.
    DriverLocation {
        lat: f64,
        lon: f64,
        /// Estimated seconds until the order reaches the customer.
        eta_seconds: f64,
    },
}

/// Who cancels an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Canceller {
    /// The order's customer: allowed before the merchant accepts.
    Customer(UserId),
    /// An admin: allowed until pickup.
    Admin,
}

/// The merchant takes the order and starts preparing it; dispatch begins.
#[derive(Clone, Message)]
#[rtype(result = "Result<OrderView, EngineError>")]
pub struct MerchantAccept {
    pub merchant_id: MerchantId,
    pub prep_minutes: u32,
}

/// The merchant declines the order.
#[derive(Clone, Message)]
#[rtype(result = "Result<OrderView, EngineError>")]
pub struct MerchantReject {
    pub merchant_id: MerchantId,
    pub reason: String,
}

/// The merchant has the order packed.
#[derive(Clone, Message)]
#[rtype(result = "Result<OrderView, EngineError>")]
pub struct MarkReady {
    pub merchant_id: MerchantId,
}

/// Cancels the order.
#[derive(Clone, Message)]
#[rtype(result = "Result<OrderView, EngineError>")]
pub struct CancelOrder {
    pub by: Canceller,
    pub reason: String,
}

/// The offered driver accepts (sent by the driver's actor).
#[derive(Message)]
#[rtype(result = "Result<OrderView, EngineError>")]
pub struct AcceptOffer {
    pub offer_id: Uuid,
    pub driver_id: UserId,
}

/// The offered driver declines (sent by the driver's actor).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeclineOffer {
    pub offer_id: Uuid,
    pub driver_id: UserId,
}

/// The assigned driver collected the order.
#[derive(Message)]
#[rtype(result = "Result<OrderView, EngineError>")]
pub struct ConfirmPickup {
    pub driver_id: UserId,
}

/// The assigned driver handed the order over.
#[derive(Message)]
#[rtype(result = "Result<OrderView, EngineError>")]
pub struct ConfirmDelivery {
    pub driver_id: UserId,
}

/// The assigned driver's new location, for trackers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DriverMoved {
    pub driver_id: UserId,
    pub location: LatLon,
}

/// A feed of the order's updates, with its current state.
#[derive(Message)]
#[rtype(result = "(OrderView, mpsc::Receiver<OrderFeed>)")]
pub struct SubscribeOrder;

/// The order's current state.
#[derive(Message)]
#[rtype(result = "OrderView")]
pub struct GetOrder;

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

/// Test hook: the actor panics on receipt (fault injection must be enabled).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashOrder;

pub struct OrderActor {
    order: Order,
    services: Arc<Services>,
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
}

type Reply = Result<OrderView, EngineError>;

fn done<T: 'static>(value: T) -> ResponseActFuture<OrderActor, T> {
    Box::pin(fut::ready(value))
}

impl OrderActor {
    /// Starts the actor of a freshly placed order on its region's event loop.
    pub fn start(order: Order, services: Arc<Services>) -> Addr<OrderActor> {
        Self::start_with(order, services, false)
    }

    /// Starts the actor of an order rebuilt from the journal.
    pub fn start_recovered(order: Order, services: Arc<Services>) -> Addr<OrderActor> {
        Self::start_with(order, services, true)
    }

    fn start_with(order: Order, services: Arc<Services>, recovered: bool) -> Addr<OrderActor> {
        let region = RegionId(order.region_id.clone());
        let arbiter = services.arbiter(&region);
        OrderActor::start_in_arbiter(&arbiter, move |_| OrderActor {
            guard: ChildGuard::new(Entity::Order(order.id), region, services.clone()),
            radius_m: services.config.search_radius_m,
            order,
            services,
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
        })
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
        let view = self.order.view();
        self.feed.publish(&OrderFeed::Update(view.clone()));
        let merchant_id = self.order.merchant_id;
        let services = self.services.clone();
        self.services
            .merchants
            .get_or_start(merchant_id, || MerchantActor::start(merchant_id, services))
            .do_send(BoardUpdate {
                version: self.order.version,
                view: view.clone(),
            });
        if let Some(driver_id) = self.order.driver_id
            && let Some(driver) = self.services.drivers.get(&driver_id)
        {
            driver.do_send(OrderChanged { view: view.clone() });
        }
        if let Some(offer) = previous_offer
            && self.order.offer.is_none()
            && !self.order.state.status.is_dispatchable()
            && let Some(driver) = self.services.drivers.get(&offer.driver_id)
        {
            driver.do_send(WithdrawOffer {
                offer_id: offer.offer_id,
                notify: true,
            });
        }
        if let Ok(snapshot) = Snapshot::of(
            SnapshotKind::Order,
            self.order.id.as_uuid(),
            self.order.version,
            &self.order,
        ) {
            self.services.snapshots.send(snapshot);
        }
        self.sync_gauges(false);
        if !self.order.is_open() {
            if let Some(closed) = &self.services.hooks.order_closed {
                closed.notify_one();
            }
            ctx.stop();
        }
    }

    fn retry_search(&mut self, ctx: &mut Context<Self>) {
        if self.search_timer.is_none() {
            self.search_timer =
                Some(ctx.enqueue_later(SearchTick, self.services.config.search_retry));
        }
    }

    fn arm_offer_timer(&mut self, offer: OpenOffer, ctx: &mut Context<Self>) {
        if let Some(timer) = self.offer_timer.take() {
            ctx.cancel_future(timer);
        }
        let remaining = (offer.expires_at - Utc::now()).to_std().unwrap_or_default();
        self.offer_timer = Some(ctx.enqueue_later(
            ExpireOffer {
                offer_id: offer.offer_id,
            },
            remaining,
        ));
    }

    fn offer_view(&self, offer: OpenOffer) -> OfferView {
        OfferView {
            offer_id: offer.offer_id,
            order_id: self.order.id,
            pickup: self.order.pickup,
            dropoff: self.order.dropoff,
            expires_at: offer.expires_at,
        }
    }

    /// Tries the candidates best first: the first free one is reserved, the offer journaled,
    /// then shown to the driver. Nobody free: widen the radius and search again later.
    fn offer_to_best(
        &mut self,
        candidates: vec::IntoIter<Candidate>,
    ) -> ResponseActFuture<Self, ()> {
        if !self.searching() {
            return done(());
        }
        let had_candidates = candidates.len() > 0;
        let batched = matches!(
            self.services.config.matching,
            crate::config::Matching::Batched { .. }
        );
        Box::pin(
            self.reserve_and_offer(Vec::new(), candidates)
                .map(move |outcome, act, ctx| match outcome {
                    Some(Ok(_)) => {}
                    Some(Err(_)) => act.retry_search(ctx),
                    // The batch's driver was taken meanwhile: join the next window.
                    None if batched && had_candidates => ctx.enqueue(SearchTick),
                    None => act.widen_search(ctx),
                }),
        )
    }

    /// Nobody free within the radius: widen it (up to the largest) and search again later.
    fn widen_search(&mut self, ctx: &mut Context<Self>) {
        let config = &self.services.config;
        if self.radius_m >= config.max_search_radius_m && !self.order.passed_over.is_empty() {
            self.second_round = true;
        }
        self.radius_m =
            (self.radius_m + config.search_radius_step_m).min(config.max_search_radius_m);
        self.retry_search(ctx);
    }

    /// Reserves the first candidate that is still free and journals `prefix` followed by the
    /// offer to it, in one transaction; then shows the offer to the driver. `None` when no
    /// candidate could be reserved (nothing journaled); otherwise the journal write's reply
    /// (on failure the reservation is released).
    fn reserve_and_offer(
        &mut self,
        prefix: Vec<Change>,
        mut candidates: vec::IntoIter<Candidate>,
    ) -> ResponseActFuture<Self, Option<Reply>> {
        let Some(candidate) = candidates.next() else {
            return done(None);
        };
        let Some(driver) = self.services.drivers.get(&candidate.driver_id) else {
            return self.reserve_and_offer(prefix, candidates);
        };
        let offer = OpenOffer {
            offer_id: Uuid::now_v7(),
            driver_id: candidate.driver_id,
            expires_at: crate::store::to_micros(
                Utc::now()
                    + ChronoDuration::from_std(self.services.config.offer_timeout)
                        .unwrap_or(ChronoDuration::seconds(30)),
            ),
        };
        let reserve = driver.send(ReserveOffer {
            offer: self.offer_view(offer),
        });
        Box::pin(
            async move { reserve.await.unwrap_or(false) }
                .into_actor(self)
                .then(move |reserved, act, _| {
                    if !reserved {
                        return act.reserve_and_offer(prefix, candidates);
                    }
                    let mut changes = prefix;
                    changes.push(Change::Offered {
                        offer_id: offer.offer_id,
                        driver_id: offer.driver_id,
                        expires_at: offer.expires_at,
                    });
                    Box::pin(act.commit(changes).map(move |written, act, ctx| {
                        match &written {
                            Ok(_) => {
                                driver.do_send(PublishOffer {
                                    offer_id: offer.offer_id,
                                });
                                act.arm_offer_timer(offer, ctx);
                                metrics::counter!("dispatch_offers_total", "outcome" => "sent")
                                    .increment(1);
                                if let Some(accepted_at) = act.accepted_at.take() {
                                    metrics::histogram!("dispatch_latency_seconds")
                                        .record(accepted_at.elapsed().as_secs_f64());
                                }
                            }
                            Err(_) => driver.do_send(WithdrawOffer {
                                offer_id: offer.offer_id,
                                notify: false,
                            }),
                        }
                        Some(written)
                    }))
                }),
        )
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

    /// The region to search and the pickup to search around; `None` when the region is down or
    /// the pickup unusable.
    fn search_target(&self) -> Option<(Addr<super::region::RegionActor>, LatLon)> {
        let region = self
            .services
            .region(&RegionId(self.order.region_id.clone()))?;
        let pickup = LatLon::new(self.order.pickup.lat, self.order.pickup.lon).ok()?;
        Some((region, pickup))
    }

    /// Drivers who passed on this order are not asked again, unless nobody else is left within
    /// the largest radius: then a second round asks them too.
    fn excluded_drivers(&self) -> Vec<UserId> {
        if self.second_round {
            Vec::new()
        } else {
            self.order.passed_over.clone()
        }
    }

    /// Ends the open offer without an assignment and searches on.
    fn lapse(&mut self, offer: OpenOffer, reason: LapseReason) -> ResponseActFuture<Self, ()> {
        let change = Change::OfferLapsed {
            offer_id: offer.offer_id,
            driver_id: offer.driver_id,
            reason,
        };
        Box::pin(
            self.commit(vec![change])
                .map(move |written, act, ctx| match written {
                    Ok(_) => {
                        let outcome = match reason {
                            LapseReason::Declined => "declined",
                            LapseReason::Expired => "expired",
                            LapseReason::Unavailable => "unavailable",
                        };
                        metrics::counter!("dispatch_offers_total", "outcome" => outcome)
                            .increment(1);
                        if reason != LapseReason::Declined
                            && let Some(driver) = act.services.drivers.get(&offer.driver_id)
                        {
                            driver.do_send(WithdrawOffer {
                                offer_id: offer.offer_id,
                                notify: true,
                            });
                        }
                        ctx.enqueue(SearchTick);
                    }
                    // Still open in the journal: try again shortly.
                    Err(_) => {
                        act.offer_timer = Some(ctx.enqueue_later(
                            ExpireOffer {
                                offer_id: offer.offer_id,
                            },
                            std::time::Duration::from_secs(1),
                        ));
                    }
                }),
        )
    }

    /// After a restart: put the order back where the journal left it.
    fn resume(&mut self, ctx: &mut Context<Self>) {
        if let Some(offer) = self.order.offer {
            if offer.expires_at > Utc::now() {
                let services = self.services.clone();
                let view = self.offer_view(offer);
                services
                    .drivers
                    .get_or_start(offer.driver_id, || {
                        super::driver::DriverActor::start(offer.driver_id, services.clone())
                    })
                    .do_send(RestoreWork::Offer(view));
                self.arm_offer_timer(offer, ctx);
            } else {
                ctx.enqueue(ExpireOffer {
                    offer_id: offer.offer_id,
                });
            }
        }
        if let Some(driver_id) = self.order.driver_id {
            let services = self.services.clone();
            services
                .drivers
                .get_or_start(driver_id, || {
                    super::driver::DriverActor::start(driver_id, services.clone())
                })
                .do_send(RestoreWork::Assigned(self.order.id));
        }
        if self.searching() {
            ctx.enqueue(SearchTick);
        }
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
        self.services
            .orders
            .remove_if(&self.order.id, &ctx.address());
        self.guard.disarm();
        if self.reload_on_stop
            && let Some(supervisor) = self.services.region(self.guard.supervisor())
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

impl Handler<MerchantAccept> for OrderActor {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: MerchantAccept, _: &mut Self::Context) -> Self::Result {
        if let Err(error) = self.check_merchant(msg.merchant_id) {
            return atomic!(done(Err(error)));
        }
        let changes = vec![
            Change::MerchantAccepted {
                prep_minutes: msg.prep_minutes,
            },
            Change::SearchStarted,
        ];
        // Greedy matching looks for a driver right away and journals the first offer with the
        // acceptance: one journal write between the merchant's accept and the driver's offer
        // instead of two. (Batched matching waits for its window, which an accept must not.)
        let greedy = matches!(
            self.services.config.matching,
            crate::config::Matching::Greedy
        );
        let target = self.search_target().filter(|_| greedy);
        let Some((region, pickup)) = target.filter(|_| self.accepts(&changes)) else {
            return atomic!(Box::pin(self.commit(changes).map(|reply, act, ctx| {
                if reply.is_ok() {
                    act.accepted_at = Some(Instant::now());
                    ctx.enqueue(SearchTick);
                }
                reply
            })));
        };
        self.accepted_at = Some(Instant::now());
        let query = region.send(FindCandidates {
            pickup,
            radius_m: self.radius_m,
            k: self.services.config.candidates,
            exclude: self.excluded_drivers(),
        });
        atomic!(Box::pin(
            async move { query.await.unwrap_or_default() }
                .into_actor(self)
                .then(move |candidates, act, _| {
                    act.reserve_and_offer(changes.clone(), candidates.into_iter())
                        .then(move |outcome, act, _| match outcome {
                            Some(reply) => {
                                if reply.is_err() {
                                    act.accepted_at = None;
                                }
                                done(reply)
                            }
                            // Nobody free nearby: journal the acceptance, then search as usual.
                            None => Box::pin(act.commit(changes).map(|reply, act, ctx| {
                                match reply {
                                    Ok(_) => act.widen_search(ctx),
                                    Err(_) => act.accepted_at = None,
                                }
                                reply
                            })),
                        })
                })
        ))
    }
}

impl Handler<MerchantReject> for OrderActor {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: MerchantReject, _: &mut Self::Context) -> Self::Result {
        if let Err(error) = self.check_merchant(msg.merchant_id) {
            return atomic!(done(Err(error)));
        }
        atomic!(self.commit(vec![Change::MerchantRejected { reason: msg.reason }]))
    }
}

impl Handler<MarkReady> for OrderActor {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: MarkReady, _: &mut Self::Context) -> Self::Result {
        if let Err(error) = self.check_merchant(msg.merchant_id) {
            return atomic!(done(Err(error)));
        }
        atomic!(self.commit(vec![Change::MarkedReady]))
    }
}

impl Handler<CancelOrder> for OrderActor {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: CancelOrder, _: &mut Self::Context) -> Self::Result {
        let change = match msg.by {
            Canceller::Customer(customer) if customer == self.order.customer_id => {
                Change::CancelledByCustomer
            }
            Canceller::Customer(_) => return atomic!(done(Err(EngineError::OrderNotFound))),
            Canceller::Admin => Change::CancelledByAdmin { reason: msg.reason },
        };
        atomic!(self.commit(vec![change]))
    }
}

impl Handler<AcceptOffer> for OrderActor {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: AcceptOffer, ctx: &mut Self::Context) -> Self::Result {
        let Some(offer) = self
            .order
            .offer
            .filter(|o| o.offer_id == msg.offer_id && o.driver_id == msg.driver_id)
        else {
            return atomic!(done(Err(EngineError::OfferExpired)));
        };
        if Utc::now() >= offer.expires_at {
            // The timer has not fired yet, but the deadline has passed: too late.
            return atomic!(Box::pin(
                self.lapse(offer, LapseReason::Expired)
                    .map(|(), _, _| Err(EngineError::OfferExpired))
            ));
        }
        if let Some(timer) = self.offer_timer.take() {
            ctx.cancel_future(timer);
        }
        let change = Change::DriverAssigned {
            offer_id: offer.offer_id,
            driver_id: offer.driver_id,
        };
        atomic!(Box::pin(self.commit(vec![change]).then(
            move |reply, act, ctx| {
                match reply {
                    Ok(view) => {
                        metrics::counter!("dispatch_offers_total", "outcome" => "accepted")
                            .increment(1);
                        done(Ok(view))
                    }
                    // The database refused a second active order for this driver.
                    Err(EngineError::Store(StoreError::Duplicate(_))) => Box::pin(
                        act.lapse(offer, LapseReason::Unavailable)
                            .map(|(), _, _| Err(EngineError::DriverBusy)),
                    ),
                    Err(error) => {
                        act.arm_offer_timer(offer, ctx);
                        done(Err(error))
                    }
                }
            }
        )))
    }
}

impl Handler<DeclineOffer> for OrderActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: DeclineOffer, ctx: &mut Self::Context) -> Self::Result {
        let Some(offer) = self
            .order
            .offer
            .filter(|o| o.offer_id == msg.offer_id && o.driver_id == msg.driver_id)
        else {
            return atomic!(done(()));
        };
        if let Some(timer) = self.offer_timer.take() {
            ctx.cancel_future(timer);
        }
        atomic!(self.lapse(offer, LapseReason::Declined))
    }
}

impl Handler<ExpireOffer> for OrderActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: ExpireOffer, _: &mut Self::Context) -> Self::Result {
        // A stale expiry (its offer already ended) may arrive after the next offer's timer was
        // armed: that timer stays.
        match self.order.offer.filter(|o| o.offer_id == msg.offer_id) {
            Some(offer) => {
                self.offer_timer = None;
                atomic!(self.lapse(offer, LapseReason::Expired))
            }
            None => atomic!(done(())),
        }
    }
}

impl Handler<SearchTick> for OrderActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: SearchTick, ctx: &mut Self::Context) -> Self::Result {
        self.search_timer = None;
        if !self.searching() {
            return atomic!(done(()));
        }
        self.sync_gauges(false);
        let Some((region, pickup)) = self.search_target() else {
            self.retry_search(ctx);
            return atomic!(done(()));
        };
        let radius_m = self.radius_m;
        let k = self.services.config.candidates;
        let exclude = self.excluded_drivers();
        if let crate::config::Matching::Batched { .. } = self.services.config.matching {
            // Batched: wait for the region's window to close and take the driver it assigns.
            let request = region.send(RequestMatch {
                pickup,
                radius_m,
                k,
                exclude,
            });
            return atomic!(Box::pin(
                async move { request.await.unwrap_or(MatchOutcome::NoneInRange) }
                    .into_actor(self)
                    .then(|outcome, act, ctx| match outcome {
                        MatchOutcome::Driver(candidate) => {
                            act.offer_to_best(vec![candidate].into_iter())
                        }
                        // Drivers were near but went to other orders: join the next window.
                        MatchOutcome::Outbid => {
                            ctx.enqueue(SearchTick);
                            done(())
                        }
                        MatchOutcome::NoneInRange => act.offer_to_best(Vec::new().into_iter()),
                    })
            ));
        }
        let query = region.send(FindCandidates {
            pickup,
            radius_m,
            k,
            exclude,
        });
        atomic!(Box::pin(
            async move { query.await.unwrap_or_default() }
                .into_actor(self)
                .then(|candidates, act, _| act.offer_to_best(candidates.into_iter()))
        ))
    }
}

impl Handler<ConfirmPickup> for OrderActor {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: ConfirmPickup, _: &mut Self::Context) -> Self::Result {
        if self.order.driver_id != Some(msg.driver_id) {
            return atomic!(done(Err(EngineError::OrderNotFound)));
        }
        if self.order.status() == OrderStatus::PickedUp {
            // The same report again (its answer was lost): it took effect once.
            return atomic!(done(Ok(self.order.view())));
        }
        atomic!(self.commit(vec![Change::PickedUp]))
    }
}

impl Handler<ConfirmDelivery> for OrderActor {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, msg: ConfirmDelivery, _: &mut Self::Context) -> Self::Result {
        if self.order.driver_id != Some(msg.driver_id) {
            return atomic!(done(Err(EngineError::OrderNotFound)));
        }
        atomic!(self.commit(vec![Change::Delivered]))
    }
}

impl Handler<DriverMoved> for OrderActor {
    type Result = ();

    fn handle(&mut self, msg: DriverMoved, _: &mut Self::Context) {
        if self.order.driver_id != Some(msg.driver_id) || !self.order.is_open() {
            return;
        }
        let speed = self.services.config.average_speed_kmh;
        let point = |p: crate::domain::Position| LatLon {
            lat: p.lat,
            lon: p.lon,
        };
        let (pickup, dropoff) = (point(self.order.pickup), point(self.order.dropoff));
        let remaining_m = if self.order.state.status == crate::domain::OrderStatus::PickedUp {
            haversine_m(msg.location, dropoff)
        } else {
            haversine_m(msg.location, pickup) + haversine_m(pickup, dropoff)
        };
        let update = OrderFeed::DriverLocation {
            lat: msg.location.lat,
            lon: msg.location.lon,
            eta_seconds: travel_secs(remaining_m, speed).round(),
        };
        self.feed.publish(&update);
        self.last_driver_location = Some(update);
    }
}

impl Handler<SubscribeOrder> for OrderActor {
    type Result = MessageResult<SubscribeOrder>;

    fn handle(&mut self, _: SubscribeOrder, _: &mut Self::Context) -> Self::Result {
        let receiver = self.feed.subscribe_with(self.last_driver_location.clone());
        MessageResult((self.order.view(), receiver))
    }
}

impl Handler<GetOrder> for OrderActor {
    type Result = MessageResult<GetOrder>;

    fn handle(&mut self, _: GetOrder, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.order.view())
    }
}

impl Handler<super::services::Retire> for OrderActor {
    type Result = bool;

    /// Stops if the order is of the region handed off (its journal is where the new owner
    /// picks it up).
    fn handle(&mut self, msg: super::services::Retire, ctx: &mut Self::Context) -> bool {
        let retire = msg.all || self.order.region_id == msg.region.as_str();
        if retire {
            self.guard.disarm();
            ctx.stop();
        }
        retire
    }
}

impl Handler<CrashOrder> for OrderActor {
    type Result = ();

    fn handle(&mut self, _: CrashOrder, _: &mut Self::Context) {
        if self.services.config.fault_injection {
            panic!("injected fault: order {} panics", self.order.id);
        }
    }
}
