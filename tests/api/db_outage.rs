//! An engine whose link to PostgreSQL is cut, through a relay the test owns, for longer than its
//! lease TTL: it stays up (sockets open, locations flowing, writes refused with
//! `store_unavailable`, `/ready` saying why), resumes by itself when the link comes back, and
//! steps down — still up — from a region another replica took meanwhile.

use mealkitz::actors::commands::*;
use std::time::{Duration, Instant};

use mealkitz::actors::{Canceller, DriverFeed, Entity};
use mealkitz::config::{Config, DatabaseUrl, Secret};
use mealkitz::domain::{Change, MerchantId, OrderId, OrderStatus, UserId};
use mealkitz::store::Claim;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, TestDb, config_for, migrated_store, spawn_app_with};
use crate::helpers::{at, offered};
use crate::relay::Relay;
use crate::ws::{Ws, cast, driver_online, ws_connect};

/// The lease TTL of these engines: short, so an outage outlives it quickly.
const LEASE_TTL_SECS: u64 = 2;
/// How long the link stays cut: three lease TTLs.
const CUT_SECS: u64 = 3 * LEASE_TTL_SECS;
/// How long the engine may take to be ready again once the database is back.
const BACK_WITHIN_SECS: u64 = 10;

/// An engine on a fresh PostgreSQL database reached through a relay, with a short lease TTL.
async fn engine_behind_relay(tune: impl FnOnce(&mut Config)) -> (TestApp, Relay) {
    let db = TestDb::create(Db::Postgres).await;
    let relay = Relay::to_database(&db.url).await;
    let mut config = config_for(DatabaseUrl::Postgres(Secret::new(
        relay.url_through(&db.url),
    )));
    config.dispatch.lease_ttl = Duration::from_secs(LEASE_TTL_SECS);
    tune(&mut config);
    (spawn_app_with(db, config).await, relay)
}

async fn ready(app: &TestApp) -> (u16, Value) {
    let reply = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .expect("the server answers");
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or(Value::Null))
}

async fn health(app: &TestApp) -> u16 {
    app.client
        .get(app.url("/health"))
        .send()
        .await
        .expect("the server answers /health")
        .status()
        .as_u16()
}

