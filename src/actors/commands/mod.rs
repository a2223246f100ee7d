//! Every command and subscription of the engine, one struct each, grouped by subject; and the
//! op table that finds one by its wire name when it arrives from another replica. Adding a
//! command is one struct, one impl and one row in its subject's `OPS`, in one file.

pub mod drivers;
pub mod merchants;
pub mod orders;
pub mod subscriptions;

use super::command::Op;

/// The op table: every subject's rows.
const SUBJECTS: [&[Op]; 4] = [
    orders::OPS,
    merchants::OPS,
    drivers::OPS,
    subscriptions::OPS,
];

/// The row for `op`, if this version knows it.
pub fn find(op: &str) -> Option<&'static Op> {
    SUBJECTS.into_iter().flatten().find(|row| row.name == op)
}

pub use drivers::{
    AnswerOffer, Delivered, DriverAvailability, DriverDisconnected, DriverLocation, DriverOffline,
    IndexedDrivers, PickedUp, ReadDriverStatus,
};
pub use merchants::{MerchantAccept, MerchantReady, MerchantReject};
pub use orders::{CancelOrder, GetOrder, PlaceOrder};
pub use subscriptions::{SubscribeBoard, SubscribeDriver, SubscribeOrder};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_one_row_and_every_golden_command_is_known() {
        let mut seen = std::collections::HashSet::new();
        for op in SUBJECTS.into_iter().flatten() {
            assert!(seen.insert(op.name), "{} has two rows", op.name);
            assert_eq!(find(op.name).map(|row| row.name), Some(op.name));
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wire/call");
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let call: serde_json::Value = serde_json::from_str(&text).unwrap();
            let op = call["op"].as_str().unwrap();
            assert!(find(op).is_some(), "the golden command {op} has no row");
        }
        assert_eq!(find("no_such_op").map(|op| op.name), None);
    }
}
