//! Dispatch under load: 10,000 drivers online, 200 orders a second, and how long dispatch
//! takes — from the merchant's `accept_order` frame leaving the merchant's socket to the
//! `offer` frame for that order arriving on a driver's socket. Both ends run in this tool, so
//! the two instants come from one clock.
//!
//! ```sh
//! cargo bench --bench dispatch_load                        # 10,000 drivers, 200 orders/s, 30 s
//! DISPATCH_ORDERS_PER_SEC=100 cargo bench --bench dispatch_load
//! DISPATCH_DRIVERS=2000 DISPATCH_SECS=60 cargo bench --bench dispatch_load
//! ```
//!
//! Knobs (environment):
//! - `DISPATCH_DRIVERS` (10000): driver sockets on `/ws/driver`, available, uniform over the
//!   demo city (seeded), not moving;
//! - `DISPATCH_MERCHANTS` (50): merchants (one owner each, one `/ws/merchant` board each),
//!   uniform over the demo city but 2 km inside its edges;
//! - `DISPATCH_CUSTOMERS` (200): customers the checkouts are spread over, round-robin;
//! - `DISPATCH_ORDERS_PER_SEC` (200, may be fractional): checkouts a second, paced evenly;
//! - `DISPATCH_SECS` (30): how long customers check out;
//! - `DISPATCH_WARMUP_SECS` (5): the first seconds of that, left out of the latency and CPU
//!   figures so that they describe a steady state rather than the first orders' effects;
//! - `DISPATCH_IN_FLIGHT` (64): checkouts in flight at most;
//! - `DISPATCH_STORE` (`postgres`): `postgres` — a fresh database on `BENCH_DATABASE_URL`
//!   (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped afterwards, as in
//!   production — or `sqlite`, a fresh file in the temporary directory, as `mealkitz demo` runs.
//! - `DISPATCH_CITY` (`demo`): `demo` — the synthetic 26 km square of four regions — or
//!   `helsinki`, the shipped OpenStreetMap extract of central Helsinki (two regions,
//!   data/helsinki/regions.geojson), where OSRM has roads: with `MEALKITZ_OSRM_URL` set (the
//!   server inherits it; `scripts/osrm.sh start`), candidates are ranked by road, and without
//!   it by the straight line — the two runs compare OSRM's cost to dispatch;
//! - `DISPATCH_REPLICAS` (1): with 2, a second replica shares the regions through Redis
//!   (`REDIS_URL`, default `redis://127.0.0.1:6379`; PostgreSQL only). Every client still talks
//!   to the first, so the orders of the second's two regions are routed: checkout, accept, the
//!   offer's way back to the driver socket, the driver's answers. The report splits the
//!   dispatch latency into those and the rest. Server CPU counts the first replica only.
//!
//! The server inherits the environment, so server settings the tool does not set itself reach
//! it too: `MEALKITZ_DB_MAX_CONNECTIONS=1 cargo bench --bench dispatch_load`, say, or
//! `MEALKITZ_MATCHING=batched`. The tool prints the server's pid, for `perf record -p`.
//!
//! The tool creates the users straight in a fresh store, starts the release binary on
//! it as a separate process (per-socket and per-customer limits raised so that they do not cap
//! the load; offers live 60 s so that none lapses during the run), creates the merchants and
//! their menus over REST, connects every driver (availability, then one location) and every
//! board, and then has customers check out at the set rate. The boards accept each new order
//! at once (prep 10 min) and mark it ready as soon as they see it accepted; drivers accept
//! every offer at once, pick up when the order is ready and deliver at once, so they are back
//! in the driver index within milliseconds. Client and server share the machine's cores: the
//! tool reports both processes' CPU so that the figures can be read with that in mind, and opens
//! its sockets as apps do ([`mealkitz::sim::connect_client`]: a small read buffer, Nagle off).

mod common;

use common::{
    BenchStore, MachineTicks, command_ticks, cpu_ticks, env_f64_or, env_or, machine_ticks,
    thread_ticks, token,
};

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use mealkitz::config::DatabaseConfig;
use mealkitz::domain::{Email, Role, UserId};
use mealkitz::geo::region::{DEMO_CITY_CENTRE_LAT_DEG, DEMO_CITY_CENTRE_LON_DEG, DEMO_CITY_SIDE_M};
use mealkitz::geo::{LatLon, LocalProjection};
use mealkitz::sim::{ClientSocket as Socket, connect_client};
use mealkitz::store::{NewUser, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::sync::OnceLock;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const SECRET: &str = "dispatch-load-secret-0123456789abcdef!!";
const SEED: u64 = 0xD15_BA7C;
/// Nobody logs in (tokens are signed here), so any well-formed hash will do.
const DUMMY_PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
/// Users inserted at once: overlapping the round trips to the store's pool hides their latency
/// (SQLite writes one at a time anyway).
const USER_CREATE_CONCURRENCY: usize = 16;
/// Sockets connecting at once (stays under the listen backlog).
const CONNECT_CONCURRENCY: usize = 100;
/// Drivers stay this far inside the demo square...
const DRIVER_EDGE_MARGIN_M: f64 = 100.0;
/// ...merchants this far, so that most dropoffs around them are inside it too...
const MERCHANT_EDGE_MARGIN_M: f64 = 2_000.0;
/// ...and dropoffs this far (one outside the square would be refused).
const DROPOFF_EDGE_MARGIN_M: f64 = 100.0;
/// Dropoffs are this far from their merchant, in a random direction.
const DROPOFF_MIN_M: f64 = 1_000.0;
const DROPOFF_MAX_M: f64 = 3_000.0;
/// What a board answers with: preparation time is irrelevant here (the order is marked ready
/// at once), but it must be within 1–240.
const PREP_MINUTES: u32 = 10;
/// Longer than the run, so that no offer lapses while the tool is still counting.
const OFFER_TIMEOUT_SECS: u64 = 60;
/// How often the customer ticker wakes and places what is due: 5 ms is one order a tick at
/// 200 orders/s, so they are spread evenly rather than sent in bursts.
const CHECKOUT_TICK_MS: u64 = 5;
/// After the last checkout, how long orders may still take to get their offer.
const DRAIN_TIMEOUT_SECS: u64 = 15;
const DRAIN_POLL_MS: u64 = 100;
/// How long the server may take to index every driver after they connected.
const INDEX_TIMEOUT_SECS: u64 = 60;
const INDEX_POLL_MS: u64 = 250;
/// A progress line this often while customers check out; the report splits the latency
/// by the same slices, to show whether it drifts.
const PROGRESS_SECS: u64 = 5;
/// Seconds listed in the report's line of slow dispatch seconds at most.
const SLOW_SECONDS_SHOWN: usize = 12;
/// Server threads listed with their CPU.
const TOP_THREADS: usize = 8;
/// Above this much background load (% of all cores) before the run, the tool warns.
const IDLE_BUSY_WARN_PERCENT: f64 = 10.0;
/// Linux reports CPU in clock ticks of 1/100 s.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;
/// The goals for dispatch latency (issue 19): p99 ≤ 10 ms up to 200 orders/s, ≤ 25 ms above it
/// (500/s).
const GOAL_P99_MS: f64 = 10.0;
const GOAL_P99_MS_ABOVE_SPLIT: f64 = 25.0;
const GOAL_SPLIT_ORDERS_PER_SEC: f64 = 200.0;

/// The dispatch p99 goal at an offered rate.
fn goal_p99_ms(orders_per_sec: f64) -> f64 {
    if orders_per_sec > GOAL_SPLIT_ORDERS_PER_SEC {
        GOAL_P99_MS_ABOVE_SPLIT
    } else {
        GOAL_P99_MS
    }
}
/// Warnings and errors the server logged, first lines kept for the report.
const PROBLEM_LINES_KEPT: usize = 20;

// ---------------------------------------------------------------------------------------------
// CPU accounting (from /proc; the counters are in benches/common).

/// CPU counters at one instant.
struct CpuSample {
    at: Instant,
    server: u64,
    client: u64,
    /// Every `postgres` process on the machine (the store's server, when it runs here).
    postgres: u64,
    threads: HashMap<String, (String, u64)>,
    machine: MachineTicks,
}

impl CpuSample {
    fn take(server_pid: u32) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            server: cpu_ticks(server_pid),
            client: cpu_ticks(std::process::id()),
            postgres: command_ticks("postgres"),
            threads: thread_ticks(server_pid),
            machine: machine_ticks(),
        }
    }

    /// % of one core the server and the client used since `earlier`.
    fn percent_since(&self, earlier: &CpuSample) -> (f64, f64) {
        let secs = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        let percent = |a: u64, b: u64| (b - a) as f64 / CLOCK_TICKS_PER_SEC / secs * 100.0;
        (
            percent(earlier.server, self.server),
            percent(earlier.client, self.client),
        )
    }
}

