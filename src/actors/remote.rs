//! Routing between replicas through Redis: a command for an entity whose region another replica
//! owns is published to that replica's channel and answered on ours; a subscription's updates
//! are forwarded by the owner to the replica holding the socket.
//!
//! Every replica subscribes to its own channel `<prefix>node:<node id>`. State-changing commands
//! are delivered at least once: the caller resends the same command id until it is answered (to
//! whichever replica owns the region by then) or its deadline passes, and the owner answers a
//! repeated id from its table of recent answers instead of running the command twice. Location
//! fixes are best-effort: they wait in a bounded queue and are dropped (and counted) when it is
//! full, so they never pile up behind a slow Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::engine::Engine;
use super::error::EngineError;
use super::feed::FEED_CAPACITY;
use super::protocol::{Canceller, DriverFeed, DriverStatus, OrderFeed};
use crate::bus::Bus;
use crate::domain::{MerchantId, NewOrder, OrderId, OrderView, UserId};
use crate::geo::RegionId;
use crate::store::{StoreError, unix_ms};

/// Deadline of reading or writing an answer kept in Redis.
const ANSWER_REDIS_DEADLINE_MS: u64 = 250;
/// Attempts at telling a subscriber its feed ended, and the pause between them: about a
/// minute, longer than a Redis outage the subscriber's own channel would survive.
const END_ATTEMPTS: u32 = 60;
const END_RETRY_PAUSE_MS: u64 = 1_000;
/// How long one attempt waits for an answer before the command is sent again.
const ATTEMPT_TIMEOUT_MS: u64 = 2_000;
/// Pause before the next attempt when the owner is unknown, restarting or not listening.
const RETRY_PAUSE_MS: u64 = 200;
/// Answers kept for repeated command ids, and for how long.
const ANSWERS_KEPT: usize = 50_000;
const ANSWER_KEPT_SECS: u64 = 600;
/// Location fixes waiting to be published to other replicas; more are dropped.
const LOCATION_QUEUE: usize = 20_000;
/// Fixes published in one pipeline.
const LOCATION_BATCH: usize = 256;
/// Deadline of one publish.
const PUBLISH_DEADLINE_MS: u64 = 1_000;
/// Pause before subscribing to our channel again after the connection dropped.
const LISTEN_RETRY_MS: u64 = 500;
/// How often subscriptions served by other replicas are checked against the leases.
const FEED_CHECK_MS: u64 = 500;
/// How often a replica tells each replica it forwards feeds to which subscriptions it still
/// serves: the subscriber's proof that its feeds are alive.
const FEED_BEAT_MS: u64 = 1_000;
/// A feed served elsewhere that its server has not confirmed for this long is ended (its
/// forwarder is gone, or the two replicas cannot reach each other): its session subscribes
/// again and catches up. Three beats, so one or two lost beats end nothing.
const FEED_SILENCE_MS: u64 = 3 * FEED_BEAT_MS + FEED_BEAT_MS / 2;

/// Who owns what, as this replica last read it: kept by the cluster, read by the router.
#[derive(Default)]
pub struct Ownership {
    /// Region → (owner, lease expiry in Unix ms).
    owners: RwLock<HashMap<String, (String, i64)>>,
}

impl Ownership {
    /// Replaces the view with `leases` (`(region, owner, epoch, expires_at_ms)` rows).
    pub fn update(&self, leases: &[(String, String, i64, i64)]) {
        let owners = leases
            .iter()
            .map(|(region, owner, _, expires)| (region.clone(), (owner.clone(), *expires)))
            .collect();
        *self.owners.write().unwrap_or_else(|e| e.into_inner()) = owners;
    }

    /// Notes a change of owner this replica made itself (it claimed `region`, or released it
    /// with `owner` `None`), before the next read of the lease table.
    pub fn set(&self, region: &str, owner: Option<&str>, expires_at_ms: i64) {
        let mut owners = self.owners.write().unwrap_or_else(|e| e.into_inner());
        match owner {
            Some(owner) => owners.insert(region.to_owned(), (owner.to_owned(), expires_at_ms)),
            None => owners.remove(region),
        };
    }

    /// The replica holding `region` now, if any.
    pub fn owner(&self, region: &str) -> Option<String> {
        let now_ms = unix_ms();
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(region)
            .filter(|(_, expires)| *expires > now_ms)
            .map(|(owner, _)| owner.clone())
    }

    /// Whether `node` holds some region now.
    fn is_owner(&self, node: &str) -> bool {
        let now_ms = unix_ms();
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|(owner, expires)| owner == node && *expires > now_ms)
    }
}

/// What the command is about, which decides the replica that runs it.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteKey {
    Region(RegionId),
    Order(OrderId),
    Merchant(MerchantId),
    Driver(UserId),
}

