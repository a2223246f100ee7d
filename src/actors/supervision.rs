//! Supervision, OTP-style, because actix's `Supervisor` neither catches panics nor gives up:
//! each child carries a [`ChildGuard`] that reports an abnormal end (a panic unwinds through
//! the actor and drops the guard) to its region, which restarts the child from its persisted
//! state — unless the child crashed more than the limit within the window, in which case it is
//! marked failed for an admin to see.
//!
//! As in ractor and quickwit, the supervisor receives a typed child event ([`ChildCrashed`])
//! and the child knows nothing of its supervisor's type: the guard holds only a `Recipient` of
//! that event. So this file imports nothing of the actors.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{MerchantId, OrderId, UserId};
use crate::geo::RegionId;

/// A supervised actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Entity {
    Order(OrderId),
    Driver(UserId),
    Merchant(MerchantId),
    Region(RegionId),
}

impl Entity {
    pub fn kind(&self) -> &'static str {
        match self {
            Entity::Order(_) => "order",
            Entity::Driver(_) => "driver",
            Entity::Merchant(_) => "merchant",
            Entity::Region(_) => "region",
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entity::Order(id) => write!(f, "order {id}"),
            Entity::Driver(id) => write!(f, "driver {id}"),
            Entity::Merchant(id) => write!(f, "merchant {id}"),
            Entity::Region(id) => write!(f, "region {id}"),
        }
    }
}

/// A supervised actor ended abnormally: restart it or give up on it. Sent by the child's
/// [`ChildGuard`] as the child unwinds; a region's crash goes to the engine, any other child's
/// to the region that supervises it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildCrashed {
    pub entity: Entity,
    /// The region whose supervisor restarts the child (for a region, itself).
    pub supervisor: RegionId,
}

/// Held by every supervised actor. Dropped without [`ChildGuard::disarm`] — which is what a
/// panic does as it unwinds through the actor — it tells the supervisor which child died.
pub struct ChildGuard {
    entity: Entity,
    /// The region that restarts this child.
    supervisor: RegionId,
    /// Where the crash is reported: the narrowest handle on the supervisor there is.
    report: Recipient<ChildCrashed>,
    armed: bool,
}

impl ChildGuard {
    pub fn new(entity: Entity, supervisor: RegionId, report: Recipient<ChildCrashed>) -> Self {
        ChildGuard {
            entity,
            supervisor,
            report,
            armed: true,
        }
    }

    /// The region whose supervisor restarts this child.
    pub fn supervisor(&self) -> &RegionId {
        &self.supervisor
    }

    /// The actor is stopping on purpose; its end is not a crash.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.armed || std::thread::panicking() {
            self.report.do_send(ChildCrashed {
                entity: self.entity.clone(),
                supervisor: self.supervisor.clone(),
            });
        }
    }
}

/// What to do about a crashed child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Restart,
    /// Too many crashes within the window: leave it down and mark it failed.
    GiveUp {
        restarts: usize,
    },
}

/// Counts each entity's crashes in a sliding window.
#[derive(Debug)]
pub struct RestartTracker {
    limit: usize,
    window: Duration,
    crashes: HashMap<Entity, VecDeque<Instant>>,
}

impl RestartTracker {
    pub fn new(limit: u32, window: Duration) -> Self {
        RestartTracker {
            limit: limit as usize,
            window,
            crashes: HashMap::new(),
        }
    }

    /// Records a crash of `entity` at `now` and decides: restart while the crashes within the
    /// window number at most the limit.
    pub fn record(&mut self, entity: &Entity, now: Instant) -> Verdict {
        let window = self.window;
        let crashes = self.crashes.entry(entity.clone()).or_default();
        crashes.push_back(now);
        while crashes
            .front()
            .is_some_and(|first| now.duration_since(*first) > window)
        {
            crashes.pop_front();
        }
        if crashes.len() > self.limit {
            Verdict::GiveUp {
                restarts: crashes.len() - 1,
            }
        } else {
            Verdict::Restart
        }
    }

    /// Drops entries that have no crash inside the window any more, to bound memory.
    pub fn prune(&mut self, now: Instant) {
        let window = self.window;
        self.crashes.retain(|_, crashes| {
            crashes
                .back()
                .is_some_and(|last| now.duration_since(*last) <= window)
        });
    }
}

/// An actor left down after crash-looping.
#[derive(Debug, Clone, Serialize)]
pub struct FailedActor {
    pub entity: Entity,
    pub failed_at: DateTime<Utc>,
    pub restarts: usize,
}

/// Crash bookkeeping shared by all regions, so a region restart does not reset it.
pub struct Supervision {
    tracker: Mutex<RestartTracker>,
    failed: Mutex<HashMap<Entity, FailedActor>>,
}

impl Supervision {
    pub fn new(limit: u32, window: Duration) -> Self {
        Supervision {
            tracker: Mutex::new(RestartTracker::new(limit, window)),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// Counts the crash and decides; a give-up marks the entity failed.
    pub fn judge(&self, entity: &Entity) -> Verdict {
        let now = Instant::now();
        let verdict = {
            let mut tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            tracker.prune(now);
            tracker.record(entity, now)
        };
        match verdict {
            Verdict::Restart => {
                metrics::counter!("actor_restarts_total", "kind" => entity.kind()).increment(1);
            }
            Verdict::GiveUp { restarts } => {
                metrics::counter!("actor_failed_total", "kind" => entity.kind()).increment(1);
                tracing::error!(entity = %entity, restarts, "actor crash-looped; marked failed");
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        entity.clone(),
                        FailedActor {
                            entity: entity.clone(),
                            failed_at: Utc::now(),
                            restarts,
                        },
                    );
            }
        }
        verdict
    }

    pub fn is_failed(&self, entity: &Entity) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(entity)
    }

