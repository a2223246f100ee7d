//! Several `mealkitz serve` processes on one PostgreSQL database and one Redis share the city:
//! every live replica holds its fair share of the region leases, any replica takes any socket and
//! REST call (commands travel through Redis to the region's owner and updates come back), a
//! replica killed with SIGKILL has its regions claimed and its orders recovered by the others,
//! and a replica that joins takes its share without an order being lost. Afterwards the journal
//! shows no order with two drivers, no driver with two active orders, and every transition a
//! client was told about exactly once.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use mealkitz::domain::Position;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{Session, offset_m};
use crate::processes::{BACKOFF, Processes, RETRY_WINDOW, RETRYABLE, Shop};

/// The demo city's regions.
const REGIONS: [&str; 4] = ["nw", "ne", "sw", "se"];
/// Half the side of a demo-city region: its centre is this far north or south and east or west
/// of the city's centre.
const HALF_REGION_M: f64 = 7_500.0;
/// How long the leases may take to settle after a replica joins or dies.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);
/// How long a command waits for its acknowledgement before it is sent again.
const ACK_WAIT: Duration = Duration::from_secs(4);
/// Pause between two looks at something polled.
const POLL: Duration = Duration::from_millis(100);

/// The centre of a demo-city region, in metres north and east of the city's centre.
fn region_centre(region: &str) -> (f64, f64) {
    match region {
        "nw" => (HALF_REGION_M, -HALF_REGION_M),
        "ne" => (HALF_REGION_M, HALF_REGION_M),
        "sw" => (-HALF_REGION_M, -HALF_REGION_M),
        "se" => (-HALF_REGION_M, HALF_REGION_M),
        other => panic!("not a demo-city region: {other}"),
    }
}

/// `position` moved `north_m` metres north (negative: south).
fn north_of(position: Position, north_m: f64) -> Position {
    offset_m(position, north_m, 0.0)
}

/// A row of `region_leases`.
#[derive(Debug, Clone)]
struct LeaseRow {
    region: String,
    owner: String,
    epoch: i64,
    expires_at_ms: i64,
}

/// Who holds which region right now, by replica (an index into [`Replicas::replicas`]).
struct Holdings {
    rows: Vec<LeaseRow>,
    read_at_ms: i64,
    /// Region → (replica, epoch), for the regions a live replica holds an unexpired lease on.
    held: HashMap<String, (usize, i64)>,
    /// Regions held, per replica.
    counts: Vec<usize>,
}

impl Holdings {
    fn all_held(&self) -> bool {
        REGIONS.iter().all(|region| self.held.contains_key(*region))
    }

    fn count(&self, replica: usize) -> usize {
        self.counts[replica]
    }

    /// The regions `replica` holds, sorted.
    fn regions_of(&self, replica: usize) -> Vec<String> {
        let mut regions: Vec<String> = self
            .held
            .iter()
            .filter(|(_, (holder, _))| *holder == replica)
            .map(|(region, _)| region.clone())
            .collect();
        regions.sort();
        regions
    }

    /// Regions held by each of `replicas`, sorted ascending.
    fn sorted_counts(&self, replicas: &[usize]) -> Vec<usize> {
        let mut counts: Vec<usize> = replicas.iter().map(|&i| self.counts[i]).collect();
        counts.sort_unstable();
        counts
    }
}

impl fmt::Display for Holdings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rows.is_empty() {
            return f.write_str("(no lease rows)");
        }
        for row in &self.rows {
            writeln!(
                f,
                "  {}: owner {} epoch {} expires in {} ms",
                row.region,
                row.owner,
                row.epoch,
                row.expires_at_ms - self.read_at_ms
            )?;
        }
        Ok(())
    }
}

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a socket read gave.
enum Received {
    Message(Value),
    /// The server closed the socket (or the connection broke): why.
    Closed(String),
    /// Nothing within the time given.
    Quiet,
}

/// A WebSocket client that knows how to connect again.
struct Socket {
    label: String,
    path: String,
    token: String,
    /// The replica it is connected to.
    replica: usize,
    stream: Option<WsStream>,
}

impl Socket {
    /// Sends `message`; false when the socket is closed.
    async fn send(&mut self, message: &Value) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        if stream
            .send(Message::text(message.to_string()))
            .await
            .is_ok()
        {
            return true;
        }
        self.stream = None;
        false
    }

    /// The next JSON message within `within` (pings are answered by the library while reading).
    async fn recv(&mut self, within: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + within;
        let Some(stream) = self.stream.as_mut() else {
            return Received::Closed("not connected".to_owned());
        };
        let closed = loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Received::Quiet,
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Received::Message(serde_json::from_str(&text).unwrap_or(Value::Null));
                }
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    break format!("closed {} {}", u16::from(frame.code), frame.reason);
                }
                Ok(Some(Ok(Message::Close(None)))) => break "closed without a code".to_owned(),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(error))) => break format!("broken: {error}"),
                Ok(None) => break "ended".to_owned(),
            }
        };
        self.stream = None;
        Received::Closed(closed)
    }
}

