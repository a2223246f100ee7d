//! The engine's error: why a command was refused or could not be carried out. It lives apart
//! from `mod.rs` so that every actor can name it without importing the module that re-exports
//! them all (which would put `mod.rs` in a cycle with each of them).

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
