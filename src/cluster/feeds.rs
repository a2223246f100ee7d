//! Subscriptions across replicas: a feed served by another replica is registered here and fed
//! from our channel (ended when its server loses what it depends on, goes silent, or our channel
//! drops — its session then subscribes again); a feed we serve for another replica is forwarded
//! by a task of its own, confirmed every beat, and stopped when its subscriber goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;
use uuid::Uuid;

use super::router::{Forget, Forward, RemoteFeed, Router};
use super::wire::Envelope;
use crate::actors::EngineError;
use crate::actors::router::{FeedSink, Resolve};

/// Attempts at telling a subscriber its feed ended, and the pause between them: about a
/// minute, longer than a Redis outage the subscriber's own channel would survive.
const END_ATTEMPTS: u32 = 60;
const END_RETRY_PAUSE: Duration = Duration::from_millis(1_000);
/// How often subscriptions served by other replicas are checked against the leases.
const FEED_CHECK: Duration = Duration::from_millis(500);
/// How often a replica tells each replica it forwards feeds to which subscriptions it still
/// serves: the subscriber's proof that its feeds are alive.
const FEED_BEAT: Duration = Duration::from_millis(1_000);
/// A feed served elsewhere that its server has not confirmed for this long is ended (its
/// forwarder is gone, or the two replicas cannot reach each other): its session subscribes
/// again and catches up. Three beats and a half, so one or two lost beats end nothing.
const FEED_SILENCE: Duration = Duration::from_millis(FEED_BEAT.as_millis() as u64 * 7 / 2);

impl Router {
    /// Registers subscription `sub`, served by `node` (empty until the command is sent).
    fn open_feed(&self, sub: Uuid, node: String, region: Option<String>, sink: Box<dyn FeedSink>) {
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

    pub(super) fn close_feed(&self, sub: Uuid) -> Option<RemoteFeed> {
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sub)
    }