/// How busy the machine is before anything starts, as % of all cores over `sample`: load from
/// other processes would take cores from the server and the client and skew the figures.
fn idle_check(sample: Duration) -> f64 {
    let before = machine_ticks();
    std::thread::sleep(sample);
    let after = machine_ticks();
    (after.busy - before.busy) as f64 / (after.total - before.total).max(1) as f64 * 100.0
}

// ---------------------------------------------------------------------------------------------
// /metrics.

/// Every series of metric `name` in a Prometheus text page: (label text, value).
fn series(page: &str, name: &str) -> Vec<(String, f64)> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let (metric, labels) = key.split_once('{').unwrap_or((key, ""));
            (metric == name).then(|| {
                (
                    labels.trim_end_matches('}').to_owned(),
                    value.parse().unwrap_or(0.0),
                )
            })
        })
        .collect()
}

fn total(page: &str, name: &str) -> f64 {
    // `+ 0.0`: an empty f64 sum is -0.0, which would print as "-0".
    series(page, name).iter().map(|(_, v)| v).sum::<f64>() + 0.0
}

/// A server histogram's change between two pages: cumulative (upper bound in seconds, count)
/// per bucket, and the count and sum of the samples.
struct Histogram {
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
}

impl Histogram {
    fn between(before: &str, after: &str, name: &str) -> Histogram {
        let buckets = |page: &str| -> Vec<(f64, f64)> {
            let mut buckets: Vec<(f64, f64)> = series(page, &format!("{name}_bucket"))
                .into_iter()
                .filter_map(|(labels, count)| {
                    let le = labels.split("le=\"").nth(1)?.split('"').next()?;
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    Some((le, count))
                })
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            buckets
        };
        let earlier = buckets(before);
        let buckets = buckets(after)
            .into_iter()
            .map(|(le, count)| {
                let was = earlier
                    .iter()
                    .find(|(l, _)| *l == le)
                    .map_or(0.0, |(_, c)| *c);
                (le, count - was)
            })
            .collect();
        Histogram {
            buckets,
            count: total(after, &format!("{name}_count")) - total(before, &format!("{name}_count")),
            sum: total(after, &format!("{name}_sum")) - total(before, &format!("{name}_sum")),
        }
    }

    /// For a histogram of counts (not seconds): samples, mean, and the bucket bounds holding
    /// the median, p90 and p99.
    fn describe_counts(&self) -> String {
        if self.count < 1.0 {
            return "no samples".to_owned();
        }
        let bound = |q: f64| {
            let wanted = q * self.count;
            self.buckets
                .iter()
                .find(|(_, count)| *count >= wanted)
                .map_or_else(
                    || "> largest bucket".to_owned(),
                    |(le, _)| format!("≤ {le}"),
                )
        };
        format!(
            "{:.0} commits, mean {:.1}, p50 {}, p90 {}, p99 {}",
            self.count,
            self.sum / self.count,
            bound(0.5),
            bound(0.9),
            bound(0.99)
        )
    }

    /// The upper bound of the bucket holding quantile `q`, in ms.
    fn quantile_bound_ms(&self, q: f64) -> f64 {
        let wanted = q * self.count;
        self.buckets
            .iter()
            .find(|(_, count)| *count >= wanted)
            .map_or(f64::INFINITY, |(le, _)| le * 1e3)
    }

    /// Share of samples at or under `ms` (which must be a bucket bound), in %.
    fn share_within_ms(&self, ms: f64) -> f64 {
        let within = self
            .buckets
            .iter()
            .find(|(le, _)| (le * 1e3 - ms).abs() < 1e-9)
            .map_or(0.0, |(_, count)| *count);
        within / self.count.max(1.0) * 100.0
    }

    fn describe(&self) -> String {
        if self.count < 1.0 {
            return "no samples".to_owned();
        }
        let bound = |q: f64| {
            let ms = self.quantile_bound_ms(q);
            if ms.is_finite() {
                format!("≤ {ms} ms")
            } else {
                "> largest bucket".to_owned()
            }
        };
        format!(
            "{:.0} samples, mean {:.2} ms, p50 {}, p90 {}, p99 {}; {:.1} % ≤ 10 ms",
            self.count,
            self.sum / self.count * 1e3,
            bound(0.5),
            bound(0.9),
            bound(0.99),
            self.share_within_ms(10.0)
        )
    }
}

/// Warnings, errors and anything else unexpected the server wrote to stderr: how many, and the
/// first few lines.
type Problems = Mutex<(u64, Vec<String>)>;

/// One `/metrics` page. Panics with what the server logged if it is gone.
async fn scrape(http: &reqwest::Client, base: &str, problems: &Problems) -> String {
    let page = match http.get(format!("{base}/metrics")).send().await {
        Ok(response) => response.text().await.ok(),
        Err(_) => None,
    };
    page.unwrap_or_else(|| {
        let problems = problems.lock().unwrap();
        panic!(
            "the server stopped answering /metrics; it logged:\n{}",
            problems.1.join("\n")
        )
    })
}

