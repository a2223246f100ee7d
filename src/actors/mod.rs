//! The dispatch engine as actors (actix 0.13): a region supervisor per region with its driver
//! R-tree; an actor per open order (the order's single writer), per active driver and per
//! merchant with open orders or a board; our own supervision (restart from persisted state, give
//! up on a crash loop); and the snapshot writer behind the journal. [`Engine`] is the one handle
//! the layers above use.

pub mod command;
pub mod commands;
mod driver;
mod engine;
mod error;
pub mod eta;
mod feed;
mod mailbox;
mod merchant;
mod order;
pub(crate) mod protocol;
mod region;
mod registry;
mod roster;
pub mod router;
mod routes;
mod services;
mod snapshot_writer;
mod supervision;
mod target;
pub mod wire;

pub use command::{Command, Served, Subscription};
pub use engine::Engine;
pub use error::EngineError;
pub use feed::FEED_CAPACITY;
pub use protocol::{
    Canceller, Candidate, DriverFeed, DriverStatus, LegKind, OfferView, OrderFeed, RouteView,
};
pub use services::EngineHooks;
pub use supervision::{Entity, FailedActor};
