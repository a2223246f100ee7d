//! The router: this replica's end of the Redis link between replicas. Every replica subscribes
//! to its own channel `<prefix>node:<node id>`; a command for an entity whose region another
//! replica owns is published to that replica's channel and answered on ours (`calls.rs`, with
//! the table of recent answers in `answers.rs`); a subscription's updates are forwarded by the
//! owner to the replica holding the socket (`feeds.rs`); location fixes travel best-effort
//! (`casts.rs`). This file holds the router's state, its channel and what arrives on it; it
//! reaches the engine only through [`Executor`] and serves it through [`Routing`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::executor::Executor;
use super::ownership::Ownership;
use super::wire::{Envelope, RemoteError};
use crate::actors::EngineError;
use crate::actors::router::{FeedSink, Resolve, Routing};
use crate::bus::Bus;
use crate::tasks::Tasks;

/// Deadline of one publish.
pub(super) const PUBLISH_DEADLINE: Duration = Duration::from_millis(1_000);
/// Pause before subscribing to our channel again after the connection dropped.
const LISTEN_RETRY: Duration = Duration::from_millis(500);
/// Location fixes waiting to be published to other replicas; more are dropped.
const LOCATION_QUEUE: usize = 20_000;

/// A subscription another replica serves for a socket here.
pub(super) struct RemoteFeed {
    /// Where this replica's session reads the updates.
    pub sink: Box<dyn FeedSink>,
    /// The replica serving it.
    pub node: String,
    /// The region it depends on; none for drivers, whose feed lasts while its replica holds
    /// some region (a replica that holds none serves no driver).
    pub region: Option<String>,
    /// When its server last said it still forwards it (or it was sent there).
    pub confirmed: Instant,
}

/// A subscription this replica serves for a session on another.
pub(super) struct Forward {
    /// Cancels its forwarding task.
    pub stop: CancellationToken,
    /// The subscriber's replica.
    pub to: String,
    /// Still forwarding updates (not only retrying its end): listed in the beats.
    pub serving: bool,
    /// What runs here when its subscriber goes away (a driver's closed socket).
    pub on_unsubscribe: Option<Value>,
}

/// An answer already given, or a command still running (a repeat of it is not run again).
pub(super) enum Answered {
    Running,
    Done(Box<Result<Value, RemoteError>>),
}

/// Recent answers by command id, and the ids in the order they came (for expiry).
#[derive(Default)]
pub(super) struct Answers {
    pub table: HashMap<Uuid, Answered>,
    pub order: VecDeque<(Uuid, Instant)>,
}

/// Runs `on_drop` when dropped: clean-up for a future that may be abandoned mid-way.
pub(super) struct Forget<F: FnMut()> {
    pub on_drop: F,
}

impl<F: FnMut()> Drop for Forget<F> {
    fn drop(&mut self) {
        (self.on_drop)();
    }
}

/// The router's state.
pub struct Router {
    pub(super) bus: Arc<Bus>,
    pub(super) node: String,
    pub(super) ownership: Arc<Ownership>,
    pub(super) deadline: Duration,
    pub(super) executor: Arc<dyn Executor>,
    pub(super) tasks: Tasks,
    pub(super) pending: Mutex<HashMap<Uuid, oneshot::Sender<Result<Value, RemoteError>>>>,
    pub(super) answers: Mutex<Answers>,
    pub(super) feeds: Mutex<HashMap<Uuid, RemoteFeed>>,
    pub(super) forwards: Mutex<HashMap<Uuid, Forward>>,
    /// Replicas heard beating: only their feeds are ended for silence (a replica of an
    /// earlier version, during a rolling deploy, sends no beats).
    pub(super) beating: Mutex<HashSet<String>>,
    pub(super) locations: mpsc::Sender<(String, String)>,
    /// Whether our channel is subscribed now (cross-replica work needs it).
    pub(super) listening: AtomicBool,
}

