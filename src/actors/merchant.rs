//! The merchant actor: one per merchant with open orders or an open board. It keeps the board —
//! every open order of the merchant — current from the order actors' updates, and fans each
//! change out to the merchant's board subscribers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::feed::Feed;
use super::protocol::{BoardUpdate, CrashMerchant, MerchantAddr, Retire, SubscribeBoard};
use super::registry::{Registration, Registry};
use super::services::Services;
use super::supervision::{ChildGuard, Entity};
use crate::domain::{MerchantId, OrderId, OrderView};

/// How often an idle merchant actor checks whether it can stop (no open orders, nobody
/// watching).
const MERCHANT_IDLE_CHECK: Duration = Duration::from_secs(30);

/// Holds only the shared dependencies and its own entry in the registry: a merchant sends
/// nothing to other actors.
pub struct MerchantActor {
    id: MerchantId,
    services: Arc<Services>,
    registration: Registration<MerchantId, MerchantAddr>,
    guard: ChildGuard,
    board: BTreeMap<OrderId, (i64, OrderView)>,
    feed: Feed<OrderView>,
}

impl MerchantActor {
    /// Starts the actor on the merchant's home event loop; it loads the open orders first.
    pub fn start(id: MerchantId, registry: Arc<Registry>) -> MerchantAddr {
        let home = registry.home_of(&id);
        let arbiter = registry.arbiter(&home);
        MerchantActor::start_in_arbiter(&arbiter, move |_| MerchantActor {
            guard: registry.guard(Entity::Merchant(id), home),
            id,
            services: registry.services().clone(),
            registration: registry.merchants.registration(id),
            board: BTreeMap::new(),
            feed: Feed::new("board"),
        })
        .into()
    }
}

/// How long to wait before reading a merchant's board again when the store could not be read
/// (a database outage).
const BOARD_RETRY: Duration = Duration::from_millis(1_000);

impl MerchantActor {
    /// Reads the merchant's open orders into the board. When the store cannot be read (a
    /// database outage) it tries again every [`BOARD_RETRY`] until it can, and announces the
    /// orders it finds then, so that a board started during an outage is not left short.
    /// `announce`: tell the board's subscribers about the orders found (a retry, after they
    /// subscribed); the first load, before anything is handled, only fills the board.
    fn load_board(&mut self, announce: bool) -> ResponseActFuture<Self, ()> {
        let store = self.services.store.clone();
        let id = self.id;
        Box::pin(
            async move {
                let ids = store.open_order_ids_of_merchant(id).await?;
                let mut orders = Vec::with_capacity(ids.len());
                for order_id in ids {
                    if let Some(order) = store.load_order(order_id).await? {
                        orders.push(order);
                    }
                }
                Ok::<_, crate::store::StoreError>(orders)
            }
            .into_actor(self)
            .map(move |loaded, act, ctx| match loaded {
                Ok(orders) => {
                    for order in orders.into_iter().filter(|o| o.is_open()) {
                        if announce {
                            // An update that came meanwhile is newer; the handler keeps it.
                            ctx.notify(BoardUpdate {
                                version: order.version,
                                view: order.view(),
                            });
                        } else {
                            act.board
                                .entry(order.id)
                                .or_insert((order.version, order.view()));
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(merchant_id = %act.id, error = %error, "cannot load the board yet");
                    ctx.run_later(BOARD_RETRY, |act, ctx| {
                        ctx.spawn(act.load_board(true));
                    });
                }
            }),
        )
    }
}

impl Actor for MerchantActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.services.config.fault_injection
            && self.services.faults.take(&Entity::Merchant(self.id))
        {
            panic!("injected fault: merchant {} panics on start", self.id);
        }
        // Nothing is handled until the board is back (or the store failed: then it is read
        // again in the background until it can be, see `load_board`).
        ctx.wait(self.load_board(false));
        ctx.run_interval(MERCHANT_IDLE_CHECK, |act, ctx| {
            if act.board.is_empty() && !act.feed.has_subscribers() {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.registration.release(&ctx.address().into());
        self.guard.disarm();
    }
}

impl Handler<BoardUpdate> for MerchantActor {
    type Result = ();

    fn handle(&mut self, msg: BoardUpdate, _: &mut Self::Context) {
        let stale = self
            .board
            .get(&msg.view.id)
            .is_some_and(|(version, _)| *version >= msg.version);
        if stale {
            return;
        }
        self.feed.publish(&msg.view);
        if msg.view.status.is_final() {
            self.board.remove(&msg.view.id);
        } else {
            self.board.insert(msg.view.id, (msg.version, msg.view));
        }
    }
}

impl Handler<SubscribeBoard> for MerchantActor {
    type Result = MessageResult<SubscribeBoard>;

    fn handle(&mut self, _: SubscribeBoard, _: &mut Self::Context) -> Self::Result {
        let orders = self.board.values().map(|(_, view)| view.clone()).collect();
        MessageResult((orders, self.feed.subscribe()))
    }
}

impl Handler<Retire> for MerchantActor {
    type Result = bool;

    /// Stops if its board holds an order of the region handed off, or its supervisor was that
    /// region: its sessions subscribe again, at the new owner.
    fn handle(&mut self, msg: Retire, ctx: &mut Self::Context) -> bool {
        let retire = msg.all
            || self.guard.supervisor() == &msg.region
            || self.board.keys().any(|id| msg.orders.contains(id));
        if retire {
            self.guard.disarm();
            ctx.stop();
        }
        retire
    }
}

impl Handler<CrashMerchant> for MerchantActor {
    type Result = ();

    fn handle(&mut self, _: CrashMerchant, _: &mut Self::Context) {
        if self.services.config.fault_injection {
            panic!("injected fault: merchant {} panics", self.id);
        }
    }
}