/// Polls `/ready` until `check` accepts it; panics with the last answer after `within`.
async fn ready_until(
    app: &TestApp,
    within: Duration,
    what: &str,
    check: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = ready(app).await;
        if check(status, &body) {
            return (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "/ready never showed {what} within {within:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `frame` until the order reaches `status`, again after each retryable error (as the
/// apps do); panics on any other error or when it takes more than [`BACK_WITHIN_SECS`].
async fn until_done(ws: &mut Ws, frame: &Value, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(BACK_WITHIN_SECS);
    loop {
        ws.send(frame.clone()).await;
        loop {
            let Some(message) = ws.next(Duration::from_secs(5)).await else {
                panic!("no answer to {frame}");
            };
            if message["type"] == "order_update" && message["order"]["status"] == status {
                return;
            }
            if message["type"] == "error" {
                let code = message["code"].as_str().unwrap_or_default();
                assert!(
                    ["store_unavailable", "dispatch_unavailable"].contains(&code),
                    "{frame}: {message}"
                );
                assert!(
                    Instant::now() < deadline,
                    "{frame} still refused after {BACK_WITHIN_SECS} s: {message}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
        }
    }
}

/// The journal's events of `order`, read on the real database (not through the relay).
async fn events_of(db: &TestDb, order: OrderId) -> Vec<String> {
    let mut raw = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT event FROM order_events WHERE order_id = $1 ORDER BY seq")
            .bind(order.as_uuid())
            .fetch_all(&mut raw)
            .await
            .unwrap();
    rows.into_iter().map(|(event,)| event).collect()
}

#[actix_web::test]
async fn an_engine_cut_off_from_postgres_past_its_lease_stays_up_and_resumes_by_itself() {
    let (app, relay) = engine_behind_relay(|_| {}).await;
    let cast = cast(&app, at(5_000.0, 5_000.0)).await;
    let driver_id: UserId = cast.driver.id.parse().unwrap();
    let mut board = ws_connect(&app, "/ws/merchant", Some(&cast.merchant_owner.token), None)
        .await
        .unwrap();
    board.expect("board").await;
    let mut driver = driver_online(&app, &cast.driver, at(5_300.0, 5_000.0)).await;
    let order_id = cast.place(&app).await;
    board
        .send(json!({"type": "accept_order", "order_id": order_id, "prep_minutes": 10}))
        .await;
    board
        .expect_order("accepted", |o| o["status"] == "accepted")
        .await;
    let offer = driver.expect("offer").await;
    driver
        .send(json!({"type": "accept_offer", "offer_id": offer["offer_id"]}))
        .await;
    driver.expect("assigned").await;

    relay.cut();
    let cut_at = Instant::now();
    // The order's actor crashes while the journal cannot be read to rebuild it: it must come
    // back once the database does.
    app.engine
        .inject_panic(Entity::Order(order_id), 0)
        .await
        .unwrap();

    // The process stays up the whole time, and says why it is not ready.
    let mut step = 0u32;
    let mut last_ready = (0, Value::Null);
    while cut_at.elapsed() < Duration::from_secs(CUT_SECS) {
        step += 1;
        assert_eq!(health(&app).await, 200, "/health during the cut");
        // The driver keeps moving; its fixes reach the engine over the open socket.
        let spot = at(5_300.0 - 20.0 * f64::from(step), 5_000.0);
        driver
            .send(json!({"type": "location", "lat": spot.lat, "lon": spot.lon}))
            .await;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let status = app
                .engine
                .execute(ReadDriverStatus { driver: driver_id })
                .await
                .unwrap();
            if status
                .location
                .is_some_and(|p| (p.lat - spot.lat).abs() < 1e-9)
            {
                assert!(status.online, "the driver went offline during the cut");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a location sent during the cut never reached the engine: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        last_ready = ready(&app).await;
        assert_eq!(last_ready.0, 503, "/ready during the cut: {}", last_ready.1);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The driver's actor crashes too: restarted, it cannot read the driver's active order back
    // yet, and must have it once the database answers.
    app.engine
        .inject_panic(Entity::Driver(driver_id), 0)
        .await
        .unwrap();
    let (_, body) = &last_ready;
    assert_ne!(body["checks"]["database"], "ok", "{body}");
    let dispatch = body["checks"]["dispatch"].as_str().unwrap_or_default();
    assert!(
        dispatch.contains("database unreachable") && dispatch.contains("lapsed"),
        "/ready names the outage and the lapsed leases: {body}"
    );

    // Writes are refused, retryably: over the socket and over REST.
    board
        .send(json!({"type": "order_ready", "order_id": order_id}))
        .await;
    let refused = board.expect("error").await;
    assert_eq!(refused["code"], "store_unavailable", "{refused}");
    let body = crate::checkout::order_body(&cast.shop, at(5_500.0, 5_000.0), "pm_card_visa");
    let checkout = crate::checkout::checkout(
        &app,
        &cast.customer.token,
        &crate::checkout::new_key(),
        &body,
    )
    .await;
    checkout.assert_error(503, "store_unavailable");
    assert!(
        checkout.headers.contains_key("retry-after"),
        "{:?}",
        checkout.headers
    );
    assert!(
        cut_at.elapsed() > Duration::from_secs(CUT_SECS),
        "the cut outlived the lease TTL"
    );
    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("store_available ") && l.ends_with(" 0")),
        "store_available is 0 during the cut"
    );

    relay.restore();
    let restored_at = Instant::now();
    ready_until(
        &app,
        Duration::from_secs(BACK_WITHIN_SECS),
        "ready",
        |status, _| status == 200,
    )
    .await;
    let back = restored_at.elapsed();
    eprintln!(
        "database outage: cut {} ms (lease TTL {LEASE_TTL_SECS} s); ready again {} ms after the link came back",
        restored_at.duration_since(cut_at).as_millis(),
        back.as_millis()
    );

    // The order finishes: the merchant's retry goes through now, then the driver's steps
    // (each retried after a retryable error, as the apps do).
    let order_ready = json!({"type": "order_ready", "order_id": order_id});
    until_done(&mut board, &order_ready, "ready").await;
    let picked_up = json!({"type": "picked_up", "order_id": order_id});
    until_done(&mut driver, &picked_up, "picked_up").await;
    let delivered = json!({"type": "delivered", "order_id": order_id});
    until_done(&mut driver, &delivered, "delivered").await;
    let stored = migrated_store(&app.db)
        .await
        .load_order(order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status(), OrderStatus::Delivered);
    let events = events_of(&app.db, order_id).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("delivered"),
        "{events:?}"
    );
    // The liveness heartbeat (every third of the lease TTL) reports the store again by itself.
    let deadline = Instant::now() + Duration::from_secs(BACK_WITHIN_SECS);
    loop {
        let metrics = app.get("/metrics").await.text;
        if metrics
            .lines()
            .any(|l| l.starts_with("store_available ") && l.ends_with(" 1"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "store_available is 1 again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "store_available 1 again {} ms after the link came back",
        restored_at.elapsed().as_millis()
    );
    drop(relay);
}

#[actix_web::test]
async fn an_engine_whose_region_was_claimed_during_the_cut_steps_down_and_stays_up() {
    let (app, relay) = engine_behind_relay(|_| {}).await;
    let customer = app.user_id("customer").await;
    let merchant = MerchantId::new();
    let order = app.place_at(customer, merchant, at(5_000.0, 5_000.0)).await;
    let usurper = migrated_store(&app.db).await;

    relay.cut();
    // Another replica, which still reaches the database, claims region `ne` once the lease
    // lapsed, and keeps it.
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS + 1)).await;
    let ttl = Duration::from_secs(60);
    let Claim::Granted(taken) = usurper
        .claim_regions("usurper", &["ne".to_owned()], ttl)
        .await
        .unwrap()
    else {
        panic!("a lapsed lease is granted");
    };
    assert_eq!(health(&app).await, 200);
    relay.restore();

    // Back on the database, the engine finds `ne` taken: it stands by (without Redis it runs
    // every region or none), says so, and stays up.
    let (status, body) = ready_until(
        &app,
        Duration::from_secs(BACK_WITHIN_SECS),
        "standby",
        |_, body| {
            body["checks"]["dispatch"]
                .as_str()
                .is_some_and(|d| d.starts_with("standby"))
        },
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["checks"]["dispatch"]
            .as_str()
            .unwrap()
            .contains("usurper"),
        "{body}"
    );
    assert!(
        body["checks"]["leases"]
            .as_str()
            .is_some_and(|l| l.contains("stepped down from region ne")),
        "{body}"
    );
    // Nothing is written under the stale epoch: the order stays as it was.
    let refused = app
        .engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: order.id,
            prep_minutes: 10,
        })
        .await;
    assert!(
        refused.is_err(),
        "a stepped-down replica journaled: {refused:?}"
    );
    assert_eq!(events_of(&app.db, order.id).await, ["placed"]);
    let leases = usurper.region_leases().await.unwrap();
    let now_ms = mealkitz::store::unix_ms();
    for (region, owner, epoch, expires_at_ms) in &leases {
        if region == "ne" {
            assert_eq!((owner.as_str(), *epoch), ("usurper", taken[0].epoch));
        } else {
            assert!(
                *expires_at_ms <= now_ms,
                "the stepped-down replica gave {region} back: {leases:?}"
            );
        }
    }
    // Still up a lease TTL later, and still a live member of the cluster while standing by.
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS)).await;
    assert_eq!(health(&app).await, 200);
    let members = usurper.live_members().await.unwrap();
    assert_eq!(
        members.len(),
        1,
        "the standby keeps its membership: {members:?}"
    );

    // The usurper leaves: the engine claims every region again and serves the order.
    usurper.release_region("usurper", "ne").await.unwrap();
    ready_until(
        &app,
        Duration::from_secs(BACK_WITHIN_SECS),
        "ready",
        |status, _| status == 200,
    )
    .await;
    let accepted = app
        .engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: order.id,
            prep_minutes: 10,
        })
        .await;
    assert!(accepted.is_ok(), "{accepted:?}");
    assert_eq!(
        events_of(&app.db, order.id).await[..2],
        ["placed", "merchant_accepted"]
    );
    drop(relay);
}

