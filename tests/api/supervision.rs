//! Supervision: an injected panic is contained, the actor comes back from its persisted state,
//! and a crash loop ends with the actor marked failed.

use mealkitz::actors::commands::*;
use std::time::{Duration, Instant};

use mealkitz::actors::{EngineError, Entity};
use mealkitz::domain::{MerchantId, OrderStatus};
use mealkitz::geo::RegionId;

use crate::helpers::Db;
use crate::helpers::{PROMPTLY_SECS, at, dispatch_app, next_offer};

const PROMPTLY: Duration = Duration::from_secs(PROMPTLY_SECS);

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PROMPTLY;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

crate::helpers::each_backend! {
    a_panicking_order_restarts_from_its_journal_while_others_keep_dispatching => order_panic_is_contained;
    a_crash_looping_order_is_marked_failed_after_the_limit => crash_loop_marks_failed;
    a_crashed_region_restarts_and_rebuilds_its_index => region_restart_rebuilds_index;
    a_crashed_driver_restarts_and_keeps_its_active_order => driver_restart_keeps_order;
}

async fn order_panic_is_contained(kind: Db) {
    let app = dispatch_app(kind, |_| {}).await;
    let customer = app.user_id("customer").await;
    let (merchant_a, merchant_b) = (MerchantId::new(), MerchantId::new());
    let mut driver_a = app.driver_at(at(5_300.0, -5_000.0)).await;
    let mut driver_b = app.driver_at(at(-5_300.0, 5_000.0)).await;
    let a = app
        .place_at(customer, merchant_a, at(5_000.0, -5_000.0))
        .await;
    let b = app
        .place_at(customer, merchant_b, at(-5_000.0, 5_000.0))
        .await;
    app.engine
        .execute(MerchantAccept {
            merchant_id: merchant_a,
            order_id: a.id,
            prep_minutes: 5,
        })
        .await
        .unwrap();
    let offer_a = next_offer(&mut driver_a, PROMPTLY)
        .await
        .expect("A offered");

    app.engine
        .inject_panic(Entity::Order(a.id), 0)
        .await
        .unwrap();
    // The restarted order re-issues its open offer (same offer, same deadline) to its driver.
    let reissued = next_offer(&mut driver_a, PROMPTLY)
        .await
        .expect("offer re-issued after restart");
    assert_eq!(reissued.offer_id, offer_a.offer_id);
    assert_eq!(reissued.expires_at, offer_a.expires_at);

    // Meanwhile the other order dispatches as usual.
    app.engine
        .execute(MerchantAccept {
            merchant_id: merchant_b,
            order_id: b.id,
            prep_minutes: 5,
        })
        .await
        .unwrap();
    let offer_b = next_offer(&mut driver_b, PROMPTLY)
        .await
        .expect("B offered");
    let assigned_b = app
        .engine
        .execute(AnswerOffer {
            driver: driver_b.id,
            offer_id: offer_b.offer_id,
            accept: true,
        })
        .await
        .map(Option::unwrap)
        .unwrap();
    assert_eq!(assigned_b.driver_id, Some(driver_b.id));

    // And the restarted order carries on from where it was.
    let assigned_a = app
        .engine
        .execute(AnswerOffer {
            driver: driver_a.id,
            offer_id: offer_a.offer_id,
            accept: true,
        })
        .await
        .map(Option::unwrap)
        .unwrap();
    assert_eq!(assigned_a.status, OrderStatus::Accepted);
    assert_eq!(assigned_a.driver_id, Some(driver_a.id));
    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("actor_restarts_total{") && l.contains(r#"kind="order""#)),
        "{metrics}"
    );
    assert!(app.engine.failed_actors().is_empty());
}

