//! Two replicas sharing PostgreSQL and Redis, each reaching Redis through a relay the test cuts
//! several times for longer than the lease TTL, while a small city of real clients keeps
//! working: merchants' boards, drivers' apps spread over both replicas, customers checking out
//! through either, each pressing again after a retryable error as people do. Both replicas must
//! stay up, and every acknowledged order must be delivered soon after the last cut — by the
//! clients reacting to what their sockets tell them, so a feed that never recovers stalls it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use mealkitz::config::Secret;
use mealkitz::domain::Position;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::cluster::{centre_of, shared_two_and_two};
use crate::helpers::{Db, TestDb, config_for, spawn_app_with, start_without_db, with_redis};
use crate::helpers::{at, offset_m};
use crate::relay::Relay;

/// Lease TTL of both replicas: each cut lasts longer.
const LEASE_TTL: Duration = Duration::from_secs(3);
/// How many times the relays are cut, for how long, and the pause between cuts.
const CUTS: usize = 3;
const CUT_FOR: Duration = Duration::from_secs(4);
const BETWEEN_CUTS: Duration = Duration::from_secs(3);
/// Orders flow this long before the first cut, and after the last one.
const WARM_UP: Duration = Duration::from_secs(3);
const COOL_DOWN: Duration = Duration::from_secs(2);
/// Every acknowledged order is delivered within this long after the last cut ended.
const FINISH_WITHIN: Duration = Duration::from_secs(30);
/// A new checkout starts this often.
const PLACE_EVERY: Duration = Duration::from_millis(400);
/// A checkout refused with a retryable error is sent again (same key) after this pause, for at
/// most this long.
const RETRY_PAUSE: Duration = Duration::from_millis(300);
const CHECKOUT_GIVES_UP_AFTER: Duration = Duration::from_secs(20);
/// A button pressed without any visible effect is pressed again after this long (the app's
/// own request timeout).
const PRESS_AGAIN_AFTER: Duration = Duration::from_secs(2);
/// Pause before a closed socket connects again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// How often a driver's app reports its location.
const FIX_EVERY: Duration = Duration::from_secs(1);
/// How long a socket read waits before the client looks at its own timers.
const READ_TICK: Duration = Duration::from_millis(100);
/// Drivers next to each shop.
const DRIVERS_PER_SHOP: usize = 3;
const CUSTOMERS: usize = 4;
const PASSWORD: &str = "correct horse battery";
/// One signing secret for both replicas, so that a token from one is good on the other.
const JWT_SECRET: &str = "redis-outage-test-jwt-secret-0123456789abcdef";
/// Error codes that mean "not now": the client presses again.
const RETRYABLE: [&str; 3] = ["dispatch_unavailable", "store_unavailable", "actor_failed"];

/// What the clients saw, for the figures and the failure message.
#[derive(Default)]
struct Seen {
    /// Acknowledged orders: id → the replica that took the checkout.
    acknowledged: BTreeMap<String, usize>,
    checkout_retries: u64,
    /// Checkouts given up, by the last error code.
    checkouts_refused: BTreeMap<String, u64>,
    /// `error` frames on sockets, by code.
    socket_errors: BTreeMap<String, u64>,
    /// Sockets closed by the server (or broken) after their feed was set up, by reason.
    socket_closes: BTreeMap<String, u64>,
    /// Sockets closed before their first message: their subscription could not be made (a
    /// tracker opened while Redis was away is refused with 1011, and reconnects).
    refused_at_connect: BTreeMap<String, u64>,
    presses: u64,
    /// The last status each board showed for each order.
    board: HashMap<String, String>,
    /// Orders whose tracker was told they were delivered.
    tracked_delivered: HashSet<String>,
    /// Driver app → (replica, the order it shows and its status).
    drivers: BTreeMap<String, (usize, Option<(String, String)>)>,
}

type Shared = Arc<Mutex<Seen>>;

fn seen(shared: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, token: &str) -> Option<Ws> {
    let mut request = url.into_client_request().ok()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().ok()?);
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .ok()?
    .ok()
    .map(|(socket, _)| socket)
}

/// What one read of a socket gave.
enum Read {
    Message(Value),
    Closed(String),
    Quiet,
}

