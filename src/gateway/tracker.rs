//! An order's tracking socket: the order now, every change, and the driver's location
//! (coalesced: a slow tracker gets the latest, not a backlog).

use crate::actors::commands::subscriptions::SubscribeOrder;
use crate::error::ErrorCode;
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::{CloseCode, Message, ProtocolError};

use super::inbound::{TrackerIn, parse_message};
use super::session::{RESUBSCRIBE_RETRY_MIN_MS, SessionSetup, next_resubscribe_ms, passing};
use super::socket::{Inbound, Outbound, Socket, SocketCore, feed_stream};
use crate::actors::{Engine, OrderFeed};
use crate::domain::OrderId;

pub struct TrackerSession {
    core: SocketCore,
    engine: Engine,
    order_id: OrderId,
    /// The order reached a final status: its feed has ended for good.
    finished: bool,
}

impl TrackerSession {
    pub fn start(setup: SessionSetup, order_id: OrderId) -> Addr<TrackerSession> {
        let (core, engine) = setup.into_core("tracker");
        TrackerSession {
            core,
            engine,
            order_id,
            finished: false,
        }
        .start()
    }

    /// Subscribes to the order. `retry_ms` is set when the feed is taken up again: a passing
    /// failure is then retried after that pause, with the socket left open.
    fn subscribe(&mut self, retry_ms: Option<u64>, ctx: &mut Context<Self>) {
        let engine = self.engine.clone();
        let order_id = self.order_id;
        ctx.wait(
            async move { engine.subscribe(SubscribeOrder::new(order_id)).await }
                .into_actor(self)
                .map(move |subscribed, act, ctx| match subscribed {
                    Ok((order, feed)) => {
                        act.finished = order.status.is_final();
                        act.core.send(&Outbound::OrderUpdate { order: &order });
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
}

impl Actor for TrackerSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_socket(ctx);
        self.subscribe(None, ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stop_socket();
    }
}

impl Socket for TrackerSession {
    fn core(&mut self) -> &mut SocketCore {
        &mut self.core
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for TrackerSession {
    fn handle(&mut self, frame: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        if let Inbound::Text(text) = self.inbound(frame, ctx) {
            metrics::counter!("ws_messages_in_total", "kind" => "tracker", "type" => "invalid")
                .increment(1);
            let code = parse_message::<TrackerIn>(&text)
                .err()
                .map_or(ErrorCode::BadMessage, |(code, _)| code);
            self.core
                .error(code, "The tracking socket takes no messages.");
        }
    }
}

impl StreamHandler<Option<OrderFeed>> for TrackerSession {
    fn handle(&mut self, item: Option<OrderFeed>, ctx: &mut Self::Context) {
        match item {
            Some(OrderFeed::Update(order)) => {
                self.finished = order.status.is_final();
                self.core.send(&Outbound::OrderUpdate { order: &order });
            }
            Some(OrderFeed::DriverLocation {
                lat,
                lon,
                eta_seconds,
            }) => self.core.send_location(&Outbound::DriverLocation {
                lat,
                lon,
                eta_seconds,
            }),
            Some(OrderFeed::Route(route)) => self.core.send(&Outbound::Route(&route)),
            None if self.finished => {}
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
