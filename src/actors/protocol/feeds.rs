//! What subscribers of an actor receive: an order's trackers, a driver's app. These travel
//! further than the actors — through sockets and, between replicas, as JSON — so their shape
//! is part of the wire format and changes only with it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{OrderId, OrderView, Position, UserId};

/// What an order's subscribers receive. Large payloads are boxed: a subscription is a channel
/// whose first block holds 32 items inline whatever its use, so an item's size is paid 32 times
/// per subscriber (with `OrderView` inline, 8 KiB per connected driver; boxed, under 1 KiB).
/// Boxing does not change the JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OrderFeed {
    /// The order changed (journaled first).
    Update(Box<OrderView>),
    /// The assigned driver moved; not journaled.
    DriverLocation {
        lat: f64,
        lon: f64,
        /// Estimated seconds until the order reaches the customer.
        eta_seconds: f64,
    },
    /// The leg the driver is on was routed (or re-routed): the line to draw.
    Route(Box<RouteView>),
}

/// Which leg of a delivery a route is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegKind {
    /// From the driver to the merchant.
    ToPickup,
    /// From the merchant to the customer.
    ToDropoff,
}

/// The route of the leg an order's driver is on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub order_id: OrderId,
    pub leg: LegKind,
    /// `[lat, lon]` pairs from the driver's position when routed to the leg's end.
    pub points: Vec<[f64; 2]>,
    /// The router's duration, before the learned correction.
    pub duration_secs: f64,
    pub distance_m: f64,
    /// Whether it follows roads (OSRM) or is the straight line.
    pub by_road: bool,
}

/// An offer as the driver sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferView {
    pub offer_id: Uuid,
    pub order_id: OrderId,
    pub pickup: Position,
    pub dropoff: Position,
    pub expires_at: DateTime<Utc>,
    /// The merchant's address.
    #[serde(default)]
    pub pickup_address: String,
    #[serde(default)]
    pub dropoff_address: String,
    /// Estimated seconds from the driver to the pickup, by road when the maps service
    /// answered (absent in offers re-issued after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_eta_seconds: Option<f64>,
}

/// What a driver's feed carries; boxed for the reason [`OrderFeed`] gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DriverFeed {
    /// A new offer to answer before `expires_at`.
    Offer(Box<OfferView>),
    /// The offer lapsed (timeout, or the order went away).
    OfferExpired { offer_id: Uuid },
    /// The driver accepted and the order is theirs.
    Assigned(Box<OrderView>),
    /// The active order changed.
    OrderUpdate(Box<OrderView>),
    /// The active order's current leg was routed.
    Route(Box<RouteView>),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscription's channel allocates 32 items inline up front: every connected driver and
    /// every tracking page pays 32 times an item's size.
    #[test]
    fn feed_items_stay_small_because_every_subscription_holds_32_inline() {
        const FEED_ITEM_MAX_BYTES: usize = 32;
        assert!(std::mem::size_of::<DriverFeed>() <= FEED_ITEM_MAX_BYTES);
        assert!(std::mem::size_of::<OrderFeed>() <= FEED_ITEM_MAX_BYTES);
    }
}