async fn read(ws: &mut Ws) -> Read {
    loop {
        return match tokio::time::timeout(READ_TICK, ws.next()).await {
            Err(_) => Read::Quiet,
            Ok(Some(Ok(Message::Text(text)))) => {
                Read::Message(serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                Read::Closed(frame.map_or("closed".to_owned(), |f| {
                    format!("{} {}", u16::from(f.code), f.reason)
                }))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(error))) => Read::Closed(format!("broken: {error}")),
            Ok(None) => Read::Closed("ended".to_owned()),
        };
    }
}

async fn send(ws: &mut Ws, message: Value) -> bool {
    ws.send(Message::text(message.to_string())).await.is_ok()
}

/// A REST call: status and body, or why it got no answer.
async fn rest(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// A registered, logged-in user: (id, token).
async fn sign_up(client: &reqwest::Client, address: &str, role: &str) -> (String, String) {
    let email = format!("{role}-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = json!({"email": email, "password": PASSWORD, "name": "Outage", "role": role});
    let (status, user) = rest(
        client,
        "POST",
        &format!("{address}/api/v1/users"),
        None,
        None,
        Some(&body),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{user}");
    let body = json!({"email": email, "password": PASSWORD});
    let (status, session) = rest(
        client,
        "POST",
        &format!("{address}/api/v1/sessions"),
        None,
        None,
        Some(&body),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{session}");
    (
        user["id"].as_str().unwrap().to_owned(),
        session["token"].as_str().unwrap().to_owned(),
    )
}

/// A merchant at `location` with a one-item menu: (owner token, merchant id, menu item id).
async fn open_shop(
    client: &reqwest::Client,
    address: &str,
    location: Position,
) -> (String, String, String) {
    let (_, token) = sign_up(client, address, "merchant").await;
    let body = json!({"name": "Outage Kitchen", "address": "1 Relay Road", "location": location});
    let (status, merchant) = rest(
        client,
        "POST",
        &format!("{address}/api/v1/merchants"),
        Some(&token),
        None,
        Some(&body),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{merchant}");
    let merchant_id = merchant["id"].as_str().unwrap().to_owned();
    let body = json!({"items": [{"name": "Ramen kit", "price_cents": 1250}]});
    let (status, menu) = rest(
        client,
        "PUT",
        &format!("{address}/api/v1/merchants/{merchant_id}/menu"),
        Some(&token),
        None,
        Some(&body),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{menu}");
    let item = menu["items"][0]["id"].as_str().unwrap().to_owned();
    (token, merchant_id, item)
}

/// When a button was last pressed for what, and when it may be pressed again.
#[derive(Default)]
struct Presses {
    last: HashMap<String, (String, Instant)>,
}

impl Presses {
    /// Whether to press `action` for `target` now: at once for a new state, again after
    /// [`PRESS_AGAIN_AFTER`] without effect.
    fn due(&mut self, target: &str, action: &str) -> bool {
        let now = Instant::now();
        match self.last.get(target) {
            Some((pressed, at)) if pressed == action && *at > now => false,
            _ => {
                self.last.insert(
                    target.to_owned(),
                    (action.to_owned(), now + PRESS_AGAIN_AFTER),
                );
                true
            }
        }
    }

    /// After a retryable error: every pending press is repeated after a short pause.
    fn soon(&mut self) {
        let soon = Instant::now() + RETRY_PAUSE;
        for (_, at) in self.last.values_mut() {
            *at = (*at).min(soon);
        }
    }
}

fn note_error(shared: &Shared, message: &Value, presses: &mut Presses) {
    let code = message["code"].as_str().unwrap_or("?").to_owned();
    if RETRYABLE.contains(&code.as_str()) {
        presses.soon();
    }
    *seen(shared).socket_errors.entry(code).or_default() += 1;
}

fn note_close(shared: &Shared, why: String) {
    *seen(shared).socket_closes.entry(why).or_default() += 1;
}

/// A driver's app: on duty at `spot`, accepts every offer, picks up once the order is ready
/// and delivers at once — all from what its socket shows. Reconnects when the socket closes.
#[allow(clippy::too_many_arguments)]
async fn driver_app(
    name: String,
    replica: usize,
    address: String,
    me: String,
    token: String,
    spot: Position,
    shared: Shared,
    stop: watch::Receiver<bool>,
) {
    let url = format!("{}/ws/driver", address.replace("http://", "ws://"));
    let mut presses = Presses::default();
    // The order this app shows as active, with its status.
    let mut active: Option<(String, String)> = None;
    while !*stop.borrow() {
        let Some(mut ws) = connect(&url, &token).await else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        send(&mut ws, json!({"type": "availability", "available": true})).await;
        let mut fixed = Instant::now() - FIX_EVERY;
        let mut offer: Option<String> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            match read(&mut ws).await {
                Read::Closed(why) => {
                    note_close(&shared, format!("driver: {why}"));
                    break;
                }
                Read::Quiet => {}
                Read::Message(message) => match message["type"].as_str() {
                    Some("offer") => offer = message["offer_id"].as_str().map(str::to_owned),
                    Some("offer_expired") => offer = None,
                    Some("assigned" | "order_update") => {
                        let order = &message["order"];
                        let id = order["id"].as_str().unwrap_or_default().to_owned();
                        let status = order["status"].as_str().unwrap_or_default().to_owned();
                        if order["driver_id"].as_str() == Some(me.as_str()) {
                            offer = None;
                            let done = matches!(status.as_str(), "delivered" | "cancelled");
                            if done {
                                if active.as_ref().is_some_and(|(a, _)| *a == id) {
                                    active = None;
                                }
                            } else {
                                active = Some((id, status));
                            }
                        }
                    }
                    Some("error") => note_error(&shared, &message, &mut presses),
                    _ => {}
                },
            }
            seen(&shared)
                .drivers
                .insert(name.clone(), (replica, active.clone()));
            if fixed.elapsed() >= FIX_EVERY {
                fixed = Instant::now();
                let ts = chrono::Utc::now().timestamp_millis();
                let fix = json!({"type": "location", "lat": spot.lat, "lon": spot.lon, "ts": ts});
                if !send(&mut ws, fix).await {
                    break;
                }
            }
            let press = match (&active, &offer) {
                (Some((id, status)), _) if status == "ready" => Some((
                    id.clone(),
                    "picked_up",
                    json!({"type": "picked_up", "order_id": id}),
                )),
                (Some((id, status)), _) if status == "picked_up" => Some((
                    id.clone(),
                    "delivered",
                    json!({"type": "delivered", "order_id": id}),
                )),
                (None, Some(offer_id)) => Some((
                    offer_id.clone(),
                    "accept_offer",
                    json!({"type": "accept_offer", "offer_id": offer_id}),
                )),
                _ => None,
            };
            if let Some((target, action, message)) = press
                && presses.due(&target, action)
            {
                seen(&shared).presses += 1;
                if !send(&mut ws, message).await {
                    break;
                }
            }
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// A merchant's board: accepts every new order and marks it ready at once, from what the board
/// shows. Reconnects when the socket closes.
async fn board_app(address: String, token: String, shared: Shared, stop: watch::Receiver<bool>) {
    let url = format!("{}/ws/merchant", address.replace("http://", "ws://"));
    let mut presses = Presses::default();
    let mut shown: HashMap<String, String> = HashMap::new();
    while !*stop.borrow() {
        let Some(mut ws) = connect(&url, &token).await else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        loop {
            if *stop.borrow() {
                return;
            }
            match read(&mut ws).await {
                Read::Closed(why) => {
                    note_close(&shared, format!("board: {why}"));
                    break;
                }
                Read::Quiet => {}
                Read::Message(message) => {
                    let orders: Vec<Value> = match message["type"].as_str() {
                        Some("board") => {
                            // The whole board, as on a reconnect: an order no longer on it has
                            // closed, in a state this app was not told.
                            let mut seen = seen(&shared);
                            for id in shown.drain().map(|(id, _)| id) {
                                seen.board.insert(id, "off the board".to_owned());
                            }
                            message["orders"].as_array().cloned().unwrap_or_default()
                        }
                        Some("order_update") => vec![message["order"].clone()],
                        Some("error") => {
                            note_error(&shared, &message, &mut presses);
                            vec![]
                        }
                        _ => vec![],
                    };
                    for order in orders {
                        let id = order["id"].as_str().unwrap_or_default().to_owned();
                        let status = order["status"].as_str().unwrap_or_default().to_owned();
                        seen(&shared).board.insert(id.clone(), status.clone());
                        shown.insert(id, status);
                    }
                }
            }
            let mut to_press = Vec::new();
            for (id, status) in &shown {
                let message = match status.as_str() {
                    "placed" => json!({"type": "accept_order", "order_id": id, "prep_minutes": 1}),
                    "accepted" => json!({"type": "order_ready", "order_id": id}),
                    _ => continue,
                };
                if presses.due(id, status) {
                    to_press.push(message);
                }
            }
            for message in to_press {
                seen(&shared).presses += 1;
                send(&mut ws, message).await;
            }
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// An order's tracking page: notes when it is told the order was delivered.
async fn tracker_app(
    address: String,
    token: String,
    order_id: String,
    shared: Shared,
    stop: watch::Receiver<bool>,
) {
    let url = format!(
        "{}/ws/orders/{order_id}",
        address.replace("http://", "ws://")
    );
    while !*stop.borrow() {
        let Some(mut ws) = connect(&url, &token).await else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        let mut subscribed = false;
        loop {
            if *stop.borrow() {
                return;
            }
            match read(&mut ws).await {
                Read::Closed(why) if subscribed => {
                    note_close(&shared, format!("tracker: {why}"));
                    break;
                }
                Read::Closed(why) => {
                    *seen(&shared)
                        .refused_at_connect
                        .entry(format!("tracker: {why}"))
                        .or_default() += 1;
                    break;
                }
                Read::Message(message) if message["type"] == "order_update" => {
                    subscribed = true;
                    if message["order"]["status"] == "delivered" {
                        seen(&shared).tracked_delivered.insert(order_id);
                        return;
                    }
                }
                _ => {}
            }
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// One checkout, sent again with the same key after a retryable refusal; the order id once
/// acknowledged.
async fn checkout(
    client: reqwest::Client,
    address: String,
    token: String,
    body: Value,
    shared: Shared,
) -> Option<String> {
    let key = uuid::Uuid::new_v4().to_string();
    let url = format!("{address}/api/v1/orders");
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < CHECKOUT_GIVES_UP_AFTER {
        match rest(&client, "POST", &url, Some(&token), Some(&key), Some(&body)).await {
            Ok((201, order)) => return order["id"].as_str().map(str::to_owned),
            Ok((status, error)) => {
                let code = error["error"]["code"].as_str().unwrap_or("?").to_owned();
                if !(status == 503 || code == "request_in_progress") {
                    *seen(&shared).checkouts_refused.entry(code).or_default() += 1;
                    return None;
                }
                last = code;
            }
            Err(error) => last = error,
        }
        seen(&shared).checkout_retries += 1;
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    *seen(&shared).checkouts_refused.entry(last).or_default() += 1;
    None
}

/// `(status, count)` of the acknowledged orders, and the ones not delivered with their state.
async fn order_states(
    pool: &sqlx::PgPool,
    ids: &[String],
) -> (BTreeMap<String, usize>, Vec<Value>) {
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|id| id.parse().unwrap()).collect();
    let rows: Vec<(uuid::Uuid, String, String, Option<uuid::Uuid>, String)> = sqlx::query_as(
        "SELECT id, status, dispatch_status, driver_id, region_id FROM orders WHERE id = ANY($1)",
    )
    .bind(&uuids)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut counts = BTreeMap::new();
    let mut open = Vec::new();
    for (id, status, dispatch, driver, region) in rows {
        *counts.entry(status.clone()).or_default() += 1;
        if status != "delivered" {
            open.push(
                json!({"id": id, "status": status, "dispatch_status": dispatch,
                "driver_id": driver, "region": region}),
            );
        }
    }
    (counts, open)
}

#[actix_web::test]
async fn every_acknowledged_order_is_delivered_after_the_redis_links_of_two_replicas_were_cut_three_times()
 {
    // Arrange: two replicas, each reaching Redis through a relay of its own.
    let relays = [Relay::to_redis().await, Relay::to_redis().await];
    let db = TestDb::create(Db::Postgres).await;
    let db_url = db.url.clone();
    let url = db.database_url();
    let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
    let config = |node: &str, relay: &Relay| {
        let mut config = with_redis(config_for(url.clone()), &relay.url());
        if let Some(redis) = config.redis.as_mut() {
            redis.key_prefix = prefix.clone();
        }
        config.dispatch.node_id = node.to_owned();
        config.dispatch.lease_ttl = LEASE_TTL;
        config.auth.jwt_secret = Some(Secret::new(JWT_SECRET));
        config
    };
    let first = spawn_app_with(db, config("first", &relays[0])).await;
    let second = start_without_db(config("second", &relays[1])).await;
    second.wait_until_ready().await;
    let leases = shared_two_and_two(&db_url).await;
    let region_of = |node: &str| {
        leases
            .iter()
            .find(|(_, owner)| owner.starts_with(node))
            .map(|(region, _)| region.clone())
            .unwrap()
    };
    let addresses = [first.address.clone(), second.address.clone()];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let shared: Shared = Arc::default();
    let (stop_tx, stop) = watch::channel(false);

    // A shop in a region of each replica; both boards on the first replica.
    let mut shops = Vec::new();
    for node in ["first", "second"] {
        let location = centre_of(&region_of(node));
        let (token, merchant_id, item) = open_shop(&client, &addresses[0], location).await;
        tokio::spawn(board_app(
            addresses[0].clone(),
            token,
            shared.clone(),
            stop.clone(),
        ));
        shops.push((location, merchant_id, item));
    }
    // Drivers next to each shop, their apps spread over both replicas.
    let mut n = 0;
    for (location, ..) in &shops {
        for i in 0..DRIVERS_PER_SHOP {
            let replica = n % 2;
            n += 1;
            let (me, token) = sign_up(&client, &addresses[replica], "driver").await;
            let offset = 200.0 * (i as f64 + 1.0);
            let spot = offset_m(*location, offset, 0.0);
            tokio::spawn(driver_app(
                format!("driver {n}"),
                replica,
                addresses[replica].clone(),
                me,
                token,
                spot,
                shared.clone(),
                stop.clone(),
            ));
        }
    }
    let mut customers = Vec::new();
    for i in 0..CUSTOMERS {
        customers.push(sign_up(&client, &addresses[i % 2], "customer").await.1);
    }

    // Customers check out through either replica, at either shop, until the cuts are over.
    let (placing_tx, placing) = watch::channel(true);
    let placer = {
        let shared = shared.clone();
        let client = client.clone();
        let addresses = addresses.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut checkouts = Vec::new();
            let mut i = 0usize;
            while *placing.borrow() {
                let via = i % 2;
                let (location, merchant_id, item) = &shops[(i / 2) % 2];
                let dropoff = at(1_000.0, 0.0);
                let dropoff = Position {
                    lat: location.lat + (dropoff.lat - at(0.0, 0.0).lat),
                    lon: location.lon,
                };
                let body = json!({
                    "merchant_id": merchant_id,
                    "items": [{"menu_item_id": item, "quantity": 1}],
                    "dropoff": {"lat": dropoff.lat, "lon": dropoff.lon, "address": "5 Relay Row"},
                    "payment_method": "pm_card_visa",
                });
                let token = customers[i % CUSTOMERS].clone();
                let (shared, client, address) =
                    (shared.clone(), client.clone(), addresses[via].clone());
                let tracked_at = addresses[1 - via].clone();
                let stop = stop.clone();
                checkouts.push(tokio::spawn(async move {
                    let order =
                        checkout(client, address, token.clone(), body, shared.clone()).await;
                    if let Some(order) = order {
                        seen(&shared).acknowledged.insert(order.clone(), via);
                        // Its tracking page, on the other replica.
                        tokio::spawn(tracker_app(tracked_at, token, order, shared, stop));
                    }
                }));
                i += 1;
                tokio::time::sleep(PLACE_EVERY).await;
            }
            checkouts
        })
    };

    // Act: cut both relays, several times, for longer than the lease TTL.
    tokio::time::sleep(WARM_UP).await;
    for cut in 1..=CUTS {
        for relay in &relays {
            relay.cut();
        }
        eprintln!(
            "cut {cut}: Redis unreachable for {} s ({} orders acknowledged so far)",
            CUT_FOR.as_secs(),
            seen(&shared).acknowledged.len()
        );
        tokio::time::sleep(CUT_FOR).await;
        for relay in &relays {
            relay.restore();
        }
        if cut < CUTS {
            tokio::time::sleep(BETWEEN_CUTS).await;
        }
    }
    let last_cut_ended = Instant::now();
    tokio::time::sleep(COOL_DOWN).await;
    let _ = placing_tx.send(false);
    // Every checkout is answered, or gives up, before the orders are counted.
    for checkout in placer.await.unwrap() {
        let _ = checkout.await;
    }

    // Assert: both replicas up, and every acknowledged order delivered in time.
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let (counts, open, took) = loop {
        let ids: Vec<String> = seen(&shared).acknowledged.keys().cloned().collect();
        let (counts, open) = order_states(&pool, &ids).await;
        let delivered_everywhere = {
            let seen = seen(&shared);
            open.is_empty()
                && ids.iter().all(|id| seen.tracked_delivered.contains(id))
                && ids
                    .iter()
                    .all(|id| seen.board.get(id).map(String::as_str) == Some("delivered"))
        };
        if delivered_everywhere || last_cut_ended.elapsed() > FINISH_WITHIN {
            break (counts, open, last_cut_ended.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = stop_tx.send(true);
    // Both replicas stayed up.
    for address in &addresses {
        let health = client
            .get(format!("{address}/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        assert!(
            health.is_ok_and(|r| r.status() == 200),
            "replica {address} did not stay up"
        );
    }
    {
        let seen = seen(&shared);
        let acknowledged = seen.acknowledged.len();
        let by_replica = [0, 1].map(|r| seen.acknowledged.values().filter(|v| **v == r).count());
        eprintln!(
            "redis outage: {CUTS} cuts of {} s (lease TTL {} s); {acknowledged} orders acknowledged \
             ({} via first, {} via second), states {counts:?}, {} s after the last cut; \
             {} checkout retries, refused {:?}; {} presses; socket errors {:?}; closes {:?}; \
             refused at connect {:?}",
            CUT_FOR.as_secs(),
            LEASE_TTL.as_secs(),
            by_replica[0],
            by_replica[1],
            took.as_secs_f64(),
            seen.checkout_retries,
            seen.checkouts_refused,
            seen.presses,
            seen.socket_errors,
            seen.socket_closes,
            seen.refused_at_connect,
        );
        let untracked: Vec<&String> = seen
            .acknowledged
            .keys()
            .filter(|id| !seen.tracked_delivered.contains(*id))
            .collect();
        let off_board: Vec<(&String, Option<&String>)> = seen
            .acknowledged
            .keys()
            .map(|id| (id, seen.board.get(id)))
            .filter(|(_, status)| status.map(String::as_str) != Some("delivered"))
            .collect();
        eprintln!(
            "trackers not told of the delivery: {untracked:?}; boards not showing it: {off_board:?}"
        );
        assert!(
            acknowledged >= 20,
            "too few orders to judge: {acknowledged}"
        );
        assert!(
            open.is_empty(),
            "{} of {acknowledged} acknowledged orders not delivered {} s after the last cut: {}\n\
             drivers' apps: {:?}",
            open.len(),
            FINISH_WITHIN.as_secs(),
            serde_json::to_string_pretty(&open).unwrap(),
            seen.drivers,
        );
        assert!(
            untracked.is_empty(),
            "trackers never told of the delivery: {untracked:?}"
        );
        assert!(
            off_board.is_empty(),
            "boards do not show the delivery: {off_board:?}"
        );
        // The sockets rode the outage out: their feeds were taken up again with the socket open.
        assert!(
            seen.socket_closes.is_empty(),
            "sockets closed by the server: {:?}",
            seen.socket_closes
        );
    }
    pool.close().await;
    second.handle.stop(true).await;
    first.stop_gracefully().await;
}
