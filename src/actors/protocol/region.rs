//! What a region's supervisor is sent: its drivers' positions for the index (from the driver
//! actors), the searches of its orders, and the orders to rebuild from the journal.

use actix::prelude::*;

use crate::domain::{OrderId, UserId};
use crate::geo::LatLon;

/// Puts a driver into the index, or moves it there. Sent by the driver's actor whenever it is
/// matchable and its location changes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpsertDriver {
    pub driver_id: UserId,
    pub location: LatLon,
}

/// Takes a driver out of the index (it went offline, took an offer, or left the band).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveDriver {
    pub driver_id: UserId,
}

/// A driver who could take an order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub driver_id: UserId,
    /// Where the driver was when found.
    pub location: LatLon,
    /// Straight-line distance to the pickup.
    pub distance_m: f64,
    /// Estimated time to reach the pickup: by road when the maps service answered, else at
    /// the configured average speed.
    pub pickup_eta_secs: f64,
}

/// The `k` best available drivers within `radius_m` of `pickup`, by estimated pickup time,
/// leaving out `exclude` (drivers who already passed on this order).
#[derive(Message)]
#[rtype(result = "Vec<Candidate>")]
pub struct FindCandidates {
    pub pickup: LatLon,
    pub radius_m: f64,
    pub k: usize,
    pub exclude: Vec<UserId>,
}

/// What a batch decided for one order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MatchOutcome {
    /// This driver is the order's in the batch's best assignment.
    Driver(Candidate),
    /// There were drivers in range, but the assignment gave them to other orders: try again
    /// in the next window.
    Outbid,
    /// Nobody in range: widen the search.
    NoneInRange,
}

/// Batched matching: joins the current window's batch; answered when the window closes.
#[derive(Message)]
#[rtype(result = "MatchOutcome")]
pub struct RequestMatch {
    pub pickup: LatLon,
    pub radius_m: f64,
    pub k: usize,
    pub exclude: Vec<UserId>,
}

/// An order actor found the journal ahead of its state (a write whose answer was lost, in an
/// outage, committed after all) and stopped: rebuild it from the journal. Not a crash, so not
/// counted against the restart limit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadOrder {
    pub order_id: OrderId,
}

/// How many drivers the index holds (for tests and operators).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct IndexSize;

/// Test hook: the region panics on receipt (fault injection must be enabled).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashRegion;
