//! Chaos: a live city — merchants on their boards, drivers streaming locations, customers checking
//! out — as real clients over HTTP and WebSockets that reconnect and press again as people do,
//! while the engine (`mealkitz serve` processes on PostgreSQL) is killed with SIGKILL or has its
//! database or Redis link cut through a relay the test owns. Afterwards the journal and the payment
//! tables are read directly: every acknowledged transition exactly once, every checkout key one
//! order, every delivered order captured, no card hold left open without an order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use mealkitz::domain::Position;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{Db, TestDb, redis_url};
use crate::helpers::{at, offset_m};
use crate::processes::{Replica, remove_redis_keys};
use crate::relay::Relay;
use crate::replicas::{Acks, assert_journal_invariants};

/// Lease TTL of the engine processes: every cut lasts longer than this.
const LEASE_TTL_SECS: u64 = 3;
/// How long the payment reconciler lets an authorisation without an order wait before voiding
/// it (`MEALKITZ_PAYMENT_ABANDON_AFTER_SECS`; production default 900).
const PAYMENT_ABANDON_AFTER_SECS: u64 = 5;
/// One signing secret for every process, so a token from one is good on all and after a restart.
const JWT_SECRET: &str = "chaos-test-jwt-secret-0123456789abcdef";
const PASSWORD: &str = "correct horse battery";
/// Customers, each checking out one order after another.
const CUSTOMERS: usize = 6;
/// Drivers waiting at each shop.
const DRIVERS_PER_SHOP: usize = 2;
/// Of every this many checkouts of a customer, one (the second) is paid with a card the gateway
/// declines.
const DECLINE_EVERY: usize = 5;
/// The sandbox card that authorises, and the one it declines.
const GOOD_CARD: &str = "pm_card_visa";
const DECLINED_CARD: &str = "pm_card_chargeDeclined";
/// A checkout's dropoff address is this followed by its Idempotency-Key, so the orders table
/// tells which checkout made each order.
const ADDRESS_PREFIX: &str = "Checkout ";
/// Pause of a customer between two checkouts.
const CHECKOUT_PAUSE: Duration = Duration::from_millis(600);
/// Pause of any client before pressing again or reconnecting.
const BACKOFF: Duration = Duration::from_millis(300);
/// How long a person keeps pressing "pay" with the same key before the test calls the checkout
/// unfinished. Longer than a restart (lease TTL included), much shorter than the minute a
/// crashed process's key used to stay locked.
const CHECKOUT_FINAL_WITHIN: Duration = Duration::from_secs(25);
/// A command sent over a socket and not seen done within this is sent again.
const ACK_WAIT: Duration = Duration::from_secs(3);
/// How long a merchant takes to prepare an accepted order, and a driver to drive it over.
const PREP: Duration = Duration::from_millis(800);
const DRIVE: Duration = Duration::from_millis(800);
/// How often a driver's app reports its location.
const LOCATION_EVERY: Duration = Duration::from_secs(1);
/// One read of a socket waits at most this, so that clients notice the end of the run.
const READ_SLICE: Duration = Duration::from_millis(250);
/// Per HTTP request and WebSocket handshake.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds of the phases.
const READY_WITHIN: Duration = Duration::from_secs(30);
const SETUP_WITHIN: Duration = Duration::from_secs(30);
const WARM_UP_WITHIN: Duration = Duration::from_secs(30);
/// Once the customers have their last answers (the chaos is over), every order must be
/// delivered within this.
const FINISH_WITHIN: Duration = Duration::from_secs(35);
/// After the orders finished, captures and voids must be done within this.
const SETTLE_WITHIN: Duration = Duration::from_secs(40);
/// After a database cut ends, the engine must answer `/ready` 200 within this.
const READY_AGAIN_WITHIN: Duration = Duration::from_secs(10);
/// Between two kills or cuts, the city runs this long with every process up.
const CALM: Duration = Duration::from_secs(3);
/// How long a killed process stays dead before it is started again.
const DEAD_FOR: Duration = Duration::from_millis(500);
/// Pause between two looks at something polled.
const POLL: Duration = Duration::from_millis(250);
/// How long a probe of `/ready` or `/health` may take: `/ready` waits up to 2 s for the
/// database's answer (the Kubernetes probe allows 5 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the shops are, in metres north and east of the demo city's centre: one in each of its
/// four regions.
const SHOP_SITES_M: [(f64, f64); 4] = [
    (7_000.0, -7_000.0),
    (7_000.0, 7_000.0),
    (-7_000.0, -7_000.0),
    (-7_000.0, 7_000.0),
];

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ---------------------------------------------------------------------------------------------
// What the clients saw

/// How a checkout ended for its customer.
#[derive(Debug, Clone)]
enum CheckoutEnd {
    /// 201 with this order id.
    Placed(String),
    /// A final refusal: status and error code.
    Refused(u16, String),
    /// Still no final answer after [`CHECKOUT_FINAL_WITHIN`]: the answers it got.
    Unfinished(String),
}

#[derive(Debug, Clone)]
struct Checkout {
    customer_id: String,
    key: String,
    declined_card: bool,
    end: CheckoutEnd,
    /// Requests sent for it (1 when the first answer was final).
    attempts: usize,
}

/// Everything the clients were told, shared by all of them.
#[derive(Default)]
struct Ledger {
    /// Transitions some client was shown, each once: (order id, journal event).
    acks: Acks,
    acked: HashSet<(String, &'static str)>,
    checkouts: Vec<Checkout>,
    /// Error codes clients got (REST and socket), and "unreachable" for a connection that failed.
    errors: BTreeMap<String, u64>,
    /// Sockets opened again after they closed.
    reconnects: u64,
}

impl Ledger {
    /// Records that a client was shown order `order_id` in `status`.
    fn saw(&mut self, order_id: &str, status: &str) {
        let event = match status {
            "placed" => "placed",
            "accepted" => "merchant_accepted",
            "ready" => "marked_ready",
            "picked_up" => "picked_up",
            "delivered" => "delivered",
            _ => return,
        };
        self.ack(order_id, event);
    }

    fn ack(&mut self, order_id: &str, event: &'static str) {
        if self.acked.insert((order_id.to_owned(), event)) {
            self.acks.push((order_id.to_owned(), event));
        }
    }

