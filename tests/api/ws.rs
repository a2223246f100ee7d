//! The WebSocket gateway with real clients (tokio-tungstenite): a whole delivery across the three
//! sockets, every bad input and its answer, handshakes, token expiry, resume after reconnect,
//! heartbeats, and a slow client closed without hurting others.

use mealkitz::actors::commands::*;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mealkitz::domain::{MerchantId, OrderId, Position, UserId};
use mealkitz::store::Store;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{Db, Session, TestApp, TestDb, spawn_app_with, test_config};
use crate::helpers::{at, dispatch_app, from_centre_m, offset_m};

const PROMPTLY: Duration = Duration::from_secs(5);

/// A WebSocket client.
pub struct Ws {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a handshake was refused: status and body.
pub type Refused = (u16, String);

pub async fn ws_connect(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, Refused> {
    let url = format!("{}{}", app.address.replace("http://", "ws://"), path);
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((inner, _)) => Ok(Ws { inner }),
        Err(tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(error) => panic!("websocket connect failed: {error}"),
    }
}

impl Ws {
    pub async fn send(&mut self, value: Value) {
        self.inner
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        let _ = self.inner.send(message).await;
    }

    /// The next JSON message within `within` (pings are answered by the client library).
    pub async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.inner.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).ok(),
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                    return None;
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next message of `kind`, skipping others.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(message) if message["type"] == kind => return message,
                Some(_) => continue,
                None => panic!("no {kind:?} message within {PROMPTLY:?}"),
            }
        }
    }

    /// The next `order_update` whose order matches `predicate`.
    pub async fn expect_order(&mut self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(m) if m["type"] == "order_update" && predicate(&m["order"]) => {
                    return m["order"].clone();
                }
                Some(_) => continue,
                None => panic!("no order_update where {what} within {PROMPTLY:?}"),
            }
        }
    }

    /// Reads until the server closes; the close code and reason.
    pub async fn closed(&mut self, within: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.inner.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    return Some((u16::from(frame.code), frame.reason.to_string()));
                }
                Ok(Some(Ok(Message::Close(None)))) => return Some((1005, String::new())),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// A second handle on the test database, for setting up rows the REST API does not create yet.
pub async fn store_of(app: &TestApp) -> Store {
    crate::helpers::migrated_store(&app.db).await
}

/// Everyone a delivery needs: a merchant with a menu (made through REST), a customer, a driver.
pub struct Cast {
    pub merchant_owner: Session,
    pub merchant_id: MerchantId,
    pub shop: crate::merchants::Shop,
    pub pickup: Position,
    pub customer: Session,
    pub driver: Session,
}

pub async fn cast(app: &TestApp, pickup: Position) -> Cast {
    let (north_m, east_m) = from_centre_m(pickup);
    let shop = crate::merchants::open_shop(app, north_m, east_m).await;
    Cast {
        merchant_owner: Session {
            id: shop.owner.id.clone(),
            email: shop.owner.email.clone(),
            token: shop.owner.token.clone(),
        },
        merchant_id: shop.merchant_id.parse().unwrap(),
        shop,
        pickup,
        customer: app.signed_up("customer").await,
        driver: app.signed_up("driver").await,
    }
}

