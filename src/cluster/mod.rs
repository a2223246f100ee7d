//! The cluster layer: how replicas share the regions and reach each other. Leases and
//! membership decide who owns which region (`leases.rs`, with the view in `ownership.rs`); the
//! router carries commands, answers, feeds and casts between replicas over Redis (`router.rs`,
//! `calls.rs`, `answers.rs`, `feeds.rs`, `casts.rs`, the envelope in `wire.rs`). It sits above
//! the engine: it serves the engine's [`crate::actors::router::Routing`] trait and calls back
//! through [`executor::Executor`], so neither imports the other in a circle.

mod answers;
mod calls;
mod casts;
pub mod executor;
mod feeds;
mod leases;
mod ownership;
pub mod router;
pub mod wire;

pub use leases::{Cluster, LeaseState, fair_share};
pub use ownership::Ownership;
pub use router::Router;
