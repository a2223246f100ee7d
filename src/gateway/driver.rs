//! The driver app's socket: locations, availability and answers in; offers, the assigned order
//! and its updates out.

use crate::actors::commands::drivers::{
    AnswerOffer, Delivered, DriverAvailability, DriverLocation, PickedUp,
};
use crate::actors::commands::subscriptions::SubscribeDriver;
use crate::actors::wire::DriverSnapshot;
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::{CloseCode, Message, ProtocolError};
use chrono::Utc;

use super::inbound::{Availability, DriverIn, Location, OfferAnswer, OrderStep, receive};
use super::session::{RESUBSCRIBE_RETRY_MIN_MS, SessionSetup, next_resubscribe_ms, passing};
use super::socket::{Inbound, Outbound, Socket, SocketCore, feed_stream};
use crate::actors::{DriverFeed, Engine, EngineError};
use crate::domain::{OrderId, OrderView, UserId};

pub struct DriverSession {
    core: SocketCore,
    engine: Engine,
    driver_id: UserId,
    /// The last order state sent: a state the driver's own report brought back is sent at
    /// once (its feed may be moving to another replica), and not again when the feed brings
    /// it too.
    last_sent: Option<(OrderId, chrono::DateTime<Utc>, String)>,
}

/// What identifies an order state the socket was sent.
fn shown_key(order: &OrderView) -> (OrderId, chrono::DateTime<Utc>, String) {
    (
        order.id,
        order.updated_at,
        format!("{:?}/{:?}", order.status, order.dispatch_status),
    )
}

/// How a change of the driver's order is shown: `assigned` or `order_update`.
#[derive(Clone, Copy)]
enum Shown {
    Assigned,
    Update,
}

impl DriverSession {
    pub fn start(setup: SessionSetup, driver_id: UserId) -> Addr<DriverSession> {
        let (core, engine) = setup.into_core("driver");
        DriverSession {
            core,
            engine,
            driver_id,
            last_sent: None,
        }
        .start()
    }

    /// After the feed was taken up again (its actor stepped aside, or its replica changed): the
    /// order this socket showed last, if it is no longer the active one, as it is now (it may
    /// have been delivered or cancelled in between).
    fn catch_up(&mut self, active: Option<OrderId>, ctx: &mut Context<Self>) {
        let Some((shown, ..)) = self.last_sent.clone() else {
            return;
        };
        if active == Some(shown) {
            return;
        }
        let engine = self.engine.clone();
        ctx.spawn(
            async move { engine.order(shown).await }
                .into_actor(self)
                .map(|order, act, _| {
                    if let Ok(order) = order {
                        act.send_order(&order, Shown::Update);
                    }
                }),
        );
    }

    /// Sends the order's state unless this very state was sent last.
    fn send_order(&mut self, order: &OrderView, shown: Shown) {
        self.show_order(order, shown, false);
    }

    /// Sends the order's state as the answer to the driver's own message: always, even when
    /// this state was shown already (a report repeated after its first answer was lost must
    /// be answered, or the app waits for ever) — unless a newer state was shown meanwhile.
    fn answer_order(&mut self, order: &OrderView, shown: Shown) {
        self.show_order(order, shown, true);
    }

    fn show_order(&mut self, order: &OrderView, shown: Shown, answer: bool) {
        let key = shown_key(order);
        // An older state overtaken by a report's answer, or the same state again from the
        // feed: not shown.
        if let Some((id, at, state)) = &self.last_sent
            && *id == key.0
            && (*at > key.1 || (!answer && *at == key.1 && *state == key.2))
        {
            return;
        }
        self.last_sent = Some(key);
        match shown {
            Shown::Assigned => self.core.send(&Outbound::Assigned { order }),
            Shown::Update => self.core.send(&Outbound::OrderUpdate { order }),
        }
    }