/// A driver socket, online and available at `position`, matchable before it returns.
pub async fn driver_online(app: &TestApp, driver: &Session, position: Position) -> Ws {
    let mut ws = ws_connect(app, "/ws/driver", Some(&driver.token), None)
        .await
        .unwrap();
    ws.send(json!({"type": "availability", "available": true}))
        .await;
    ws.send(json!({"type": "location", "lat": position.lat, "lon": position.lon}))
        .await;
    let id: UserId = driver.id.parse().unwrap();
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let status = app
            .engine
            .execute(ReadDriverStatus { driver: id })
            .await
            .unwrap();
        if status.online && status.available && status.location.is_some() {
            return ws;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "driver never became matchable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Cast {
    /// Checks out an order through REST, delivered 1 km north of the merchant.
    pub async fn place(&self, app: &TestApp) -> OrderId {
        let dropoff = offset_m(self.pickup, 1_000.0, 0.0);
        let body = crate::checkout::order_body(&self.shop, dropoff, "pm_card_visa");
        let placed = crate::checkout::checkout(
            app,
            &self.customer.token,
            &crate::checkout::new_key(),
            &body,
        )
        .await;
        assert_eq!(placed.status, 201, "{}", placed.text);
        placed.body["id"].as_str().unwrap().parse().unwrap()
    }
}

crate::helpers::each_backend! {
    a_whole_delivery_runs_over_the_three_sockets => whole_delivery;
    each_client_kind_resumes_after_reconnecting => resume_after_reconnect;
}

async fn whole_delivery(kind: Db) {
    let app = dispatch_app(kind, |_| {}).await;
    let cast = cast(&app, at(-5_000.0, -5_000.0)).await;
    let mut board = ws_connect(&app, "/ws/merchant", Some(&cast.merchant_owner.token), None)
        .await
        .unwrap();
    let first = board.expect("board").await;
    assert_eq!(first["orders"], json!([]));
    let mut driver = driver_online(&app, &cast.driver, at(-5_300.0, -5_000.0)).await;

    let order_id = cast.place(&app).await;
    let placed = board
        .expect_order("it is the new order", |o| o["id"] == json!(order_id))
        .await;
    assert_eq!(placed["status"], "placed");
    let mut tracker = ws_connect(
        &app,
        &format!("/ws/orders/{order_id}"),
        Some(&cast.customer.token),
        None,
    )
    .await
    .unwrap();
    let current = tracker.expect("order_update").await;
    assert_eq!(current["order"]["status"], "placed");
    for field in [
        "id",
        "status",
        "dispatch_status",
        "merchant_id",
        "customer_id",
        "driver_id",
        "items",
        "total_cents",
        "pickup",
        "dropoff",
        "created_at",
        "updated_at",
        "events",
    ] {
        assert!(
            current["order"].get(field).is_some(),
            "order object lacks {field}: {current}"
        );
    }

    board
        .send(json!({"type": "accept_order", "order_id": order_id, "prep_minutes": 12}))
        .await;
    board
        .expect_order("accepted", |o| o["status"] == "accepted")
        .await;
    let offer = driver.expect("offer").await;
    assert_eq!(offer["order_id"], json!(order_id));
    for field in ["offer_id", "pickup", "dropoff", "expires_at"] {
        assert!(offer.get(field).is_some(), "offer lacks {field}: {offer}");
    }
    driver
        .send(json!({"type": "accept_offer", "offer_id": offer["offer_id"]}))
        .await;
    let assigned = driver.expect("assigned").await;
    assert_eq!(assigned["order"]["driver_id"], json!(cast.driver.id));
    let seen = tracker
        .expect_order("a driver is assigned", |o| {
            o["dispatch_status"] == "assigned"
        })
        .await;
    assert_eq!(seen["driver_id"], json!(cast.driver.id));

    let near = at(-5_100.0, -5_000.0);
    driver
        .send(json!({"type": "location", "lat": near.lat, "lon": near.lon}))
        .await;
    let location = tracker.expect("driver_location").await;
    assert!((location["lat"].as_f64().unwrap() - near.lat).abs() < 1e-9);
    assert!(location["eta_seconds"].as_f64().unwrap() > 0.0);

    board
        .send(json!({"type": "order_ready", "order_id": order_id}))
        .await;
    tracker
        .expect_order("ready", |o| o["status"] == "ready")
        .await;
    driver
        .send(json!({"type": "picked_up", "order_id": order_id}))
        .await;
    tracker
        .expect_order("picked up", |o| o["status"] == "picked_up")
        .await;
    driver
        .send(json!({"type": "delivered", "order_id": order_id}))
        .await;
    let done = tracker
        .expect_order("delivered", |o| o["status"] == "delivered")
        .await;
    let timeline: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(
        timeline,
        ["placed", "accepted", "ready", "picked_up", "delivered"]
    );
    driver
        .expect_order("delivered", |o| o["status"] == "delivered")
        .await;
    board
        .expect_order("delivered", |o| o["status"] == "delivered")
        .await;
}

async fn resume_after_reconnect(kind: Db) {
    let app = dispatch_app(kind, |_| {}).await;
    let cast = cast(&app, at(5_000.0, 5_000.0)).await;
    let mut driver = driver_online(&app, &cast.driver, at(5_200.0, 5_000.0)).await;
    let order_id = cast.place(&app).await;
    app.engine
        .execute(MerchantAccept {
            merchant_id: cast.merchant_id,
            order_id,
            prep_minutes: 10,
        })
        .await
        .unwrap();
    let offer = driver.expect("offer").await;

    // The driver drops and comes back: the open offer is sent again.
    drop(driver);
    let mut driver = ws_connect(&app, "/ws/driver", Some(&cast.driver.token), None)
        .await
        .unwrap();
    let again = driver.expect("offer").await;
    assert_eq!(again["offer_id"], offer["offer_id"]);
    driver
        .send(json!({"type": "accept_offer", "offer_id": offer["offer_id"]}))
        .await;
    driver.expect("assigned").await;

    // Again: now it gets its active order.
    drop(driver);
    let mut driver = ws_connect(&app, "/ws/driver", Some(&cast.driver.token), None)
        .await
        .unwrap();
    let resumed = driver.expect("assigned").await;
    assert_eq!(resumed["order"]["id"], json!(order_id));

    // The merchant gets the board again, with the order as it is now.
    let mut board = ws_connect(&app, "/ws/merchant", Some(&cast.merchant_owner.token), None)
        .await
        .unwrap();
    board.expect("board").await;
    drop(board);
    let mut board = ws_connect(&app, "/ws/merchant", Some(&cast.merchant_owner.token), None)
        .await
        .unwrap();
    let current = board.expect("board").await;
    let orders = current["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["dispatch_status"], "assigned");

    // A tracker gets the current state.
    let path = format!("/ws/orders/{order_id}");
    drop(
        ws_connect(&app, &path, Some(&cast.customer.token), None)
            .await
            .unwrap(),
    );
    let mut tracker = ws_connect(&app, &path, Some(&cast.customer.token), None)
        .await
        .unwrap();
    let now = tracker.expect("order_update").await;
    assert_eq!(now["order"]["driver_id"], json!(cast.driver.id));
}

/// A kitchen's command for one order does not wait for another order's: with the first order's
/// row locked in the database (its acceptance cannot be journaled yet), the second order's
/// acceptance goes through and shows on the board; the first follows once the lock is gone.
#[actix_web::test]
async fn a_board_command_held_up_for_one_order_does_not_hold_up_another() {
    use sqlx::Connection;
    let app = dispatch_app(Db::Postgres, |_| {}).await;
    let cast = cast(&app, at(-5_000.0, -5_000.0)).await;
    let mut board = ws_connect(&app, "/ws/merchant", Some(&cast.merchant_owner.token), None)
        .await
        .unwrap();
    board.expect("board").await;
    let first = cast.place(&app).await;
    let second = cast.place(&app).await;

    let mut holder = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE")
        .bind(first.0)
        .execute(&mut *held)
        .await
        .unwrap();
    for order_id in [first, second] {
        board
            .send(json!({"type": "accept_order", "order_id": order_id, "prep_minutes": 10}))
            .await;
    }
    board
        .expect_order("the second order accepted", |o| {
            o["id"] == json!(second) && o["status"] == "accepted"
        })
        .await;
    held.commit().await.unwrap();
    board
        .expect_order("the first order accepted", |o| {
            o["id"] == json!(first) && o["status"] == "accepted"
        })
        .await;
}

async fn sqlite_app() -> TestApp {
    dispatch_app(Db::Sqlite, |_| {}).await
}

#[actix_web::test]
async fn bad_input_gets_the_stated_answer_and_the_socket_stays_open() {
    let app = sqlite_app().await;
    let cast = cast(&app, at(-5_000.0, 5_000.0)).await;
    let mut driver = driver_online(&app, &cast.driver, at(-5_000.0, 5_000.0)).await;

    let cases: Vec<(Value, &str)> = vec![
        (json!("not an object"), "bad_message"),
        (json!({"no_type": 1}), "bad_message"),
        (json!({"type": "teleport"}), "bad_message"),
        (json!({"type": "location", "lat": 40.7}), "bad_message"),
        (
            json!({"type": "location", "lat": "north", "lon": -74.0}),
            "bad_message",
        ),
        (
            json!({"type": "availability", "available": "yes"}),
            "bad_message",
        ),
        (
            json!({"type": "accept_offer", "offer_id": "not-a-uuid"}),
            "bad_message",
        ),
        (
            json!({"type": "location", "lat": 91.0, "lon": -74.0}),
            "invalid_location",
        ),
        (
            json!({"type": "location", "lat": 40.7, "lon": -181.0}),
            "invalid_location",
        ),
        (
            json!({"type": "accept_order", "order_id": OrderId::new(), "prep_minutes": 5}),
            "forbidden",
        ),
        (
            json!({"type": "picked_up", "order_id": OrderId::new()}),
            "not_found",
        ),
        (
            json!({"type": "accept_offer", "offer_id": uuid::Uuid::now_v7()}),
            "not_found",
        ),
    ];
    for (message, code) in &cases {
        driver.send(message.clone()).await;
        let answer = driver.expect("error").await;
        assert_eq!(answer["code"], *code, "case {message}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "case {message}"
        );
    }
    driver
        .send(json!({"type": "location", "lat": "north", "lon": -74.0}))
        .await;
    let named = driver.expect("error").await;
    assert!(
        named["message"].as_str().unwrap().starts_with("lat:"),
        "names the field: {named}"
    );
    driver.send_raw(Message::text("{not json")).await;
    assert_eq!(driver.expect("error").await["code"], "bad_message");

    // Still open and working: a location older than the last is dropped silently and counted.
    let p = at(-5_000.0, 5_000.0);
    driver
        .send(json!({"type": "location", "lat": p.lat, "lon": p.lon, "ts": 2_000_000}))
        .await;
    driver
        .send(json!({"type": "location", "lat": p.lat, "lon": p.lon, "ts": 1_000_000}))
        .await;
    driver.send(json!({"type": "teleport"})).await;
    let next = driver.expect("error").await;
    assert_eq!(
        next["code"], "bad_message",
        "the stale location produced no error: {next}"
    );
    // The driver's actor drops and counts the stale fix on its own event loop, which may be
    // after the session answered the next frame: wait for the count.
    let counted = |metrics: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with("ws_messages_dropped_total") && l.contains("stale_location"))
    };
    let deadline = std::time::Instant::now() + PROMPTLY;
    let mut metrics = app.get("/metrics").await.text;
    while !counted(&metrics) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        metrics = app.get("/metrics").await.text;
    }
    assert!(counted(&metrics), "{metrics}");

    // The merchant's socket: values out of range, another merchant's order.
    let mut board = ws_connect(&app, "/ws/merchant", Some(&cast.merchant_owner.token), None)
        .await
        .unwrap();
    board.expect("board").await;
    let other = cast_other_merchant_order(&app).await;
    let merchant_cases: Vec<(Value, &str)> = vec![
        (
            json!({"type": "accept_order", "order_id": other, "prep_minutes": 0}),
            "bad_message",
        ),
        (
            json!({"type": "accept_order", "order_id": other, "prep_minutes": 241}),
            "bad_message",
        ),
        (
            json!({"type": "accept_order", "order_id": other, "prep_minutes": 10}),
            "not_found",
        ),
        (
            json!({"type": "order_ready", "order_id": OrderId::new()}),
            "not_found",
        ),
        (
            json!({"type": "location", "lat": 1.0, "lon": 1.0}),
            "forbidden",
        ),
    ];
    for (message, code) in &merchant_cases {
        board.send(message.clone()).await;
        let answer = board.expect("error").await;
        assert_eq!(answer["code"], *code, "case {message}: {answer}");
    }
    let mine = cast.place(&app).await;
    board
        .send(json!({"type": "order_ready", "order_id": mine}))
        .await;
    assert_eq!(board.expect("error").await["code"], "invalid_transition");
}

