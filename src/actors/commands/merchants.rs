//! Commands a merchant gives about one of its orders: accept, reject, ready.

use serde::{Deserialize, Serialize};

use crate::actors::command::{Command, Op, command};
use crate::actors::engine::Engine;
use crate::actors::error::EngineError;
use crate::actors::protocol;
use crate::actors::router::RouteKey;
use crate::domain::{MerchantId, OrderId, OrderView};

/// This subject's rows of the op table.
pub const OPS: &[Op] = &[
    command::<MerchantAccept>(),
    command::<MerchantReject>(),
    command::<MerchantReady>(),
];

/// The merchant accepts with a preparation time; dispatch starts looking for a driver.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MerchantAccept {
    pub merchant_id: MerchantId,
    pub order_id: OrderId,
    pub prep_minutes: u32,
}

impl Command for MerchantAccept {
    const OP: &'static str = "merchant_accept";
    const CHANGES_STATE: bool = true;
    type Output = OrderView;

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Order(self.order_id))
    }

    async fn run(self, engine: &Engine) -> Result<OrderView, EngineError> {
        let message = protocol::MerchantAccept {
            merchant_id: self.merchant_id,
            prep_minutes: self.prep_minutes,
        };
        engine.call_order(self.order_id, message).await
    }
}

/// The merchant rejects the order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MerchantReject {
    pub merchant_id: MerchantId,
    pub order_id: OrderId,
    pub reason: String,
}

impl Command for MerchantReject {
    const OP: &'static str = "merchant_reject";
    const CHANGES_STATE: bool = true;
    type Output = OrderView;

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Order(self.order_id))
    }

    async fn run(self, engine: &Engine) -> Result<OrderView, EngineError> {
        let message = protocol::MerchantReject {
            merchant_id: self.merchant_id,
            reason: self.reason,
        };
        engine.call_order(self.order_id, message).await
    }
}

/// The merchant marks the order ready for pickup.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MerchantReady {
    pub merchant_id: MerchantId,
    pub order_id: OrderId,
}

impl Command for MerchantReady {
    const OP: &'static str = "merchant_ready";
    const CHANGES_STATE: bool = true;
    type Output = OrderView;

    fn route(&self, _: &Engine) -> Result<RouteKey, EngineError> {
        Ok(RouteKey::Order(self.order_id))
    }

    async fn run(self, engine: &Engine) -> Result<OrderView, EngineError> {
        let message = protocol::MarkReady {
            merchant_id: self.merchant_id,
        };
        engine.call_order(self.order_id, message).await
    }
}
