//! The state every handler reaches (`web::Data<AppState>`), and the registry of checkouts
//! running in this process that it holds. Kept apart from `mod.rs` and the handlers, and
//! importing none of them, so that handlers depend on it without any import cycle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::auth::Auth;
use super::limits::Limits;
use crate::actors::Engine;
use crate::bus::Bus;
use crate::config::{CheckoutConfig, GatewayConfig, NotifyConfig};
use crate::domain::UserId;
use crate::payments::PaymentGateway;
use crate::store::Store;

/// What every handler can reach.
pub struct AppState {
    pub store: Store,
    pub auth: Arc<Auth>,
    /// Redis, when `REDIS_URL` is set.
    pub bus: Option<Arc<Bus>>,
    pub engine: Engine,
    /// This replica's region leases.
    pub cluster: Arc<crate::cluster::Cluster>,
    /// The link to the other replicas, when regions are shared (Redis is set).
    pub router: Option<Arc<crate::cluster::Router>>,
    /// WebSocket policies.
    pub gateway: Arc<GatewayConfig>,
    /// Turns true when the server shuts down, so every socket closes with 1001.
    pub sockets_shutdown: tokio::sync::watch::Receiver<bool>,
    /// Every socket's writer: a stop waits for them to write their close frames.
    pub socket_writers: tokio_util::task::TaskTracker,
    /// The payment gateway (the sandbox unless another is configured).
    pub payments: Arc<dyn PaymentGateway>,
    /// The checkouts running in this process, by key.
    pub checkouts_in_flight: CheckoutsInFlight,
    /// Merchants and menus as checkout reads them, kept for a moment.
    pub menu_cache: super::menu_cache::MenuCache,
    /// Keeps placed checkouts' answers for their keys, in groups, off the answer's path.
    pub key_answers: super::key_answers::KeyAnswers,
    /// Wakes settlement and the reconciler (a checkout ended with money held for no order).
    pub settlement: Arc<tokio::sync::Notify>,
    pub checkout: Arc<CheckoutConfig>,
    pub limits: Arc<Limits>,
    /// Travel times, routes, geocoding and streets.
    pub maps: Arc<crate::maps::Maps>,
    /// The XYZ raster tile URL the pages may draw (`MEALKITZ_MAP_TILES_URL`).
    pub map_tiles_url: Option<String>,
    /// The notification service of this replica (`/ready` reports it).
    pub notifier: Arc<crate::notify::Notifier>,
    /// The WhatsApp conversation worker of this replica (for `/ready`).
    pub chat: Arc<crate::chat::Chat>,
    /// Notification settings: which webhook URLs merchants may register.
    pub notify: Arc<NotifyConfig>,
    /// Sign-in with an OpenID provider, when one is configured.
    pub oidc: Option<Arc<super::oidc::Oidc>>,
}

/// The checkouts running in this process, by (customer, Idempotency-Key): a second request with
/// a key already running here is refused at once, one whose answer is given but not yet kept
/// in the store (see [`super::key_answers`]) gets that answer, and a key the store says this
/// process holds but that no request here runs (its request failed to record how it ended) is
/// taken over.
#[derive(Default)]
pub struct CheckoutsInFlight {
    running: Arc<Mutex<HashMap<(UserId, String), Place>>>,
}

/// What this process knows of a key it runs.
#[derive(Clone)]
enum Place {
    Running,
    /// Answered; the answer is on its way to the store.
    Answered(Answered),
}

/// A checkout's final answer held in memory until the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Answered {
    /// The hash of the request it answered (a retry with another body is refused).
    pub hash: String,
    pub status: u16,
    pub body: String,
}

/// Where a request with a key stands in [`CheckoutsInFlight`].
pub(super) enum Entered {
    /// This request runs the key.
    Fresh(InFlightGuard),
    /// A request with the key runs here already.
    Running,
    /// The key was answered here and its answer is not in the store yet: this is it.
    Answered(Answered),
}

/// A checkout's place in [`CheckoutsInFlight`], given back when its saga ends (not when the
/// client goes away: the saga runs on), or, for an answer kept later, once the store has it.
pub(super) struct InFlightGuard {
    running: Arc<Mutex<HashMap<(UserId, String), Place>>>,
    entry: (UserId, String),
}

impl CheckoutsInFlight {
    /// This checkout's place, unless a request with the same key runs here already or was
    /// answered here.
    pub(super) fn enter(&self, user: UserId, key: &str) -> Entered {
        let entry = (user, key.to_owned());
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.get(&entry) {
            Some(Place::Running) => Entered::Running,
            Some(Place::Answered(answered)) => Entered::Answered(answered.clone()),
            None => {
                running.insert(entry.clone(), Place::Running);
                Entered::Fresh(InFlightGuard {
                    running: self.running.clone(),
                    entry,
                })
            }
        }
    }
}

impl InFlightGuard {
    /// Holds the checkout's final answer until this place is given back.
    pub(super) fn answered(&self, answered: Answered) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.entry.clone(), Place::Answered(answered));
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answered {
        Answered {
            hash: "h".into(),
            status: 201,
            body: "{}".into(),
        }
    }

    #[test]
    fn a_key_runs_once_here_its_answer_is_held_until_given_back_then_it_is_free() {
        let checkouts = CheckoutsInFlight::default();
        let user = UserId::new();
        let Entered::Fresh(place) = checkouts.enter(user, "k") else {
            panic!("a new key is fresh");
        };
        assert!(matches!(checkouts.enter(user, "k"), Entered::Running));
        assert!(matches!(checkouts.enter(user, "other"), Entered::Fresh(_)));
        place.answered(answer());
        assert!(matches!(checkouts.enter(user, "k"), Entered::Answered(a) if a == answer()));
        drop(place);
        assert!(matches!(checkouts.enter(user, "k"), Entered::Fresh(_)));
    }
}