/// An order of a merchant someone else owns.
async fn cast_other_merchant_order(app: &TestApp) -> OrderId {
    let other = cast(app, at(-6_000.0, 6_000.0)).await;
    other.place(app).await
}

#[actix_web::test]
async fn a_frame_over_16_kib_is_closed_with_1009_and_a_binary_frame_with_1003() {
    let app = sqlite_app().await;
    let driver = app.signed_up("driver").await;
    let mut ws = ws_connect(&app, "/ws/driver", Some(&driver.token), None)
        .await
        .unwrap();
    let big = json!({"type": "location", "lat": 40.7, "lon": -74.0, "pad": "x".repeat(17 * 1024)});
    ws.send(big).await;
    assert_eq!(ws.closed(PROMPTLY).await.map(|(code, _)| code), Some(1009));

    let mut ws = ws_connect(&app, "/ws/driver", Some(&driver.token), None)
        .await
        .unwrap();
    ws.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(ws.closed(PROMPTLY).await.map(|(code, _)| code), Some(1003));
}

#[actix_web::test]
async fn more_than_the_rate_limit_is_dropped_with_rate_limited() {
    let app = sqlite_app().await;
    let driver = app.signed_up("driver").await;
    let mut ws = ws_connect(&app, "/ws/driver", Some(&driver.token), None)
        .await
        .unwrap();
    // 60 malformed messages at once: the first 20 each get bad_message, then rate_limited.
    for _ in 0..60 {
        ws.send(json!({"type": "teleport"})).await;
    }
    let mut codes = Vec::new();
    while let Some(message) = ws.next(Duration::from_millis(500)).await {
        codes.push(message["code"].as_str().unwrap_or_default().to_owned());
    }
    let bad = codes.iter().filter(|c| *c == "bad_message").count();
    let limited = codes.iter().filter(|c| *c == "rate_limited").count();
    assert!((20..=22).contains(&bad), "{codes:?}");
    assert!(limited >= 1, "{codes:?}");
    assert!(
        limited <= 2,
        "rate_limited is itself limited to one a second: {codes:?}"
    );
}