// ---------------------------------------------------------------------------------------------
// What the clients see.

/// One order's instants, as the clients saw them.
#[derive(Default)]
struct Trace {
    /// The checkout answered 201 with this order.
    placed: bool,
    /// Just before the board wrote `accept_order`.
    accept_sent: Option<Instant>,
    /// When the first `offer` for it was read off a driver socket.
    offered: Option<Instant>,
    /// The demo city region of its pickup (`nw`, `ne`, `sw`, `se`).
    region: Option<&'static str>,
}

/// Where the load runs (`DISPATCH_CITY`).
struct Area {
    centre: LatLon,
    /// Half the area's extent north–south and east–west, metres.
    half_north_m: f64,
    half_east_m: f64,
    /// Inset of merchants from the edges, and the range of dropoff distances, metres.
    merchant_margin_m: f64,
    dropoff_min_m: f64,
    dropoff_max_m: f64,
    /// The server's `--regions` file, when not the demo city.
    regions_file: Option<String>,
}

/// Central Helsinki's extract spans 60.1642–60.1791 N and 24.9352–24.9534 E.
const HELSINKI_CENTRE: LatLon = LatLon {
    lat: 60.171_65,
    lon: 24.944_3,
};
/// Where data/helsinki/regions.geojson splits west from east.
const HELSINKI_SPLIT_LON_DEG: f64 = 24.944;

static AREA: OnceLock<Area> = OnceLock::new();

fn area() -> &'static Area {
    AREA.get_or_init(|| match std::env::var("DISPATCH_CITY").as_deref() {
        Ok("helsinki") => Area {
            centre: HELSINKI_CENTRE,
            half_north_m: 780.0,
            half_east_m: 470.0,
            merchant_margin_m: 100.0,
            dropoff_min_m: 300.0,
            dropoff_max_m: 1_200.0,
            regions_file: Some(format!(
                "{}/data/helsinki/regions.geojson",
                env!("CARGO_MANIFEST_DIR")
            )),
        },
        Ok("demo") | Err(_) => Area {
            centre: LatLon {
                lat: DEMO_CITY_CENTRE_LAT_DEG,
                lon: DEMO_CITY_CENTRE_LON_DEG,
            },
            half_north_m: DEMO_CITY_SIDE_M / 2.0,
            half_east_m: DEMO_CITY_SIDE_M / 2.0,
            merchant_margin_m: MERCHANT_EDGE_MARGIN_M,
            dropoff_min_m: DROPOFF_MIN_M,
            dropoff_max_m: DROPOFF_MAX_M,
            regions_file: None,
        },
        Ok(other) => panic!("DISPATCH_CITY must be demo or helsinki, not {other:?}"),
    })
}

impl Area {
    /// A uniform point `margin_m` inside the edges, as planar metres `[north, east]`.
    fn uniform(&self, rng: &mut StdRng, margin_m: f64) -> [f64; 2] {
        let north = self.half_north_m - margin_m;
        let east = self.half_east_m - margin_m;
        [
            rng.random_range(-north..=north),
            rng.random_range(-east..=east),
        ]
    }

    fn contains(&self, p: [f64; 2], margin_m: f64) -> bool {
        p[0].abs() <= self.half_north_m - margin_m && p[1].abs() <= self.half_east_m - margin_m
    }
}

/// The region a position falls in: the demo city's four cells meet at its centre; Helsinki's
/// two split at [`HELSINKI_SPLIT_LON_DEG`].
fn demo_region(position: &Value) -> Option<&'static str> {
    let (lat, lon) = (position["lat"].as_f64()?, position["lon"].as_f64()?);
    if area().regions_file.is_some() {
        return Some(if lon < HELSINKI_SPLIT_LON_DEG {
            "helsinki-west"
        } else {
            "helsinki-east"
        });
    }
    let north = lat >= DEMO_CITY_CENTRE_LAT_DEG;
    let east = lon >= DEMO_CITY_CENTRE_LON_DEG;
    Some(match (north, east) {
        (true, false) => "nw",
        (true, true) => "ne",
        (false, false) => "sw",
        (false, true) => "se",
    })
}

/// Shared by every client task.
#[derive(Default)]
struct Shared {
    traces: Mutex<HashMap<Uuid, Trace>>,
    /// `offer` frames read, first offers and repeats alike.
    offers: AtomicU64,
    /// `delivered` order updates drivers saw: orders that went all the way.
    delivered: AtomicU64,
    /// `error` frames by socket kind and code.
    errors: Mutex<HashMap<String, u64>>,
    /// Set before the tool shuts things down: closes after that are expected.
    stopping: AtomicBool,
    /// Close frames from the server, by socket kind and code.
    closes: Mutex<HashMap<String, u64>>,
    /// Read errors, failed writes, or streams that ended without a close frame.
    broken: AtomicU64,
    /// Boards that have received their first `board` frame (subscribed).
    boards_ready: AtomicUsize,
}

impl Shared {
    fn trace<T>(&self, id: Uuid, f: impl FnOnce(&mut Trace) -> T) -> T {
        f(self.traces.lock().unwrap().entry(id).or_default())
    }

    fn error(&self, kind: &str, frame: &Value) {
        let code = frame["code"].as_str().unwrap_or("?");
        *self
            .errors
            .lock()
            .unwrap()
            .entry(format!("{kind}/{code}"))
            .or_default() += 1;
    }

