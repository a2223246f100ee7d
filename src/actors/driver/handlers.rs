//! How each message changes a driver: the app's fixes, duty and subscriptions; the orders'
//! reserve, publish and withdraw of an offer; the driver's answer and progress, passed on to
//! the order; and the hand-off.

use actix::prelude::*;
use chrono::Utc;

use super::{DriverActor, HeldOffer};
use crate::actors::error::EngineError;
use crate::actors::protocol::{
    AcceptOffer, AnswerOffer, ConfirmDelivery, ConfirmPickup, CrashDriver, DeclineOffer,
    DriverFeed, DriverMoved, GetDriverStatus, GoOffline, OrderChanged, Progress, PublishOffer,
    Reannounce, ReportProgress, ReserveOffer, RestoreWork, Retire, RouteChanged, SessionClosed,
    SetAvailability, SubscribeDriver, UpdateLocation, WithdrawOffer,
};
use crate::domain::OrderView;

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
            && let Some(order) = self.registry.orders.get(&order_id)
        {
            order.do_send(DriverMoved {
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

impl Handler<Retire> for DriverActor {
    type Result = bool;

    /// Stops if the driver works in the region handed off (it is there, or its offer or order
    /// is), or its supervisor was that region.
    fn handle(&mut self, msg: Retire, ctx: &mut Self::Context) -> bool {
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
            order.do_send(DeclineOffer {
                offer_id: msg.offer_id,
                driver_id: self.id,
            });
            return ready(Ok(None));
        }
        let request = order.send(AcceptOffer {
            offer_id: msg.offer_id,
            driver_id: self.id,
        });
        AtomicResponse::new(Box::pin(request.into_actor(self).map(
            move |answer, act, ctx| match answer {
                Ok(Ok(view)) => {
                    act.clear_offer(ctx, msg.offer_id, false);
                    act.active_order = Some(view.id);
                    act.reindex();
                    act.feed
                        .publish(&DriverFeed::Assigned(Box::new(view.clone())));
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
            Err(_) if self.registry.is_sharing() => {
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
            Progress::PickedUp => Box::pin(order.send(ConfirmPickup { driver_id: self.id })),
            Progress::Delivered => Box::pin(order.send(ConfirmDelivery { driver_id: self.id })),
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
        self.feed.publish(&DriverFeed::OrderUpdate(Box::new(view)));
        if finished {
            self.active_order = None;
            self.reindex();
        }
    }
}

impl Handler<RouteChanged> for DriverActor {
    type Result = ();

    fn handle(&mut self, msg: RouteChanged, _: &mut Self::Context) {
        if self.active_order == Some(msg.route.order_id) {
            self.feed.publish(&DriverFeed::Route(Box::new(msg.route)));
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