#[actix_web::test]
async fn handshakes_are_refused_with_401_403_and_404() {
    let app = sqlite_app().await;
    let cast = cast(&app, at(5_000.0, -5_000.0)).await;
    let order_id = cast.place(&app).await;
    let stranger = app.signed_up("customer").await;
    let order_path = format!("/ws/orders/{order_id}");

    let refused = |r: Result<Ws, Refused>| r.err().expect("refused").0;
    assert_eq!(
        refused(ws_connect(&app, "/ws/driver", None, None).await),
        401
    );
    assert_eq!(
        refused(ws_connect(&app, "/ws/driver", Some("forged.token.here"), None).await),
        401
    );
    assert_eq!(
        refused(ws_connect(&app, "/ws/driver", Some(&cast.customer.token), None).await),
        403
    );
    assert_eq!(
        refused(ws_connect(&app, "/ws/merchant", Some(&cast.driver.token), None).await),
        403
    );
    let (status, body) = ws_connect(&app, &order_path, Some(&stranger.token), None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("not_found"), "{body}");
    let unknown = format!("/ws/orders/{}", OrderId::new());
    assert_eq!(
        refused(ws_connect(&app, &unknown, Some(&cast.customer.token), None).await),
        404
    );
    let other_owner = app.signed_up("merchant").await;
    assert_eq!(
        refused(ws_connect(&app, "/ws/merchant", Some(&other_owner.token), None).await),
        404
    );
    let path = format!("/ws/merchant?merchant_id={}", cast.merchant_id);
    assert_eq!(
        refused(ws_connect(&app, &path, Some(&other_owner.token), None).await),
        404
    );

    // Allowed: the customer, the merchant's owner, an admin; `?token=` as browsers send it.
    assert!(
        ws_connect(&app, &order_path, Some(&cast.customer.token), None)
            .await
            .is_ok()
    );
    assert!(
        ws_connect(&app, &order_path, Some(&cast.merchant_owner.token), None)
            .await
            .is_ok()
    );
    let with_query = format!("{order_path}?token={}", cast.customer.token);
    assert!(ws_connect(&app, &with_query, None, None).await.is_ok());

    // Browsers: only the same origin by default.
    let host = app.address.trim_start_matches("http://").to_owned();
    assert!(
        ws_connect(
            &app,
            &order_path,
            Some(&cast.customer.token),
            Some(&format!("http://{host}"))
        )
        .await
        .is_ok()
    );
    assert_eq!(
        refused(
            ws_connect(
                &app,
                &order_path,
                Some(&cast.customer.token),
                Some("https://evil.example")
            )
            .await
        ),
        403
    );
}

