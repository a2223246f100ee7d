//! The one message every actor answers: a region is handed to another replica.

use std::collections::HashSet;
use std::sync::Arc;

use actix::prelude::*;

use crate::domain::OrderId;
use crate::geo::RegionId;

/// The region is handed to another replica: an actor working there stops (answering whether
/// it did). `orders` are the orders of the region that stopped, for drivers working on them.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Retire {
    pub region: RegionId,
    pub orders: Arc<HashSet<OrderId>>,
    /// Stop whatever the actor works on (it belongs to the region, as the engine knows).
    pub all: bool,
}
