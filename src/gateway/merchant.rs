//! The merchant board's socket: the board (every open order of the merchants shown) first, then
//! every change; accept, reject and ready in.

use crate::actors::commands::merchants::{MerchantAccept, MerchantReady, MerchantReject};
use crate::actors::commands::subscriptions::SubscribeBoard;
use crate::error::ErrorCode;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::{CloseCode, Message, ProtocolError};
use futures_util::StreamExt;

use super::inbound::{Accept, MerchantIn, Ready, Reject, receive};
use super::session::{RESUBSCRIBE_RETRY_MIN_MS, SessionSetup, next_resubscribe_ms, passing};
use super::socket::{Inbound, Outbound, Socket, SocketCore, feed_stream};
use crate::actors::Engine;
use crate::domain::{MerchantId, OrderId, OrderView};

/// Longest preparation time a merchant may promise, in minutes.
pub const PREP_MINUTES_MAX: u32 = 240;
/// Longest rejection reason, in characters.
pub const REASON_MAX_CHARS: usize = 500;
/// Commands one board may have in flight or waiting behind another for the same order; one
/// more gets a `rate_limited` error frame instead of growing memory.
const COMMANDS_PENDING_MAX: usize = 256;

impl MerchantIn {
    fn order_id(&self) -> OrderId {
        match self {
            MerchantIn::AcceptOrder(Accept { order_id, .. })
            | MerchantIn::RejectOrder(Reject { order_id, .. })
            | MerchantIn::OrderReady(Ready { order_id }) => *order_id,
        }
    }

    /// What is wrong with the values, beyond their types.
    fn problem(&self) -> Option<String> {
        match self {
            MerchantIn::AcceptOrder(Accept { prep_minutes, .. })
                if *prep_minutes == 0 || *prep_minutes > PREP_MINUTES_MAX =>
            {
                Some(format!("prep_minutes: must be 1 to {PREP_MINUTES_MAX}"))
            }
            MerchantIn::RejectOrder(Reject { reason, .. })
                if reason.chars().count() > REASON_MAX_CHARS =>
            {
                Some(format!(
                    "reason: must be at most {REASON_MAX_CHARS} characters"
                ))
            }
            _ => None,
        }
    }
}

/// A board update, or the end of one merchant's feed.
struct BoardItem {
    merchant_id: MerchantId,
    update: Option<OrderView>,
}

pub struct MerchantSession {
    core: SocketCore,
    engine: Engine,
    merchants: Vec<MerchantId>,
    /// Whether the credential may act on orders (`orders:write`): without it the board is
    /// read-only and every accept, reject or ready gets an `insufficient_scope` error frame.
    may_act: bool,
    /// The open orders this socket has shown, by merchant: when a merchant's feed is taken up
    /// again (its actor restarted or its region moved to another replica), each is brought up
    /// to date, including those that closed in between.
    shown_open: HashMap<OrderId, MerchantId>,
    /// Commands run concurrently across orders and one at a time per order, in the order they
    /// came: the orders with a command in flight, each with the commands waiting behind it.
    /// (One at a time per socket made a busy kitchen's accepts queue behind each other's journal
    /// writes, and held its board updates meanwhile.)
    in_flight: HashMap<OrderId, VecDeque<MerchantIn>>,
}

impl MerchantSession {
    pub fn start(
        setup: SessionSetup,
        merchants: Vec<MerchantId>,
        may_act: bool,
    ) -> Addr<MerchantSession> {
        let (core, engine) = setup.into_core("merchant");
        MerchantSession {
            core,
            engine,
            merchants,
            may_act,
            shown_open: HashMap::new(),
            in_flight: HashMap::new(),
        }
        .start()
    }

    /// Sends an order's update and remembers whether it is still open.
    fn show(&mut self, order: &OrderView) {
        if order.status.is_final() {
            self.shown_open.remove(&order.id);
        } else {
            self.shown_open.insert(order.id, order.merchant_id);
        }
        self.core.send(&Outbound::OrderUpdate { order });
    }

