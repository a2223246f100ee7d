//! The cluster router on its own, against a fake engine (an `Executor` that counts what it
//! runs) and real Redis: a command for another replica runs there once and its answer comes
//! back; a refusal the error table marks for resending is resent until answered, a final one is
//! not; a subscription's updates are forwarded and its end is told.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::StreamExt;
use mealkitz::actors::router::{FeedSink, Resolve, Routing};
use mealkitz::actors::{EngineError, Served};
use mealkitz::bus::Bus;
use mealkitz::cluster::executor::{Executor, Kind};
use mealkitz::cluster::{Ownership, Router};
use mealkitz::config::RedisConfig;
use mealkitz::tasks::Tasks;
use serde_json::{Value, json};
use uuid::Uuid;

/// An engine stand-in: answers `echo` with its input, refuses `flaky` as passing for the
/// first `refusals` runs, refuses `closed` for good, and serves a three-update `feed`.
struct FakeEngine {
    runs: AtomicUsize,
    refusals: AtomicUsize,
}

impl Executor for FakeEngine {
    fn kind(&self, call: &Value) -> Option<Kind> {
        match call["op"].as_str()? {
            "feed" => Some(Kind::Subscription),
            "echo" | "flaky" | "closed" => Some(Kind::Command {
                changes_state: true,
            }),
            _ => None,
        }
    }

    fn run(&self, call: Value) -> BoxFuture<'static, Result<Value, EngineError>> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let outcome = match call["op"].as_str() {
            Some("flaky") if self.refusals.load(Ordering::SeqCst) > 0 => {
                self.refusals.fetch_sub(1, Ordering::SeqCst);
                Err(EngineError::NotOwner("region ne".into()))
            }
            Some("closed") => Err(EngineError::OfferExpired),
            _ => Ok(json!({"kind": "count", "count": call["n"]})),
        };
        Box::pin(async move { outcome })
    }

    fn open(&self, _call: Value) -> BoxFuture<'static, Result<Served, EngineError>> {
        let items = futures_util::stream::iter((1..=3).map(|n| json!({"n": n}))).boxed();
        Box::pin(async move {
            Ok(Served {
                answer: json!({"kind": "done"}),
                items,
                on_unsubscribe: None,
            })
        })
    }

    fn cast(&self, _call: Value) -> bool {
        false
    }

    fn spawn_spread(&self, _key: u64, work: BoxFuture<'static, ()>) {
        actix_web::rt::spawn(work);
    }
}

/// Collects a forwarded feed.
struct Collect(Arc<Mutex<Vec<Value>>>);

impl FeedSink for Collect {
    fn deliver(&self, item: Value) -> bool {
        self.0.lock().unwrap().push(item);
        true
    }
    fn is_closed(&self) -> bool {
        false
    }
}

struct Pair {
    caller: Arc<Router>,
    engine: Arc<FakeEngine>,
    _tasks: Tasks,
}

/// Two routers on one Redis key prefix: `pod-a` (the caller) and `pod-b` (serving the fake).
async fn pair(refusals: usize) -> Pair {
    let url = crate::helpers::redis_url();
    let config = RedisConfig {
        key_prefix: format!("test-{}:", Uuid::new_v4().simple()),
        ..RedisConfig::new(&url)
    };
    let tasks = Tasks::new();
    let engine = Arc::new(FakeEngine {
        runs: AtomicUsize::new(0),
        refusals: AtomicUsize::new(refusals),
    });
    let start = |node: &str, executor: Arc<dyn Executor>| {
        Router::start(
            Arc::new(Bus::new(&config).unwrap()),
            node.to_owned(),
            Arc::new(Ownership::default()),
            Duration::from_secs(10),
            executor,
            &tasks,
        )
    };
    let caller = start("pod-a", engine.clone());
    let server = start("pod-b", engine.clone());
    for router in [&caller, &server] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while router.health().is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "router never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Pair {
        caller,
        engine,
        _tasks: tasks,
    }
}

fn to_pod_b<'a>() -> Resolve<'a> {
    Box::new(|| Box::pin(async { Ok(Some("pod-b".to_owned())) }))
}

#[actix_web::test]
async fn a_command_for_another_replica_runs_there_once_and_its_answer_comes_back() {
    let pair = pair(0).await;
    let answer = Routing::call(&*pair.caller, json!({"op": "echo", "n": 7}), to_pod_b())
        .await
        .unwrap();
    assert_eq!(answer, json!({"kind": "count", "count": 7}));
    assert_eq!(pair.engine.runs.load(Ordering::SeqCst), 1);
}

#[actix_web::test]
async fn a_passing_refusal_is_resent_until_answered_and_a_final_one_is_answered_at_once() {
    let pair = pair(2).await;
    let answer = Routing::call(&*pair.caller, json!({"op": "flaky", "n": 1}), to_pod_b())
        .await
        .unwrap();
    assert_eq!(answer["count"], 1);
    assert_eq!(
        pair.engine.runs.load(Ordering::SeqCst),
        3,
        "two refusals, one answer"
    );

    let refused = Routing::call(&*pair.caller, json!({"op": "closed"}), to_pod_b())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "offer_expired");
    assert_eq!(pair.engine.runs.load(Ordering::SeqCst), 4, "not resent");
}

#[actix_web::test]
async fn a_subscription_served_elsewhere_forwards_its_updates_and_then_its_end() {
    let pair = pair(0).await;
    let items = Arc::new(Mutex::new(Vec::new()));
    let sub = Uuid::new_v4();
    let (answer, node) = Routing::subscribe(
        &*pair.caller,
        json!({"op": "feed", "sub": sub}),
        sub,
        None,
        Box::new(Collect(items.clone())),
        to_pod_b(),
    )
    .await
    .unwrap();
    assert_eq!(answer, json!({"kind": "done"}));
    assert_eq!(node, "pod-b");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pair.caller.has_feed(sub) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received: Vec<Value> = items.lock().unwrap().clone();
    assert_eq!(
        received,
        vec![json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]
    );
}
