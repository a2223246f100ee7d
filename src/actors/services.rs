//! What every dispatch actor needs, and nothing more: configuration, the store, the snapshot
//! writer, the maps service, the hooks that tell the rest of the service, and the test hook for faults. Which
//! actors are alive, and where, is the [`super::registry`]'s business: an actor that needs only
//! these dependencies (a merchant) holds only these.

use std::sync::Arc;

use super::snapshot_writer::SnapshotSender;
use super::supervision::Faults;
use crate::config::DispatchConfig;
use crate::maps::Maps;
use crate::store::Store;

/// What the engine tells the rest of the service about.
#[derive(Clone, Default)]
pub struct EngineHooks {
    /// Notified whenever an order reaches a final status (delivered, rejected, cancelled):
    /// settlement then makes the money follow.
    pub order_closed: Option<Arc<tokio::sync::Notify>>,
    /// Given every journaled transition, for the order-event stream (when Redis is set).
    pub order_events: Option<crate::bus::events::OrderEventSink>,
}

/// Shared by every dispatch actor.
pub struct Services {
    pub config: DispatchConfig,
    pub hooks: EngineHooks,
    pub store: Store,
    pub snapshots: SnapshotSender,
    pub faults: Faults,
    /// Travel times and routes: ranking candidates, offers' pickup ETAs, tracking ETAs.
    pub maps: Arc<Maps>,
    /// Learned ETA corrections and the ETA error.
    pub eta: Arc<super::eta::EtaLearning>,
}

impl Services {
    pub fn new(
        config: DispatchConfig,
        hooks: EngineHooks,
        store: Store,
        snapshots: SnapshotSender,
        maps: Arc<Maps>,
    ) -> Arc<Services> {
        Arc::new(Services {
            config,
            hooks,
            store,
            snapshots,
            faults: Faults::default(),
            maps,
            eta: Default::default(),
        })
    }

    /// The learned correction to scale road durations by in `region` at this hour.
    pub fn eta_factor(&self, region: &crate::geo::RegionId) -> f64 {
        self.eta.factor(region.as_str())
    }
}