/// A command one replica sends another: the engine's operations.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    PlaceOrder {
        order: NewOrder,
    },
    MerchantAccept {
        merchant_id: MerchantId,
        order_id: OrderId,
        prep_minutes: u32,
    },
    MerchantReject {
        merchant_id: MerchantId,
        order_id: OrderId,
        reason: String,
    },
    MerchantReady {
        merchant_id: MerchantId,
        order_id: OrderId,
    },
    CancelOrder {
        order_id: OrderId,
        by: Canceller,
        reason: String,
    },
    GetOrder {
        order_id: OrderId,
    },
    DriverLocation {
        driver: UserId,
        lat: f64,
        lon: f64,
        ts_ms: Option<i64>,
    },
    DriverAvailability {
        driver: UserId,
        available: bool,
    },
    DriverOffline {
        driver: UserId,
    },
    DriverDisconnected {
        driver: UserId,
    },
    AnswerOffer {
        driver: UserId,
        offer_id: Uuid,
        accept: bool,
    },
    PickedUp {
        driver: UserId,
        order_id: OrderId,
    },
    Delivered {
        driver: UserId,
        order_id: OrderId,
    },
    DriverStatus {
        driver: UserId,
    },
    IndexedDrivers {
        region: RegionId,
    },
    SubscribeOrder {
        order_id: OrderId,
        sub: Uuid,
    },
    SubscribeBoard {
        merchant_id: MerchantId,
        sub: Uuid,
    },
    SubscribeDriver {
        driver: UserId,
        sub: Uuid,
    },
}

impl Call {
    /// Whether repeating it could change state twice: such commands are answered from the
    /// table of recent answers when their id comes again. (A repeated subscription replaces
    /// the first: its updates must flow from wherever it was answered last.)
    fn changes_state(&self) -> bool {
        !matches!(
            self,
            Call::GetOrder { .. }
                | Call::DriverStatus { .. }
                | Call::IndexedDrivers { .. }
                | Call::SubscribeOrder { .. }
                | Call::SubscribeBoard { .. }
                | Call::SubscribeDriver { .. }
        )
    }
}

/// What a command answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Done,
    Order {
        order: OrderView,
    },
    MaybeOrder {
        order: Option<OrderView>,
    },
    Driver {
        status: DriverStatus,
    },
    DriverFeed {
        status: DriverStatus,
        active: Option<OrderView>,
    },
    Board {
        orders: Vec<OrderView>,
    },
    Count {
        count: usize,
    },
}

/// An error as it crosses replicas: its code (a row of the error table), its message, and
/// whether the command should be sent again (the owner is changing or restarting).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteError {
    pub code: String,
    pub message: String,
    pub retry: bool,
}

impl From<&EngineError> for RemoteError {
    fn from(error: &EngineError) -> Self {
        let retry = matches!(
            error,
            EngineError::NotOwner(_)
                | EngineError::Recovering
                | EngineError::Unavailable(_)
                | EngineError::Store(StoreError::LeaseLost(_))
        );
        RemoteError {
            code: error.code().to_owned(),
            message: error.to_string(),
            retry,
        }
    }
}

impl From<RemoteError> for EngineError {
    fn from(error: RemoteError) -> Self {
        let code = EngineError::CODES
            .iter()
            .copied()
            .find(|code| *code == error.code)
            .unwrap_or("internal_error");
        EngineError::Remote {
            code,
            message: error.message,
        }
    }
}

/// One update of a subscription served by another replica.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "feed", rename_all = "snake_case")]
pub enum FeedItem {
    Order { item: OrderFeed },
    Board { order: OrderView },
    Driver { item: DriverFeed },
}

/// A message on a replica's channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Envelope {
    /// A command to run here; answer on `from`'s channel.
    Call { id: Uuid, from: String, call: Call },
    /// A command to run here without an answer (best-effort).
    Cast { call: Call },
    /// The answer to our command `id`.
    Reply {
        id: Uuid,
        result: Result<Reply, RemoteError>,
    },
    /// An update of our subscription `sub`, served by `from`.
    Feed {
        sub: Uuid,
        from: String,
        item: FeedItem,
    },
    /// Our subscription `sub` ended at its owner (the entity closed or moved).
    End { sub: Uuid, from: String },
    /// The subscriber of `sub` (a subscription we serve) is gone.
    Unsubscribe { sub: Uuid },
    /// `from` still forwards these subscriptions to us (sent every beat).
    Alive { from: String, subs: Vec<Uuid> },
}

/// A subscription another replica serves for a socket here.
struct RemoteFeed {
    /// Where this replica's session reads the updates.
    sink: FeedSink,
    /// The replica serving it.
    node: String,
    /// The region it depends on; none for drivers, whose feed lasts while its replica holds
    /// some region (a replica that holds none serves no driver).
    region: Option<String>,
    /// When its server last said it still forwards it (or it was sent there).
    confirmed: Instant,
}