    /// Records how a socket ended, unless the tool is shutting down.
    fn ended(&self, kind: &str, close: Option<String>) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        match close {
            Some(code) => {
                *self
                    .closes
                    .lock()
                    .unwrap()
                    .entry(format!("{kind}: {code}"))
                    .or_default() += 1
            }
            None => {
                self.broken.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The next text frame with the instant it was read; `Err` with the close reason (if the
/// server sent one) when the socket ends. Pings are answered by tungstenite while reading.
async fn next_text(socket: &mut Socket) -> Result<(Instant, String), Option<String>> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok((Instant::now(), text.to_string())),
            Some(Ok(Message::Close(frame))) => {
                return Err(Some(frame.map_or("none".to_owned(), |f| {
                    format!("{} {}", u16::from(f.code), f.reason)
                })));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(None),
        }
    }
}

fn order_id(value: &Value) -> Option<Uuid> {
    value.as_str()?.parse().ok()
}

/// A driver: one task reads its socket and answers on it. It never moves after its first
/// location, so it only writes when the server gives it something to answer — cheap enough
/// for 10,000 of them to share the client's cores with little cost.
async fn drive(mut socket: Socket, shared: Arc<Shared>) {
    // The order it is on, and which of its steps it has sent.
    let mut job: Option<(Uuid, bool, bool)> = None;
    let ended = loop {
        let (arrived, text) = match next_text(&mut socket).await {
            Ok(frame) => frame,
            Err(close) => break close,
        };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let reply = match frame["type"].as_str() {
            Some("offer") => {
                shared.offers.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = order_id(&frame["order_id"]) {
                    shared.trace(id, |t| {
                        t.offered.get_or_insert(arrived);
                    });
                }
                Some(json!({"type": "accept_offer", "offer_id": frame["offer_id"]}))
            }
            // `assigned` carries the order as it is; every later step comes as `order_update`.
            // The board marks it ready as soon as it sees it accepted, so it is often ready by
            // the time it is assigned.
            Some("assigned" | "order_update") => {
                let order = &frame["order"];
                let Some(id) = order_id(&order["id"]) else {
                    continue;
                };
                let status = order["status"].as_str().unwrap_or_default();
                let (current, picked_up, delivered) = job.get_or_insert((id, false, false));
                if *current != id {
                    *current = id;
                    (*picked_up, *delivered) = (false, false);
                }
                match status {
                    "ready" if !*picked_up => {
                        *picked_up = true;
                        Some(json!({"type": "picked_up", "order_id": id}))
                    }
                    "picked_up" if !*delivered => {
                        *delivered = true;
                        Some(json!({"type": "delivered", "order_id": id}))
                    }
                    "delivered" | "cancelled" | "rejected" => {
                        if status == "delivered" {
                            shared.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        job = None;
                        None
                    }
                    _ => None,
                }
            }
            Some("error") => {
                shared.error("driver", &frame);
                None
            }
            _ => None,
        };
        if let Some(reply) = reply
            && socket.send(Message::text(reply.to_string())).await.is_err()
        {
            break None;
        }
    };
    shared.ended("driver", ended);
}

/// A merchant's board: accepts every new order at once, and marks it ready as soon as it sees
/// it accepted. The send instant of each `accept_order` is where dispatch latency starts.
async fn board(mut socket: Socket, shared: Arc<Shared>) {
    let mut accepted: HashSet<Uuid> = HashSet::new();
    let mut readied: HashSet<Uuid> = HashSet::new();
    let ended = 'read: loop {
        let text = match next_text(&mut socket).await {
            Ok((_, text)) => text,
            Err(close) => break close,
        };
        let Ok(mut frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let orders = match frame["type"].as_str() {
            Some("board") => {
                shared.boards_ready.fetch_add(1, Ordering::Relaxed);
                match frame["orders"].take() {
                    Value::Array(orders) => orders,
                    _ => Vec::new(),
                }
            }
            Some("order_update") => vec![frame["order"].take()],
            Some("error") => {
                shared.error("merchant", &frame);
                Vec::new()
            }
            _ => Vec::new(),
        };
        for order in orders {
            let Some(id) = order_id(&order["id"]) else {
                continue;
            };
            let reply = match order["status"].as_str().unwrap_or_default() {
                "placed" if accepted.insert(id) => {
                    // Taken just before the write: the frame leaves the socket within it.
                    let region = demo_region(&order["pickup"]);
                    shared.trace(id, |t| {
                        t.region = region;
                        t.accept_sent = Some(Instant::now());
                    });
                    json!({"type": "accept_order", "order_id": id, "prep_minutes": PREP_MINUTES})
                }
                "accepted" if readied.insert(id) => {
                    json!({"type": "order_ready", "order_id": id})
                }
                // The final update is an order's last on the board: forget it.
                "delivered" | "cancelled" | "rejected" => {
                    accepted.remove(&id);
                    readied.remove(&id);
                    continue;
                }
                _ => continue,
            };
            if socket.send(Message::text(reply.to_string())).await.is_err() {
                break 'read None;
            }
        }
    };
    shared.ended("merchant", ended);
}

// ---------------------------------------------------------------------------------------------
// Customers.

/// What every checkout needs, shared by the checkout tasks.
struct Checkout {
    http: reqwest::Client,
    url: String,
    customers: Vec<String>,
    /// Per merchant: id, menu item id, location (planar metres from the demo centre).
    merchants: Vec<(String, String, [f64; 2])>,
    projection: LocalProjection,
}

/// What the checkouts came to.
#[derive(Default)]
struct CheckoutResults {
    sent: u64,
    /// Latency of each 201 for requests sent after the warm-up, ms.
    latencies_ms: Vec<f64>,
    /// Failures by status and code.
    failures: HashMap<String, u64>,
}

/// A dropoff the area's dropoff distance from `pickup` in a random direction, inside the area.
fn dropoff(pickup: [f64; 2], rng: &mut StdRng) -> [f64; 2] {
    let area = area();
    loop {
        let distance_m = rng.random_range(area.dropoff_min_m..=area.dropoff_max_m);
        let bearing_rad = rng.random_range(0.0..std::f64::consts::TAU);
        let p = [
            pickup[0] + distance_m * bearing_rad.cos(),
            pickup[1] + distance_m * bearing_rad.sin(),
        ];
        if area.contains(p, DROPOFF_EDGE_MARGIN_M) {
            return p;
        }
    }
}

/// The first checkout that got no HTTP answer at all, as the client saw it.
static FIRST_NETWORK_ERROR: OnceLock<String> = OnceLock::new();

/// Places order `n`: customer and merchant round-robin.
async fn check_out(
    checkout: &Checkout,
    n: usize,
    to: [f64; 2],
    shared: &Shared,
) -> Result<f64, String> {
    let customer = &checkout.customers[n % checkout.customers.len()];
    let (merchant_id, item_id, _) = &checkout.merchants[n % checkout.merchants.len()];
    let to = checkout.projection.to_latlon(to);
    let body = json!({
        "merchant_id": merchant_id,
        "items": [{"menu_item_id": item_id, "quantity": 1}],
        "dropoff": {"lat": to.lat, "lon": to.lon, "address": format!("{n} Load Street")},
        "payment_method": "pm_card_visa",
    });
    let sent = Instant::now();
    let response = checkout
        .http
        .post(&checkout.url)
        .bearer_auth(customer)
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .map_err(|error| {
            // What the first one was, for the report (a request that never got an answer).
            let _ = FIRST_NETWORK_ERROR.set(format!("{error:?}"));
            "network".to_owned()
        })?;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if status != 201 {
        let code = answer["error"]["code"].as_str().unwrap_or("?");
        return Err(format!("{status} {code}"));
    }
    let latency_ms = sent.elapsed().as_secs_f64() * 1e3;
    if let Some(id) = order_id(&answer["id"]) {
        shared.trace(id, |t| t.placed = true);
    }
    Ok(latency_ms)
}

/// Places `rate` orders a second from `begin` for `run_for`, with at most `in_flight` at once.
/// Every tick it starts what is due by then, so it catches up after a stall (or while every
/// slot is taken) rather than dropping load silently.
async fn customers(
    checkout: Arc<Checkout>,
    shared: Arc<Shared>,
    schedule: (tokio::time::Instant, Duration, Duration, f64),
    in_flight: usize,
    results: Arc<Mutex<CheckoutResults>>,
) {
    let (begin, warmup, run_for, rate) = schedule;
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut rng = StdRng::seed_from_u64(SEED ^ 0xC0FFEE);
    let mut ticker = tokio::time::interval_at(begin, Duration::from_millis(CHECKOUT_TICK_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut started: usize = 0;
    loop {
        ticker.tick().await;
        let elapsed = begin.elapsed();
        if elapsed >= run_for {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate) as usize;
        while started < due {
            let slot = slots.clone().acquire_owned().await.unwrap();
            let n = started;
            started += 1;
            let to = dropoff(checkout.merchants[n % checkout.merchants.len()].2, &mut rng);
            let measured = begin.elapsed() >= warmup;
            let (checkout, shared, results) = (checkout.clone(), shared.clone(), results.clone());
            tokio::spawn(async move {
                let outcome = check_out(&checkout, n, to, &shared).await;
                drop(slot);
                let mut results = results.lock().unwrap();
                results.sent += 1;
                match outcome {
                    Ok(latency_ms) if measured => results.latencies_ms.push(latency_ms),
                    Ok(_) => {}
                    Err(failure) => *results.failures.entry(failure).or_default() += 1,
                }
            });
        }
    }
    // Every slot back: every checkout answered.
    let _ = slots.acquire_many(in_flight as u32).await.unwrap();
}

// ---------------------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn summary_ms(sorted: &[f64]) -> String {
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(sorted, 0.5),
        percentile(sorted, 0.9),
        percentile(sorted, 0.99),
        sorted.last().copied().unwrap_or(f64::NAN)
    )
}

struct Knobs {
    drivers: usize,
    merchants: usize,
    customers: usize,
    orders_per_sec: f64,
    secs: u64,
    warmup_secs: u64,
    in_flight: usize,
}

fn main() {
    let background = idle_check(Duration::from_secs(1));
    if background > IDLE_BUSY_WARN_PERCENT {
        println!(
            "WARNING: the machine is already {background:.0} % busy before the run; other processes will skew the figures"
        );
    }
    let knobs = Knobs {
        drivers: env_or("DISPATCH_DRIVERS", 10_000),
        merchants: env_or("DISPATCH_MERCHANTS", 50).max(1),
        customers: env_or("DISPATCH_CUSTOMERS", 200).max(1),
        orders_per_sec: env_f64_or("DISPATCH_ORDERS_PER_SEC", 200.0),
        secs: env_or("DISPATCH_SECS", 30) as u64,
        warmup_secs: env_or("DISPATCH_WARMUP_SECS", 5) as u64,
        in_flight: env_or("DISPATCH_IN_FLIGHT", 64).max(1),
    };
    assert!(
        knobs.warmup_secs < knobs.secs,
        "DISPATCH_WARMUP_SECS must be shorter than DISPATCH_SECS"
    );
    // Two workers, like the other load tools: the client takes at most what a small machine's
    // second core can give, and its CPU is reported beside the server's.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(knobs));
}

async fn run(knobs: Knobs) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let replicas = env_or("DISPATCH_REPLICAS", 1);
    assert!(
        matches!(replicas, 1 | 2),
        "DISPATCH_REPLICAS must be 1 or 2"
    );
    let kind = std::env::var("DISPATCH_STORE").unwrap_or_else(|_| "postgres".to_owned());
    assert!(
        replicas == 1 || kind == "postgres",
        "two replicas share one PostgreSQL database"
    );
    // With two replicas they share the regions through Redis; every client talks to the first.
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("dispatch-{}:", Uuid::new_v4().simple());
    let shared_env = |node: &str| -> Vec<(&'static str, String)> {
        if replicas == 1 {
            return Vec::new();
        }
        vec![
            ("REDIS_URL", redis.clone()),
            ("MEALKITZ_REDIS_KEY_PREFIX", prefix.clone()),
            ("MEALKITZ_NODE_ID", node.to_owned()),
        ]
    };
    let bench_store = BenchStore::create(&kind, "dispatch").await;
    let url = bench_store.url();

    // Users straight into a fresh store.
    let store = Store::open(&DatabaseConfig {
        url: bench_store.database_url(),
        max_connections: 4,
        ..DatabaseConfig::default()
    })
    .unwrap();
    store.migrate().await.unwrap();
    let started = Instant::now();
    let people: Vec<(Role, usize)> = [
        (Role::Driver, knobs.drivers),
        (Role::Merchant, knobs.merchants),
        (Role::Customer, knobs.customers),
    ]
    .into_iter()
    .flat_map(|(role, count)| (0..count).map(move |i| (role, i)))
    .collect();
    let store_ref = &store;
    let mut ids: Vec<(Role, usize, UserId)> = futures_util::stream::iter(people)
        .map(|(role, i)| async move {
            let user = store_ref
                .create_user(NewUser {
                    email: Email::parse(&format!("{}-{i}@dispatch.example", role.as_str()))
                        .unwrap(),
                    name: "Dispatch".into(),
                    role,
                    password_hash: DUMMY_PASSWORD_HASH.into(),
                })
                .await
                .unwrap();
            (role, i, user.id)
        })
        .buffer_unordered(USER_CREATE_CONCURRENCY)
        .collect()
        .await;
    store.close().await;
    // Back in a stable order, so the seeded placement is the same every run.
    ids.sort_by_key(|(role, i, _)| (role.as_str(), *i));
    let of = |wanted: Role| -> Vec<UserId> {
        ids.iter()
            .filter(|(role, _, _)| *role == wanted)
            .map(|(_, _, id)| *id)
            .collect()
    };
    let (driver_ids, owner_ids, customer_ids) =
        (of(Role::Driver), of(Role::Merchant), of(Role::Customer));
    println!(
        "{} users created in {:.1} s ({} drivers, {} merchant owners, {} customers; {})",
        ids.len(),
        started.elapsed().as_secs_f64(),
        driver_ids.len(),
        owner_ids.len(),
        customer_ids.len(),
        bench_store.name()
    );

    // The server, as operators run it, with the limits that would cap the load out of the way.
    let mut child = common::server_command()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("DATABASE_URL", &url)
        .env("MEALKITZ_JWT_SECRET", SECRET)
        .env("MEALKITZ_WS_RATE_PER_SEC", "1000")
        .env("MEALKITZ_CHECKOUTS_PER_MINUTE", "1000000")
        .env(
            "MEALKITZ_OFFER_TIMEOUT_SECS",
            OFFER_TIMEOUT_SECS.to_string(),
        )
        .env("MEALKITZ_LOG_FORMAT", "json")
        .env(
            "RUST_LOG",
            "info,mealkitz::api::middleware=warn,mealkitz::api::orders=warn",
        )
        .envs(shared_env("dispatch-a"))
        .envs(
            area()
                .regions_file
                .iter()
                .map(|f| ("MEALKITZ_REGIONS", f.clone())),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mealkitz serve");
    let server_pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    // The thread keeps the pipe drained (or the server would block on logging) and counts the
    // warnings and errors for the report.
    let problems: Arc<Problems> = Arc::default();
    let server_problems = problems.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Anything that is not a JSON log line (a panic, say) is a problem too.
            let entry = serde_json::from_str::<Value>(&line).unwrap_or_default();
            if entry["message"] == "mealkitz listening" {
                let _ = port_tx.send(entry["port"].as_u64().unwrap() as u16);
            } else if !entry.is_object() || entry["level"] == "WARN" || entry["level"] == "ERROR" {
                let mut problems = server_problems.lock().unwrap();
                problems.0 += 1;
                if problems.1.len() < PROBLEM_LINES_KEPT {
                    problems.1.push(line);
                }
            }
        }
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server port");
    let base = format!("http://127.0.0.1:{port}");
    // A connection idle as long as the server's keep-alive (5 s) is dropped by the client
    // first, never reused as the server closes it (a checkout sent on it got no answer once in
    // a run, no order made for it).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(knobs.in_flight)
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    common::wait_ready(&http, port).await;
    println!("server pid {server_pid} on port {port}");
    println!(
        "city {}; ranking by {}",
        std::env::var("DISPATCH_CITY").unwrap_or_else(|_| "demo".into()),
        match std::env::var("MEALKITZ_OSRM_URL") {
            Ok(url) if !url.is_empty() => format!("road (OSRM at {url})"),
            _ => "straight line".to_owned(),
        }
    );
    // The second replica, and which regions it holds: commands for those are routed there.
    let mut second = None;
    let mut second_base = None;
    let mut routed_regions: HashSet<String> = HashSet::new();
    if replicas == 2 {
        let mut env = shared_env("dispatch-b");
        env.extend([
            ("DATABASE_URL", url.clone()),
            ("MEALKITZ_JWT_SECRET", SECRET.to_owned()),
            ("MEALKITZ_WS_RATE_PER_SEC", "1000".to_owned()),
            ("MEALKITZ_CHECKOUTS_PER_MINUTE", "1000000".to_owned()),
            (
                "MEALKITZ_OFFER_TIMEOUT_SECS",
                OFFER_TIMEOUT_SECS.to_string(),
            ),
        ]);
        let (child, second_port) = common::start_server(&env);
        common::wait_ready(&http, second_port).await;
        let store = Store::open(&DatabaseConfig {
            url: bench_store.database_url(),
            max_connections: 2,
            ..DatabaseConfig::default()
        })
        .unwrap();
        store.migrate().await.unwrap();
        let owners = common::regions_shared_two_and_two(&store, "dispatch-a", "dispatch-b").await;
        store.close().await;
        routed_regions = owners
            .into_iter()
            .filter(|(_, owner)| owner.starts_with("dispatch-b"))
            .map(|(region, _)| region)
            .collect();
        common::wait_ready(&http, port).await;
        println!(
            "second replica pid {} on port {second_port}; it holds {:?}: commands for them are routed through Redis",
            child.id(),
            routed_regions
        );
        second = Some(child);
        second_base = Some(format!("http://127.0.0.1:{second_port}"));
    }

    // Merchants and menus over REST, uniform over the demo square 2 km inside its edges.
    let projection = LocalProjection::new(area().centre);
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut merchants = Vec::new();
    let mut owner_tokens = Vec::new();
    for (i, owner) in owner_ids.iter().enumerate() {
        let owner_token = token(SECRET, *owner, Role::Merchant);
        let at = area().uniform(&mut rng, area().merchant_margin_m);
        let location = projection.to_latlon(at);
        let created = http
            .post(format!("{base}/api/v1/merchants"))
            .bearer_auth(&owner_token)
            .json(&json!({
                "name": format!("Load Kitchen {i}"),
                "address": format!("{i} Load Avenue"),
                "location": {"lat": location.lat, "lon": location.lon},
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 201, "create merchant {i}");
        let merchant: Value = created.json().await.unwrap();
        let merchant_id = merchant["id"].as_str().unwrap().to_owned();
        let menu = http
            .put(format!("{base}/api/v1/merchants/{merchant_id}/menu"))
            .bearer_auth(&owner_token)
            .json(&json!({"items": [{"name": "Kit", "price_cents": 1500}]}))
            .send()
            .await
            .unwrap();
        assert!(menu.status().is_success(), "set menu of merchant {i}");
        let menu: Value = menu.json().await.unwrap();
        let item_id = menu["items"][0]["id"].as_str().unwrap().to_owned();
        merchants.push((merchant_id, item_id, at));
        owner_tokens.push(owner_token);
    }
    println!("{} merchants with menus created", merchants.len());

    // Drivers uniform over the demo square (seeded); each goes online with one location and
    // then only answers what it is sent.
    let shared = Arc::new(Shared::default());
    let homes: Vec<LatLon> = (0..driver_ids.len())
        .map(|_| projection.to_latlon(area().uniform(&mut rng, DRIVER_EDGE_MARGIN_M)))
        .collect();
    let started = Instant::now();
    let connect_failures = AtomicU64::new(0);
    let driver_url = format!("ws://127.0.0.1:{port}/ws/driver");
    let connected: usize = futures_util::stream::iter(driver_ids.iter().zip(&homes))
        .map(|(&driver_id, home)| {
            let (url, shared, connect_failures) = (&driver_url, &shared, &connect_failures);
            async move {
                let online = async {
                    let mut socket =
                        connect_client(url, &token(SECRET, driver_id, Role::Driver)).await?;
                    socket
                        .send(Message::text(r#"{"type":"availability","available":true}"#))
                        .await?;
                    let location = json!({"type": "location", "lat": home.lat, "lon": home.lon});
                    socket.send(Message::text(location.to_string())).await?;
                    Ok::<_, tokio_tungstenite::tungstenite::Error>(socket)
                }
                .await;
                match online {
                    Ok(socket) => {
                        tokio::spawn(drive(socket, shared.clone()));
                        1
                    }
                    Err(error) => {
                        if connect_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                            println!("a driver failed to connect: {error}");
                        }
                        0
                    }
                }
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .fold(0, |sum, one| async move { sum + one })
        .await;
    println!(
        "{connected} drivers connected in {:.1} s ({} failed)",
        started.elapsed().as_secs_f64(),
        connect_failures.load(Ordering::Relaxed)
    );

    // Every driver in the index of each region whose polygon or border band covers it: the
    // sum over regions is at least the number of drivers.
    let indexing = Instant::now();
    let indexed = loop {
        let page = scrape(&http, &base, &problems).await;
        let mut indexed = total(&page, "dispatch_available_drivers");
        if let Some(second_base) = &second_base {
            let page = scrape(&http, second_base, &problems).await;
            indexed += total(&page, "dispatch_available_drivers");
        }
        if indexed >= connected as f64
            || indexing.elapsed() > Duration::from_secs(INDEX_TIMEOUT_SECS)
        {
            break indexed;
        }
        tokio::time::sleep(Duration::from_millis(INDEX_POLL_MS)).await;
    };
    println!(
        "driver index entries {indexed:.0} (border bands overlap) after {:.1} s more",
        indexing.elapsed().as_secs_f64()
    );
    assert!(indexed >= connected as f64, "not every driver got indexed");

    let merchant_url = format!("ws://127.0.0.1:{port}/ws/merchant");
    for owner_token in &owner_tokens {
        let socket = connect_client(&merchant_url, owner_token)
            .await
            .expect("connect a board");
        tokio::spawn(board(socket, shared.clone()));
    }
    // Orders reach only boards that are subscribed: wait for every board's first frame.
    while shared.boards_ready.load(Ordering::Relaxed) < owner_tokens.len() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{} boards subscribed", owner_tokens.len());

    // The load.
    let checkout = Arc::new(Checkout {
        http: http.clone(),
        url: format!("{base}/api/v1/orders"),
        customers: customer_ids
            .iter()
            .map(|id| token(SECRET, *id, Role::Customer))
            .collect(),
        merchants,
        projection,
    });
    let results = Arc::new(Mutex::new(CheckoutResults::default()));
    let warmup = Duration::from_secs(knobs.warmup_secs);
    let run_for = Duration::from_secs(knobs.secs);
    let begin = tokio::time::Instant::now() + Duration::from_millis(CHECKOUT_TICK_MS);
    let begin_std = begin.into_std();
    println!(
        "checking out {} orders/s for {} s ({} s warm-up), at most {} in flight, from {} (second 0 below)",
        knobs.orders_per_sec,
        knobs.secs,
        knobs.warmup_secs,
        knobs.in_flight,
        chrono::Utc::now().format("%H:%M:%S%.3f UTC")
    );
    let placing = tokio::spawn(customers(
        checkout.clone(),
        shared.clone(),
        (begin, warmup, run_for, knobs.orders_per_sec),
        knobs.in_flight,
        results.clone(),
    ));

    tokio::time::sleep_until(begin + warmup).await;
    let page0 = scrape(&http, &base, &problems).await;
    let cpu0 = CpuSample::take(server_pid);
    let mut last = CpuSample::take(server_pid);
    let (mut last_sent, mut last_offers) = (
        results.lock().unwrap().sent,
        shared.offers.load(Ordering::Relaxed),
    );
    loop {
        let until =
            (tokio::time::Instant::now() + Duration::from_secs(PROGRESS_SECS)).min(begin + run_for);
        tokio::time::sleep_until(until).await;
        let cpu = CpuSample::take(server_pid);
        let secs = cpu.at.duration_since(last.at).as_secs_f64();
        let (server, client) = cpu.percent_since(&last);
        let sent = results.lock().unwrap().sent;
        let offers = shared.offers.load(Ordering::Relaxed);
        let waiting = shared
            .traces
            .lock()
            .unwrap()
            .values()
            .filter(|t| t.accept_sent.is_some() && t.offered.is_none())
            .count();
        println!(
            "  +{:>4.1} s: checkouts answered {:>5.0}/s, offers {:>5.0}/s, accepted orders waiting for an offer {waiting:>4}; CPU % of a core: server {server:>3.0}, client {client:>3.0}",
            begin_std.elapsed().as_secs_f64(),
            (sent - last_sent) as f64 / secs,
            (offers - last_offers) as f64 / secs,
        );
        (last, last_sent, last_offers) = (cpu, sent, offers);
        if tokio::time::Instant::now() >= begin + run_for {
            break;
        }
    }
    let cpu1 = CpuSample::take(server_pid);
    let page1 = scrape(&http, &base, &problems).await;
    placing.await.unwrap();

    // Orders accepted near the end still get their offers: wait for them, within a limit.
    let draining = Instant::now();
    let pending = || {
        shared
            .traces
            .lock()
            .unwrap()
            .values()
            .filter(|t| t.placed && t.offered.is_none())
            .count()
    };
    while pending() > 0 && draining.elapsed() < Duration::from_secs(DRAIN_TIMEOUT_SECS) {
        tokio::time::sleep(Duration::from_millis(DRAIN_POLL_MS)).await;
    }
    let drain_secs = draining.elapsed().as_secs_f64();
    // Deliveries of the last offers finish within milliseconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page2 = scrape(&http, &base, &problems).await;

    // Figures.
    let measured_from = begin_std + warmup;
    let goal_ms = goal_p99_ms(knobs.orders_per_sec);
    let (mut latencies, mut never_offered, mut never_accepted, mut placed) = (Vec::new(), 0, 0, 0);
    // With two replicas: the latencies of orders whose region the first holds, and the rest.
    let (mut local_ms, mut routed_ms) = (Vec::new(), Vec::new());
    // Per progress slice of accept instants: the latencies in it, to show drift.
    let slices = knobs.secs.div_ceil(PROGRESS_SECS) as usize;
    let mut sliced: Vec<Vec<f64>> = vec![Vec::new(); slices];
    // Per whole second of accept instants: how many dispatches missed the goal, and the worst,
    // so that slow moments can be matched with what else happened then (checkpoints, say).
    let mut slow_by_second: std::collections::BTreeMap<u64, (usize, f64)> = Default::default();
    for trace in shared.traces.lock().unwrap().values() {
        placed += usize::from(trace.placed);
        match (trace.accept_sent, trace.offered) {
            (None, _) => never_accepted += usize::from(trace.placed),
            (Some(_), None) => never_offered += 1,
            (Some(accept), Some(offer)) => {
                let ms = offer.saturating_duration_since(accept).as_secs_f64() * 1e3;
                let slice = accept.saturating_duration_since(begin_std).as_secs() / PROGRESS_SECS;
                if let Some(slice) = sliced.get_mut(slice as usize) {
                    slice.push(ms);
                }
                if ms > goal_ms {
                    let second = accept.saturating_duration_since(begin_std).as_secs();
                    let slow = slow_by_second.entry(second).or_insert((0, 0.0));
                    slow.0 += 1;
                    slow.1 = slow.1.max(ms);
                }
                if accept >= measured_from {
                    latencies.push(ms);
                    match trace.region {
                        Some(region) if routed_regions.contains(region) => routed_ms.push(ms),
                        _ => local_ms.push(ms),
                    }
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let results = std::mem::take(&mut *results.lock().unwrap());
    let mut checkout_ms = results.latencies_ms;
    checkout_ms.sort_by(f64::total_cmp);
    let window_secs = cpu1.at.duration_since(cpu0.at).as_secs_f64();
    let (server_cpu, client_cpu) = cpu1.percent_since(&cpu0);

    println!();
    println!(
        "dispatch under load: {connected} drivers, {} merchants, {} customers; {} orders/s offered for {} s, the first {} s warm-up",
        checkout.merchants.len(),
        checkout.customers.len(),
        knobs.orders_per_sec,
        knobs.secs,
        knobs.warmup_secs
    );
    println!(
        "  checkouts: {} sent, {placed} placed ({:.1}/s); failures by status and code {:?}",
        results.sent,
        placed as f64 / knobs.secs as f64,
        results.failures
    );
    if let Some(error) = FIRST_NETWORK_ERROR.get() {
        println!("  the first checkout without an answer: {error}");
    }
    println!(
        "  checkout latency after warm-up ({} orders): {}",
        checkout_ms.len(),
        summary_ms(&checkout_ms)
    );
    let offered_orders = shared
        .traces
        .lock()
        .unwrap()
        .values()
        .filter(|t| t.offered.is_some())
        .count();
    let offers = shared.offers.load(Ordering::Relaxed);
    println!(
        "  offers received: {offers} for {offered_orders} orders ({} repeats); deliveries completed: {}",
        offers as usize - offered_orders,
        shared.delivered.load(Ordering::Relaxed)
    );
    let p99 = percentile(&latencies, 0.99);
    println!(
        "  DISPATCH LATENCY (accept_order sent → offer received), {} orders accepted after warm-up: {} — goal p99 ≤ {goal_ms} ms at {} orders/s {}",
        latencies.len(),
        summary_ms(&latencies),
        knobs.orders_per_sec,
        if p99 <= goal_ms { "MET" } else { "MISSED" }
    );
    println!(
        "    share ≤ 10 ms {:.1} %, ≤ 5 ms {:.1} %",
        latencies.iter().filter(|&&ms| ms <= 10.0).count() as f64 / latencies.len().max(1) as f64
            * 100.0,
        latencies.iter().filter(|&&ms| ms <= 5.0).count() as f64 / latencies.len().max(1) as f64
            * 100.0
    );
    if replicas == 2 {
        local_ms.sort_by(f64::total_cmp);
        routed_ms.sort_by(f64::total_cmp);
        println!(
            "    orders in the first replica's regions ({}): {}",
            local_ms.len(),
            summary_ms(&local_ms)
        );
        println!(
            "    orders in the second replica's regions, routed through Redis ({}): {}",
            routed_ms.len(),
            summary_ms(&routed_ms)
        );
    }
    println!("    by when the accept was sent (warm-up included):");
    for (i, slice) in sliced.iter_mut().enumerate() {
        slice.sort_by(f64::total_cmp);
        println!(
            "      {:>3}–{:<3} s: {:>5} orders, {}",
            i as u64 * PROGRESS_SECS,
            (i as u64 + 1) * PROGRESS_SECS,
            slice.len(),
            summary_ms(slice)
        );
    }
    let mut slow: Vec<_> = slow_by_second.into_iter().collect();
    slow.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    println!(
        "    seconds with the most dispatches over {goal_ms} ms (second: count, worst): {}",
        slow.iter()
            .take(SLOW_SECONDS_SHOWN)
            .map(|(second, (count, worst))| format!("{second}: {count}, {worst:.0} ms"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!(
        "  orders without an offer {drain_secs:.1} s after the last checkout: {never_offered} accepted, {never_accepted} never accepted"
    );
    println!(
        "  server's dispatch_latency_seconds (order actor: accept journaled → offer journaled) over the window: {}",
        Histogram::between(&page0, &page1, "dispatch_latency_seconds").describe()
    );
    println!(
        "  server's journal_write_seconds (one order transition handed in → its commit answered): {}",
        Histogram::between(&page0, &page1, "journal_write_seconds").describe()
    );
    println!(
        "  server's journal_commit_seconds (one journal transaction): {}",
        Histogram::between(&page0, &page1, "journal_commit_seconds").describe()
    );
    println!(
        "  server's journal_batch_transitions (writes per journal transaction; MEALKITZ_JOURNAL_GROUP_COMMIT={}): {}",
        std::env::var("MEALKITZ_JOURNAL_GROUP_COMMIT").unwrap_or_else(|_| "true".to_owned()),
        Histogram::between(&page0, &page1, "journal_batch_transitions").describe_counts()
    );
    println!(
        "  server CPU {server_cpu:.0} % of one core, client (this tool) CPU {client_cpu:.0} % of one core, over the {window_secs:.1} s after warm-up"
    );
    let (m0, m1) = (cpu0.machine, cpu1.machine);
    let share = |ticks: u64| ticks as f64 / (m1.total - m0.total).max(1) as f64 * 100.0;
    let cpu_secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / CLOCK_TICKS_PER_SEC;
    println!(
        "  PostgreSQL CPU (every postgres process on this machine) {:.0} % of one core",
        cpu_secs(cpu0.postgres, cpu1.postgres) / window_secs * 100.0
    );
    let others = (cpu_secs(m0.busy, m1.busy)
        - cpu_secs(cpu0.server, cpu1.server)
        - cpu_secs(cpu0.client, cpu1.client))
    .max(0.0);
    println!(
        "  machine ({cores} cores, shared by client and server): {:.0} % busy, {:.1} % waiting for disk, {:.1} % stolen by the hypervisor; other processes {:.0} % of one core",
        share(m1.busy - m0.busy),
        share(m1.iowait - m0.iowait),
        share(m1.steal - m0.steal),
        others / window_secs * 100.0
    );
    let mut threads: Vec<(String, String, f64)> = cpu1
        .threads
        .iter()
        .map(|(tid, (name, after))| {
            let before = cpu0.threads.get(tid).map_or(0, |(_, ticks)| *ticks);
            (tid.clone(), name.clone(), cpu_secs(before, *after))
        })
        .collect();
    threads.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("  busiest server threads (% of one core):");
    for (tid, name, secs) in threads.iter().take(TOP_THREADS) {
        println!(
            "    {:>5.0} %  {name} (tid {tid})",
            secs / window_secs * 100.0
        );
    }
    println!(
        "  error frames {:?}; unexpected closes {:?}, broken sockets {}; driver index entries at the end {:.0}",
        shared.errors.lock().unwrap(),
        shared.closes.lock().unwrap(),
        shared.broken.load(Ordering::Relaxed),
        total(&page2, "dispatch_available_drivers")
    );
    {
        let problems = problems.lock().unwrap();
        println!("  server warnings/errors logged: {}", problems.0);
        for line in problems.1.iter().take(5) {
            println!("    {line}");
        }
    }

    shared.stopping.store(true, Ordering::Relaxed);
    let _ = child.kill();
    let _ = child.wait();
    if let Some(mut second) = second {
        let _ = second.kill();
        let _ = second.wait();
    }
    bench_store.remove().await;
}