    fn error(&mut self, code: &str) {
        *self.errors.entry(code.to_owned()).or_default() += 1;
    }
}

/// The addresses of the processes that listen (none for a process killed and not yet started
/// again), an HTTP client, the ledger, and the switches that end the run.
struct Shared {
    addresses: Mutex<Vec<Option<String>>>,
    turn: AtomicUsize,
    http: reqwest::Client,
    ledger: Mutex<Ledger>,
    /// Customers keep checking out while this is set.
    demand: AtomicBool,
    /// Every client stops when this is set.
    stop: AtomicBool,
}

/// One answer to one request.
enum Answer {
    Reply(u16, Value),
    /// No process to send it to, or the connection failed or timed out.
    Unreachable(String),
}

impl Shared {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The next process up, round-robin.
    fn pick(&self) -> Option<String> {
        let addresses = self.addresses.lock().unwrap();
        let n = addresses.len();
        let turn = self.turn.fetch_add(1, Ordering::SeqCst);
        (0..n).find_map(|k| addresses[(turn + k) % n].clone())
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let Some(address) = self.pick() else {
            return Answer::Unreachable("no process up".to_owned());
        };
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{address}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.text().await {
                    Ok(text) => {
                        Answer::Reply(status, serde_json::from_str(&text).unwrap_or(Value::Null))
                    }
                    Err(error) => Answer::Unreachable(format!("body lost: {error}")),
                }
            }
            Err(error) => Answer::Unreachable(error.to_string()),
        }
    }

    /// A call made during set-up, pressed again while the answer is retryable; its body.
    async fn must(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &Value,
        expect: u16,
    ) -> Value {
        let deadline = Instant::now() + SETUP_WITHIN;
        loop {
            let last = match self.call(method, path, token, None, Some(body)).await {
                Answer::Reply(status, reply) if status == expect => return reply,
                Answer::Reply(status, reply) => {
                    assert!(
                        retryable(status, error_code(&reply)),
                        "{method} {path}: {status} {reply}"
                    );
                    format!("{status} {reply}")
                }
                Answer::Unreachable(why) => why,
            };
            assert!(
                Instant::now() < deadline,
                "{method} {path} still failing after {SETUP_WITHIN:?}: {last}"
            );
            tokio::time::sleep(BACKOFF).await;
        }
    }

    /// A WebSocket on the next process up, if the handshake succeeds.
    async fn connect(&self, path: &str, token: &str) -> Option<WsStream> {
        let address = self.pick()?;
        let mut request = format!("{}{path}", address.replace("http://", "ws://"))
            .into_client_request()
            .ok()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().ok()?);
        match tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(request)).await
        {
            Ok(Ok((stream, _))) => Some(stream),
            _ => {
                self.ledger().error("unreachable");
                None
            }
        }
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// An answer a person (or an app) answers by pressing again: the service is briefly unable, the
/// same key is still being worked on, or the rate limit was hit.
fn retryable(status: u16, code: &str) -> bool {
    status >= 500 || status == 429 || (status == 409 && code == "request_in_progress")
}

/// Socket error codes that mean "not now, send it again".
const RETRYABLE_SOCKET_CODES: [&str; 3] =
    ["dispatch_unavailable", "store_unavailable", "actor_failed"];

/// What one read of a socket gave.
enum Received {
    Message(Value),
    Closed,
    Quiet,
}