/// A subscription this replica serves for a session on another.
struct Forward {
    task: AbortHandle,
    /// The subscriber's replica.
    to: String,
    /// Still forwarding updates (not only retrying its end): listed in the beats.
    serving: bool,
}

/// The channel an update is delivered into.
pub enum FeedSink {
    Order(mpsc::Sender<OrderFeed>),
    Board(mpsc::Sender<OrderView>),
    Driver(mpsc::Sender<DriverFeed>),
}

impl FeedSink {
    /// Whether the session reading it has gone.
    fn is_closed(&self) -> bool {
        match self {
            FeedSink::Order(tx) => tx.is_closed(),
            FeedSink::Board(tx) => tx.is_closed(),
            FeedSink::Driver(tx) => tx.is_closed(),
        }
    }
}

/// An answer already given, or a command still running (a repeat of it is not run again).
enum Answered {
    Running,
    Done(Box<Result<Reply, RemoteError>>),
}

/// Recent answers by command id, and the ids in the order they came (for expiry).
#[derive(Default)]
struct Answers {
    table: HashMap<Uuid, Answered>,
    order: VecDeque<(Uuid, Instant)>,
}

/// Runs `on_drop` when dropped: clean-up for a future that may be abandoned mid-way.
struct Forget<F: FnMut()> {
    on_drop: F,
}

impl<F: FnMut()> Drop for Forget<F> {
    fn drop(&mut self) {
        (self.on_drop)();
    }
}

/// The router: this replica's end of the Redis link between replicas.
pub struct Router {
    bus: Arc<Bus>,
    node: String,
    ownership: Arc<Ownership>,
    deadline: Duration,
    pending: Mutex<HashMap<Uuid, oneshot::Sender<Result<Reply, RemoteError>>>>,
    answers: Mutex<Answers>,
    feeds: Mutex<HashMap<Uuid, RemoteFeed>>,
    forwards: Mutex<HashMap<Uuid, Forward>>,
    /// Replicas heard beating: only their feeds are ended for silence (a replica of an
    /// earlier version, during a rolling deploy, sends no beats).
    beating: Mutex<std::collections::HashSet<String>>,
    /// The driver of each forwarded driver feed.
    forwarded_drivers: Mutex<HashMap<Uuid, UserId>>,
    locations: mpsc::Sender<(String, String)>,
    /// Whether our channel is subscribed now (cross-replica work needs it).
    listening: std::sync::atomic::AtomicBool,
}

impl Router {
    /// Starts listening on this replica's channel; commands that arrive run on `engine`.
    /// `deadline` bounds how long a command keeps being resent (a failover takes a lease TTL
    /// plus recovery).
    pub fn start(
        bus: Arc<Bus>,
        node: String,
        ownership: Arc<Ownership>,
        deadline: Duration,
        engine: Engine,
    ) -> Arc<Router> {
        let (locations, queue) = mpsc::channel(LOCATION_QUEUE);
        let router = Arc::new(Router {
            bus,
            node,
            ownership,
            deadline,
            pending: Mutex::new(HashMap::new()),
            answers: Mutex::new(Answers::default()),
            feeds: Mutex::new(HashMap::new()),
            forwards: Mutex::new(HashMap::new()),
            beating: Mutex::new(std::collections::HashSet::new()),
            forwarded_drivers: Mutex::new(HashMap::new()),
            locations,
            listening: std::sync::atomic::AtomicBool::new(false),
        });
        actix_web::rt::spawn(router.clone().listen(engine));
        actix_web::rt::spawn(router.clone().publish_locations(queue));
        actix_web::rt::spawn(router.clone().check_feeds());
        actix_web::rt::spawn(router.clone().beat_feeds());
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
        if !self.listening.load(std::sync::atomic::Ordering::Acquire) {
            return Err("not subscribed to this replica's Redis channel".to_owned());
        }
        if self.bus.recently_failed() {
            return Err("Redis failed a moment ago".to_owned());
        }
        Ok(())
    }

    fn channel(&self, node: &str) -> String {
        self.bus.key(&format!("node:{node}"))
    }

    /// Publishes `envelope` to `node`; returns how many replicas received it (0: none listens).
    async fn publish(&self, node: &str, envelope: &Envelope) -> Result<u64, EngineError> {
        let payload = serde_json::to_string(envelope)
            .map_err(|e| EngineError::Unavailable(format!("cannot encode a command: {e}")))?;
        let mut pipeline = redis::pipe();
        pipeline.publish(self.channel(node), payload);
        let (receivers,): (u64,) = self
            .bus
            .run(&pipeline, PUBLISH_DEADLINE_MS)
            .await
            .map_err(|e| EngineError::Unavailable(format!("cannot reach other replicas: {e}")))?;
        Ok(receivers)
    }