    /// Every failed actor, oldest first.
    pub fn failed(&self) -> Vec<FailedActor> {
        let mut failed: Vec<FailedActor> = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        failed.sort_by_key(|f| f.failed_at);
        failed
    }
}

/// Test hook: makes chosen actors panic on purpose. Inert unless the dispatch configuration
/// enables fault injection, which only tests do.
#[derive(Default)]
pub struct Faults {
    /// How many more times each entity panics when it starts.
    on_start: Mutex<HashMap<Entity, u32>>,
}

impl Faults {
    pub fn panic_on_start(&self, entity: Entity, times: u32) {
        self.on_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entity, times);
    }

    /// Whether `entity` should panic now (and counts it down).
    pub fn take(&self, entity: &Entity) -> bool {
        let mut on_start = self.on_start.lock().unwrap_or_else(|e| e.into_inner());
        match on_start.get_mut(entity) {
            Some(remaining) if *remaining > 0 => {
                *remaining -= 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Entity {
        Entity::Order(OrderId::new())
    }

    #[test]
    fn restarts_up_to_the_limit_then_gives_up() {
        let mut tracker = RestartTracker::new(5, Duration::from_secs(60));
        let entity = order();
        let start = Instant::now();
        for i in 0..5 {
            let verdict = tracker.record(&entity, start + Duration::from_secs(i));
            assert_eq!(verdict, Verdict::Restart, "crash {i}");
        }
        assert_eq!(
            tracker.record(&entity, start + Duration::from_secs(6)),
            Verdict::GiveUp { restarts: 5 }
        );
    }

    #[test]
    fn crashes_outside_the_window_do_not_count() {
        let mut tracker = RestartTracker::new(2, Duration::from_secs(10));
        let entity = order();
        let start = Instant::now();
        assert_eq!(tracker.record(&entity, start), Verdict::Restart);
        assert_eq!(
            tracker.record(&entity, start + Duration::from_secs(1)),
            Verdict::Restart
        );
        // 20 s later the first two have left the window.
        assert_eq!(
            tracker.record(&entity, start + Duration::from_secs(20)),
            Verdict::Restart
        );
        assert_eq!(
            tracker.record(&entity, start + Duration::from_secs(21)),
            Verdict::Restart
        );
        assert!(matches!(
            tracker.record(&entity, start + Duration::from_secs(22)),
            Verdict::GiveUp { .. }
        ));
    }

    #[test]
    fn entities_are_counted_separately() {
        let mut tracker = RestartTracker::new(1, Duration::from_secs(60));
        let (a, b) = (order(), order());
        let now = Instant::now();
        assert_eq!(tracker.record(&a, now), Verdict::Restart);
        assert_eq!(tracker.record(&b, now), Verdict::Restart);
        assert!(matches!(tracker.record(&a, now), Verdict::GiveUp { .. }));
    }

    /// A supervisor as a child sees it: whatever answers `ChildCrashed`.
    struct Recorder(tokio::sync::mpsc::UnboundedSender<ChildCrashed>);

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<ChildCrashed> for Recorder {
        type Result = ();

        fn handle(&mut self, msg: ChildCrashed, _: &mut Self::Context) {
            let _ = self.0.send(msg);
        }
    }

    struct Child {
        _guard: ChildGuard,
    }

    impl Actor for Child {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Panic;

    impl Handler<Panic> for Child {
        type Result = ();

        fn handle(&mut self, _: Panic, _: &mut Self::Context) {
            panic!("a child panics on purpose");
        }
    }

    #[actix_web::test]
    async fn a_child_that_panics_is_reported_with_its_supervisor_and_one_that_stops_is_not() {
        let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let recorder = Recorder(tx).start();
        let supervisor = recorder.clone().recipient::<ChildCrashed>();
        let region = RegionId::from("nw");
        let panicking = order();
        let child = Child {
            _guard: ChildGuard::new(panicking.clone(), region.clone(), supervisor.clone()),
        }
        .start();
        child.do_send(Panic);
        let report = tokio::time::timeout(Duration::from_secs(5), reports.recv())
            .await
            .expect("the crash is reported")
            .expect("the supervisor is alive");
        assert_eq!(report.entity, panicking);
        assert_eq!(report.supervisor, region);

        let mut stopping = ChildGuard::new(order(), region, supervisor);
        stopping.disarm();
        drop(stopping);
        let more = tokio::time::timeout(Duration::from_millis(200), reports.recv()).await;
        assert!(more.is_err(), "a child stopping on purpose is no crash");
        drop(recorder);
    }

    #[test]
    fn faults_fire_the_requested_number_of_times() {
        let faults = Faults::default();
        let entity = order();
        assert!(!faults.take(&entity));
        faults.panic_on_start(entity.clone(), 2);
        assert!(faults.take(&entity));
        assert!(faults.take(&entity));
        assert!(!faults.take(&entity));
    }
}
