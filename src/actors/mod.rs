//! The dispatch engine as actors (actix 0.13): a region supervisor per region with its driver
//! R-tree; an actor per open order (the order's single writer), per active driver and per
//! merchant with open orders or a board; our own supervision (restart from persisted state, give
//! up on a crash loop); and the snapshot writer behind the journal. [`Engine`] is the one handle
//! the layers above use.

pub mod command;
pub mod commands;
mod driver;
mod engine;
mod feed;
mod mailbox;
mod merchant;
mod order;
mod region;
pub mod router;
mod routes;
mod services;
pub mod sessions;
mod snapshot_writer;
mod socket;
mod supervision;
mod target;
pub mod wire;

pub use command::{Command, Served, Subscription};
pub use driver::{DriverFeed, DriverStatus, OfferView};
pub use engine::Engine;
pub use feed::FEED_CAPACITY;
pub use order::{Canceller, OrderFeed};
pub use region::Candidate;
pub use services::EngineHooks;
pub use socket::{MAX_FRAME_BYTES, OUTBOX_CAPACITY};
pub use supervision::{Entity, FailedActor};

use crate::domain::{OrderStatus, TransitionError};
use crate::error::ErrorCode;
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
    Remote { code: ErrorCode, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    /// The row of the error table clients see (REST and WebSocket alike), and that decides
    /// whether the router resends a command refused with it.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::OutsideServiceArea => ErrorCode::OutsideServiceArea,
            EngineError::InvalidLocation(_) => ErrorCode::InvalidLocation,
            EngineError::OrderNotFound | EngineError::OfferNotFound => ErrorCode::NotFound,
            EngineError::OrderClosed(_) | EngineError::Transition(_) => {
                ErrorCode::InvalidTransition
            }
            EngineError::OfferExpired => ErrorCode::OfferExpired,
            EngineError::DriverBusy => ErrorCode::DriverBusy,
            EngineError::StaleLocation => ErrorCode::StaleLocation,
            EngineError::Failed(_) => ErrorCode::ActorFailed,
            EngineError::Unavailable(_) | EngineError::Recovering | EngineError::NotOwner(_) => {
                ErrorCode::DispatchUnavailable
            }
            EngineError::Remote { code, .. } => *code,
            // A write under a lease this replica no longer holds is as passing as an outage:
            // the region's next owner (or this replica, once it renewed) takes the retry.
            EngineError::Store(StoreError::Unavailable(_) | StoreError::LeaseLost(_)) => {
                ErrorCode::StoreUnavailable
            }
            EngineError::Store(_) => ErrorCode::Internal,
        }
    }
}
