//! Tracking fan-out: with thousands of tracking sockets open on a running `mealkitz serve`, how
//! long does a driver's location take from its socket to every tracker of its order?
//!
//! ```sh
//! cargo bench --bench ws_fanout                        # 5,000 trackers, 500 drivers, 30 s
//! FANOUT_TRACKERS=10000 FANOUT_DRIVERS=1000 FANOUT_SECS=60 cargo bench --bench ws_fanout
//! FANOUT_REPLICAS=2 cargo bench --bench ws_fanout      # trackers on the other replica
//! ```
//!
//! The tool seeds a fresh store (SQLite; PostgreSQL on `BENCH_DATABASE_URL` with two replicas)
//! with one assigned order per driver, starts the release binary on it as a separate process
//! (which recovers the orders), connects the trackers and the drivers over real WebSockets, and
//! has every driver send one location a second. A location's latitude carries its sequence
//! number, so each tracker knows when it was sent; latency is measured on one clock, in this
//! process.
//!
//! With `FANOUT_REPLICAS=2`, two replicas share the regions through Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`): the drivers connect to the owner of the orders' region and the
//! trackers to the other replica, so every location crosses Redis once per tracker.

mod common;

use common::{BenchStore, cpu_ticks, env_or, start_server, token, wait_ready};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use mealkitz::config::DatabaseConfig;
use mealkitz::domain::{
    Cents, Change, Email, MerchantId, NewOrder, Order, OrderId, Position, Role,
};
use mealkitz::store::{NewUser, Store};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "fan-out-benchmark-secret-0123456789abcdef";
const BASE_LAT: f64 = 40.70;
const BASE_LON: f64 = -74.00;
/// Degrees of latitude per sequence step of a driver's location (about 1 cm).
const SEQ_STEP_DEG: f64 = 1e-7;
/// Sockets connecting at once (stays under the listen backlog).
const CONNECT_CONCURRENCY: usize = 100;

/// Where driver `i` drives: its own spot in the south-west of the demo city.
fn spot(i: usize) -> Position {
    Position {
        lat: BASE_LAT + (i / 50) as f64 * 0.001,
        lon: BASE_LON + (i % 50) as f64 * 0.001,
    }
}

fn main() {
    let trackers = env_or("FANOUT_TRACKERS", 5_000);
    let drivers = env_or("FANOUT_DRIVERS", 500);
    let seconds = env_or("FANOUT_SECS", 30);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(trackers, drivers, seconds));
}