impl Router {
    /// Starts listening on this replica's channel; commands that arrive run on `executor`.
    /// `deadline` bounds how long a command keeps being resent (a failover takes a lease TTL
    /// plus recovery). Its loops run under `tasks` and stop with them.
    pub fn start(
        bus: Arc<Bus>,
        node: String,
        ownership: Arc<Ownership>,
        deadline: Duration,
        executor: Arc<dyn Executor>,
        tasks: &Tasks,
    ) -> Arc<Router> {
        let (locations, queue) = mpsc::channel(LOCATION_QUEUE);
        let router = Arc::new(Router {
            bus,
            node,
            ownership,
            deadline,
            executor,
            tasks: tasks.clone(),
            pending: Mutex::new(HashMap::new()),
            answers: Mutex::new(Answers::default()),
            feeds: Mutex::new(HashMap::new()),
            forwards: Mutex::new(HashMap::new()),
            beating: Mutex::new(HashSet::new()),
            locations,
            listening: AtomicBool::new(false),
        });
        tasks.spawn(router.clone().listen());
        tasks.spawn(router.clone().publish_locations(queue));
        tasks.spawn(router.clone().check_feeds());
        tasks.spawn(router.clone().beat_feeds());
        router
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// Whether this replica can reach the others now, for `/ready`.
    pub fn health(&self) -> Result<(), String> {
        if !self.listening.load(Ordering::Acquire) {
            return Err("not subscribed to this replica's Redis channel".to_owned());
        }
        if self.bus.recently_failed() {
            return Err("Redis failed a moment ago".to_owned());
        }
        Ok(())
    }

    pub(super) fn channel(&self, node: &str) -> String {
        self.bus.key(&format!("node:{node}"))
    }

    /// Publishes `envelope` to `node`; returns how many replicas received it (0: none listens).
    pub(super) async fn publish(
        &self,
        node: &str,
        envelope: &Envelope,
    ) -> Result<u64, EngineError> {
        let payload = serde_json::to_string(envelope)
            .map_err(|e| EngineError::Unavailable(format!("cannot encode a command: {e}")))?;
        let mut pipeline = redis::pipe();
        pipeline.publish(self.channel(node), payload);
        let (receivers,): (u64,) = self
            .bus
            .run(&pipeline, PUBLISH_DEADLINE)
            .await
            .map_err(|e| EngineError::Unavailable(format!("cannot reach other replicas: {e}")))?;
        Ok(receivers)
    }

    /// Listens on this replica's channel, reconnecting while Redis is away.
    async fn listen(self: Arc<Self>) {
        let channel = self.channel(&self.node);
        loop {
            let pubsub = async {
                let mut pubsub = self.bus.client().get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(PUBLISH_DEADLINE * 2, pubsub).await {
                Ok(Ok(pubsub)) => {
                    // Feeds opened while the channel was down may have lost updates (and their
                    // forwarders, which stop when nobody listens): taken up afresh too.
                    let ended = self.end_all_feeds();
                    self.listening.store(true, Ordering::Release);
                    tracing::info!(node = %self.node, feeds_ended = ended, "listening for commands from other replicas");
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<Envelope>(&payload) {
                            Ok(envelope) => self.clone().receive(envelope),
                            Err(error) => {
                                tracing::warn!(error = %error, "unreadable message from another replica")
                            }
                        }
                    }
                    self.listening.store(false, Ordering::Release);
                    // Updates published while we were away are lost: every subscription served
                    // elsewhere ends, and its session subscribes again and gets the state afresh.
                    let ended = self.end_all_feeds();
                    tracing::warn!(
                        feeds_ended = ended,
                        "lost the Redis channel; subscribing again"
                    );
                }
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, "cannot subscribe to this replica's Redis channel")
                }
                Err(_) => tracing::warn!("Redis did not answer the channel subscription"),
            }
            tokio::time::sleep(LISTEN_RETRY).await;
        }
    }

    /// Handles one message from our channel.
    pub(super) fn receive(self: Arc<Self>, envelope: Envelope) {
        match envelope {
            Envelope::Call { id, from, call } => {
                // Answered on the engine's event loops, spread by id, so that this loop only
                // reads the channel: commands do not queue behind each other's work here.
                let executor = self.executor.clone();
                executor.spawn_spread(
                    id.as_u128() as u64,
                    Box::pin(async move { self.answer(id, from, call).await }),
                );
            }
            Envelope::Cast { call } => {
                if !self.executor.cast(call) {
                    metrics::counter!("route_casts_dropped_total", "reason" => "not_here")
                        .increment(1);
                }
            }
            Envelope::Reply { id, result } => {
                if let Some(waiting) = self
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id)
                {
                    let _ = waiting.send(result);
                }
            }
            Envelope::Feed { sub, from, item } => self.deliver(sub, &from, item),
            Envelope::End { sub, from } if self.feed_served_by(sub, &from) => {
                self.close_feed(sub);
            }
            // The end of a forward from an earlier attempt elsewhere: ours goes on.
            Envelope::End { .. } => {}
            Envelope::Alive { from, subs } => self.confirm_feeds(&from, subs),
            Envelope::Unsubscribe { sub } => {
                let forward = self
                    .forwards
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&sub);
                if let Some(forward) = forward {
                    forward.stop.cancel();
                    // A driver's feed: its socket is gone, as a closed socket here would say.
                    if let Some(closed) = forward.on_unsubscribe {
                        self.executor.cast(closed);
                    }
                }
            }
        }
    }
}

impl Routing for Router {
    fn node(&self) -> &str {
        &self.node
    }

    fn owner(&self, region: &str) -> Option<String> {
        self.ownership.owner(region)
    }

    fn call<'a>(
        &'a self,
        call: Value,
        resolve: Resolve<'a>,
    ) -> BoxFuture<'a, Result<Value, EngineError>> {
        Box::pin(Router::call(self, call, resolve))
    }

    fn cast(&self, node: &str, call: Value) {
        Router::cast(self, node, call)
    }

    fn subscribe<'a>(
        &'a self,
        call: Value,
        sub: Uuid,
        region: Option<String>,
        sink: Box<dyn FeedSink>,
        resolve: Resolve<'a>,
    ) -> BoxFuture<'a, Result<(Value, String), EngineError>> {
        Box::pin(Router::subscribe(self, call, sub, region, sink, resolve))
    }

    fn has_feed(&self, sub: Uuid) -> bool {
        Router::has_feed(self, sub)
    }
}