    /// Subscribes to the driver's feed. `retry_ms` is set when the feed is taken up again (it
    /// ended while the socket stays open): a passing failure is then retried after that pause,
    /// with the socket left open, rather than closing it.
    fn subscribe(&mut self, retry_ms: Option<u64>, ctx: &mut Context<Self>) {
        let engine = self.engine.clone();
        let driver = self.driver_id;
        ctx.wait(
            async move { engine.subscribe(SubscribeDriver::new(driver)).await }
                .into_actor(self)
                .map(move |subscribed, act, ctx| match subscribed {
                    Ok((DriverSnapshot { status, active }, feed)) => {
                        // Resume: the open offer or the active order, as on the first connect.
                        if let Some(offer) = status.offer.filter(|o| o.expires_at > Utc::now()) {
                            act.core.send(&Outbound::Offer(&offer));
                        }
                        // The order this socket showed before, if the feed moved meanwhile; then
                        // the active one, as on every subscribe.
                        act.catch_up(active.as_ref().map(|order| order.id), ctx);
                        if let Some(order) = &active {
                            act.last_sent = Some(shown_key(order));
                            act.core.send(&Outbound::Assigned { order });
                        }
                        ctx.add_stream(feed_stream(feed));
                    }
                    Err(error) => {
                        act.core.error(error.code(), &error.to_string());
                        match retry_ms {
                            Some(pause_ms) if passing(&error) => {
                                ctx.run_later(Duration::from_millis(pause_ms), move |act, ctx| {
                                    act.subscribe(Some(next_resubscribe_ms(pause_ms)), ctx);
                                });
                            }
                            _ => act.close(ctx, CloseCode::Error, "dispatch unavailable"),
                        }
                    }
                }),
        );
    }

    fn handle_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let Some(message) = receive::<DriverIn>(&mut self.core, text) else {
            return;
        };
        let engine = self.engine.clone();
        let driver = self.driver_id;
        if let DriverIn::Location(Location { lat, lon, ts }) = message {
            // The hot path: hand the fix over and read on; a stale fix is dropped and counted
            // by the driver's actor.
            if let Err(error) = engine.driver_location_nowait(DriverLocation {
                driver,
                lat,
                lon,
                ts_ms: ts,
            }) {
                self.core.error(error.code(), &error.to_string());
            }
            return;
        }
        // One message at a time, in order: the socket is not read while this one is handled.
        let work = async move {
            let shown = |shown: Shown| move |order| Some((order, shown));
            match message {
                DriverIn::Location(_) => Ok(None),
                DriverIn::Availability(Availability { available }) => engine
                    .execute(DriverAvailability { driver, available })
                    .await
                    .map(|_| None),
                DriverIn::AcceptOffer(OfferAnswer { offer_id }) => engine
                    .execute(AnswerOffer {
                        driver,
                        offer_id,
                        accept: true,
                    })
                    .await
                    .map(|order| order.and_then(shown(Shown::Assigned))),
                DriverIn::DeclineOffer(OfferAnswer { offer_id }) => engine
                    .execute(AnswerOffer {
                        driver,
                        offer_id,
                        accept: false,
                    })
                    .await
                    .map(|_| None),
                DriverIn::PickedUp(OrderStep { order_id }) => engine
                    .execute(PickedUp { driver, order_id })
                    .await
                    .map(shown(Shown::Update)),
                DriverIn::Delivered(OrderStep { order_id }) => engine
                    .execute(Delivered { driver, order_id })
                    .await
                    .map(shown(Shown::Update)),
            }
        };
        ctx.wait(work.into_actor(self).map(|outcome, act, _| match outcome {
            Ok(Some((order, shown))) => act.answer_order(&order, shown),
            Ok(None) | Err(EngineError::StaleLocation) => {}
            Err(error) => act.core.error(error.code(), &error.to_string()),
        }));
    }
}

impl Actor for DriverSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_socket(ctx);
        self.subscribe(None, ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stop_socket();
        self.engine.driver_disconnected(self.driver_id);
    }
}

impl Socket for DriverSession {
    fn core(&mut self) -> &mut SocketCore {
        &mut self.core
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for DriverSession {
    fn handle(&mut self, frame: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        if let Inbound::Text(text) = self.inbound(frame, ctx) {
            self.handle_text(&text, ctx);
        }
    }
}

impl StreamHandler<Option<DriverFeed>> for DriverSession {
    fn handle(&mut self, item: Option<DriverFeed>, ctx: &mut Self::Context) {
        match item {
            Some(DriverFeed::Offer(offer)) => self.core.send(&Outbound::Offer(&offer)),
            Some(DriverFeed::OfferExpired { offer_id }) => {
                self.core.send(&Outbound::OfferExpired { offer_id })
            }
            Some(DriverFeed::Assigned(order)) => self.send_order(&order, Shown::Assigned),
            Some(DriverFeed::OrderUpdate(order)) => self.send_order(&order, Shown::Update),
            Some(DriverFeed::Route(route)) => self.core.send(&Outbound::Route(&route)),
            None => {
                ctx.run_later(
                    Duration::from_millis(RESUBSCRIBE_RETRY_MIN_MS),
                    |act, ctx| {
                        act.subscribe(Some(RESUBSCRIBE_RETRY_MIN_MS), ctx);
                    },
                );
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}