#[actix_web::test]
async fn the_origin_allowlist_admits_listed_origins() {
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = test_config(&db);
    config.gateway.allowed_origins = vec!["https://app.example.com".into()];
    let app = spawn_app_with(db, config).await;
    let driver = app.signed_up("driver").await;
    let token = Some(driver.token.as_str());
    assert!(
        ws_connect(&app, "/ws/driver", token, Some("https://app.example.com"))
            .await
            .is_ok()
    );
    let other = ws_connect(&app, "/ws/driver", token, Some("https://other.example.com")).await;
    assert_eq!(other.err().map(|r| r.0), Some(403));
}

#[actix_web::test]
async fn a_token_that_expires_while_open_closes_the_socket_with_1008() {
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = test_config(&db);
    config.auth.token_ttl_secs = 2;
    let app = spawn_app_with(db, config).await;
    let driver = app.signed_up("driver").await;
    let mut ws = ws_connect(&app, "/ws/driver", Some(&driver.token), None)
        .await
        .unwrap();
    let closed = ws.closed(Duration::from_secs(6)).await;
    assert_eq!(closed, Some((1008, "token_expired".to_owned())));
}

#[actix_web::test]
async fn a_silent_client_is_closed_and_a_live_one_is_kept() {
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = test_config(&db);
    config.gateway.heartbeat_interval = Duration::from_millis(100);
    config.gateway.client_timeout = Duration::from_millis(500);
    let app = spawn_app_with(db, config).await;
    let driver = app.signed_up("driver").await;
    let mut live = ws_connect(&app, "/ws/driver", Some(&driver.token), None)
        .await
        .unwrap();
    let mut silent = ws_connect(&app, "/ws/driver", Some(&driver.token), None)
        .await
        .unwrap();
    // The live client reads (answering pings) for a second; the silent one does nothing.
    assert!(live.next(Duration::from_millis(1_200)).await.is_none());
    // The server closes the silent socket with 1001. Reading it, the client answers the pings
    // queued before the close frame, and those pongs can meet the closed connection and reset
    // it before the close frame is read: a reset counts as closed too; a timeout does not.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    let ended = loop {
        match tokio::time::timeout_at(deadline, silent.inner.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                break Some(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break Some(1006),
            Err(_) => break None,
        }
    };
    assert!(
        matches!(ended, Some(1001 | 1006)),
        "silent client not closed: {ended:?}"
    );
    live.send(json!({"type": "availability", "available": true}))
        .await;
    live.send(json!({"type": "teleport"})).await;
    assert_eq!(live.expect("error").await["code"], "bad_message");
}