    /// Runs `call` on the replica `resolve` names (asked again before every attempt), resending
    /// it under the same id until it is answered or the deadline passes.
    pub async fn call<F, Fut>(&self, call: Call, mut resolve: F) -> Result<Reply, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, EngineError>>,
    {
        let id = Uuid::new_v4();
        // A caller that gives up (its request or socket went) leaves no waiting entry behind.
        let _forget = Forget {
            on_drop: || self.forget(id),
        };
        let started = Instant::now();
        let mut last_problem = String::from("no replica owns it");
        // Whether an attempt reached the owner: it may have run the command, and only a
        // repeat of the same id can bring its answer back.
        let mut delivered = false;
        metrics::counter!("route_calls_total").increment(1);
        while started.elapsed() < self.deadline {
            let node = match resolve().await? {
                Some(node) => node,
                None => {
                    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                    continue;
                }
            };
            let (tx, rx) = oneshot::channel();
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, tx);
            let envelope = Envelope::Call {
                id,
                from: self.node.clone(),
                call: call.clone(),
            };
            let sent = self.publish(&node, &envelope).await;
            let outcome = match sent {
                // Never sent: nothing ran, so the caller hears at once that Redis is away.
                Err(error) if !delivered => {
                    metrics::counter!("route_failures_total", "reason" => "redis").increment(1);
                    return Err(error);
                }
                // An earlier attempt was delivered: its answer is kept by the owner, and is
                // asked for again until the deadline rather than lost.
                Err(error) => {
                    last_problem = error.to_string();
                    None
                }
                Ok(0) => {
                    last_problem = format!("replica {node} is not listening");
                    None
                }
                Ok(_) => {
                    delivered = true;
                    // No attempt outlives the deadline by more than a pause.
                    let wait = Duration::from_millis(ATTEMPT_TIMEOUT_MS)
                        .min(self.deadline.saturating_sub(started.elapsed()))
                        .max(Duration::from_millis(RETRY_PAUSE_MS));
                    match tokio::time::timeout(wait, rx).await {
                        Ok(Ok(result)) => Some(result),
                        _ => {
                            last_problem = format!("replica {node} did not answer");
                            None
                        }
                    }
                }
            };
            // The entry stays for the next attempt (same id): a late answer to this one is as
            // good; the guard removes it when the call returns.
            let took = started.elapsed().as_secs_f64();
            match outcome {
                Some(Ok(reply)) => {
                    metrics::histogram!("route_call_seconds").record(took);
                    return Ok(reply);
                }
                Some(Err(error)) if !error.retry => {
                    metrics::histogram!("route_call_seconds").record(took);
                    return Err(error.into());
                }
                Some(Err(error)) => last_problem = error.message,
                None => {}
            }
            metrics::counter!("route_retries_total").increment(1);
            tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
        }
        metrics::counter!("route_failures_total", "reason" => "deadline").increment(1);
        Err(EngineError::Unavailable(format!(
            "no answer from the owning replica within {} s: {last_problem}",
            self.deadline.as_secs()
        )))
    }

    fn forget(&self, id: Uuid) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Sends `call` to `node` without waiting (location fixes): queued, dropped when the queue
    /// is full.
    pub fn cast(&self, node: &str, call: Call) {
        let Ok(payload) = serde_json::to_string(&Envelope::Cast { call }) else {
            return;
        };
        if self
            .locations
            .try_send((self.channel(node), payload))
            .is_err()
        {
            metrics::counter!("route_casts_dropped_total", "reason" => "queue_full").increment(1);
        }
    }

    /// Publishes queued casts, many per round trip.
    async fn publish_locations(self: Arc<Self>, mut queue: mpsc::Receiver<(String, String)>) {
        let mut batch = Vec::with_capacity(LOCATION_BATCH);
        while queue.recv_many(&mut batch, LOCATION_BATCH).await > 0 {
            let count = batch.len() as u64;
            let mut pipeline = redis::pipe();
            for (channel, payload) in batch.drain(..) {
                pipeline.publish(channel, payload).ignore();
            }
            if self
                .bus
                .run::<()>(&pipeline, PUBLISH_DEADLINE_MS)
                .await
                .is_err()
            {
                metrics::counter!("route_casts_dropped_total", "reason" => "redis")
                    .increment(count);
            }
        }
    }

    /// Registers subscription `sub`, served by `node` (empty until the command is sent).
    fn open_feed(&self, sub: Uuid, node: String, region: Option<String>, sink: FeedSink) {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner()).insert(
            sub,
            RemoteFeed {
                sink,
                node,
                region,
                confirmed: Instant::now(),
            },
        );
    }

    fn close_feed(&self, sub: Uuid) -> Option<RemoteFeed> {
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sub)
    }

    /// Subscribes to an order, a board or a driver served by `node` (`region` is what the
    /// subscription depends on); returns the answer and the feed.
    pub async fn subscribe<T, F, Fut>(
        &self,
        make_call: impl Fn(Uuid) -> Call,
        region: Option<String>,
        wrap: fn(mpsc::Sender<T>) -> FeedSink,
        mut resolve: F,
    ) -> Result<(Reply, mpsc::Receiver<T>, Uuid, String), EngineError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, EngineError>>,
    {
        let sub = Uuid::new_v4();
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        // The feed is registered before the command goes out, since updates may overtake the
        // answer; it is bound to each replica the command is sent to in turn. A caller that
        // gives up before the answer leaves no entry behind.
        self.open_feed(sub, String::new(), region, wrap(tx));
        let bound = Mutex::new(String::new());
        let answered = Forget {
            on_drop: || {
                // The serving replica may have started forwarding: it is told to stop.
                if let Some(feed) = self.close_feed(sub)
                    && !feed.node.is_empty()
                {
                    self.unsubscribe(sub, &feed.node);
                }
            },
        };
        let reply = self
            .call(make_call(sub), || {
                let next = resolve();
                let bound = &bound;
                async move {
                    let node = next.await?;
                    if let Some(node) = &node {
                        self.bind_feed(sub, node);
                        node.clone_into(&mut bound.lock().unwrap_or_else(|e| e.into_inner()));
                    }
                    Ok(node)
                }
            })
            .await?;
        std::mem::forget(answered);
        // The feed may have ended already (a closed order's feed ends at once): the session
        // then reads the answer and the end.
        let node = bound.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok((reply, rx, sub, node))
    }

    fn bind_feed(&self, sub: Uuid, node: &str) {
        if let Some(feed) = self
            .feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&sub)
        {
            feed.node = node.to_owned();
            feed.confirmed = Instant::now();
        }
    }

    /// Whether subscription `sub` is still being served.
    pub fn has_feed(&self, sub: Uuid) -> bool {
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&sub)
    }

    /// Ends subscriptions whose serving replica no longer holds what they depend on (it died
    /// or handed the region off): the session then subscribes again, to the new owner.
    async fn check_feeds(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(FEED_CHECK_MS));
        loop {
            tick.tick().await;
            let beating = self
                .beating
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            // (subscription, whether its session has gone rather than its owner moved)
            let ended: Vec<(Uuid, bool)> = self
                .feeds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(_, feed)| !feed.node.is_empty())
                .filter_map(|(sub, feed)| {
                    // The session stopped reading: the serving replica is told to stop.
                    if feed.sink.is_closed() {
                        return Some((*sub, true));
                    }
                    let moved = match &feed.region {
                        Some(region) => {
                            self.ownership.owner(region).as_deref() != Some(feed.node.as_str())
                        }
                        None => !self.ownership.is_owner(&feed.node),
                    };
                    // Not confirmed by its server lately: its forwarder is gone, or cannot
                    // reach us. Either way updates may be missing: taken up afresh.
                    let silent = beating.contains(&feed.node)
                        && feed.confirmed.elapsed() > Duration::from_millis(FEED_SILENCE_MS);
                    (moved || silent).then_some((*sub, false))
                })
                .collect();
            for (sub, gone) in ended {
                let Some(feed) = self.close_feed(sub) else {
                    continue;
                };
                if gone {
                    self.unsubscribe(sub, &feed.node);
                } else if beating.contains(&feed.node)
                    && feed.confirmed.elapsed() > Duration::from_millis(FEED_SILENCE_MS)
                {
                    // Its forwarder, if it still runs, is told to stop.
                    self.unsubscribe(sub, &feed.node);
                    metrics::counter!("route_feeds_silent_total").increment(1);
                    tracing::info!(%sub, node = %feed.node, "remote feed ended: not confirmed by its server");
                } else {
                    metrics::counter!("route_feeds_moved_total").increment(1);
                    tracing::debug!(%sub, node = %feed.node, "remote feed ended: its owner moved");
                }
            }
        }
    }

    /// Listens on this replica's channel, reconnecting while Redis is away.
    async fn listen(self: Arc<Self>, engine: Engine) {
        let channel = self.channel(&self.node);
        loop {
            let pubsub = async {
                let mut pubsub = self.bus.client().get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(Duration::from_millis(PUBLISH_DEADLINE_MS * 2), pubsub).await
            {
                Ok(Ok(pubsub)) => {
                    // Feeds opened while the channel was down may have lost updates (and their
                    // forwarders, which stop when nobody listens): taken up afresh too.
                    let ended = self.end_all_feeds();
                    self.listening
                        .store(true, std::sync::atomic::Ordering::Release);
                    tracing::info!(node = %self.node, feeds_ended = ended, "listening for commands from other replicas");
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<Envelope>(&payload) {
                            Ok(envelope) => self.clone().receive(envelope, &engine),
                            Err(error) => {
                                tracing::warn!(error = %error, "unreadable message from another replica")
                            }
                        }
                    }
                    self.listening
                        .store(false, std::sync::atomic::Ordering::Release);
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
            tokio::time::sleep(Duration::from_millis(LISTEN_RETRY_MS)).await;
        }
    }

    /// Ends every subscription served elsewhere: each session subscribes again and gets the
    /// state afresh. Returns how many ended.
    fn end_all_feeds(&self) -> usize {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let ended = feeds.len();
        feeds.clear();
        ended
    }

    /// Tells every replica this one forwards feeds to which of them it still serves, once a
    /// beat: a subscriber ends a feed it hears nothing about (see [`FEED_SILENCE_MS`]), and
    /// cancels one it no longer reads.
    async fn beat_feeds(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(FEED_BEAT_MS));
        loop {
            tick.tick().await;
            let mut by_node: HashMap<String, Vec<Uuid>> = HashMap::new();
            for (sub, forward) in self
                .forwards
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                if forward.serving {
                    by_node.entry(forward.to.clone()).or_default().push(*sub);
                }
            }
            for (node, subs) in by_node {
                let alive = Envelope::Alive {
                    from: self.node.clone(),
                    subs,
                };
                // Best-effort: a beat lost now is made up by the next.
                let _ = self.publish(&node, &alive).await;
            }
        }
    }

    /// A beat from `from`: the feeds it serves for us are confirmed; one we do not read (its
    /// session went, or it is bound elsewhere) is cancelled there.
    fn confirm_feeds(&self, from: &str, subs: Vec<Uuid>) {
        let now = Instant::now();
        {
            let mut beating = self.beating.lock().unwrap_or_else(|e| e.into_inner());
            if !beating.contains(from) {
                beating.insert(from.to_owned());
            }
        }
        let unknown: Vec<Uuid> = {
            let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
            subs.into_iter()
                .filter(|sub| match feeds.get_mut(sub) {
                    Some(feed) if feed.node == from => {
                        feed.confirmed = now;
                        false
                    }
                    _ => true,
                })
                .collect()
        };
        for sub in unknown {
            self.unsubscribe(sub, from);
        }
    }

    fn receive(self: Arc<Self>, envelope: Envelope, engine: &Engine) {
        match envelope {
            Envelope::Call { id, from, call } => {
                // Answered on the engine's event loops, spread by id, so that this loop only
                // reads the channel: commands do not queue behind each other's work here.
                let runner = engine.clone();
                engine.spawn_spread(id.as_u128() as u64, async move {
                    self.answer(id, from, call, runner).await
                });
            }
            Envelope::Cast { call } => engine.execute_cast(call),
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
                    forward.task.abort();
                    // A driver's feed: its socket is gone, as a closed socket here would say.
                    if let Some(driver) = self
                        .forwarded_drivers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&sub)
                    {
                        engine.execute_cast(Call::DriverDisconnected { driver });
                    }
                }
            }
        }
    }

    /// Hands an update to the session reading subscription `sub`. A subscription unknown here
    /// (its session went, or it ended on our side) is cancelled at `from`; so is one whose
    /// session has gone, or fallen a whole feed behind (a lagging session subscribes again and
    /// gets the state afresh).
    fn deliver(&self, sub: Uuid, from: &str, item: FeedItem) {
        let delivered = {
            let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
            feeds
                .get(&sub)
                // Only from the replica the subscription is bound to: a forward left from an
                // earlier attempt elsewhere is told to stop.
                .filter(|feed| feed.node == from)
                .is_some_and(|feed| match (&feed.sink, item) {
                    (FeedSink::Order(tx), FeedItem::Order { item }) => tx.try_send(item).is_ok(),
                    (FeedSink::Board(tx), FeedItem::Board { order }) => tx.try_send(order).is_ok(),
                    (FeedSink::Driver(tx), FeedItem::Driver { item }) => tx.try_send(item).is_ok(),
                    _ => false,
                })
        };
        if !delivered {
            if self.feed_served_by(sub, from) {
                self.close_feed(sub);
            }
            self.unsubscribe(sub, from);
        }
    }

    /// Whether subscription `sub` is bound to replica `node`.
    fn feed_served_by(&self, sub: Uuid, node: &str) -> bool {
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sub)
            .is_some_and(|feed| feed.node == node)
    }

    /// Tells `node` to stop serving subscription `sub` (best-effort).
    fn unsubscribe(&self, sub: Uuid, node: &str) {
        if let Ok(payload) = serde_json::to_string(&Envelope::Unsubscribe { sub }) {
            let _ = self.locations.try_send((self.channel(node), payload));
        }
    }

    /// Runs a command from replica `from` and answers it; a repeated id is answered from the
    /// table of recent answers (or not at all while the first run is still going).
    async fn answer(self: Arc<Self>, id: Uuid, from: String, call: Call, engine: Engine) {
        let remember = call.changes_state();
        if remember {
            let seen = {
                let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
                match answers.table.get(&id) {
                    Some(Answered::Running) => Some(None),
                    Some(Answered::Done(result)) => Some(Some((**result).clone())),
                    None => {
                        answers.table.insert(id, Answered::Running);
                        answers.order.push_back((id, Instant::now()));
                        None
                    }
                }
            };
            // Not answered here: perhaps by the region's previous owner, before it stopped.
            let seen = match seen {
                None => self.kept_answer(id).await.map(Some),
                seen => seen,
            };
            match seen {
                // Still running: its answer goes out when it is done.
                Some(None) => return,
                Some(Some(result)) => {
                    metrics::counter!("route_repeats_answered_total").increment(1);
                    self.remember(id, &result);
                    let _ = self.publish(&from, &Envelope::Reply { id, result }).await;
                    return;
                }
                None => {}
            }
        }
        let started = Instant::now();
        let result = self.run(call, &from, &engine).await;
        metrics::histogram!("route_answer_seconds").record(started.elapsed().as_secs_f64());
        if remember {
            self.remember(id, &result);
            if !matches!(&result, Err(error) if error.retry) {
                self.keep_answer(id, &result).await;
            }
        }
        let _ = self.publish(&from, &Envelope::Reply { id, result }).await;
    }

    /// Notes the answer to command `id` in the table of recent answers.
    fn remember(&self, id: Uuid, result: &Result<Reply, RemoteError>) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let Answers { table, order } = &mut *answers;
        match result {
            // A refusal to be resent may succeed on the next attempt: not remembered.
            Err(error) if error.retry => {
                table.remove(&id);
            }
            _ => {
                if !table.contains_key(&id) {
                    order.push_back((id, Instant::now()));
                }
                table.insert(id, Answered::Done(Box::new(result.clone())));
            }
        }
        while order.len() > ANSWERS_KEPT
            || order
                .front()
                .is_some_and(|(_, at)| at.elapsed().as_secs() > ANSWER_KEPT_SECS)
        {
            if let Some((old, _)) = order.pop_front() {
                table.remove(&old);
            }
        }
    }

    fn answer_key(&self, id: Uuid) -> String {
        self.bus.key(&format!("answer:{id}"))
    }

    /// Keeps the answer in Redis too, before it is sent, so that a repeat that reaches the
    /// region's next owner (this one stopped or handed the region off) is answered the same,
    /// not run again. Best-effort: without it, the domain refuses a second run of the change.
    async fn keep_answer(&self, id: Uuid, result: &Result<Reply, RemoteError>) {
        let Ok(payload) = serde_json::to_string(result) else {
            return;
        };
        let mut pipeline = redis::pipe();
        pipeline
            .set_ex(self.answer_key(id), payload, ANSWER_KEPT_SECS)
            .ignore();
        let _ = self
            .bus
            .run::<()>(&pipeline, ANSWER_REDIS_DEADLINE_MS)
            .await;
    }

    /// An answer another replica kept for command `id`.
    async fn kept_answer(&self, id: Uuid) -> Option<Result<Reply, RemoteError>> {
        let mut pipeline = redis::pipe();
        pipeline.get(self.answer_key(id));
        let (payload,): (Option<String>,) = self
            .bus
            .run(&pipeline, ANSWER_REDIS_DEADLINE_MS)
            .await
            .ok()?;
        serde_json::from_str(&payload?).ok()
    }

    /// Runs a command here; a subscription also starts forwarding its updates to `from`.
    async fn run(
        self: &Arc<Self>,
        call: Call,
        from: &str,
        engine: &Engine,
    ) -> Result<Reply, RemoteError> {
        let forward = |sub: Uuid| {
            let router = self.clone();
            let from = from.to_owned();
            move |item: FeedItem| {
                let router = router.clone();
                let from = from.clone();
                async move {
                    let from_node = router.node.clone();
                    let envelope = Envelope::Feed {
                        sub,
                        from: from_node,
                        item,
                    };
                    router.publish(&from, &envelope).await
                }
            }
        };
        match call {
            Call::SubscribeOrder { order_id, sub } => {
                let (view, feed) = engine
                    .subscribe_order_local(order_id)
                    .await
                    .map_err(|e| RemoteError::from(&e))?;
                self.spawn_forward(
                    sub,
                    from,
                    feed,
                    |item| FeedItem::Order { item },
                    forward(sub),
                );
                Ok(Reply::Order { order: view })
            }
            Call::SubscribeBoard { merchant_id, sub } => {
                let (orders, feed) = engine
                    .subscribe_board_local(merchant_id)
                    .await
                    .map_err(|e| RemoteError::from(&e))?;
                self.spawn_forward(
                    sub,
                    from,
                    feed,
                    |order| FeedItem::Board { order },
                    forward(sub),
                );
                Ok(Reply::Board { orders })
            }
            Call::SubscribeDriver { driver, sub } => {
                let (status, active, feed) = engine
                    .subscribe_driver_local(driver)
                    .await
                    .map_err(|e| RemoteError::from(&e))?;
                self.forwarded_drivers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(sub, driver);
                self.spawn_forward(
                    sub,
                    from,
                    feed,
                    |item| FeedItem::Driver { item },
                    forward(sub),
                );
                Ok(Reply::DriverFeed { status, active })
            }
            call => engine
                .execute_local(call)
                .await
                .map_err(|e| RemoteError::from(&e)),
        }
    }

    /// Forwards a local feed to the subscribing replica until the feed ends, the subscriber
    /// says stop, or no replica listens on its channel any more.
    fn spawn_forward<T, F, Fut>(
        self: &Arc<Self>,
        sub: Uuid,
        from: &str,
        mut feed: mpsc::Receiver<T>,
        wrap: fn(T) -> FeedItem,
        send: F,
    ) where
        T: Send + 'static,
        F: Fn(FeedItem) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<u64, EngineError>> + Send,
    {
        let router = self.clone();
        let from = from.to_owned();
        let from_node = from.clone();
        let task = actix_web::rt::spawn(async move {
            while let Some(item) = feed.recv().await {
                match send(wrap(item)).await {
                    Ok(0) => {
                        // Nobody listens on the subscriber's channel any more.
                        router.end_forward(sub);
                        return;
                    }
                    Ok(_) => {}
                    // An update could not be published: the subscriber must not go on
                    // believing it has them all, so its feed ends (it subscribes again).
                    Err(_) => break,
                }
            }
            // No longer forwarding: not in the beats any more, even while its end is retried.
            router.stop_beating(sub);
            for _ in 0..END_ATTEMPTS {
                let end = Envelope::End {
                    sub,
                    from: router.node.clone(),
                };
                if router.publish(&from, &end).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(END_RETRY_PAUSE_MS)).await;
            }
            router.end_forward(sub);
        });
        let mut forwards = self.forwards.lock().unwrap_or_else(|e| e.into_inner());
        let forward = Forward {
            task: task.abort_handle(),
            to: from_node,
            serving: true,
        };
        if let Some(previous) = forwards.insert(sub, forward) {
            previous.task.abort();
        }
        metrics::gauge!("route_forwarded_feeds").set(forwards.len() as f64);
    }

    fn stop_beating(&self, sub: Uuid) {
        if let Some(forward) = self
            .forwards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&sub)
        {
            forward.serving = false;
        }
    }

    fn end_forward(&self, sub: Uuid) {
        self.forwarded_drivers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sub);
        let mut forwards = self.forwards.lock().unwrap_or_else(|e| e.into_inner());
        forwards.remove(&sub);
        metrics::gauge!("route_forwarded_feeds").set(forwards.len() as f64);
    }
}