async fn run(tracker_count: usize, driver_count: usize, seconds: usize) {
    let replicas = env_or("FANOUT_REPLICAS", 1);
    assert!(matches!(replicas, 1 | 2), "FANOUT_REPLICAS must be 1 or 2");
    let kind = if replicas == 2 { "postgres" } else { "sqlite" };
    let bench_store = BenchStore::create(kind, "fanout").await;
    let url = bench_store.url();
    let store = Store::open(&DatabaseConfig {
        url: bench_store.database_url(),
        max_connections: 4,
        ..DatabaseConfig::default()
    })
    .unwrap();
    store.migrate().await.unwrap();

    let user = |role: Role, i: usize| NewUser {
        email: Email::parse(&format!("{}-{i}@fanout.example", role.as_str())).unwrap(),
        name: "Fan-out".into(),
        role,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
    };
    let customer = store.create_user(user(Role::Customer, 0)).await.unwrap().id;
    let mut driver_ids = Vec::with_capacity(driver_count);
    for i in 0..driver_count {
        driver_ids.push(store.create_user(user(Role::Driver, i)).await.unwrap().id);
    }
    // One order per driver, already assigned to it.
    let mut seeded = Vec::new();
    for (i, driver_id) in driver_ids.iter().enumerate() {
        let pickup = spot(i);
        let (mut order, first) = Order::place(
            NewOrder {
                id: OrderId::new(),
                merchant_id: MerchantId::new(),
                customer_id: customer,
                items: vec![],
                delivery_fee_cents: Cents(0),
                total_cents: Cents(1000),
                pickup,
                dropoff: Position {
                    lat: pickup.lat + 0.01,
                    lon: pickup.lon,
                },
                dropoff_address: "Fan-out Street".into(),
                pickup_address: "1 Kitchen Street".into(),
            },
            "sw".into(),
            mealkitz::store::now(),
        );
        let offer_id = uuid::Uuid::now_v7();
        let mut entries = vec![first];
        for change in [
            Change::MerchantAccepted { prep_minutes: 10 },
            Change::SearchStarted,
            Change::Offered {
                offer_id,
                driver_id: *driver_id,
                expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
            },
            Change::DriverAssigned {
                offer_id,
                driver_id: *driver_id,
            },
        ] {
            let entry = order.decide(change, mealkitz::store::now()).unwrap();
            order.apply(&entry).unwrap();
            entries.push(entry);
        }
        seeded.push((order, entries));
    }
    store.import_orders(&seeded).await.unwrap();
    let orders: Vec<OrderId> = seeded.iter().map(|(o, _)| o.id).collect();

    // The server(s), as operators run them.
    let server_env = |mut env: Vec<(&'static str, String)>| {
        env.extend([
            ("DATABASE_URL", url.clone()),
            ("MEALKITZ_JWT_SECRET", SECRET.to_owned()),
            ("MEALKITZ_WS_RATE_PER_SEC", "1000".to_owned()),
        ]);
        env
    };
    let http = reqwest::Client::new();
    let mut children = Vec::new();
    let (driver_port, tracker_port) = if replicas == 1 {
        let (child, port) = start_server(&server_env(Vec::new()));
        children.push(child);
        wait_ready(&http, port).await;
        (port, port)
    } else {
        let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("fanout-{}:", uuid::Uuid::new_v4().simple());
        let mut ports = Vec::new();
        for node in ["fanout-a", "fanout-b"] {
            let (child, port) = start_server(&server_env(vec![
                ("REDIS_URL", redis.clone()),
                ("MEALKITZ_REDIS_KEY_PREFIX", prefix.clone()),
                ("MEALKITZ_NODE_ID", node.to_owned()),
            ]));
            children.push(child);
            wait_ready(&http, port).await;
            ports.push((node, port));
        }
        // Wait for the regions to be shared two and two, then find the orders' region owner.
        let owners = common::regions_shared_two_and_two(&store, "fanout-a", "fanout-b").await;
        let owner = owners["sw"].clone();
        for (_, port) in &ports {
            wait_ready(&http, *port).await;
        }
        let (owner_port, other_port) = if owner.starts_with("fanout-a") {
            (ports[0].1, ports[1].1)
        } else {
            (ports[1].1, ports[0].1)
        };
        println!(
            "two replicas: drivers on the owner of region sw ({owner}), trackers on the other"
        );
        (owner_port, other_port)
    };
    store.close().await;

    // Send times by (order index, sequence), and the latencies trackers observe.
    let sent: Arc<Mutex<HashMap<(usize, u64), Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let customer_token = token(SECRET, customer, Role::Customer);

    let connect_started = Instant::now();
    let trackers: Vec<_> = futures_util::stream::iter(0..tracker_count)
        .map(|t| {
            let order_index = t % driver_count;
            let url = format!(
                "ws://127.0.0.1:{tracker_port}/ws/orders/{}",
                orders[order_index]
            );
            let token = customer_token.clone();
            async move {
                let socket = mealkitz::sim::connect_client(&url, &token)
                    .await
                    .expect("tracker connects");
                (order_index, socket)
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    for (order_index, mut socket) in trackers {
        let sent = sent.clone();
        let latencies = latencies.clone();
        tokio::spawn(async move {
            let base = spot(order_index).lat;
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                if value["type"] != "driver_location" {
                    continue;
                }
                let seq = ((value["lat"].as_f64().unwrap() - base) / SEQ_STEP_DEG).round() as u64;
                let at = sent.lock().unwrap().get(&(order_index, seq)).copied();
                if let Some(at) = at {
                    latencies
                        .lock()
                        .unwrap()
                        .push(at.elapsed().as_secs_f64() * 1e3);
                }
            }
        });
    }

    let mut driver_sockets = Vec::new();
    for (i, driver_id) in driver_ids.iter().enumerate() {
        let url = format!("ws://127.0.0.1:{driver_port}/ws/driver");
        let socket = mealkitz::sim::connect_client(&url, &token(SECRET, *driver_id, Role::Driver))
            .await
            .expect("driver connects");
        driver_sockets.push((i, socket));
    }
    println!(
        "{tracker_count} trackers on {driver_count} orders connected in {connect_secs:.1} s; {driver_count} drivers connected"
    );

    let server_cpu = |children: &[std::process::Child]| -> u64 {
        children.iter().map(|child| cpu_ticks(child.id())).sum()
    };
    let cpu_before = server_cpu(&children);
    let measuring = Instant::now();
    let mut senders = Vec::new();
    for (i, socket) in driver_sockets {
        let sent = sent.clone();
        senders.push(tokio::spawn(async move {
            let (mut write, mut read) = socket.split();
            tokio::spawn(async move { while read.next().await.is_some() {} });
            // Spread the drivers over the second.
            tokio::time::sleep(Duration::from_millis(
                (i * 1000 / driver_count.max(1)) as u64,
            ))
            .await;
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            for seq in 1..=seconds as u64 {
                ticker.tick().await;
                let base = spot(i);
                let lat = base.lat + seq as f64 * SEQ_STEP_DEG;
                sent.lock().unwrap().insert((i, seq), Instant::now());
                let message = json!({"type": "location", "lat": lat, "lon": base.lon});
                if write
                    .send(Message::text(message.to_string()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }));
    }
    for sender in senders {
        let _ = sender.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = measuring.elapsed().as_secs_f64();
    let cpu_secs = (server_cpu(&children) - cpu_before) as f64 / 100.0;

    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort_by(f64::total_cmp);
    let updates = driver_count * seconds;
    let expected = updates * tracker_count / driver_count;
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{updates} driver locations -> {} deliveries to trackers ({expected} if none were coalesced)",
        latencies.len()
    );
    println!(
        "driver location -> tracker latency: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.50),
        at(0.90),
        at(0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    println!(
        "server CPU ({replicas} process(es)) {:.0} % of one core over {elapsed:.0} s ({:.1} s of CPU)",
        cpu_secs / elapsed * 100.0,
        cpu_secs
    );
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    bench_store.remove().await;
}