/// Journals `change` of an order straight to the store, past its actor: what a write whose
/// answer was lost with the link, but which committed, leaves behind.
async fn journal_behind_the_actor(app: &TestApp, order_id: OrderId, change: Change) {
    let store = migrated_store(&app.db).await;
    let mut ahead = store.load_order(order_id).await.unwrap().unwrap();
    let entry = ahead.decide(change, mealkitz::store::now()).unwrap();
    ahead.apply(&entry).unwrap();
    store.append(&ahead, &[entry]).await.unwrap();
}

#[actix_web::test]
async fn an_order_whose_journal_moved_on_behind_its_actor_is_reloaded_not_stuck() {
    let (app, _relay) = engine_behind_relay(|_| {}).await;
    let (_, order) = app.accepted_at(at(5_000.0, 5_000.0), 10).await;

    // A write whose answer was lost when the link dropped, but which committed: the journal is
    // one transition ahead of the order's actor.
    journal_behind_the_actor(&app, order.id, Change::MarkedReady).await;

    // The next command meets the journal, not a wall: the actor is rebuilt from the journal
    // and a retry goes through.
    let deadline = Instant::now() + Duration::from_secs(BACK_WITHIN_SECS);
    let cancelled = loop {
        match app
            .engine
            .execute(CancelOrder {
                order_id: order.id,
                by: Canceller::Admin,
                reason: "test".into(),
            })
            .await
        {
            Ok(view) => break view,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "still refused after {BACK_WITHIN_SECS} s: {error}"
                );
                assert_eq!(error.code(), "dispatch_unavailable", "{error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(
        events_of(&app.db, order.id).await,
        [
            "placed",
            "merchant_accepted",
            "search_started",
            "marked_ready",
            "cancelled_by_admin"
        ]
    );
}

#[actix_web::test]
async fn an_order_rebuilt_behind_its_journal_tells_its_driver_and_board_what_they_missed() {
    let (app, _relay) = engine_behind_relay(|_| {}).await;
    let (mut driver, merchant, order, offer) = offered(&app, at(5_000.0, 5_000.0)).await;
    app.engine
        .execute(AnswerOffer {
            driver: driver.id,
            offer_id: offer.offer_id,
            accept: true,
        })
        .await
        .unwrap();
    let (_, mut board) = app
        .engine
        .subscribe(SubscribeBoard::new(merchant))
        .await
        .unwrap();

    // The merchant's "ready" committed, but its answer was lost with the link: the journal is
    // one transition ahead of the actor, and nobody was told.
    journal_behind_the_actor(&app, order.id, Change::MarkedReady).await;

    // The merchant presses again: the actor meets the journal and is rebuilt; the retry is
    // told the order is ready already.
    let deadline = Instant::now() + Duration::from_secs(BACK_WITHIN_SECS);
    loop {
        let pressed = app
            .engine
            .execute(MerchantReady {
                merchant_id: merchant,
                order_id: order.id,
            })
            .await;
        match pressed {
            Err(error) if error.code() == "invalid_transition" => break,
            Err(error) if error.code() == "dispatch_unavailable" => {
                assert!(Instant::now() < deadline, "still restarting: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("a second \"ready\" of a ready order: {other:?}"),
        }
    }

    // The driver's app learns the order is ready (so the driver picks it up), and the board
    // shows it — without either reconnecting.
    let within = Duration::from_secs(5);
    let told_driver = tokio::time::timeout(within, async {
        loop {
            match driver.feed.recv().await {
                Some(DriverFeed::OrderUpdate(view)) if view.status == OrderStatus::Ready => {
                    break view;
                }
                Some(_) => continue,
                None => panic!("the driver's feed ended"),
            }
        }
    })
    .await
    .expect("the driver is told the order is ready");
    assert_eq!(told_driver.id, order.id);
    let shown = tokio::time::timeout(within, async {
        loop {
            match board.recv().await {
                Some(view) if view.id == order.id && view.status == OrderStatus::Ready => break,
                Some(_) => continue,
                None => panic!("the board's feed ended"),
            }
        }
    })
    .await;
    assert!(shown.is_ok(), "the board shows the order ready");
    app.engine
        .execute(PickedUp {
            driver: driver.id,
            order_id: order.id,
        })
        .await
        .expect("the driver picks the ready order up");
}

#[actix_web::test]
async fn a_sharing_replica_whose_region_was_claimed_during_the_cut_keeps_the_rest_and_stays_ready()
{
    let (app, relay) = engine_behind_relay(|config| {
        *config = crate::helpers::with_redis(config.clone(), &crate::helpers::redis_url());
    })
    .await;
    let customer = app.user_id("customer").await;
    let merchant = MerchantId::new();
    let in_ne = app.place_at(customer, merchant, at(5_000.0, 5_000.0)).await;
    let in_sw = app
        .place_at(customer, merchant, at(-5_000.0, -5_000.0))
        .await;
    let usurper = migrated_store(&app.db).await;

    relay.cut();
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS + 1)).await;
    let Claim::Granted(taken) = usurper
        .claim_regions("usurper", &["ne".to_owned()], Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("a lapsed lease is granted");
    };
    relay.restore();

    // Back on the database, it steps down from `ne` alone and stays ready, routing `ne`.
    let (_, body) = ready_until(
        &app,
        Duration::from_secs(BACK_WITHIN_SECS),
        "the step-down, ready",
        |status, body| status == 200 && body["checks"]["leases"].is_string(),
    )
    .await;
    assert!(
        body["checks"]["leases"]
            .as_str()
            .unwrap()
            .contains("stepped down from region ne"),
        "{body}"
    );
    let leases = usurper.region_leases().await.unwrap();
    let now_ms = mealkitz::store::unix_ms();
    for (region, owner, epoch, expires_at_ms) in &leases {
        if region == "ne" {
            assert_eq!((owner.as_str(), *epoch), ("usurper", taken[0].epoch));
        } else {
            assert!(
                owner != "usurper" && *expires_at_ms > now_ms,
                "the replica kept {region}: {leases:?}"
            );
        }
    }
    // Its own regions work; nothing is written for `ne` under the stale epoch.
    app.engine
        .execute(MerchantAccept {
            merchant_id: merchant,
            order_id: in_sw.id,
            prep_minutes: 10,
        })
        .await
        .unwrap();
    assert_eq!(events_of(&app.db, in_ne.id).await, ["placed"]);
    assert_eq!(health(&app).await, 200);
    drop(relay);
}