/// The order `id` in a message that carries orders (`order_update`, `assigned`, `board`).
fn order_in<'a>(message: &'a Value, id: &str) -> Option<&'a Value> {
    match message["type"].as_str() {
        Some("order_update" | "assigned") => Some(&message["order"]).filter(|o| o["id"] == id),
        Some("board") => message["orders"].as_array()?.iter().find(|o| o["id"] == id),
        _ => None,
    }
}

/// Transitions clients were told about: (order id, the journal event it must have written).
pub(crate) type Acks = Vec<(String, &'static str)>;

/// The `status` entries of an order's `events`, oldest first.
fn timeline(order: &Value) -> Vec<String> {
    order["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["status"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Replicas of one deployment on a fresh database and a Redis key prefix of their own (see
/// [`Processes`], which kills them and cleans up when dropped).
struct Replicas {
    processes: Processes,
    /// For picking replicas round-robin.
    turn: Cell<usize>,
}

impl Replicas {
    /// Starts `count` replicas on a fresh PostgreSQL database and waits until each is ready.
    async fn start(count: usize) -> Replicas {
        let mut processes = Processes::new(
            true,
            vec![
                // Searching orders look again soon, so a driver that has just come online (its
                // location still travelling to the region's owner) is found quickly.
                ("MEALKITZ_SEARCH_RETRY_MS", "300".to_owned()),
                // No offer lapses while its region changes owner.
                ("MEALKITZ_OFFER_TIMEOUT_SECS", "60".to_owned()),
                ("MEALKITZ_SNAPSHOT_INTERVAL_MS", "200".to_owned()),
            ],
        )
        .await;
        processes.start(count).await;
        Replicas {
            processes,
            turn: Cell::new(0),
        }
    }

    /// The next live replica, round-robin.
    fn pick(&self) -> usize {
        let turn = self.turn.get();
        self.turn.set(turn + 1);
        self.processes.next_live(turn % self.processes.all().len())
    }

    async fn holdings(&self) -> Holdings {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT region_id, owner, epoch, expires_at_ms FROM region_leases ORDER BY region_id",
        )
        .fetch_all(self.processes.pool())
        .await
        .unwrap_or_default();
        let now = mealkitz::store::unix_ms();
        let rows: Vec<LeaseRow> = rows
            .into_iter()
            .map(|(region, owner, epoch, expires_at_ms)| LeaseRow {
                region,
                owner,
                epoch,
                expires_at_ms,
            })
            .collect();
        let mut held = HashMap::new();
        let mut counts = vec![0; self.processes.all().len()];
        for row in &rows {
            if row.expires_at_ms > now
                && let Some(replica) = self.processes.process_of(&row.owner)
            {
                held.insert(row.region.clone(), (replica, row.epoch));
                counts[replica] += 1;
            }
        }
        Holdings {
            rows,
            read_at_ms: now,
            held,
            counts,
        }
    }

    /// Polls the leases until `settled` holds (at most [`SETTLE_WITHIN`]).
    async fn wait_for_holdings(&self, what: &str, settled: impl Fn(&Holdings) -> bool) -> Holdings {
        let deadline = Instant::now() + SETTLE_WITHIN;
        loop {
            let holdings = self.holdings().await;
            if settled(&holdings) {
                return holdings;
            }
            assert!(
                Instant::now() < deadline,
                "leases did not settle within {SETTLE_WITHIN:?} ({what}); replicas {:?}, leases:\n{holdings}",
                self.processes.nodes()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The replicas with an unexpired row in `cluster_members`.
    async fn members(&self) -> BTreeSet<usize> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT node FROM cluster_members WHERE expires_at_ms > $1")
                .bind(mealkitz::store::unix_ms())
                .fetch_all(self.processes.pool())
                .await
                .unwrap_or_default();
        rows.iter()
            .filter_map(|(node,)| self.processes.all().iter().position(|r| r.owns(node)))
            .collect()
    }

    /// Polls `cluster_members` until exactly the live replicas are members.
    async fn wait_for_live_members(&self) {
        let expected: BTreeSet<usize> = self.processes.live().into_iter().collect();
        let deadline = Instant::now() + SETTLE_WITHIN;
        loop {
            let members = self.members().await;
            if members == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster_members lists replicas {members:?}, not the live ones {expected:?}; replicas {:?}",
                self.processes.nodes()
            );
            tokio::time::sleep(POLL).await;
        }
    }
    /// Checks out an order at `shop` (delivered 1 km north of it) on `via`: the order, its
    /// placement acknowledged in `acks`.
    async fn checkout(
        &self,
        via: usize,
        customer: &Session,
        shop: &Shop,
        acks: &mut Acks,
    ) -> Value {
        let placed = self.processes.checkout(via, customer, shop).await;
        acks.push((placed["id"].as_str().unwrap().to_owned(), "placed"));
        placed
    }

    /// The order as REST shows it on `via`.
    async fn get_order(&self, via: usize, token: &str, order_id: &str) -> Value {
        let reply = self
            .processes
            .rest(
                via,
                "GET",
                &format!("/api/v1/orders/{order_id}"),
                Some(token),
                &[],
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "GET order {order_id}: {}", reply.text);
        reply.body
    }

    /// Opens a WebSocket on `via` (or the next live replica), retrying a refused (503) or failed
    /// handshake.
    async fn connect(&self, via: usize, label: &str, path: &str, token: &str) -> Socket {
        let deadline = Instant::now() + RETRY_WINDOW;
        let mut replica = self.processes.next_live(via);
        loop {
            let url = format!(
                "{}{path}",
                self.processes.all()[replica]
                    .address
                    .replace("http://", "ws://")
            );
            let mut request = url.into_client_request().unwrap();
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let handshake = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_tungstenite::connect_async(request),
            )
            .await;
            let last = match handshake {
                Ok(Ok((stream, _))) => {
                    return Socket {
                        label: label.to_owned(),
                        path: path.to_owned(),
                        token: token.to_owned(),
                        replica,
                        stream: Some(stream),
                    };
                }
                Ok(Err(tungstenite::Error::Http(response))) => {
                    let status = response.status().as_u16();
                    let body =
                        String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                            .into_owned();
                    assert_eq!(
                        status,
                        503,
                        "{label}: handshake on replica {} refused: {body}",
                        self.processes.name(replica)
                    );
                    format!("{status} {body}")
                }
                Ok(Err(error)) => {
                    replica = self.processes.next_live(replica + 1);
                    error.to_string()
                }
                Err(_) => {
                    replica = self.processes.next_live(replica + 1);
                    "handshake timed out".to_owned()
                }
            };
            assert!(
                Instant::now() < deadline,
                "{label}: could not connect within {RETRY_WINDOW:?}: {last}"
            );
            tokio::time::sleep(BACKOFF).await;
        }
    }

    /// Connects `socket` again after a pause (the protocol asks clients to back off): to the same
    /// replica if it still runs, else to the next live one. `why` is logged.
    async fn reconnect(&self, socket: &mut Socket, why: &str) {
        tokio::time::sleep(BACKOFF).await;
        let fresh = self
            .connect(socket.replica, &socket.label, &socket.path, &socket.token)
            .await;
        eprintln!(
            "{} on replica {}: {why}; reconnected to replica {}",
            socket.label,
            self.processes.name(socket.replica),
            self.processes.name(fresh.replica)
        );
        *socket = fresh;
    }

    /// Reads `socket` until a message `matches` (reconnecting if the server closes it).
    async fn await_message(
        &self,
        socket: &mut Socket,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + RETRY_WINDOW;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: no message where {what} within {RETRY_WINDOW:?}",
                socket.label
            );
            match socket.recv(left).await {
                Received::Message(message) if matches(&message) => return message,
                Received::Message(_) | Received::Quiet => {}
                Received::Closed(why) => {
                    let why = format!("{why} while waiting for {what}");
                    self.reconnect(socket, &why).await;
                }
            }
        }
    }

    /// Reads `socket` until it carries order `order_id` in a state where `done`; the order.
    async fn await_order(
        &self,
        socket: &mut Socket,
        what: &str,
        order_id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let message = self
            .await_message(socket, what, |m| order_in(m, order_id).is_some_and(&done))
            .await;
        order_in(&message, order_id).unwrap().clone()
    }

    /// The order as REST shows it to the socket's user, if it is in a state where `done`.
    async fn order_if(
        &self,
        socket: &Socket,
        order_id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let reply = self
            .processes
            .rest(
                socket.replica,
                "GET",
                &format!("/api/v1/orders/{order_id}"),
                Some(&socket.token),
                &[],
                None,
            )
            .await;
        (reply.status == 200 && done(&reply.body)).then_some(reply.body)
    }

    /// Sends `message` about order `order_id` over `socket` until the socket shows the order in
    /// a state where `done` (its acknowledgement); the order. A retryable `error` answer, a
    /// closed socket (reconnected) or no acknowledgement within [`ACK_WAIT`] sends it again;
    /// another error first checks, through REST, whether it went through already (its update
    /// lost with a closed socket), and fails the test the second time.
    async fn command(
        &self,
        socket: &mut Socket,
        message: Value,
        order_id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let what = format!(
            "{} {}",
            socket.label,
            message["type"].as_str().unwrap_or_default()
        );
        let deadline = Instant::now() + RETRY_WINDOW;
        let mut refusals = 0;
        let mut last = "nothing".to_owned();
        loop {
            assert!(
                Instant::now() < deadline,
                "{what} for order {order_id} not acknowledged within {RETRY_WINDOW:?}; last: {last}"
            );
            if !socket.send(&message).await {
                last = "the socket was closed".to_owned();
                self.reconnect(socket, &format!("closed before {what}"))
                    .await;
                if let Some(order) = self.order_if(socket, order_id, &done).await {
                    return order;
                }
                continue;
            }
            let resend_at = Instant::now() + ACK_WAIT;
            loop {
                let left = resend_at
                    .min(deadline)
                    .saturating_duration_since(Instant::now());
                match socket.recv(left).await {
                    Received::Message(reply) => {
                        if let Some(order) = order_in(&reply, order_id).filter(|o| done(o)) {
                            return order.clone();
                        }
                        if reply["type"] != "error" {
                            continue;
                        }
                        last = reply.to_string();
                        let code = reply["code"].as_str().unwrap_or_default();
                        if RETRYABLE.contains(&code) {
                            tokio::time::sleep(BACKOFF).await;
                            break;
                        }
                        if let Some(order) = self.order_if(socket, order_id, &done).await {
                            return order;
                        }
                        refusals += 1;
                        assert!(refusals < 2, "{what} for order {order_id} refused: {reply}");
                        break;
                    }
                    Received::Closed(why) => {
                        last = format!("{why} while waiting for the answer to {what}");
                        self.reconnect(socket, &last).await;
                        if let Some(order) = self.order_if(socket, order_id, &done).await {
                            return order;
                        }
                        break;
                    }
                    Received::Quiet => {
                        last = format!("no acknowledgement within {ACK_WAIT:?}");
                        if let Some(order) = self.order_if(socket, order_id, &done).await {
                            eprintln!("{what} for order {order_id}: seen done through REST only");
                            return order;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// A driver socket on `via`, available at `position`.
    async fn driver_online(&self, via: usize, driver: &Session, position: Position) -> Socket {
        let mut socket = self
            .connect(via, "driver", "/ws/driver", &driver.token)
            .await;
        announce(&mut socket, position).await;
        socket
    }

    /// Waits for the driver's offer of `order_id`, announcing the driver again (availability and
    /// location) while none comes or after a reconnect.
    async fn await_offer(&self, socket: &mut Socket, order_id: &str, position: Position) -> Value {
        let deadline = Instant::now() + RETRY_WINDOW;
        loop {
            assert!(
                Instant::now() < deadline,
                "no offer of order {order_id} within {RETRY_WINDOW:?}"
            );
            match socket.recv(Duration::from_secs(2)).await {
                Received::Message(message) if message["type"] == "offer" => {
                    assert_eq!(
                        message["order_id"], order_id,
                        "the driver was offered another order: {message}"
                    );
                    return message;
                }
                Received::Message(message) if message["type"] == "error" => {
                    let code = message["code"].as_str().unwrap_or_default();
                    assert!(RETRYABLE.contains(&code), "driver: {message}");
                    announce(socket, position).await;
                }
                Received::Message(_) => {}
                Received::Closed(why) => {
                    let why = format!("{why} while waiting for an offer");
                    self.reconnect(socket, &why).await;
                    announce(socket, position).await;
                }
                Received::Quiet => announce(socket, position).await,
            }
        }
    }

    /// The merchant accepts `order_id` on its board (12 minutes of preparation).
    async fn merchant_accepts(&self, board: &mut Socket, order_id: &str, acks: &mut Acks) -> Value {
        let accepted = self
            .command(
                board,
                json!({"type": "accept_order", "order_id": order_id, "prep_minutes": 12}),
                order_id,
                |o| o["status"] == "accepted",
            )
            .await;
        assert_eq!(accepted["prep_minutes"], 12, "{accepted}");
        acks.push((order_id.to_owned(), "merchant_accepted"));
        accepted
    }

    async fn merchant_marks_ready(
        &self,
        board: &mut Socket,
        order_id: &str,
        acks: &mut Acks,
    ) -> Value {
        let ready = self
            .command(
                board,
                json!({"type": "order_ready", "order_id": order_id}),
                order_id,
                |o| o["status"] == "ready",
            )
            .await;
        acks.push((order_id.to_owned(), "marked_ready"));
        ready
    }

    /// The driver waits for the offer of `order_id` and accepts it.
    async fn driver_takes(
        &self,
        socket: &mut Socket,
        driver: &Session,
        position: Position,
        order_id: &str,
        acks: &mut Acks,
    ) -> Value {
        let offer = self.await_offer(socket, order_id, position).await;
        for field in ["offer_id", "pickup", "dropoff", "expires_at"] {
            assert!(offer.get(field).is_some(), "offer lacks {field}: {offer}");
        }
        let assigned = self
            .command(
                socket,
                json!({"type": "accept_offer", "offer_id": offer["offer_id"]}),
                order_id,
                |o| o["driver_id"] == driver.id.as_str(),
            )
            .await;
        assert_eq!(assigned["dispatch_status"], "assigned", "{assigned}");
        acks.push((order_id.to_owned(), "driver_assigned"));
        assigned
    }

    /// The driver reports `step` (`picked_up` or `delivered`) for `order_id`.
    async fn driver_reports(
        &self,
        socket: &mut Socket,
        step: &'static str,
        order_id: &str,
        acks: &mut Acks,
    ) -> Value {
        let order = self
            .command(
                socket,
                json!({"type": step, "order_id": order_id}),
                order_id,
                |o| o["status"] == step,
            )
            .await;
        acks.push((order_id.to_owned(), step));
        order
    }
}

/// Tells the driver's socket it is available at `position`.
async fn announce(socket: &mut Socket, position: Position) {
    socket
        .send(&json!({"type": "availability", "available": true}))
        .await;
    socket
        .send(&json!({"type": "location", "lat": position.lat, "lon": position.lon}))
        .await;
}

/// What the journal must show after replicas came and went: no order with two drivers at once,
/// no driver with two active orders, no gap or repeat in any order's sequence, and every
/// acknowledged transition exactly once.
pub(crate) async fn assert_journal_invariants(pool: &PgPool, acknowledged: &Acks) {
    let assignments: Vec<(uuid::Uuid, String, Value)> = sqlx::query_as(
        "SELECT order_id, event, detail FROM order_events \
         WHERE event IN ('driver_assigned', 'driver_released') ORDER BY order_id, seq",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut holder: HashMap<uuid::Uuid, Option<Value>> = HashMap::new();
    for (order, event, detail) in assignments {
        let current = holder.entry(order).or_default();
        if event == "driver_assigned" {
            assert!(
                current.is_none(),
                "order {order} assigned to a second driver ({detail}) while {current:?} held it"
            );
            *current = Some(detail["driver_id"].clone());
        } else {
            *current = None;
        }
    }

    let doubled: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT driver_id, COUNT(*) FROM orders WHERE driver_id IS NOT NULL \
         AND status IN ('accepted', 'ready', 'picked_up') GROUP BY driver_id HAVING COUNT(*) > 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        doubled.is_empty(),
        "drivers with two active orders: {doubled:?}"
    );

    let sequences: Vec<(uuid::Uuid, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT order_id, COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) \
         FROM order_events GROUP BY order_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (order, count, distinct, first, last) in sequences {
        assert!(
            count == distinct && last - first + 1 == count,
            "order {order}: journal seqs {first}..={last} hold {count} entries ({distinct} distinct)"
        );
    }

    for (order, event) in acknowledged {
        let (found,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM order_events WHERE order_id = $1 AND event = $2")
                .bind(order.parse::<uuid::Uuid>().unwrap())
                .bind(*event)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(
            found, 1,
            "order {order}: acknowledged {event}, journaled {found} times"
        );
    }
}

#[actix_web::test]
async fn three_replicas_deliver_an_order_with_driver_board_and_tracker_on_different_replicas_and_survive_the_owner_being_killed()
 {
    let mut cluster = Replicas::start(3).await;
    let (driver_side, owner, customer_side) = (0, 1, 2);
    let holdings = cluster
        .wait_for_holdings(
            "every region held, each of three replicas holding one or more",
            |h| h.all_held() && (0..3).all(|replica| h.count(replica) >= 1),
        )
        .await;
    assert_eq!(holdings.sorted_counts(&[0, 1, 2]), [1, 1, 2], "{holdings}");
    cluster.wait_for_live_members().await;

    // The merchant is in a region replica #2 owns.
    let region = holdings.regions_of(owner)[0].clone();
    let (north, east) = region_centre(&region);
    let shop = cluster.processes.open_shop(owner, north, east).await;
    let customer = cluster.processes.sign_up(customer_side, "customer").await;
    let driver = cluster.processes.sign_up(driver_side, "driver").await;
    let mut acks = Acks::new();

    let near = north_of(shop.location, -300.0);
    let mut driver_ws = cluster.driver_online(driver_side, &driver, near).await;
    let mut board = cluster
        .connect(owner, "merchant board", "/ws/merchant", &shop.owner.token)
        .await;
    let first = cluster
        .await_message(&mut board, "the board comes", |m| m["type"] == "board")
        .await;
    assert_eq!(first["orders"], json!([]), "{first}");

    let placed = cluster
        .checkout(customer_side, &customer, &shop, &mut acks)
        .await;
    let order_id = placed["id"].as_str().unwrap().to_owned();
    let mut tracker = cluster
        .connect(
            customer_side,
            "tracker",
            &format!("/ws/orders/{order_id}"),
            &customer.token,
        )
        .await;
    let current = cluster
        .await_order(&mut tracker, "the current state", &order_id, |_| true)
        .await;
    assert_eq!(current["status"], "placed", "{current}");
    cluster
        .await_order(
            &mut board,
            "the new order is on the board",
            &order_id,
            |o| o["status"] == "placed",
        )
        .await;

    cluster
        .merchant_accepts(&mut board, &order_id, &mut acks)
        .await;
    cluster
        .driver_takes(&mut driver_ws, &driver, near, &order_id, &mut acks)
        .await;
    let seen = cluster
        .await_order(&mut tracker, "a driver is assigned", &order_id, |o| {
            o["dispatch_status"] == "assigned"
        })
        .await;
    assert_eq!(seen["driver_id"], driver.id.as_str(), "{seen}");
    cluster
        .merchant_marks_ready(&mut board, &order_id, &mut acks)
        .await;
    cluster
        .await_order(
            &mut driver_ws,
            "the driver hears it is ready",
            &order_id,
            |o| o["status"] == "ready",
        )
        .await;
    cluster
        .driver_reports(&mut driver_ws, "picked_up", &order_id, &mut acks)
        .await;
    cluster
        .await_order(&mut tracker, "picked up", &order_id, |o| {
            o["status"] == "picked_up"
        })
        .await;

    // Kill the region's owner mid-delivery.
    let before = cluster.holdings().await;
    let Some(&(holder, epoch)) = before.held.get(&region) else {
        panic!("region {region} not held before the kill:\n{before}");
    };
    assert_eq!(
        holder, owner,
        "region {region} moved away from replica #2 before the kill:\n{before}"
    );
    let killed_at = Instant::now();
    cluster.processes.kill(owner);
    drop(board);

    let after = cluster
        .wait_for_holdings(
            &format!("another replica owns {region} under an epoch above {epoch}"),
            |h| {
                h.held
                    .get(&region)
                    .is_some_and(|&(new_owner, new_epoch)| new_owner != owner && new_epoch > epoch)
            },
        )
        .await;
    let took_over = killed_at.elapsed();
    let (new_owner, new_epoch) = after.held[&region];

    // The driver (on replica #1, reconnecting if its socket closed) finishes the delivery.
    let delivered = cluster
        .driver_reports(&mut driver_ws, "delivered", &order_id, &mut acks)
        .await;
    assert_eq!(delivered["driver_id"], driver.id.as_str(), "{delivered}");
    let done = cluster
        .await_order(&mut tracker, "delivered", &order_id, |o| {
            o["status"] == "delivered"
        })
        .await;
    let delivered_after = killed_at.elapsed();
    assert_eq!(
        timeline(&done),
        ["placed", "accepted", "ready", "picked_up", "delivered"],
        "{done}"
    );
    eprintln!(
        "failover: region {region} owned by replica {} (epoch {new_epoch}) {} ms after SIGKILL of \
         replica #2; the order delivered {} ms after it",
        cluster.processes.name(new_owner),
        took_over.as_millis(),
        delivered_after.as_millis()
    );

    // The two survivors share the four regions fairly, and the dead replica left the members.
    let shared = cluster
        .wait_for_holdings("the two survivors hold two regions each", |h| {
            h.all_held() && h.count(driver_side) == 2 && h.count(customer_side) == 2
        })
        .await;
    assert_eq!(shared.count(owner), 0, "{shared}");
    cluster.wait_for_live_members().await;
    let stored = cluster
        .get_order(driver_side, &customer.token, &order_id)
        .await;
    assert_eq!(stored["status"], "delivered", "{stored}");
    assert_eq!(stored["driver_id"], driver.id.as_str(), "{stored}");

    assert_journal_invariants(cluster.processes.pool(), &acks).await;
}

/// How far an order got before the fourth replica joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Placed,
    Accepted,
    Assigned,
    PickedUp,
}

impl Stage {
    /// Its status and dispatch status, and whether a driver holds it.
    fn expected(self) -> (&'static str, &'static str, bool) {
        match self {
            Stage::Placed => ("placed", "unassigned", false),
            Stage::Accepted => ("accepted", "searching", false),
            Stage::Assigned => ("accepted", "assigned", true),
            Stage::PickedUp => ("picked_up", "assigned", true),
        }
    }
}

/// An order of the fourth-replica test.
struct Tracked {
    id: String,
    /// Index into the shops, which is also the region's index in [`REGIONS`].
    shop: usize,
    stage: Stage,
    /// Index into the drivers.
    driver: Option<usize>,
    /// Its end: `delivered`, or `cancelled`.
    end: &'static str,
}

/// A driver of the fourth-replica test, waiting next to one shop.
struct DriverApp {
    account: Session,
    socket: Socket,
}

/// Checks that `order` is as `stage` left it, held by `driver` where the stage has one.
fn assert_stage(order: &Value, stage: Stage, driver: Option<&str>, when: &str) {
    let (status, dispatch_status, has_driver) = stage.expected();
    assert_eq!(order["status"], status, "{when}, {stage:?}: {order}");
    assert_eq!(
        order["dispatch_status"], dispatch_status,
        "{when}, {stage:?}: {order}"
    );
    if has_driver {
        assert_eq!(order["driver_id"], driver.unwrap(), "{when}: {order}");
    } else {
        assert!(order["driver_id"].is_null(), "{when}: {order}");
    }
}

#[actix_web::test]
async fn a_fourth_replica_takes_its_fair_share_of_regions_and_no_order_is_lost() {
    let mut cluster = Replicas::start(3).await;
    cluster
        .wait_for_holdings("the three replicas hold 2/1/1", |h| {
            h.all_held() && h.sorted_counts(&[0, 1, 2]) == [1, 1, 2]
        })
        .await;
    cluster.wait_for_live_members().await;

    // A shop at the centre of each region, each with its board on a replica of its own.
    let customer = cluster.processes.sign_up(cluster.pick(), "customer").await;
    let mut shops = Vec::new();
    let mut boards = Vec::new();
    for region in REGIONS {
        let (north, east) = region_centre(region);
        let shop = cluster
            .processes
            .open_shop(cluster.pick(), north, east)
            .await;
        let mut board = cluster
            .connect(
                cluster.pick(),
                "merchant board",
                "/ws/merchant",
                &shop.owner.token,
            )
            .await;
        cluster
            .await_message(&mut board, "the board comes", |m| m["type"] == "board")
            .await;
        shops.push(shop);
        boards.push(board);
    }

    // Two orders per region, each stage in two regions. Those that need a driver first, one at a
    // time with their own driver (so each offer goes to it); then the placed ones; then the
    // accepted ones, which keep searching: every driver is busy.
    const STAGES: [Stage; 4] = [
        Stage::Placed,
        Stage::Accepted,
        Stage::Assigned,
        Stage::PickedUp,
    ];
    let mut plan: Vec<(usize, Stage)> = (0..REGIONS.len())
        .flat_map(|region| [(region, STAGES[region]), (region, STAGES[(region + 2) % 4])])
        .collect();
    plan.sort_by_key(|(_, stage)| match stage {
        Stage::Assigned | Stage::PickedUp => 0,
        Stage::Placed => 1,
        Stage::Accepted => 2,
    });
    let mut acks = Acks::new();
    let mut orders: Vec<Tracked> = Vec::new();
    let mut drivers: Vec<DriverApp> = Vec::new();
    for (shop, stage) in plan {
        let placed = cluster
            .checkout(cluster.pick(), &customer, &shops[shop], &mut acks)
            .await;
        let id = placed["id"].as_str().unwrap().to_owned();
        let mut driver = None;
        if stage != Stage::Placed {
            cluster
                .merchant_accepts(&mut boards[shop], &id, &mut acks)
                .await;
        }
        if matches!(stage, Stage::Assigned | Stage::PickedUp) {
            let account = cluster.processes.sign_up(cluster.pick(), "driver").await;
            let position = north_of(shops[shop].location, -300.0);
            let mut socket = cluster
                .driver_online(cluster.pick(), &account, position)
                .await;
            cluster
                .driver_takes(&mut socket, &account, position, &id, &mut acks)
                .await;
            if stage == Stage::PickedUp {
                cluster
                    .merchant_marks_ready(&mut boards[shop], &id, &mut acks)
                    .await;
                cluster
                    .driver_reports(&mut socket, "picked_up", &id, &mut acks)
                    .await;
            }
            driver = Some(drivers.len());
            drivers.push(DriverApp { account, socket });
        }
        orders.push(Tracked {
            id,
            shop,
            stage,
            driver,
            end: "delivered",
        });
    }
    // Of the two placed orders, the customer cancels the first; the other is delivered.
    let cancelled = orders
        .iter()
        .position(|o| o.stage == Stage::Placed)
        .unwrap();
    orders[cancelled].end = "cancelled";

    let driver_id = |order: &Tracked, drivers: &[DriverApp]| -> Option<String> {
        order.driver.map(|d| drivers[d].account.id.clone())
    };
    for order in &orders {
        let seen = cluster
            .get_order(cluster.pick(), &customer.token, &order.id)
            .await;
        let driver = driver_id(order, &drivers);
        assert_stage(
            &seen,
            order.stage,
            driver.as_deref(),
            "before the fourth replica",
        );
    }

    // The fourth replica joins: the one holding two regions hands one over to it.
    let three = cluster.holdings().await;
    assert!(
        three.all_held() && three.sorted_counts(&[0, 1, 2]) == [1, 1, 2],
        "the three replicas no longer hold 2/1/1:\n{three}"
    );
    let joined_at = Instant::now();
    let newcomer = cluster.processes.add().await;
    let four = cluster
        .wait_for_holdings("each of the four replicas holds one region", |h| {
            h.all_held() && (0..4).all(|replica| h.count(replica) == 1)
        })
        .await;
    let took = joined_at.elapsed();
    let moved: Vec<&str> = REGIONS
        .into_iter()
        .filter(|region| three.held[*region].0 != four.held[*region].0)
        .collect();
    let [moved] = moved[..] else {
        panic!("exactly one region changes owner, not {moved:?}; before:\n{three}after:\n{four}");
    };
    let (from, old_epoch) = three.held[moved];
    let (to, new_epoch) = four.held[moved];
    assert_eq!(
        three.count(from),
        2,
        "the region came from the replica with two:\n{three}"
    );
    assert_eq!(to, newcomer, "the newcomer claimed it:\n{four}");
    assert!(
        new_epoch > old_epoch,
        "{moved}: epoch {old_epoch} -> {new_epoch}"
    );
    cluster.wait_for_live_members().await;
    eprintln!(
        "rebalance: region {moved} moved from replica {} to replica {} (epoch {old_epoch} -> \
         {new_epoch}) {} ms after the fourth replica started",
        cluster.processes.name(from),
        cluster.processes.name(to),
        took.as_millis()
    );

    // Every order is still there, as it was, whichever replica is asked.
    for order in &orders {
        let seen = cluster
            .get_order(cluster.pick(), &customer.token, &order.id)
            .await;
        let driver = driver_id(order, &drivers);
        assert_stage(
            &seen,
            order.stage,
            driver.as_deref(),
            "after the fourth replica joined",
        );
    }

    // Every socket moves to a replica chosen round-robin, the newcomer included: boards show
    // their open orders, drivers their active order.
    for (shop, board) in boards.iter_mut().enumerate() {
        *board = cluster
            .connect(
                cluster.pick(),
                "merchant board",
                "/ws/merchant",
                &shops[shop].owner.token,
            )
            .await;
        let first = cluster
            .await_message(board, "the board comes", |m| m["type"] == "board")
            .await;
        let shown: BTreeSet<&str> = first["orders"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["id"].as_str())
            .collect();
        let expected: BTreeSet<&str> = orders
            .iter()
            .filter(|o| o.shop == shop)
            .map(|o| o.id.as_str())
            .collect();
        assert_eq!(
            shown, expected,
            "board of the shop in {}: {first}",
            REGIONS[shop]
        );
    }
    for (index, driver) in drivers.iter_mut().enumerate() {
        let order = orders.iter().find(|o| o.driver == Some(index)).unwrap();
        driver.socket = cluster
            .connect(
                cluster.pick(),
                "driver",
                "/ws/driver",
                &driver.account.token,
            )
            .await;
        let resumed = cluster
            .await_message(&mut driver.socket, "its active order comes back", |m| {
                m["type"] == "assigned" && order_in(m, &order.id).is_some()
            })
            .await;
        assert_eq!(
            resumed["order"]["driver_id"],
            driver.account.id.as_str(),
            "{resumed}"
        );
        assert_eq!(
            resumed["order"]["status"],
            order.stage.expected().0,
            "{resumed}"
        );
    }

    // The customer cancels the first placed order; the merchant accepts the other.
    let order = &orders[cancelled];
    let path = format!("/api/v1/orders/{}/cancel", order.id);
    let reason = json!({"reason": "changed my mind"});
    let reply = cluster
        .processes
        .rest(
            cluster.pick(),
            "POST",
            &path,
            Some(&customer.token),
            &[],
            Some(&reason),
        )
        .await;
    if reply.status == 409 {
        // A retried cancel whose first attempt went through.
        let seen = cluster
            .get_order(cluster.pick(), &customer.token, &order.id)
            .await;
        assert_eq!(seen["status"], "cancelled", "{}: {seen}", reply.text);
    } else {
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body["status"], "cancelled", "{}", reply.text);
    }
    acks.push((order.id.clone(), "cancelled_by_customer"));
    let searching: Vec<usize> = (0..orders.len())
        .filter(|&i| orders[i].end == "delivered" && orders[i].driver.is_none())
        .collect();
    for &i in &searching {
        if orders[i].stage == Stage::Placed {
            cluster
                .merchant_accepts(&mut boards[orders[i].shop], &orders[i].id, &mut acks)
                .await;
        }
    }

    // Each searching order gets a new driver next to it (no other searching order is within
    // the largest search radius of it, and every other driver is busy).
    for &i in &searching {
        let account = cluster.processes.sign_up(cluster.pick(), "driver").await;
        let position = north_of(shops[orders[i].shop].location, -300.0);
        let mut socket = cluster
            .driver_online(cluster.pick(), &account, position)
            .await;
        cluster
            .driver_takes(&mut socket, &account, position, &orders[i].id, &mut acks)
            .await;
        orders[i].driver = Some(drivers.len());
        drivers.push(DriverApp { account, socket });
    }

    // Every open order runs to its end: ready, picked up, delivered.
    for order in orders.iter().filter(|o| o.end == "delivered") {
        let driver = &mut drivers[order.driver.unwrap()];
        if order.stage != Stage::PickedUp {
            cluster
                .merchant_marks_ready(&mut boards[order.shop], &order.id, &mut acks)
                .await;
            cluster
                .driver_reports(&mut driver.socket, "picked_up", &order.id, &mut acks)
                .await;
        }
        cluster
            .driver_reports(&mut driver.socket, "delivered", &order.id, &mut acks)
            .await;
    }

    for order in &orders {
        let seen = cluster
            .get_order(cluster.pick(), &customer.token, &order.id)
            .await;
        assert_eq!(seen["status"], order.end, "{seen}");
        if order.end == "delivered" {
            assert_eq!(
                timeline(&seen),
                ["placed", "accepted", "ready", "picked_up", "delivered"],
                "{seen}"
            );
            let driver = &drivers[order.driver.unwrap()];
            assert_eq!(seen["driver_id"], driver.account.id.as_str(), "{seen}");
        } else {
            assert_eq!(timeline(&seen), ["placed", "cancelled"], "{seen}");
        }
    }
    eprintln!(
        "{} orders ran to their end over four replicas after region {moved} changed hands",
        orders.len()
    );

    assert_journal_invariants(cluster.processes.pool(), &acks).await;
}
