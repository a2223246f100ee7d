//! The dispatch engine as actors (actix 0.13): a region supervisor per region with its driver
//! R-tree; an actor per open order (the order's single writer), per active driver and per
//! merchant with open orders or a board; our own supervision (restart from persisted state, give
//! up on a crash loop); and the snapshot writer behind the journal. [`Engine`] is the one handle
//! the layers above use.

mod driver;
mod engine;
mod feed;
mod mailbox;
mod merchant;
mod order;
mod region;
pub mod remote;
mod services;
mod snapshot_writer;
mod supervision;

pub use driver::{DriverFeed, DriverStatus, OfferView};
pub use engine::Engine;
pub use feed::FEED_CAPACITY;
pub use order::{Canceller, OrderFeed};
pub use region::Candidate;
pub use services::EngineHooks;
pub use supervision::{Entity, FailedActor};

use crate::domain::{OrderStatus, TransitionError};
use crate::geo::InvalidLocation;
use crate::store::StoreError;

/// Why the engine refused or could not carry out a command.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the location is outside the service area")]
    OutsideServiceArea,
    #[error(transparent)]
    InvalidLocation(#[from] InvalidLocation),
    #[error("no such order")]
    OrderNotFound,
    #[error("the order is already {0}")]
    OrderClosed(OrderStatus),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("no such offer")]
    OfferNotFound,
    #[error("the offer has expired")]
    OfferExpired,
    #[error("the driver already has work")]
    DriverBusy,
    #[error("the location is older than the last one")]
    StaleLocation,
    #[error("{0} failed repeatedly and is stopped until an admin looks at it")]
    Failed(String),
    #[error("dispatch is briefly unavailable: {0}")]
    Unavailable(String),
    #[error("dispatch is recovering open orders; try again shortly")]
    Recovering,
    #[error("this replica does not hold {0}; try again shortly")]
    NotOwner(String),
    /// An error another replica answered with: its code and message.
    #[error("{message}")]
    Remote { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    /// The error code clients see (REST and WebSocket alike); every code is a row of the API's
    /// error table.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::OutsideServiceArea => "outside_service_area",
            EngineError::InvalidLocation(_) => "invalid_location",
            EngineError::OrderNotFound | EngineError::OfferNotFound => "not_found",
            EngineError::OrderClosed(_) | EngineError::Transition(_) => "invalid_transition",
            EngineError::OfferExpired => "offer_expired",
            EngineError::DriverBusy => "driver_busy",
            EngineError::StaleLocation => "stale_location",
            EngineError::Failed(_) => "actor_failed",
            EngineError::Unavailable(_) | EngineError::Recovering | EngineError::NotOwner(_) => {
                "dispatch_unavailable"
            }
            EngineError::Remote { code, .. } => code,
            // A write under a lease this replica no longer holds is as passing as an outage:
            // the region's next owner (or this replica, once it renewed) takes the retry.
            EngineError::Store(StoreError::Unavailable(_) | StoreError::LeaseLost(_)) => {
                "store_unavailable"
            }
            EngineError::Store(_) => "internal_error",
        }
    }

    /// Every code [`EngineError::code`] can return.
    pub const CODES: &'static [&'static str] = &[
        "outside_service_area",
        "invalid_location",
        "not_found",
        "invalid_transition",
        "offer_expired",
        "driver_busy",
        "stale_location",
        "actor_failed",
        "dispatch_unavailable",
        "store_unavailable",
        "internal_error",
    ];
}