#[actix_web::test]
async fn a_driver_who_drops_stays_matchable_for_the_grace_period_only() {
    let app = dispatch_app(Db::Sqlite, |d| d.driver_grace = Duration::from_millis(700)).await;
    let driver = app.signed_up("driver").await;
    let ws = driver_online(&app, &driver, at(5_000.0, 5_000.0)).await;
    let ne = mealkitz::geo::RegionId::from("ne");
    assert_eq!(
        app.engine
            .execute(IndexedDrivers { region: ne.clone() })
            .await
            .unwrap(),
        1
    );
    drop(ws);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.engine
            .execute(IndexedDrivers { region: ne.clone() })
            .await
            .unwrap(),
        1,
        "still in the index during grace"
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        app.engine
            .execute(IndexedDrivers { region: ne.clone() })
            .await
            .unwrap(),
        0,
        "offline after grace"
    );
    // Reconnecting brings it back (its availability and location were kept).
    let _again = ws_connect(&app, "/ws/driver", Some(&driver.token), None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while app
        .engine
        .execute(IndexedDrivers { region: ne.clone() })
        .await
        .unwrap()
        != 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "back in the index after reconnecting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_slow_client_is_closed_with_1013_without_slowing_others() {
    let app = sqlite_app().await;
    let cast = cast(&app, at(-5_000.0, -5_000.0)).await;
    // A board that never reads, and one that does.
    let mut slow = slow_reader(&app, "/ws/merchant", &cast.merchant_owner.token).await;
    let mut fast = ws_connect(&app, "/ws/merchant", Some(&cast.merchant_owner.token), None)
        .await
        .unwrap();
    fast.expect("board").await;
    let customer: UserId = cast.customer.id.parse().unwrap();
    // Fat orders (many lines) fill the slow client's socket buffers, then its outbox.
    const ORDERS: usize = 1_000;
    let reader = async {
        let mut seen = 0;
        while seen < ORDERS {
            match fast.next(Duration::from_secs(20)).await {
                Some(message) if message["type"] == "order_update" => seen += 1,
                Some(_) => {}
                None => panic!("the fast board stalled after {seen} updates"),
            }
        }
        seen
    };
    let writer = async {
        for _ in 0..ORDERS {
            place_fat_order(&app, customer, cast.merchant_id, cast.pickup).await;
        }
    };
    let (seen, ()) = tokio::join!(reader, writer);
    assert_eq!(seen, ORDERS);
    // The server gave up on the slow board...
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while !app
        .get("/metrics")
        .await
        .text
        .contains(r#"ws_closes_total{kind="merchant",code="1013"}"#)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow client was never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and when it reads again it finds what was already on its way, then the close.
    let closed = slow.closed(Duration::from_secs(20)).await;
    assert_eq!(closed.map(|(code, _)| code), Some(1013));
}

/// A client with a tiny receive buffer that does not read until asked to.
async fn slow_reader(app: &TestApp, path: &str, token: &str) -> Ws {
    let address: std::net::SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address).await.unwrap();
    let mut request = format!("ws://{address}{path}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (inner, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    Ws { inner }
}

async fn place_fat_order(app: &TestApp, customer: UserId, merchant: MerchantId, pickup: Position) {
    let items = (0..100)
        .map(|i| mealkitz::domain::OrderItem {
            menu_item_id: None,
            name: format!("Seasonal meal kit number {i} with extra sauce and sides"),
            quantity: 1,
            unit_price_cents: mealkitz::domain::Cents(999),
        })
        .collect();
    app.engine
        .execute(PlaceOrder {
            order: mealkitz::domain::NewOrder {
                id: OrderId::new(),
                merchant_id: merchant,
                customer_id: customer,
                items,
                delivery_fee_cents: mealkitz::domain::Cents(0),
                total_cents: mealkitz::domain::Cents(99_900),
                pickup,
                dropoff: Position {
                    lat: pickup.lat + 0.005,
                    lon: pickup.lon,
                },
                dropoff_address: "9 Slow Lane".into(),
                pickup_address: "1 Kitchen Street".into(),
            },
        })
        .await
        .unwrap();
}

/// A client that sends its first frame in the same write as its handshake: the server has
/// read the frame with the request, and must hand it to the socket with the connection.
#[actix_web::test]
async fn a_frame_sent_with_the_handshake_is_read_after_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = sqlite_app().await;
    let driver = app.signed_up("driver").await;
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut bytes = format!(
        "GET /ws/driver HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        driver.token
    )
    .into_bytes();
    // A masked text frame that is not JSON: the driver socket answers it with an error frame.
    let payload = b"not json";
    let mask = [7u8, 1, 9, 3];
    bytes.extend_from_slice(&[0x81, 0x80 | payload.len() as u8]);
    bytes.extend_from_slice(&mask);
    bytes.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    stream.write_all(&bytes).await.unwrap();
    // The 101's head, read a byte at a time so that no frame is taken with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let inner = WebSocketStream::from_raw_socket(
        MaybeTlsStream::Plain(stream),
        tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let mut ws = Ws { inner };
    let error = ws.expect("error").await;
    assert_eq!(error["code"], "bad_message", "{error}");
}

