//! What an order actor keeps of its driver's legs for road ETAs (see [`super::road_eta`]): the
//! routed leg the driver is on, the delivery leg known ahead, and the last route frame.

use std::time::Instant;

use crate::actors::protocol::{LegKind, OrderFeed};
use crate::maps::Route;
use crate::maps::progress::LegProgress;

/// The routed leg the driver is on.
pub(super) struct RoutedLeg {
    pub(super) kind: LegKind,
    pub(super) progress: LegProgress,
    /// When it was routed: how long it took is measured from here.
    pub(super) routed_at: Instant,
    /// The learned correction it was told with.
    pub(super) factor: f64,
    /// Its duration was already compared with what happened (the driver arrived).
    pub(super) learned: bool,
}

/// The order's legs: the current one, the delivery leg known ahead (for the ETA before the
/// pickup), and the route frame new subscribers get first.
#[derive(Default)]
pub(super) struct Legs {
    pub(super) current: Option<RoutedLeg>,
    /// Pickup to dropoff, routed with the first leg.
    pub(super) delivery: Option<Route>,
    /// A route request is out.
    pub(super) routing: bool,
    pub(super) last_request: Option<Instant>,
    pub(super) last_frame: Option<OrderFeed>,
}
