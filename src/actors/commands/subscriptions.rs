//! Feeds: an order's tracker, a merchant's board, a driver's app.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::drivers::DriverDisconnected;
use crate::actors::command::{Command, Op, Subscription, subscription};
use crate::actors::engine::{Engine, wait_out_restart};
use crate::actors::error::EngineError;
use crate::actors::merchant::MerchantActor;
use crate::actors::protocol::{self, DriverFeed, OrderFeed, Retire};
use crate::actors::router::RouteKey;
use crate::actors::routes::{recall, remember};
use crate::actors::supervision::Entity;
use crate::actors::wire::{self, DriverSnapshot};
use crate::domain::{MerchantId, OrderId, OrderView, UserId};

/// This subject's rows of the op table.
pub const OPS: &[Op] = &[
    subscription::<SubscribeOrder>(),
    subscription::<SubscribeBoard>(),
    subscription::<SubscribeDriver>(),
];

/// The order now and a feed of its changes (and of its driver's location). For a closed
/// order the feed ends at once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubscribeOrder {
    pub order_id: OrderId,
    pub sub: Uuid,
}

impl SubscribeOrder {
    pub fn new(order_id: OrderId) -> Self {
        SubscribeOrder {
            order_id,
            sub: Uuid::new_v4(),
        }
    }
}

impl Subscription for SubscribeOrder {
    const OP: &'static str = "subscribe_order";
    type Answer = OrderView;
    type Item = OrderFeed;

    fn sub(&self) -> Uuid {
        self.sub
    }

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Order(self.order_id))
    }

    fn region(&self, engine: &Engine) -> Option<String> {
        recall(&engine.routes.orders, &self.order_id).map(|region| region.to_string())
    }

    async fn open(
        self,
        engine: &Engine,
    ) -> Result<(OrderView, mpsc::Receiver<OrderFeed>), EngineError> {
        engine.ensure_ready()?;
        let id = self.order_id;
        wait_out_restart("order", id, || async {
            if let Some(addr) = engine.registry.orders.get(&id)
                && let Ok(subscription) = addr.send(protocol::SubscribeOrder).await
            {
                return Ok(Some(subscription));
            }
            match engine.check_not_live_order(id).await {
                Err(EngineError::OrderClosed(_)) => {
                    let view = engine.order(id).await?;
                    let (_, closed) = mpsc::channel(1);
                    Ok(Some((view, closed)))
                }
                Err(error) => Err(error),
                Ok(()) => Ok(None),
            }
        })
        .await
    }
}

/// The merchant's board (every open order) and a feed of changes to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubscribeBoard {
    pub merchant_id: MerchantId,
    pub sub: Uuid,
}

impl SubscribeBoard {
    pub fn new(merchant_id: MerchantId) -> Self {
        SubscribeBoard {
            merchant_id,
            sub: Uuid::new_v4(),
        }
    }
}

impl Subscription for SubscribeBoard {
    const OP: &'static str = "subscribe_board";
    type Answer = Vec<OrderView>;
    type Item = OrderView;

    fn sub(&self) -> Uuid {
        self.sub
    }

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Merchant(self.merchant_id))
    }

    fn region(&self, engine: &Engine) -> Option<String> {
        recall(&engine.routes.merchants, &self.merchant_id).map(|region| region.to_string())
    }

    async fn open(
        self,
        engine: &Engine,
    ) -> Result<(Vec<OrderView>, mpsc::Receiver<OrderView>), EngineError> {
        engine.ensure_ready()?;
        let merchant_id = self.merchant_id;
        let registry = &engine.registry;
        let region = match registry.is_sharing() {
            true => engine.merchant_region(merchant_id).await?,
            false => None,
        };
        if let Some(region) = &region
            && !registry.is_active(region)
        {
            return Err(EngineError::NotOwner(format!("region {region}")));
        }
        wait_out_restart("merchant", merchant_id, || async {
            if registry
                .supervision
                .is_failed(&Entity::Merchant(merchant_id))
            {
                return Err(EngineError::Failed(format!("merchant {merchant_id}")));
            }
            let started = registry.clone();
            let addr = registry
                .merchants
                .get_or_start(merchant_id, || MerchantActor::start(merchant_id, started));
            let Ok(subscription) = addr.send(protocol::SubscribeBoard).await else {
                return Ok(None);
            };
            // Handed off meanwhile: the board is read at the next owner, and this actor,
            // started after the hand-off's sweep, must not linger.
            if let Some(region) = &region
                && !registry.is_active(region)
            {
                addr.do_send(Retire {
                    region: region.clone(),
                    orders: Arc::new(HashSet::new()),
                    all: true,
                });
                return Err(EngineError::NotOwner(format!("region {region}")));
            }
            Ok(Some(subscription))
        })
        .await
    }
}

/// The driver's feed (offers, assignment, order updates), its state, and its active order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubscribeDriver {
    pub driver: UserId,
    pub sub: Uuid,
}

impl SubscribeDriver {
    pub fn new(driver: UserId) -> Self {
        SubscribeDriver {
            driver,
            sub: Uuid::new_v4(),
        }
    }
}

impl Subscription for SubscribeDriver {
    const OP: &'static str = "subscribe_driver";
    type Answer = DriverSnapshot;
    type Item = DriverFeed;

    fn sub(&self) -> Uuid {
        self.sub
    }

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Driver(self.driver))
    }

    async fn open(
        self,
        engine: &Engine,
    ) -> Result<(DriverSnapshot, mpsc::Receiver<DriverFeed>), EngineError> {
        let (status, feed) = engine
            .call_driver(self.driver, protocol::SubscribeDriver)
            .await?;
        let active = match status.active_order_id {
            Some(order_id) => Some(engine.order(order_id).await?),
            None => None,
        };
        Ok((DriverSnapshot { status, active }, feed))
    }

    /// The driver's commands go where its feed is served while it lasts.
    fn routed(&self, engine: &Engine, node: String) {
        remember(&engine.routes.driver_nodes, self.driver, (node, self.sub));
    }

    /// Its socket is gone, as a closed socket at the serving replica would say.
    fn on_unsubscribe(&self) -> Option<serde_json::Value> {
        let closed = DriverDisconnected {
            driver: self.driver,
        };
        wire::encode_call(DriverDisconnected::OP, &closed).ok()
    }
}
