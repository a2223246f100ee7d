//! What an order's actor is sent: the merchant's and the admin's commands (through the engine)
//! and the offered or assigned driver's answers (from the driver's actor).

use actix::prelude::*;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::feeds::OrderFeed;
use crate::actors::error::EngineError;
use crate::domain::{MerchantId, OrderView, UserId};
use crate::geo::LatLon;

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

/// Test hook: the actor panics on receipt (fault injection must be enabled).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashOrder;
