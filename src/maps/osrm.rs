//! The OSRM HTTP client: `/table/v1/driving` and `/route/v1/driving`, pooled connections, a
//! deadline on every call and a circuit breaker in front. (Interface fixed; being built.)

use std::time::Duration;

use super::{Health, Route};
use crate::geo::LatLon;

/// Why OSRM gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OsrmError {
    #[error("OSRM did not answer within the deadline")]
    Timeout,
    #[error("OSRM is not reachable: {0}")]
    Unreachable(String),
    #[error("OSRM's circuit breaker is open")]
    BreakerOpen,
    #[error("OSRM answered {0}")]
    Refused(String),
}

impl OsrmError {
    /// The metric label: `timeout`, `unreachable`, `breaker_open`, `refused`.
    pub fn kind(&self) -> &'static str {
        match self {
            OsrmError::Timeout => "timeout",
            OsrmError::Unreachable(_) => "unreachable",
            OsrmError::BreakerOpen => "breaker_open",
            OsrmError::Refused(_) => "refused",
        }
    }
}

/// A client of one OSRM server.
pub struct Osrm {
    _base_url: String,
    _deadline: Duration,
}

impl Osrm {
    pub fn new(base_url: &str, deadline: Duration) -> Result<Osrm, String> {
        Ok(Osrm {
            _base_url: base_url.trim_end_matches('/').to_owned(),
            _deadline: deadline,
        })
    }

    /// `secs[source][destination]`, `None` where OSRM found no route.
    pub async fn table(
        &self,
        _sources: &[LatLon],
        _destinations: &[LatLon],
    ) -> Result<Vec<Vec<Option<f64>>>, OsrmError> {
        Err(OsrmError::Unreachable("not built yet".to_owned()))
    }

    pub async fn route(&self, _points: &[LatLon]) -> Result<Route, OsrmError> {
        Err(OsrmError::Unreachable("not built yet".to_owned()))
    }

    /// Asks OSRM something small (for `/ready`), feeding the breaker.
    pub async fn probe(&self) -> Health {
        self.health()
    }

    pub fn health(&self) -> Health {
        Health::Degraded("not built yet".to_owned())
    }
}