/// The server is assembled by hand (src/gateway/handover.rs), so it must still do what
/// actix-web's does on a graceful stop: end idle keep-alive connections at once instead of
/// waiting out their keep-alive (5 s).
#[actix_web::test]
async fn an_idle_keep_alive_connection_ends_as_soon_as_a_graceful_stop_starts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = sqlite_app().await;
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The whole response (head, then as many bytes as its content-length says).
    let mut response = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "closed before the response was read");
        response.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|value| value.trim().parse().ok())
                .expect("a content-length");
            if body.len() >= length {
                assert!(head.starts_with("http/1.1 200"), "{head}");
                break;
            }
        }
    }
    let stopping = app.stop_gracefully();
    let ended = async {
        let mut rest = [0u8; 64];
        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut rest)).await
    };
    let (ended, ()) = tokio::join!(ended, stopping);
    assert!(
        matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection was not ended within 2 s of the stop: {ended:?}"
    );
}

#[actix_web::test]
async fn sockets_close_with_1001_when_the_server_shuts_down() {
    let app = sqlite_app().await;
    let driver = app.signed_up("driver").await;
    let mut ws = ws_connect(&app, "/ws/driver", Some(&driver.token), None)
        .await
        .unwrap();
    let stopping = app.stop_gracefully();
    let (closed, _) = tokio::join!(ws.closed(PROMPTLY), stopping);
    assert_eq!(closed.map(|(code, _)| code), Some(1001));
}

#[actix_web::test]
async fn socket_metrics_count_connections_messages_and_closes() {
    let app = sqlite_app().await;
    let driver = app.signed_up("driver").await;
    let mut ws = ws_connect(&app, "/ws/driver", Some(&driver.token), None)
        .await
        .unwrap();
    ws.send(json!({"type": "teleport"})).await;
    ws.expect("error").await;
    ws.send_raw(Message::binary(vec![0])).await;
    ws.closed(PROMPTLY).await;
    let metrics = app.get("/metrics").await.text;
    for needle in [
        r#"ws_messages_in_total{kind="driver",type="invalid"}"#,
        r#"ws_messages_out_total{kind="driver",type="error"}"#,
        r#"ws_closes_total{kind="driver",code="1003"}"#,
        "ws_connections{",
    ] {
        assert!(metrics.contains(needle), "missing {needle}: {metrics}");
    }
}
