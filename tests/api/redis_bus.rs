//! What the engine keeps in Redis when it is configured: the order-event stream other services
//! consume, and rate limits shared by every replica; and what happens when Redis is down.

use mealkitz::actors::commands::*;
use std::time::{Duration, Instant};

use mealkitz::domain::OrderId;
use sqlx::{Connection, PgConnection};

use crate::helpers::{
    Db, TestApp, TestDb, redis_url, spawn_app_with, start, test_config, with_redis,
};
use crate::helpers::{PROMPTLY_SECS, at, offered};

/// `(seq, event)` of every stream entry for `order`, in stream order.
async fn streamed_events(stream: &str, order: OrderId) -> Vec<(i64, String)> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .unwrap();
    let order = order.to_string();
    entries
        .into_iter()
        .filter_map(|(_, flat)| {
            let field = |name: &str| {
                flat.chunks(2)
                    .find(|pair| pair[0] == name)
                    .map(|pair| pair[1].clone())
            };
            if field("order_id")? != order {
                return None;
            }
            Some((field("seq")?.parse().ok()?, field("event")?))
        })
        .collect()
}

/// `(seq, event)` of the order's journal.
async fn journaled_events(app: &TestApp, order: OrderId) -> Vec<(i64, String)> {
    let mut connection = PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query_as("SELECT seq, event FROM order_events WHERE order_id = $1 ORDER BY seq")
        .bind(order.as_uuid())
        .fetch_all(&mut connection)
        .await
        .unwrap()
}

fn prefix_of(config: &mealkitz::config::Config) -> String {
    config.redis.as_ref().unwrap().key_prefix.clone()
}

#[actix_web::test]
async fn every_journaled_transition_is_appended_to_the_order_event_stream() {
    let db = TestDb::create(Db::Postgres).await;
    let config = with_redis(test_config(&db), &redis_url());
    let stream = format!("{}order-events", prefix_of(&config));
    let app = spawn_app_with(db, config).await;

    let (driver, merchant, order, offer) = offered(&app, at(5_000.0, 5_000.0)).await;
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
        .execute(PickedUp {
            driver: driver.id,
            order_id: order.id,
        })
        .await
        .unwrap();
    app.engine
        .execute(Delivered {
            driver: driver.id,
            order_id: order.id,
        })
        .await
        .unwrap();

    let journal = journaled_events(&app, order.id).await;
    assert_eq!(journal.first().map(|e| e.1.as_str()), Some("placed"));
    assert_eq!(journal.last().map(|e| e.1.as_str()), Some("delivered"));
    // Appends run behind the journal: wait for them to catch up.
    let deadline = Instant::now() + Duration::from_secs(PROMPTLY_SECS);
    let mut streamed = streamed_events(&stream, order.id).await;
    while streamed.len() < journal.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        streamed = streamed_events(&stream, order.id).await;
    }
    assert_eq!(
        streamed, journal,
        "the stream holds the journal, in order, once"
    );
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut connection)
        .await
        .unwrap();
}

#[actix_web::test]
async fn rate_limits_hold_across_replicas_sharing_redis() {
    // Two engines (each with its own database, as the limit only needs Redis) share one key
    // prefix, as replicas of one deployment do.
    let first_db = TestDb::create(Db::Sqlite).await;
    let mut first = with_redis(test_config(&first_db), &redis_url());
    first.checkout.login_attempts_per_minute = 3;
    let second_db = TestDb::create(Db::Sqlite).await;
    let mut second = test_config(&second_db);
    second.redis = first.redis.clone();
    second.checkout.login_attempts_per_minute = 3;
    let first = spawn_app_with(first_db, first).await;
    let second = spawn_app_with(second_db, second).await;
    for app in [&first, &second] {
        app.register("shared@example.com", "correct horse battery", "customer")
            .await;
    }

    for app in [&first, &second, &first] {
        app.login("shared@example.com", "wrong password")
            .await
            .assert_error(401, "invalid_credentials");
    }
    // Three attempts in all, on two replicas: the limit of 3 is reached on both.
    second
        .login("shared@example.com", "correct horse battery")
        .await
        .assert_error(429, "rate_limited");
    first
        .login("shared@example.com", "correct horse battery")
        .await
        .assert_error(429, "rate_limited");
}

#[actix_web::test]
async fn with_redis_down_orders_still_flow_and_limits_are_counted_locally() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = with_redis(
        test_config(&db),
        &format!("redis://127.0.0.1:{closed_port}"),
    );
    config.checkout.login_attempts_per_minute = 2;
    // `/ready` stays 503 (it names Redis): wait for the engine instead.
    let app = start(db, config).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app.engine.is_ready() {
        assert!(Instant::now() < deadline, "engine not ready after 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Dispatch does not wait on the stream.
    let (_, _, order, offer) = offered(&app, at(-5_000.0, -5_000.0)).await;
    assert_eq!(offer.order_id, order.id);

    // Limits fall back to this process's count: still enforced.
    app.register("local@example.com", "correct horse battery", "customer")
        .await;
    for _ in 0..2 {
        app.login("local@example.com", "wrong password")
            .await
            .assert_error(401, "invalid_credentials");
    }
    app.login("local@example.com", "correct horse battery")
        .await
        .assert_error(429, "rate_limited");
}