#[actix_web::test]
async fn a_driver_actor_restarted_during_the_cut_gets_its_order_back_when_the_database_returns() {
    let (app, relay) = engine_behind_relay(|_| {}).await;
    let mut driver = app.driver_at(at(5_300.0, 5_000.0)).await;
    let (merchant, order) = app.accepted_at(at(5_000.0, 5_000.0), 10).await;
    let offer = crate::helpers::next_offer(&mut driver, Duration::from_secs(5))
        .await
        .expect("the driver gets the offer");
    app.engine
        .execute(AnswerOffer {
            driver: driver.id,
            offer_id: offer.offer_id,
            accept: true,
        })
        .await
        .map(Option::unwrap)
        .unwrap();

    relay.cut();
    // The driver's actor crashes; restarted, it cannot read its active order yet.
    app.engine
        .inject_panic(Entity::Driver(driver.id), 0)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(CUT_SECS)).await;
    relay.restore();

    // Once the database answers, the order goes on: ready, then the driver's pickup (retried
    // after retryable errors only).
    let deadline = Instant::now() + Duration::from_secs(BACK_WITHIN_SECS);
    let retry = |error: &mealkitz::actors::EngineError| {
        assert!(
            ["store_unavailable", "dispatch_unavailable"].contains(&error.code().as_str()),
            "{error}"
        );
        assert!(Instant::now() < deadline, "still refused: {error}");
    };
    while let Err(error) = app
        .engine
        .execute(MerchantReady {
            merchant_id: merchant,
            order_id: order.id,
        })
        .await
    {
        retry(&error);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let picked = loop {
        match app
            .engine
            .execute(PickedUp {
                driver: driver.id,
                order_id: order.id,
            })
            .await
        {
            Ok(view) => break view,
            Err(error) => retry(&error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(picked.status, OrderStatus::PickedUp);
    drop(relay);
}
