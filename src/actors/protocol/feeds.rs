//! What subscribers of an actor receive: an order's trackers, a driver's app. These travel
//! further than the actors — through sockets and, between replicas, as JSON — so their shape
//! is part of the wire format and changes only with it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{OrderId, OrderView, Position, UserId};

/// What an order's subscribers receive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OrderFeed {
    /// The order changed (journaled first).
    Update(OrderView),
    /// The assigned driver moved; not journaled.
    DriverLocation {
        lat: f64,
        lon: f64,
        /// Estimated seconds until the order reaches the customer.
        eta_seconds: f64,
    },
}

/// An offer as the driver sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferView {
    pub offer_id: Uuid,
    pub order_id: OrderId,
    pub pickup: Position,
    pub dropoff: Position,
    pub expires_at: DateTime<Utc>,
}

/// What a driver's feed carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DriverFeed {
    /// A new offer to answer before `expires_at`.
    Offer(OfferView),
    /// The offer lapsed (timeout, or the order went away).
    OfferExpired { offer_id: Uuid },
    /// The driver accepted and the order is theirs.
    Assigned(OrderView),
    /// The active order changed.
    OrderUpdate(OrderView),
}

/// A driver's state as the engine reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriverStatus {
    pub driver_id: UserId,
    pub online: bool,
    pub available: bool,
    pub location: Option<Position>,
    pub offer: Option<OfferView>,
    pub active_order_id: Option<OrderId>,
}
