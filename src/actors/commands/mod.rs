//! Every command and subscription of the engine, one struct each, grouped by subject; and the
//! op table that finds one by its wire name when it arrives from another replica. Adding a
//! command is one struct, one impl and one row in its subject's `OPS`, in one file.

pub mod drivers;
pub mod merchants;
pub mod orders;
pub mod subscriptions;

use super::command::Op;

/// The row for `op`, if this version knows it.
pub fn find(op: &str) -> Option<&'static Op> {
    [
        orders::OPS,
        merchants::OPS,
        drivers::OPS,
        subscriptions::OPS,
    ]
    .into_iter()
    .flatten()
    .find(|row| row.name == op)
}

/// Every op, for tests.
pub fn all() -> impl Iterator<Item = &'static Op> {
    [
        orders::OPS,
        merchants::OPS,
        drivers::OPS,
        subscriptions::OPS,
    ]
    .into_iter()
    .flatten()
}

pub use drivers::{
    AnswerOffer, Delivered, DriverAvailability, DriverDisconnected, DriverLocation, DriverOffline,
    IndexedDrivers, PickedUp, ReadDriverStatus,
};
pub use merchants::{MerchantAccept, MerchantReady, MerchantReject};
pub use orders::{CancelOrder, GetOrder, PlaceOrder};
pub use subscriptions::{SubscribeBoard, SubscribeDriver, SubscribeOrder};
