//! The order's commands other than dispatch: the merchant's accept, reject and ready, a
//! cancellation, the assigned driver's pickup, delivery and moves, subscriptions, and the
//! hand-off. Each checks who is asking, then commits.

use std::time::Instant;

use actix::prelude::*;

use super::{OrderActor, Reply, SearchTick, done};
use crate::actors::error::EngineError;
use crate::actors::mailbox::SelfMessages;
use crate::actors::protocol::{
    CancelOrder, Canceller, ConfirmDelivery, ConfirmPickup, CrashOrder, FindCandidates, GetOrder,
    MarkReady, MerchantAccept, MerchantReject, Retire, SubscribeOrder,
};
use crate::domain::{Change, OrderStatus};

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

impl Handler<SubscribeOrder> for OrderActor {
    type Result = MessageResult<SubscribeOrder>;

    fn handle(&mut self, _: SubscribeOrder, _: &mut Self::Context) -> Self::Result {
        let initial = [
            self.legs.last_frame.clone(),
            self.last_driver_location.clone(),
        ];
        let receiver = self.feed.subscribe_with(initial.into_iter().flatten());
        MessageResult((self.order.view(), receiver))
    }
}

impl Handler<GetOrder> for OrderActor {
    type Result = MessageResult<GetOrder>;

    fn handle(&mut self, _: GetOrder, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.order.view())
    }
}

impl Handler<Retire> for OrderActor {
    type Result = bool;

    /// Stops if the order is of the region handed off (its journal is where the new owner
    /// picks it up).
    fn handle(&mut self, msg: Retire, ctx: &mut Self::Context) -> bool {
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