async fn crash_loop_marks_failed(kind: Db) {
    let app = dispatch_app(kind, |d| {
        d.restart_limit = 3;
        d.restart_window = Duration::from_secs(60);
    })
    .await;
    let customer = app.user_id("customer").await;
    let merchant = MerchantId::new();
    let looping = app.place_at(customer, merchant, at(5_000.0, 5_000.0)).await;
    let healthy = app.place_at(customer, merchant, at(5_100.0, 5_000.0)).await;

    // Panics now, then on every restart.
    app.engine
        .inject_panic(Entity::Order(looping.id), 100)
        .await
        .unwrap();
    let engine = app.engine.clone();
    eventually("the order is marked failed", || {
        let engine = engine.clone();
        async move { !engine.failed_actors().is_empty() }
    })
    .await;
    let failed = app.engine.failed_actors();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].entity, Entity::Order(looping.id));
    assert_eq!(failed[0].restarts, 3);
    let refused = app
        .engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: looping.id,
            prep_minutes: 5,
        })
        .await;
    assert!(
        matches!(refused, Err(EngineError::Failed(_))),
        "{refused:?}"
    );
    // Its neighbour is unaffected.
    let accepted = app
        .engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: healthy.id,
            prep_minutes: 5,
        })
        .await
        .unwrap();
    assert_eq!(accepted.status, OrderStatus::Accepted);
    let metrics = app.get("/metrics").await.text;
    assert!(metrics.contains("actor_failed_total"), "{metrics}");
}

async fn region_restart_rebuilds_index(kind: Db) {
    let app = dispatch_app(kind, |_| {}).await;
    let sw = RegionId::from("sw");
    let mut near = app.driver_at(at(-5_200.0, -5_000.0)).await;
    let _far = app.driver_at(at(-5_000.0, -7_000.0)).await;
    assert_eq!(
        app.engine
            .execute(IndexedDrivers { region: sw.clone() })
            .await
            .unwrap(),
        2
    );

    app.engine
        .inject_panic(Entity::Region(sw.clone()), 0)
        .await
        .unwrap();
    let engine = app.engine.clone();
    let region = sw.clone();
    eventually("the region is back with both drivers indexed", || {
        let engine = engine.clone();
        let region = region.clone();
        async move {
            engine
                .execute(IndexedDrivers {
                    region: region.clone(),
                })
                .await
                .ok()
                == Some(2)
        }
    })
    .await;
    let merchant = MerchantId::new();
    let order = app
        .place_at(
            app.user_id("customer").await,
            merchant,
            at(-5_000.0, -5_000.0),
        )
        .await;
    app.engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: order.id,
            prep_minutes: 5,
        })
        .await
        .unwrap();
    let offer = next_offer(&mut near, PROMPTLY)
        .await
        .expect("rebuilt index finds the nearest");
    assert_eq!(offer.order_id, order.id);
}

async fn driver_restart_keeps_order(kind: Db) {
    let app = dispatch_app(kind, |_| {}).await;
    let merchant = MerchantId::new();
    let mut driver = app.driver_at(at(-5_200.0, -5_000.0)).await;
    let order = app
        .place_at(
            app.user_id("customer").await,
            merchant,
            at(-5_000.0, -5_000.0),
        )
        .await;
    app.engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: order.id,
            prep_minutes: 5,
        })
        .await
        .unwrap();
    let offer = next_offer(&mut driver, PROMPTLY).await.unwrap();
    app.engine
        .execute(AnswerOffer {
            driver: driver.id,
            offer_id: offer.offer_id,
            accept: true,
        })
        .await
        .map(Option::unwrap)
        .unwrap();
    app.engine
        .execute(MerchantReady {
            merchant_id: merchant,
            order_id: order.id,
        })
        .await
        .unwrap();

    app.engine
        .inject_panic(Entity::Driver(driver.id), 0)
        .await
        .unwrap();
    let engine = app.engine.clone();
    let id = driver.id;
    eventually("the driver is back with its active order", || {
        let engine = engine.clone();
        async move {
            engine
                .execute(ReadDriverStatus { driver: id })
                .await
                .is_ok_and(|status| status.active_order_id == Some(order.id))
        }
    })
    .await;
    let picked = app
        .engine
        .execute(PickedUp {
            driver: driver.id,
            order_id: order.id,
        })
        .await
        .unwrap();
    assert_eq!(picked.status, OrderStatus::PickedUp);
}