    /// After a merchant's feed was taken up again: the board as it is now, as updates, and the
    /// final state of every order shown open that has closed meanwhile.
    fn catch_up(
        &mut self,
        merchant_id: MerchantId,
        board: Vec<OrderView>,
        ctx: &mut Context<Self>,
    ) {
        let open: HashSet<OrderId> = board.iter().map(|order| order.id).collect();
        let closed: Vec<OrderId> = self
            .shown_open
            .iter()
            .filter(|(id, merchant)| **merchant == merchant_id && !open.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for order in &board {
            self.show(order);
        }
        if closed.is_empty() {
            return;
        }
        let engine = self.engine.clone();
        ctx.spawn(
            async move {
                let mut orders = Vec::with_capacity(closed.len());
                for id in closed {
                    if let Ok(order) = engine.order(id).await {
                        orders.push(order);
                    }
                }
                orders
            }
            .into_actor(self)
            .map(|orders, act, _| {
                for order in &orders {
                    act.show(order);
                }
            }),
        );
    }

    /// Subscribes to the boards of `merchants`; with `announce`, sends the combined board.
    /// `retry_ms` is set when a feed is taken up again: a passing failure is then retried
    /// after that pause, with the socket left open.
    fn subscribe(
        &mut self,
        merchants: Vec<MerchantId>,
        announce: bool,
        retry_ms: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let engine = self.engine.clone();
        let again = merchants.clone();
        ctx.wait(
            async move {
                let mut boards = Vec::with_capacity(merchants.len());
                for merchant_id in merchants {
                    boards.push((
                        merchant_id,
                        engine.subscribe(SubscribeBoard::new(merchant_id)).await?,
                    ));
                }
                Ok::<_, crate::actors::EngineError>(boards)
            }
            .into_actor(self)
            .map(move |subscribed, act, ctx| match subscribed {
                Ok(boards) => {
                    let mut orders = Vec::new();
                    for (merchant_id, (board, feed)) in boards {
                        ctx.add_stream(feed_stream(feed).map(move |update| BoardItem {
                            merchant_id,
                            update,
                        }));
                        if announce {
                            orders.extend(board);
                        } else {
                            act.catch_up(merchant_id, board, ctx);
                        }
                    }
                    if announce {
                        orders.sort_by_key(|order| order.id);
                        act.shown_open
                            .extend(orders.iter().map(|order| (order.id, order.merchant_id)));
                        act.core.send(&Outbound::Board { orders: &orders });
                    }
                }
                Err(error) => {
                    act.core.error(error.code(), &error.to_string());
                    match retry_ms {
                        Some(pause_ms) if passing(&error) => {
                            ctx.run_later(Duration::from_millis(pause_ms), move |act, ctx| {
                                act.subscribe(
                                    again,
                                    false,
                                    Some(next_resubscribe_ms(pause_ms)),
                                    ctx,
                                );
                            });
                        }
                        _ => act.close(ctx, CloseCode::Error, "dispatch unavailable"),
                    }
                }
            }),
        );
    }

    fn handle_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let Some(message) = receive::<MerchantIn>(&mut self.core, text) else {
            return;
        };
        if !self.may_act {
            self.core.error(
                ErrorCode::InsufficientScope,
                "This key or token lacks the scope `orders:write` that acting on orders needs.",
            );
            return;
        }
        if let Some(problem) = message.problem() {
            self.core.error(ErrorCode::BadMessage, &problem);
            return;
        }
        // In flight (one per order) and waiting behind them; at most COMMANDS_PENDING_MAX.
        let pending =
            self.in_flight.len() + self.in_flight.values().map(VecDeque::len).sum::<usize>();
        if pending >= COMMANDS_PENDING_MAX {
            self.core.error(
                ErrorCode::RateLimited,
                "Too many commands waiting on this socket; this one was dropped.",
            );
            return;
        }
        match self.in_flight.get_mut(&message.order_id()) {
            Some(waiting) => waiting.push_back(message),
            None => {
                self.in_flight.insert(message.order_id(), VecDeque::new());
                self.run(message, ctx);
            }
        }
    }

    /// Runs one command; when it is answered, the next one waiting for the same order.
    fn run(&mut self, message: MerchantIn, ctx: &mut Context<Self>) {
        let order_id = message.order_id();
        let engine = self.engine.clone();
        let mine: HashSet<MerchantId> = self.merchants.iter().copied().collect();
        let work = async move {
            let order = engine.order(message.order_id()).await?;
            // Another merchant's order is answered exactly like one that does not exist.
            if !mine.contains(&order.merchant_id) {
                return Err(crate::actors::EngineError::OrderNotFound);
            }
            let merchant = order.merchant_id;
            match message {
                MerchantIn::AcceptOrder(Accept {
                    order_id,
                    prep_minutes,
                }) => {
                    engine
                        .execute(MerchantAccept {
                            merchant_id: merchant,
                            order_id,
                            prep_minutes,
                        })
                        .await
                }
                MerchantIn::RejectOrder(Reject { order_id, reason }) => {
                    engine
                        .execute(MerchantReject {
                            merchant_id: merchant,
                            order_id,
                            reason,
                        })
                        .await
                }
                MerchantIn::OrderReady(Ready { order_id }) => {
                    engine
                        .execute(MerchantReady {
                            merchant_id: merchant,
                            order_id,
                        })
                        .await
                }
            }
        };
        ctx.spawn(work.into_actor(self).map(move |outcome, act, ctx| {
            if let Err(error) = outcome {
                act.core.error(error.code(), &error.to_string());
            }
            let next = act
                .in_flight
                .get_mut(&order_id)
                .and_then(|waiting| waiting.pop_front());
            match next {
                Some(message) => act.run(message, ctx),
                None => {
                    act.in_flight.remove(&order_id);
                }
            }
        }));
    }
}

impl Actor for MerchantSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_socket(ctx);
        self.subscribe(self.merchants.clone(), true, None, ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stop_socket();
    }
}

impl Socket for MerchantSession {
    fn core(&mut self) -> &mut SocketCore {
        &mut self.core
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for MerchantSession {
    fn handle(&mut self, frame: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        if let Inbound::Text(text) = self.inbound(frame, ctx) {
            self.handle_text(&text, ctx);
        }
    }
}

impl StreamHandler<BoardItem> for MerchantSession {
    fn handle(&mut self, item: BoardItem, ctx: &mut Self::Context) {
        match item.update {
            Some(order) => self.show(&order),
            None => {
                let merchant = item.merchant_id;
                ctx.run_later(
                    Duration::from_millis(RESUBSCRIBE_RETRY_MIN_MS),
                    move |act, ctx| {
                        act.subscribe(vec![merchant], false, Some(RESUBSCRIBE_RETRY_MIN_MS), ctx);
                    },
                );
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}
