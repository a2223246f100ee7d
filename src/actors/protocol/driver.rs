//! What a driver's actor is sent: the driver's app's commands (through the engine), and the
//! order's side of an offer — reserve, publish, withdraw — and of the assigned order.

use actix::prelude::*;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::feeds::{DriverFeed, DriverStatus, OfferView};
use crate::actors::error::EngineError;
use crate::domain::{OrderId, OrderStatus, OrderView};
use crate::geo::LatLon;

/// A GPS fix. A fix older than the last accepted one is refused ([`EngineError::StaleLocation`]).
#[derive(Clone, Message)]
#[rtype(result = "Result<(), EngineError>")]
pub struct UpdateLocation {
    pub location: LatLon,
    /// When the fix was taken, unix milliseconds, if the app says.
    pub ts_ms: Option<i64>,
}

/// The driver goes on or off duty.
#[derive(Clone, Message)]
#[rtype(result = "DriverStatus")]
pub struct SetAvailability {
    pub available: bool,
}

/// The driver's app disconnected for good (after the grace period): out of the indexes until
/// it comes back. An active order stays assigned.
#[derive(Clone, Message)]
#[rtype(result = "()")]
pub struct GoOffline;

/// One of the driver's sockets closed. Unless a socket is open again when the grace period
/// ends, the driver goes offline (out of the indexes); an active order stays assigned.
#[derive(Clone, Message)]
#[rtype(result = "()")]
pub struct SessionClosed;

/// A feed of the driver's offers and order updates, with the current state; marks the driver
/// online.
#[derive(Clone, Message)]
#[rtype(result = "(DriverStatus, mpsc::Receiver<DriverFeed>)")]
pub struct SubscribeDriver;

/// The current state.
#[derive(Clone, Message)]
#[rtype(result = "DriverStatus")]
pub struct GetDriverStatus;

/// An order asks to hold an offer for this driver. `true` when the driver was free and is now
/// reserved for it; nothing reaches the driver until [`PublishOffer`] (after the journal).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct ReserveOffer {
    pub offer: OfferView,
}

/// The offer is journaled: show it to the driver.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishOffer {
    pub offer_id: Uuid,
}

/// The order no longer offers this (reservation not journaled, expired, or order gone).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WithdrawOffer {
    pub offer_id: Uuid,
    /// Tell the driver's app (`offer_expired`); false when it never saw the offer.
    pub notify: bool,
}

/// The driver answers the open offer. Accepting returns the assigned order.
#[derive(Clone, Message)]
#[rtype(result = "Result<Option<OrderView>, EngineError>")]
pub struct AnswerOffer {
    pub offer_id: Uuid,
    pub accept: bool,
}

/// A step of the delivery the driver reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    PickedUp,
    Delivered,
}

impl Progress {
    /// Whether an order in `status` has already gone through this step.
    pub fn done_in(self, status: OrderStatus) -> bool {
        match self {
            Progress::PickedUp => matches!(status, OrderStatus::PickedUp | OrderStatus::Delivered),
            Progress::Delivered => status == OrderStatus::Delivered,
        }
    }
}

/// The driver reports picking up or delivering its active order.
#[derive(Clone, Message)]
#[rtype(result = "Result<OrderView, EngineError>")]
pub struct ReportProgress {
    pub order_id: OrderId,
    pub step: Progress,
}

/// The order the driver is assigned to (or offered) changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct OrderChanged {
    pub view: OrderView,
}

/// The active order's current leg was routed: shown to the driver.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RouteChanged {
    pub route: super::feeds::RouteView,
}

/// Sent by a recovering order: this driver is assigned to it, or holds its open offer.
#[derive(Message)]
#[rtype(result = "()")]
pub enum RestoreWork {
    Assigned(OrderId),
    Offer(OfferView),
}

/// A restarted region rebuilds its index: tell it where you are, if matchable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reannounce;

/// Test hook: the actor panics on receipt (fault injection must be enabled).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashDriver;