/// Wraps an order feed's sender.
pub fn order_sink(tx: mpsc::Sender<OrderFeed>) -> FeedSink {
    FeedSink::Order(tx)
}

/// Wraps a board feed's sender.
pub fn board_sink(tx: mpsc::Sender<OrderView>) -> FeedSink {
    FeedSink::Board(tx)
}

/// Wraps a driver feed's sender.
pub fn driver_sink(tx: mpsc::Sender<DriverFeed>) -> FeedSink {
    FeedSink::Driver(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_to_resend_round_trips_with_its_code_and_a_final_one_is_not_resent() {
        let moving = RemoteError::from(&EngineError::NotOwner("region ne moved".into()));
        assert!(moving.retry);
        assert_eq!(moving.code, "dispatch_unavailable");
        let closed = RemoteError::from(&EngineError::OfferExpired);
        assert!(!closed.retry);
        let back = EngineError::from(closed.clone());
        assert_eq!(back.code(), "offer_expired");
        assert_eq!(back.to_string(), closed.message);
        let unknown = EngineError::from(RemoteError {
            code: "no_such_code".into(),
            message: "?".into(),
            retry: false,
        });
        assert_eq!(unknown.code(), "internal_error");
    }

    #[test]
    fn envelopes_survive_json() {
        let envelope = Envelope::Call {
            id: Uuid::nil(),
            from: "pod-a".into(),
            call: Call::AnswerOffer {
                driver: UserId::new(),
                offer_id: Uuid::nil(),
                accept: true,
            },
        };
        let text = serde_json::to_string(&envelope).unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            back,
            Envelope::Call {
                call: Call::AnswerOffer { accept: true, .. },
                ..
            }
        ));
    }

    #[test]
    fn ownership_ignores_expired_leases() {
        let ownership = Ownership::default();
        let future = unix_ms() + 10_000;
        ownership.update(&[
            ("ne".into(), "pod-a".into(), 1, future),
            ("nw".into(), "pod-b".into(), 1, 0),
        ]);
        assert_eq!(ownership.owner("ne").as_deref(), Some("pod-a"));
        assert_eq!(ownership.owner("nw"), None);
        assert!(!ownership.is_owner("pod-b"));
    }
}
