//! The fence every journal write passes: this process's node id and the epoch it holds each of
//! its regions under. The store holds it ([`super::Store`]'s inner state) and the leases set and
//! check it ([`super::leases`]); it lives apart from both so neither imports the other for it.

use std::collections::HashMap;

/// What journal writes are checked against: this process's node id and its epoch per region.
#[derive(Debug, Clone)]
pub(super) struct Fence {
    pub node: String,
    pub epochs: HashMap<String, i64>,
}