    /// Subscribes with `call` (carrying subscription id `sub`) where `resolve` says (`region`
    /// is what the subscription depends on); updates go to `sink`. Returns the answer and the
    /// replica serving it.
    pub async fn subscribe(
        &self,
        call: Value,
        sub: Uuid,
        region: Option<String>,
        sink: Box<dyn FeedSink>,
        mut resolve: Resolve<'_>,
    ) -> Result<(Value, String), EngineError> {
        // The feed is registered before the command goes out, since updates may overtake the
        // answer; it is bound to each replica the command is sent to in turn. A caller that
        // gives up before the answer leaves no entry behind.
        self.open_feed(sub, String::new(), region, sink);
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
        let bound_ref = &bound;
        let binding: Resolve<'_> = Box::new(move || {
            let next = resolve();
            Box::pin(async move {
                let node = next.await?;
                if let Some(node) = &node {
                    self.bind_feed(sub, node);
                    node.clone_into(&mut bound_ref.lock().unwrap_or_else(|e| e.into_inner()));
                }
                Ok(node)
            })
        });
        let reply = self.call(call, binding).await?;
        std::mem::forget(answered);
        // The feed may have ended already (a closed order's feed ends at once): the session
        // then reads the answer and the end.
        let node = bound.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok((reply, node))
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
    pub(super) async fn check_feeds(self: Arc<Self>) {
        let mut tick = tokio::time::interval(FEED_CHECK);
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
                    let silent =
                        beating.contains(&feed.node) && feed.confirmed.elapsed() > FEED_SILENCE;
                    (moved || silent).then_some((*sub, false))
                })
                .collect();
            for (sub, gone) in ended {
                let Some(feed) = self.close_feed(sub) else {
                    continue;
                };
                if gone {
                    self.unsubscribe(sub, &feed.node);
                } else if beating.contains(&feed.node) && feed.confirmed.elapsed() > FEED_SILENCE {
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

    /// Ends every subscription served elsewhere: each session subscribes again and gets the
    /// state afresh. Returns how many ended.
    pub(super) fn end_all_feeds(&self) -> usize {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let ended = feeds.len();
        feeds.clear();
        ended
    }

    /// Tells every replica this one forwards feeds to which of them it still serves, once a
    /// beat: a subscriber ends a feed it hears nothing about (see [`FEED_SILENCE`]), and
    /// cancels one it no longer reads.
    pub(super) async fn beat_feeds(self: Arc<Self>) {
        let mut tick = tokio::time::interval(FEED_BEAT);
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
    pub(super) fn confirm_feeds(&self, from: &str, subs: Vec<Uuid>) {
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

    /// Hands an update to the session reading subscription `sub`. A subscription unknown here
    /// (its session went, or it ended on our side) is cancelled at `from`; so is one whose
    /// session has gone, or fallen a whole feed behind (a lagging session subscribes again and
    /// gets the state afresh).
    pub(super) fn deliver(&self, sub: Uuid, from: &str, item: Value) {
        let delivered = {
            let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
            feeds
                .get(&sub)
                // Only from the replica the subscription is bound to: a forward left from an
                // earlier attempt elsewhere is told to stop.
                .filter(|feed| feed.node == from)
                .is_some_and(|feed| feed.sink.deliver(item))
        };
        if !delivered {
            if self.feed_served_by(sub, from) {
                self.close_feed(sub);
            }
            self.unsubscribe(sub, from);
        }
    }

    /// Whether subscription `sub` is bound to replica `node`.
    pub(super) fn feed_served_by(&self, sub: Uuid, node: &str) -> bool {
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sub)
            .is_some_and(|feed| feed.node == node)
    }

    /// Tells `node` to stop serving subscription `sub` (best-effort).
    pub(super) fn unsubscribe(&self, sub: Uuid, node: &str) {
        if let Ok(payload) = serde_json::to_string(&Envelope::Unsubscribe { sub }) {
            let _ = self.locations.try_send((self.channel(node), payload));
        }
    }

    /// Forwards a local feed to the subscribing replica until the feed ends, the subscriber
    /// says stop, the service stops, or no replica listens on its channel any more.
    pub(super) fn spawn_forward(
        self: &Arc<Self>,
        sub: Uuid,
        from: &str,
        mut items: BoxStream<'static, Value>,
        on_unsubscribe: Option<Value>,
    ) {
        let router = self.clone();
        let to = from.to_owned();
        let stop = self.tasks.token().child_token();
        let stopped = stop.clone();
        self.tasks.spawn(async move {
            let forwarding = async {
                while let Some(item) = items.next().await {
                    let envelope = Envelope::Feed {
                        sub,
                        from: router.node.clone(),
                        item,
                    };
                    match router.publish(&to, &envelope).await {
                        // Nobody listens on the subscriber's channel any more.
                        Ok(0) => return false,
                        Ok(_) => {}
                        // An update could not be published: the subscriber must not go on
                        // believing it has them all, so its feed ends (it subscribes again).
                        Err(_) => return true,
                    }
                }
                true
            };
            let tell_the_end = tokio::select! {
                () = stopped.cancelled() => return,
                tell = forwarding => tell,
            };
            if tell_the_end {
                // No longer forwarding: not in the beats any more, even while its end is
                // retried.
                router.stop_beating(sub);
                for _ in 0..END_ATTEMPTS {
                    let end = Envelope::End {
                        sub,
                        from: router.node.clone(),
                    };
                    if router.publish(&to, &end).await.is_ok() {
                        break;
                    }
                    tokio::select! {
                        () = stopped.cancelled() => return,
                        () = tokio::time::sleep(END_RETRY_PAUSE) => {}
                    }
                }
            }
            router.end_forward(sub);
        });
        let mut forwards = self.forwards.lock().unwrap_or_else(|e| e.into_inner());
        let forward = Forward {
            stop,
            to: from.to_owned(),
            serving: true,
            on_unsubscribe,
        };
        if let Some(previous) = forwards.insert(sub, forward) {
            previous.stop.cancel();
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
        let mut forwards = self.forwards.lock().unwrap_or_else(|e| e.into_inner());
        forwards.remove(&sub);
        metrics::gauge!("route_forwarded_feeds").set(forwards.len() as f64);
    }
}
