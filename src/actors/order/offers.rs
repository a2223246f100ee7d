//! The order's dispatch: search the region's index (or join its batch), reserve the best free
//! driver, journal the offer, show it, and end it — accepted, declined or expired — then search
//! on. Restarting from the journal puts open offers and searches back where they were.

use std::vec;

use actix::prelude::*;
use chrono::{Duration as ChronoDuration, Utc};
use uuid::Uuid;

use super::{ExpireOffer, OrderActor, Reply, SearchTick, done};
use crate::actors::error::EngineError;
use crate::actors::mailbox::SelfMessages;
use crate::actors::protocol::{
    AcceptOffer, Candidate, DeclineOffer, FindCandidates, MatchOutcome, OfferView, PublishOffer,
    RegionAddr, RequestMatch, ReserveOffer, RestoreWork, WithdrawOffer,
};
use crate::domain::{Change, LapseReason, OpenOffer, UserId};
use crate::geo::{LatLon, RegionId};
use crate::store::StoreError;

impl OrderActor {
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
            pickup_address: self.order.pickup_address.clone(),
            dropoff_address: self.order.dropoff_address.clone(),
            pickup_eta_seconds: None,
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
    pub(super) fn widen_search(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn reserve_and_offer(
        &mut self,
        prefix: Vec<Change>,
        mut candidates: vec::IntoIter<Candidate>,
    ) -> ResponseActFuture<Self, Option<Reply>> {
        let Some(candidate) = candidates.next() else {
            return done(None);
        };
        let Some(driver) = self.registry.drivers.get(&candidate.driver_id) else {
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
        let mut view = self.offer_view(offer);
        view.pickup_eta_seconds = Some(candidate.pickup_eta_secs.round());
        let reserve = driver.send(ReserveOffer { offer: view });
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

    /// The region to search and the pickup to search around; `None` when the region is down or
    /// the pickup unusable.
    pub(super) fn search_target(&self) -> Option<(RegionAddr, LatLon)> {
        let region = self
            .registry
            .region(&RegionId(self.order.region_id.clone()))?;
        let pickup = LatLon::new(self.order.pickup.lat, self.order.pickup.lon).ok()?;
        Some((region, pickup))
    }

    /// Drivers who passed on this order are not asked again, unless nobody else is left within
    /// the largest radius: then a second round asks them too.
    pub(super) fn excluded_drivers(&self) -> Vec<UserId> {
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
                            && let Some(driver) = act.registry.drivers.get(&offer.driver_id)
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
    pub(super) fn resume(&mut self, ctx: &mut Context<Self>) {
        if let Some(offer) = self.order.offer {
            if offer.expires_at > Utc::now() {
                let view = self.offer_view(offer);
                self.registry
                    .drivers
                    .get_or_start(offer.driver_id, || {
                        self.registry.start_driver(offer.driver_id)
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
            self.registry
                .drivers
                .get_or_start(driver_id, || self.registry.start_driver(driver_id))
                .do_send(RestoreWork::Assigned(self.order.id));
        }
        // Rebuilt from the journal, it may be ahead of what a running board and the driver were
        // told (a write whose answer was lost committed after all): they hear it now. At a
        // replica's start no board runs yet, and none is started for this.
        self.announce(&self.order.view(), false);
        if self.searching() {
            ctx.enqueue(SearchTick);
        }
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