async fn receive(stream: &mut WsStream, within: Duration) -> Received {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Received::Quiet,
            Ok(Some(Ok(Message::Text(text)))) => {
                return Received::Message(serde_json::from_str(&text).unwrap_or(Value::Null));
            }
            Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => return Received::Closed,
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn send(stream: &mut WsStream, message: &Value) -> bool {
    stream
        .send(Message::text(message.to_string()))
        .await
        .is_ok()
}

/// The orders a socket message carries (`board`, `order_update`, `assigned`).
fn orders_in(message: &Value) -> Vec<&Value> {
    match message["type"].as_str() {
        Some("board") => message["orders"]
            .as_array()
            .map(|orders| orders.iter().collect())
            .unwrap_or_default(),
        Some("order_update" | "assigned") => vec![&message["order"]],
        _ => Vec::new(),
    }
}

fn is_closed(status: &str) -> bool {
    matches!(status, "delivered" | "cancelled" | "rejected")
}

// ---------------------------------------------------------------------------------------------
// The city

/// A registered, logged-in user.
#[derive(Clone)]
struct Account {
    id: String,
    token: String,
}

#[derive(Clone)]
struct Shop {
    owner: Account,
    merchant_id: String,
    items: Vec<String>,
    location: Position,
}

struct City {
    shops: Vec<Shop>,
    drivers: Vec<(Account, Position)>,
    customers: Vec<Account>,
}

impl City {
    /// Registers the merchants (one shop in each region, with a menu), drivers and customers.
    async fn open(shared: &Shared) -> City {
        let mut shops = Vec::new();
        let mut drivers = Vec::new();
        for (north_m, east_m) in SHOP_SITES_M {
            let owner = sign_up(shared, "merchant").await;
            let location = at(north_m, east_m);
            let merchant = shared
                .must(
                    "POST",
                    "/api/v1/merchants",
                    Some(&owner.token),
                    &json!({"name": "Chaos Kitchen", "address": "1 Crash Court", "location": location}),
                    201,
                )
                .await;
            let merchant_id = merchant["id"].as_str().unwrap().to_owned();
            let menu = shared
                .must(
                    "PUT",
                    &format!("/api/v1/merchants/{merchant_id}/menu"),
                    Some(&owner.token),
                    &json!({"items": [
                        {"name": "Ramen kit", "price_cents": 1250},
                        {"name": "Gyoza (6)", "price_cents": 599},
                    ]}),
                    200,
                )
                .await;
            let items = menu["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_owned())
                .collect();
            for k in 0..DRIVERS_PER_SHOP {
                let driver = sign_up(shared, "driver").await;
                drivers.push((driver, at(north_m + 150.0 * (k as f64 + 1.0), east_m)));
            }
            shops.push(Shop {
                owner,
                merchant_id,
                items,
                location,
            });
        }
        let mut customers = Vec::new();
        for _ in 0..CUSTOMERS {
            customers.push(sign_up(shared, "customer").await);
        }
        City {
            shops,
            drivers,
            customers,
        }
    }

    /// Starts every client: a board per shop, an app per driver, a checkout loop per customer.
    fn start(&self, shared: &Arc<Shared>) -> Clients {
        shared.demand.store(true, Ordering::SeqCst);
        let mut people = Vec::new();
        for shop in &self.shops {
            people.push(tokio::spawn(merchant(
                shared.clone(),
                shop.owner.token.clone(),
            )));
        }
        for (driver_account, position) in &self.drivers {
            people.push(tokio::spawn(driver(
                shared.clone(),
                driver_account.clone(),
                *position,
            )));
        }
        let shops = Arc::new(self.shops.clone());
        let customers = self
            .customers
            .iter()
            .enumerate()
            .map(|(index, account)| {
                tokio::spawn(customer(
                    shared.clone(),
                    account.clone(),
                    shops.clone(),
                    index,
                ))
            })
            .collect();
        Clients { people, customers }
    }
}

async fn sign_up(shared: &Shared, role: &str) -> Account {
    let email = format!("{role}-{}@example.com", uuid::Uuid::new_v4().simple());
    let user = shared
        .must(
            "POST",
            "/api/v1/users",
            None,
            &json!({"email": email, "password": PASSWORD, "name": "Chaos User", "role": role}),
            201,
        )
        .await;
    let session = shared
        .must(
            "POST",
            "/api/v1/sessions",
            None,
            &json!({"email": email, "password": PASSWORD}),
            200,
        )
        .await;
    Account {
        id: user["id"].as_str().unwrap().to_owned(),
        token: session["token"].as_str().unwrap().to_owned(),
    }
}

struct Clients {
    /// Merchants and drivers: they run until the stop switch.
    people: Vec<JoinHandle<()>>,
    /// Customers: they end once demand is closed and their last checkout has its answer.
    customers: Vec<JoinHandle<()>>,
}

/// A customer: checks out one order after another at the shops in turn, each with a new
/// Idempotency-Key, pressing again with the same key and body until the answer is final.
async fn customer(shared: Arc<Shared>, account: Account, shops: Arc<Vec<Shop>>, index: usize) {
    let mut n = 0;
    while shared.demand.load(Ordering::SeqCst) {
        let shop = &shops[(index + n) % shops.len()];
        let declined_card = n % DECLINE_EVERY == 1;
        let key = uuid::Uuid::new_v4().to_string();
        let dropoff = at_north_of(shop.location, 1_000.0);
        let body = json!({
            "merchant_id": shop.merchant_id,
            "items": [
                {"menu_item_id": shop.items[0], "quantity": 1 + n % 3},
                {"menu_item_id": shop.items[1], "quantity": 1},
            ],
            "dropoff": {"lat": dropoff.lat, "lon": dropoff.lon, "address": format!("{ADDRESS_PREFIX}{key}")},
            "payment_method": if declined_card { DECLINED_CARD } else { GOOD_CARD },
        });
        let (end, attempts) = checkout_until_final(&shared, &account.token, &key, &body).await;
        {
            let mut ledger = shared.ledger();
            if let CheckoutEnd::Placed(order_id) = &end {
                ledger.ack(order_id, "placed");
            }
            ledger.checkouts.push(Checkout {
                customer_id: account.id.clone(),
                key,
                declined_card,
                end,
                attempts,
            });
        }
        n += 1;
        tokio::time::sleep(CHECKOUT_PAUSE).await;
    }
}

async fn checkout_until_final(
    shared: &Shared,
    token: &str,
    key: &str,
    body: &Value,
) -> (CheckoutEnd, usize) {
    let deadline = Instant::now() + CHECKOUT_FINAL_WITHIN;
    let mut attempts = 0;
    // The answers that were not final, by kind.
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        attempts += 1;
        let last = match shared
            .call("POST", "/api/v1/orders", Some(token), Some(key), Some(body))
            .await
        {
            Answer::Reply(201, order) => {
                let id = order["id"].as_str().unwrap_or_default().to_owned();
                return (CheckoutEnd::Placed(id), attempts);
            }
            Answer::Reply(status, reply) if !retryable(status, error_code(&reply)) => {
                return (
                    CheckoutEnd::Refused(status, error_code(&reply).to_owned()),
                    attempts,
                );
            }
            Answer::Reply(status, reply) => {
                shared.ledger().error(error_code(&reply));
                *answers
                    .entry(format!("{status} {}", error_code(&reply)))
                    .or_default() += 1;
                format!("{status} {reply}")
            }
            Answer::Unreachable(why) => {
                shared.ledger().error("unreachable");
                *answers.entry("unreachable".to_owned()).or_default() += 1;
                why
            }
        };
        if Instant::now() >= deadline {
            let told = format!("answers {answers:?}; last: {last}");
            return (CheckoutEnd::Unfinished(told), attempts);
        }
        tokio::time::sleep(BACKOFF).await;
    }
}

fn at_north_of(position: Position, north_m: f64) -> Position {
    offset_m(position, north_m, 0.0)
}

/// A command a client sent and has not yet seen done: (order, what), when.
type Pending = HashMap<(String, &'static str), Instant>;

/// Whether `what` for `order_id` may be sent now: never sent, or sent [`ACK_WAIT`] ago
/// without being seen done.
fn due(pending: &mut Pending, order_id: &str, what: &'static str) -> bool {
    let now = Instant::now();
    match pending.get(&(order_id.to_owned(), what)) {
        Some(sent) if now.duration_since(*sent) < ACK_WAIT => false,
        _ => {
            pending.insert((order_id.to_owned(), what), now);
            true
        }
    }
}

/// A merchant's board: accepts each new order, marks it ready [`PREP`] after it was accepted.
async fn merchant(shared: Arc<Shared>, token: String) {
    let mut pending: Pending = HashMap::new();
    let mut connected_before = false;
    while !shared.stopping() {
        let Some(mut stream) = shared.connect("/ws/merchant", &token).await else {
            tokio::time::sleep(BACKOFF).await;
            continue;
        };
        if connected_before {
            shared.ledger().reconnects += 1;
        }
        connected_before = true;
        // Open orders as the board shows them: id → (status, since when).
        let mut open: HashMap<String, (String, Instant)> = HashMap::new();
        while !shared.stopping() {
            match receive(&mut stream, READ_SLICE).await {
                Received::Message(message) => {
                    if message["type"] == "board" {
                        open.clear();
                    }
                    if message["type"] == "error" {
                        let code = message["code"].as_str().unwrap_or("<none>");
                        shared.ledger().error(code);
                        if RETRYABLE_SOCKET_CODES.contains(&code) {
                            pending.clear();
                        }
                    }
                    for order in orders_in(&message) {
                        let (Some(id), Some(status)) =
                            (order["id"].as_str(), order["status"].as_str())
                        else {
                            continue;
                        };
                        shared.ledger().saw(id, status);
                        if is_closed(status) {
                            open.remove(id);
                        } else if open.get(id).is_none_or(|(known, _)| known != status) {
                            open.insert(id.to_owned(), (status.to_owned(), Instant::now()));
                        }
                    }
                }
                Received::Closed => break,
                Received::Quiet => {}
            }
            let mut broken = false;
            for (id, (status, since)) in &open {
                let command = match status.as_str() {
                    "placed" if due(&mut pending, id, "accept_order") => {
                        json!({"type": "accept_order", "order_id": id, "prep_minutes": 10})
                    }
                    "accepted"
                        if since.elapsed() >= PREP && due(&mut pending, id, "order_ready") =>
                    {
                        json!({"type": "order_ready", "order_id": id})
                    }
                    _ => continue,
                };
                if !send(&mut stream, &command).await {
                    broken = true;
                    break;
                }
            }
            if broken {
                break;
            }
        }
        // Whatever was sent on the lost socket is sent again on the next one.
        pending.clear();
        tokio::time::sleep(BACKOFF).await;
    }
}

/// A driver's app: online at `position`, streaming its location, accepting every offer, and
/// reporting pickup once the order is ready and delivery [`DRIVE`] after the pickup.
async fn driver(shared: Arc<Shared>, account: Account, position: Position) {
    let mut pending: Pending = HashMap::new();
    // The order it is on: (id, status, since when).
    let mut active: Option<(String, String, Instant)> = None;
    let mut connected_before = false;
    let location = json!({"type": "location", "lat": position.lat, "lon": position.lon});
    while !shared.stopping() {
        let Some(mut stream) = shared.connect("/ws/driver", &account.token).await else {
            tokio::time::sleep(BACKOFF).await;
            continue;
        };
        if connected_before {
            shared.ledger().reconnects += 1;
        }
        connected_before = true;
        let hello = json!({"type": "availability", "available": true});
        if !send(&mut stream, &hello).await || !send(&mut stream, &location).await {
            tokio::time::sleep(BACKOFF).await;
            continue;
        }
        let mut located_at = Instant::now();
        while !shared.stopping() {
            let mut outgoing: Vec<Value> = Vec::new();
            match receive(&mut stream, READ_SLICE).await {
                Received::Message(message) => match message["type"].as_str() {
                    Some("offer") => {
                        outgoing
                            .push(json!({"type": "accept_offer", "offer_id": message["offer_id"]}));
                    }
                    Some("assigned" | "order_update") => {
                        let order = &message["order"];
                        let (Some(id), Some(status)) =
                            (order["id"].as_str(), order["status"].as_str())
                        else {
                            continue;
                        };
                        let mine = order["driver_id"].as_str() == Some(account.id.as_str());
                        let mut ledger = shared.ledger();
                        if mine && message["type"] == "assigned" {
                            ledger.ack(id, "driver_assigned");
                        }
                        ledger.saw(id, status);
                        drop(ledger);
                        let current = active.as_ref().is_some_and(|(known, _, _)| known == id);
                        if is_closed(status) {
                            if current {
                                active = None;
                            }
                        } else if mine
                            && active
                                .as_ref()
                                .is_none_or(|(known, was, _)| known != id || was != status)
                        {
                            active = Some((id.to_owned(), status.to_owned(), Instant::now()));
                        }
                    }
                    Some("error") => {
                        let code = message["code"].as_str().unwrap_or("<none>");
                        shared.ledger().error(code);
                        if RETRYABLE_SOCKET_CODES.contains(&code) {
                            pending.clear();
                        }
                    }
                    _ => {}
                },
                Received::Closed => break,
                Received::Quiet => {}
            }
            if located_at.elapsed() >= LOCATION_EVERY {
                located_at = Instant::now();
                outgoing.push(location.clone());
            }
            if let Some((id, status, since)) = &active {
                match status.as_str() {
                    "ready" if due(&mut pending, id, "picked_up") => {
                        outgoing.push(json!({"type": "picked_up", "order_id": id}));
                    }
                    "picked_up"
                        if since.elapsed() >= DRIVE && due(&mut pending, id, "delivered") =>
                    {
                        outgoing.push(json!({"type": "delivered", "order_id": id}));
                    }
                    _ => {}
                }
            }
            let mut broken = false;
            for message in &outgoing {
                if !send(&mut stream, message).await {
                    broken = true;
                    break;
                }
            }
            if broken {
                break;
            }
        }
        pending.clear();
        tokio::time::sleep(BACKOFF).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The engine's processes

/// How the engine is deployed for a scenario.
struct Layout {
    processes: usize,
    /// With Redis (required for more than one process).
    redis: bool,
    /// The processes reach PostgreSQL through one relay the test can cut.
    database_relay: bool,
    /// Each process reaches Redis through a relay of its own.
    redis_relays: bool,
}

/// A slot the test keeps one engine process in, started again after each kill.
struct Slot {
    settings: Vec<(&'static str, String)>,
    process: Replica,
}

/// The engine's processes on a fresh PostgreSQL database (and a Redis key prefix of their own).
/// Dropping it kills every process (printing their logs if the test failed), removes the Redis
/// keys, closes the relays and then drops the database.
struct Deployment {
    slots: Vec<Slot>,
    shared: Arc<Shared>,
    /// Reads the journal and the payment tables directly (never through a relay).
    pool: PgPool,
    tag: String,
    redis_prefix: Option<String>,
    database_relay: Option<Relay>,
    redis_relays: Vec<Relay>,
    started: usize,
    kills: usize,
    cuts: usize,
    /// Seconds from the end of each database cut until `/ready` answered 200 again.
    ready_again_secs: Vec<f64>,
    /// Seconds from each kill until the new process answered `/ready` 200.
    back_after_kill_secs: Vec<f64>,
    /// Dropped last, after the processes are dead.
    _db: TestDb,
}

impl Deployment {
    async fn start(layout: Layout) -> Deployment {
        let db = TestDb::create(Db::Postgres).await;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let database_relay = if layout.database_relay {
            Some(Relay::to_database(&db.url).await)
        } else {
            None
        };
        let database_url = match &database_relay {
            Some(relay) => relay.url_through(&db.url),
            None => db.url.clone(),
        };
        let redis_prefix = layout.redis.then(|| format!("test-{id}:"));
        let mut common = vec![
            ("DATABASE_URL", database_url),
            ("MEALKITZ_LEASE_TTL_SECS", LEASE_TTL_SECS.to_string()),
            ("MEALKITZ_JWT_SECRET", JWT_SECRET.to_owned()),
            ("MEALKITZ_HTTP_WORKERS", "2".to_owned()),
            ("MEALKITZ_DB_MAX_CONNECTIONS", "5".to_owned()),
            ("MEALKITZ_SEARCH_RETRY_MS", "300".to_owned()),
            ("MEALKITZ_OFFER_TIMEOUT_SECS", "30".to_owned()),
            ("MEALKITZ_SNAPSHOT_INTERVAL_MS", "200".to_owned()),
            ("MEALKITZ_CHECKOUTS_PER_MINUTE", "10000".to_owned()),
            ("MEALKITZ_LOGIN_ATTEMPTS_PER_MINUTE", "10000".to_owned()),
            (
                "MEALKITZ_PAYMENT_ABANDON_AFTER_SECS",
                PAYMENT_ABANDON_AFTER_SECS.to_string(),
            ),
        ];
        if let Some(prefix) = &redis_prefix {
            common.push(("MEALKITZ_REDIS_KEY_PREFIX", prefix.clone()));
        }
        let mut redis_relays = Vec::new();
        let mut slot_settings = Vec::new();
        for _ in 0..layout.processes {
            let mut settings = common.clone();
            if layout.redis_relays {
                let relay = Relay::to_redis().await;
                settings.push(("REDIS_URL", relay.url()));
                redis_relays.push(relay);
            } else if layout.redis {
                settings.push(("REDIS_URL", redis_url()));
            }
            slot_settings.push(settings);
        }
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&db.url)
            .expect("a pool on the test database");
        let shared = Arc::new(Shared {
            addresses: Mutex::new(vec![None; layout.processes]),
            turn: AtomicUsize::new(0),
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap(),
            ledger: Mutex::new(Ledger::default()),
            demand: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let tag = format!("c{}", &id[..8]);
        let mut deployment = Deployment {
            slots: Vec::new(),
            shared,
            pool,
            tag,
            redis_prefix,
            database_relay,
            redis_relays,
            started: 0,
            kills: 0,
            cuts: 0,
            ready_again_secs: Vec::new(),
            back_after_kill_secs: Vec::new(),
            _db: db,
        };
        for settings in slot_settings {
            let process = deployment.spawn(deployment.slots.len(), &settings).await;
            deployment.slots.push(Slot { settings, process });
        }
        for slot in 0..layout.processes {
            deployment.wait_ready(slot).await;
        }
        deployment
    }

    async fn spawn(&mut self, slot: usize, settings: &[(&'static str, String)]) -> Replica {
        self.started += 1;
        let node = format!("{}-s{}", self.tag, slot + 1);
        Replica::spawn(self.started, node, settings).await
    }

    /// Polls the process in `slot` until `/ready` answers 200, then lets clients reach it (if they
    /// could not already).
    async fn wait_ready(&self, slot: usize) {
        let process = &self.slots[slot].process;
        let url = format!("{}/ready", process.address);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(response) = self
                .shared
                .http
                .get(&url)
                .timeout(PROBE_TIMEOUT)
                .send()
                .await
                && response.status().as_u16() == 200
            {
                self.shared.addresses.lock().unwrap()[slot] = Some(process.address.clone());
                return;
            }
            assert!(
                !process.exited.load(Ordering::SeqCst),
                "process {} exited before it was ready:\n{}",
                process.name,
                process.log_tail()
            );
            assert!(
                Instant::now() < deadline,
                "process {} not ready within {READY_WITHIN:?}:\n{}",
                process.name,
                process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process in `slot` with SIGKILL, leaves it dead for [`DEAD_FOR`], starts a new
    /// one in its place and waits until it is ready.
    async fn kill_and_restart(&mut self, slot: usize) {
        self.shared.addresses.lock().unwrap()[slot] = None;
        self.slots[slot].process.kill();
        let killed = Instant::now();
        self.kills += 1;
        tokio::time::sleep(DEAD_FOR).await;
        let settings = self.slots[slot].settings.clone();
        let process = self.spawn(slot, &settings).await;
        // Clients find it as soon as it listens, as they would at a fixed address: they meet it
        // while it is still starting (and answering 503).
        self.shared.addresses.lock().unwrap()[slot] = Some(process.address.clone());
        self.slots[slot].process = process;
        self.wait_ready(slot).await;
        self.back_after_kill_secs
            .push((killed.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    }

    /// Processes that exited without being killed by the test.
    fn exited(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|slot| slot.process.alive && slot.process.exited.load(Ordering::SeqCst))
            .map(|slot| format!("{}:\n{}", slot.process.name, slot.process.log_tail()))
            .collect()
    }

    /// Lets the city run for `how_long`, failing at once if a process exits by itself.
    async fn calm(&self, how_long: Duration) {
        tokio::time::sleep(how_long).await;
        self.assert_up("between two disruptions");
    }

    /// Fails the test at once if a process exited by itself (nothing after that could pass),
    /// saying what the clients had done so far.
    fn assert_up(&self, when: &str) {
        let exited = self.exited();
        if exited.is_empty() {
            return;
        }
        let ledger = self.shared.ledger();
        let placed = ledger
            .checkouts
            .iter()
            .filter(|c| matches!(c.end, CheckoutEnd::Placed(_)))
            .count();
        panic!(
            "{when}: a process exited by itself, after {} kills and {} cuts ({} checkouts \
             answered, {placed} placed; client errors {:?}):\n{}",
            self.kills,
            self.cuts,
            ledger.checkouts.len(),
            ledger.errors,
            exited.join("\n")
        );
    }

    /// Waits until `delivered` orders have been delivered: the city works before the chaos.
    async fn warm_up(&self, delivered: i64) {
        let deadline = Instant::now() + WARM_UP_WITHIN;
        loop {
            let (count,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM orders WHERE status = 'delivered'")
                    .fetch_one(&self.pool)
                    .await
                    .unwrap_or((0,));
            if count >= delivered {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {count} orders delivered within {WARM_UP_WITHIN:?} before any chaos; \
                 client errors {:?}",
                self.shared.ledger().errors
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Cuts the database relay for `how_long`, probing the process in slot 0 meanwhile: it must
    /// stay up, `/ready` must answer 503 by the end of the cut and `/health` 200 throughout, and
    /// `/ready` must answer 200 within [`READY_AGAIN_WITHIN`] of the link's return.
    async fn cut_database(&mut self, how_long: Duration, findings: &mut Vec<String>) {
        let relay = self.database_relay.as_ref().expect("a database relay");
        let address = self.slots[0].process.address.clone();
        let cut = self.cuts + 1;
        relay.cut();
        let until = Instant::now() + how_long;
        let (mut last_ready, mut saw_503, mut health_failures) = (String::new(), false, Vec::new());
        while Instant::now() < until {
            last_ready = probe(&self.shared.http, &format!("{address}/ready")).await;
            saw_503 |= last_ready.starts_with("503");
            let health = probe(&self.shared.http, &format!("{address}/health")).await;
            if !health.starts_with("200") {
                health_failures.push(health);
            }
            self.assert_up(&format!(
                "database cut {cut}, {:.1} s into it (/ready last: {last_ready})",
                (how_long - until.saturating_duration_since(Instant::now())).as_secs_f64()
            ));
            tokio::time::sleep(POLL).await;
        }
        relay.restore();
        self.cuts += 1;
        let restored = Instant::now();
        if !saw_503 || !last_ready.starts_with("503") {
            findings.push(format!(
                "database cut {cut}: /ready did not answer 503 at the end of the cut (saw 503: \
                 {saw_503}; last: {last_ready})"
            ));
        }
        if !health_failures.is_empty() {
            findings.push(format!(
                "database cut {cut}: /health not 200 during the cut {} times, e.g. {}",
                health_failures.len(),
                health_failures[0]
            ));
        }
        loop {
            let ready = probe(&self.shared.http, &format!("{address}/ready")).await;
            if ready.starts_with("200") {
                self.ready_again_secs
                    .push((restored.elapsed().as_secs_f64() * 10.0).round() / 10.0);
                return;
            }
            self.assert_up(&format!(
                "database cut {cut}, {:.1} s after the link returned (/ready during the cut: \
                 503 seen {saw_503}, last {last_ready}; /health failures {health_failures:?})",
                restored.elapsed().as_secs_f64()
            ));
            if restored.elapsed() > READY_AGAIN_WITHIN {
                findings.push(format!(
                    "database cut {cut}: /ready not 200 within {READY_AGAIN_WITHIN:?} after the \
                     link returned (last: {ready})"
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Cuts the Redis relays of `slots` for `how_long`; every process must stay up.
    async fn cut_redis(&mut self, slots: &[usize], how_long: Duration) {
        for &slot in slots {
            self.redis_relays[slot].cut();
        }
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            self.assert_up(&format!("Redis cut {}", self.cuts + 1));
            tokio::time::sleep(POLL).await;
        }
        for &slot in slots {
            self.redis_relays[slot].restore();
        }
        self.cuts += 1;
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let failed = std::thread::panicking();
        for slot in &mut self.slots {
            slot.process.kill();
            if failed {
                eprintln!(
                    "---- process {}, last log lines ----\n{}",
                    slot.process.name,
                    slot.process.log_tail()
                );
            }
        }
        if let Some(prefix) = self.redis_prefix.clone() {
            // Drop runs outside any async context we could block on; use a private runtime.
            let removed = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(remove_redis_keys(&prefix))
            })
            .join();
            if let Ok(Err(error)) = removed {
                eprintln!("could not remove the test's Redis keys: {error}");
            }
        }
    }
}

/// `GET url`: "status body", or why there was no answer.
async fn probe(http: &reqwest::Client, url: &str) -> String {
    match http.get(url).timeout(PROBE_TIMEOUT).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            format!("{status} {}", response.text().await.unwrap_or_default())
        }
        Err(error) => format!("no answer: {error}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The verdict

/// What the test counts and prints.
#[derive(Debug, Default)]
struct Figures {
    checkouts: usize,
    acknowledged_orders: usize,
    declined: usize,
    unfinished: usize,
    retried_checkouts: usize,
    orders: usize,
    delivered: usize,
    authorisations: i64,
    /// Holds the gateway made (its own books).
    gateway_holds: usize,
    captures: usize,
    voids: usize,
    refunds: usize,
    open_authorisations_without_order: usize,
}

/// Closes demand, waits for the customers' last answers and for every order to finish, stops
/// the clients, waits for the money to follow (bounded), and checks the journal and the payment
/// tables. Prints the figures; fails with every finding at once.
async fn finish(
    deployment: &Deployment,
    clients: Clients,
    scenario: &str,
    started: Instant,
    mut findings: Vec<String>,
) {
    let shared = &deployment.shared;
    shared.demand.store(false, Ordering::SeqCst);
    for customer in clients.customers {
        // Each ends within CHECKOUT_FINAL_WITHIN of its last checkout's start.
        let abort = customer.abort_handle();
        if tokio::time::timeout(CHECKOUT_FINAL_WITHIN + REQUEST_TIMEOUT * 2, customer)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let chaos_over = Instant::now();

    // Every order finishes: nobody cancels, so every one is delivered.
    let deadline = Instant::now() + FINISH_WITHIN;
    let unfinished = loop {
        let open: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
            "SELECT id, status, dispatch_status FROM orders \
             WHERE status NOT IN ('delivered', 'cancelled', 'rejected') ORDER BY id",
        )
        .fetch_all(&deployment.pool)
        .await
        .unwrap();
        if open.is_empty() || Instant::now() >= deadline {
            break open;
        }
        tokio::time::sleep(POLL).await;
    };
    let finished_after = chaos_over.elapsed();
    if !unfinished.is_empty() {
        findings.push(format!(
            "{} orders not finished {FINISH_WITHIN:?} after the chaos ended: {:?}",
            unfinished.len(),
            unfinished.iter().take(10).collect::<Vec<_>>()
        ));
    }
    let exited = deployment.exited();
    if !exited.is_empty() {
        findings.push(format!("processes exited: {}", exited.join("\n")));
    }
    shared.stop.store(true, Ordering::SeqCst);
    for person in clients.people {
        let abort = person.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), person)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    // The money follows: delivered orders captured, holds without an order voided; and the
    // answer of a placed checkout whose server was killed before keeping it is kept by the
    // reconciler once its order closed.
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let (answers_waiting,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM idempotency_keys k JOIN orders o ON o.id = k.order_id \
             WHERE k.state = 'in_progress'",
        )
        .fetch_one(&deployment.pool)
        .await
        .unwrap();
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM payments p LEFT JOIN orders o ON o.id = p.order_id \
             WHERE (p.status IN ('authorised', 'pending') AND o.id IS NULL) \
             OR (p.status = 'authorised' AND o.status IN ('delivered', 'cancelled', 'rejected')) \
             OR (p.status = 'captured' AND o.status IN ('cancelled', 'rejected'))",
        )
        .fetch_one(&deployment.pool)
        .await
        .unwrap();
        if waiting + answers_waiting == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let settled_after = chaos_over.elapsed();

    let (acks, checkouts, errors, reconnects) = {
        let ledger = shared.ledger();
        (
            ledger.acks.clone(),
            ledger.checkouts.clone(),
            ledger.errors.clone(),
            ledger.reconnects,
        )
    };
    // An outage is answered with a retryable error, never a 500.
    if let Some(count) = errors.get("internal_error") {
        findings.push(format!(
            "clients were answered internal_error {count} times: a dependency's failure is a \
             503 to retry, not a 500"
        ));
    }
    let mut figures = Figures::default();
    check_money(&deployment.pool, &checkouts, &mut figures, &mut findings).await;
    let journal = AssertUnwindSafe(assert_journal_invariants(&deployment.pool, &acks))
        .catch_unwind()
        .await;
    if let Err(panic) = journal {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        findings.push(format!("journal: {message}"));
    }

    eprintln!(
        "{scenario}: {:.1} s; kills {} (ready again after {:?} s), cuts {} (ready again after {:?} \
         s); checkouts {} \
         ({} pressed more than once, {} declined, {} without a final answer); acknowledged \
         orders {}, orders {}, delivered {}; authorisations {} (holds at the gateway {}), captures \
         {}, voids {}, refunds {}, open authorisations without an order {}; transitions acknowledged {}; socket \
         reconnects {reconnects}; client errors {errors:?}; orders finished {:.1} s and money \
         settled {:.1} s after the chaos",
        started.elapsed().as_secs_f64(),
        deployment.kills,
        deployment.back_after_kill_secs,
        deployment.cuts,
        deployment.ready_again_secs,
        figures.checkouts,
        figures.retried_checkouts,
        figures.declined,
        figures.unfinished,
        figures.acknowledged_orders,
        figures.orders,
        figures.delivered,
        figures.authorisations,
        figures.gateway_holds,
        figures.captures,
        figures.voids,
        figures.refunds,
        figures.open_authorisations_without_order,
        acks.len(),
        finished_after.as_secs_f64(),
        settled_after.as_secs_f64(),
    );
    assert!(
        figures.acknowledged_orders > 0 && figures.delivered > 0,
        "{scenario}: the city did no business: {figures:?}"
    );
    assert!(
        findings.is_empty(),
        "{scenario}: {} findings:\n- {}",
        findings.len(),
        findings.join("\n- ")
    );
}

/// Checks every checkout key against the orders and the payments, and every order's money.
async fn check_money(
    pool: &PgPool,
    checkouts: &[Checkout],
    figures: &mut Figures,
    findings: &mut Vec<String>,
) {
    let orders: Vec<(uuid::Uuid, String, String)> =
        sqlx::query_as("SELECT id, status, dropoff_address FROM orders")
            .fetch_all(pool)
            .await
            .unwrap();
    let payments: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT order_id, status FROM payments")
            .fetch_all(pool)
            .await
            .unwrap();
    let keys: Vec<(uuid::Uuid, String, uuid::Uuid, String)> =
        sqlx::query_as("SELECT user_id, key, order_id, state FROM idempotency_keys")
            .fetch_all(pool)
            .await
            .unwrap();
    let (authorisations,): (i64,) = sqlx::query_as(
        "SELECT COUNT(DISTINCT payment_id) FROM payment_events WHERE status = 'authorised'",
    )
    .fetch_one(pool)
    .await
    .unwrap();

    let order_status: HashMap<uuid::Uuid, &str> = orders
        .iter()
        .map(|(id, status, _)| (*id, status.as_str()))
        .collect();
    let mut orders_of_key: HashMap<&str, Vec<uuid::Uuid>> = HashMap::new();
    for (id, _, address) in &orders {
        match address.strip_prefix(ADDRESS_PREFIX) {
            Some(key) => orders_of_key.entry(key).or_default().push(*id),
            None => findings.push(format!("order {id} was made by no checkout: {address:?}")),
        }
    }
    let payment_of: HashMap<uuid::Uuid, &str> = payments
        .iter()
        .map(|(order, status)| (*order, status.as_str()))
        .collect();
    let key_rows: HashMap<(String, &str), (uuid::Uuid, &str)> = keys
        .iter()
        .map(|(user, key, order, state)| {
            ((user.to_string(), key.as_str()), (*order, state.as_str()))
        })
        .collect();

    // Every checkout: one key row, one order at most, and the order the customer was told of.
    let known_keys: HashSet<&str> = checkouts.iter().map(|c| c.key.as_str()).collect();
    for checkout in checkouts {
        let label = format!("checkout {}", checkout.key);
        let made = orders_of_key
            .get(checkout.key.as_str())
            .cloned()
            .unwrap_or_default();
        if made.len() > 1 {
            findings.push(format!(
                "{label}: {} orders made for one key: {made:?}",
                made.len()
            ));
        }
        let row = key_rows.get(&(checkout.customer_id.clone(), checkout.key.as_str()));
        match (&checkout.end, row) {
            (CheckoutEnd::Unfinished(last), _) => findings.push(format!(
                "{label}: no final answer within {CHECKOUT_FINAL_WITHIN:?} of pressing again; \
                 {last}"
            )),
            (_, None) => findings.push(format!("{label}: its key row is gone")),
            (CheckoutEnd::Placed(id), Some((key_order, state))) => {
                let id: uuid::Uuid = id.parse().unwrap_or_default();
                if checkout.declined_card {
                    findings.push(format!("{label}: a declined card got order {id}"));
                }
                if *key_order != id || *state != "completed" {
                    findings.push(format!(
                        "{label}: the customer got order {id}; the key row says {key_order} ({state})"
                    ));
                }
                if !order_status.contains_key(&id) {
                    findings.push(format!("{label}: order {id} (answered 201) does not exist"));
                }
            }
            (CheckoutEnd::Refused(status, code), Some((_, state))) => {
                if !checkout.declined_card {
                    findings.push(format!("{label}: a good card was refused: {status} {code}"));
                } else if (*status, code.as_str()) != (402, "payment_declined") {
                    findings.push(format!(
                        "{label}: a declined card was answered {status} {code}"
                    ));
                }
                if *state != "completed" {
                    findings.push(format!("{label}: refused, but its key row is {state}"));
                }
                if !made.is_empty() {
                    findings.push(format!(
                        "{label}: refused ({status} {code}), yet made orders {made:?}"
                    ));
                }
            }
        }
    }
    for key in orders_of_key.keys() {
        if !known_keys.contains(key) {
            findings.push(format!(
                "key {key}: made an order, but no customer checked it out"
            ));
        }
    }
    let mut keys_of_order: HashMap<uuid::Uuid, usize> = HashMap::new();
    for (_, _, order, _) in &keys {
        *keys_of_order.entry(*order).or_default() += 1;
    }
    let shared_ids: Vec<_> = keys_of_order.iter().filter(|(_, n)| **n > 1).collect();
    if !shared_ids.is_empty() {
        findings.push(format!("order ids shared by two keys: {shared_ids:?}"));
    }

    // Every order: exactly one payment, and the money followed the order.
    let mut uncaptured = Vec::new();
    let mut unsettled = Vec::new();
    for (id, status, _) in &orders {
        match payment_of.get(id) {
            None => findings.push(format!("order {id} ({status}) has no payment")),
            Some(payment) if status == "delivered" && *payment != "captured" => {
                uncaptured.push(format!("{id}: {payment}"));
            }
            Some(payment)
                if is_closed(status) && !matches!(*payment, "captured" | "voided" | "refunded") =>
            {
                unsettled.push(format!("{id} ({status}): {payment}"));
            }
            Some(_) => {}
        }
    }
    if !uncaptured.is_empty() {
        findings.push(format!(
            "{} delivered orders not captured, e.g. {:?}",
            uncaptured.len(),
            &uncaptured[..uncaptured.len().min(5)]
        ));
    }
    if !unsettled.is_empty() {
        findings.push(format!(
            "{} closed orders whose payment did not settle, e.g. {:?}",
            unsettled.len(),
            &unsettled[..unsettled.len().min(5)]
        ));
    }
    // A pending payment may hold money too (its checkout died before recording the answer).
    let orphans: Vec<&uuid::Uuid> = payments
        .iter()
        .filter(|(order, status)| {
            matches!(status.as_str(), "authorised" | "pending") && !order_status.contains_key(order)
        })
        .map(|(order, _)| order)
        .collect();
    // The gateway's own books agree: every hold it made is one payment of ours, in the same
    // state, so no money is held that our tables do not know of.
    let holds: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT h.reference, h.status, p.status FROM sandbox_holds h \
         LEFT JOIN payments p ON p.gateway_ref = h.reference",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let disagreeing: Vec<String> = holds
        .iter()
        .filter(|(_, gateway, ours)| ours.as_deref() != Some(gateway.as_str()))
        .map(|(reference, gateway, ours)| format!("{reference}: gateway {gateway}, ours {ours:?}"))
        .collect();
    if !disagreeing.is_empty() {
        findings.push(format!(
            "{} holds at the gateway disagree with our payments, e.g. {:?}",
            disagreeing.len(),
            &disagreeing[..disagreeing.len().min(5)]
        ));
    }
    figures.gateway_holds = holds.len();
    if !orphans.is_empty() {
        findings.push(format!(
            "{} authorisations left open without an order (after {PAYMENT_ABANDON_AFTER_SECS} s \
             abandon time and {SETTLE_WITHIN:?} of settling), e.g. {:?}",
            orphans.len(),
            &orphans[..orphans.len().min(5)]
        ));
    }

    let count = |wanted: &str| payments.iter().filter(|(_, s)| s == wanted).count();
    figures.checkouts = checkouts.len();
    figures.acknowledged_orders = checkouts
        .iter()
        .filter(|c| matches!(c.end, CheckoutEnd::Placed(_)))
        .count();
    figures.declined = checkouts
        .iter()
        .filter(|c| matches!(c.end, CheckoutEnd::Refused(..)))
        .count();
    figures.unfinished = checkouts
        .iter()
        .filter(|c| matches!(c.end, CheckoutEnd::Unfinished(_)))
        .count();
    figures.retried_checkouts = checkouts.iter().filter(|c| c.attempts > 1).count();
    figures.orders = orders.len();
    figures.delivered = orders.iter().filter(|(_, s, _)| s == "delivered").count();
    figures.authorisations = authorisations;
    figures.captures = count("captured");
    figures.voids = count("voided");
    figures.refunds = count("refunded");
    figures.open_authorisations_without_order = orphans.len();
}

// ---------------------------------------------------------------------------------------------
// The scenarios

#[actix_web::test]
async fn a_city_survives_five_sigkills_of_its_engine_with_every_order_delivered_and_every_hold_captured_or_voided()
 {
    let started = Instant::now();
    let mut deployment = Deployment::start(Layout {
        processes: 1,
        redis: false,
        database_relay: false,
        redis_relays: false,
    })
    .await;
    let city = City::open(&deployment.shared).await;
    let clients = city.start(&deployment.shared);
    deployment.warm_up(2).await;
    for _ in 0..5 {
        deployment.kill_and_restart(0).await;
        deployment.calm(CALM).await;
    }
    finish(
        &deployment,
        clients,
        "engine killed 5 times",
        started,
        Vec::new(),
    )
    .await;
}

#[actix_web::test]
async fn a_city_rides_out_its_database_link_cut_for_longer_than_the_lease_ttl_without_the_engine_exiting()
 {
    let started = Instant::now();
    let mut deployment = Deployment::start(Layout {
        processes: 1,
        redis: false,
        database_relay: true,
        redis_relays: false,
    })
    .await;
    let city = City::open(&deployment.shared).await;
    let clients = city.start(&deployment.shared);
    deployment.warm_up(2).await;
    let mut findings = Vec::new();
    for _ in 0..2 {
        deployment
            .cut_database(Duration::from_secs(LEASE_TTL_SECS * 2), &mut findings)
            .await;
        deployment.calm(CALM).await;
    }
    finish(
        &deployment,
        clients,
        "database link cut twice",
        started,
        findings,
    )
    .await;
}

#[actix_web::test]
async fn a_city_on_two_replicas_survives_one_replica_at_a_time_being_sigkilled() {
    let started = Instant::now();
    let mut deployment = Deployment::start(Layout {
        processes: 2,
        redis: true,
        database_relay: false,
        redis_relays: false,
    })
    .await;
    let city = City::open(&deployment.shared).await;
    let clients = city.start(&deployment.shared);
    deployment.warm_up(2).await;
    for kill in 0..4 {
        deployment.kill_and_restart(kill % 2).await;
        deployment.calm(CALM).await;
    }
    finish(
        &deployment,
        clients,
        "two replicas, 4 kills",
        started,
        Vec::new(),
    )
    .await;
}

#[actix_web::test]
async fn a_city_on_two_replicas_rides_out_their_redis_links_cut_for_longer_than_the_lease_ttl() {
    let started = Instant::now();
    let mut deployment = Deployment::start(Layout {
        processes: 2,
        redis: true,
        database_relay: false,
        redis_relays: true,
    })
    .await;
    let city = City::open(&deployment.shared).await;
    let clients = city.start(&deployment.shared);
    deployment.warm_up(2).await;
    let cut_for = Duration::from_secs(LEASE_TTL_SECS + 2);
    for slots in [&[0, 1][..], &[0][..], &[1][..]] {
        deployment.cut_redis(slots, cut_for).await;
        deployment.calm(CALM).await;
    }
    finish(
        &deployment,
        clients,
        "two replicas, Redis cut 3 times",
        started,
        Vec::new(),
    )
    .await;
}
