//! Checkout throughput: concurrent customers checking out against a running `mealkitz serve`
//! on PostgreSQL, each with its own Idempotency-Key per order.
//!
//! ```sh
//! cargo bench --bench checkout_load                          # 50 clients, 30 s, PostgreSQL
//! CHECKOUT_CLIENTS=100 CHECKOUT_SECS=60 cargo bench --bench checkout_load
//! ```
//! PostgreSQL is reached at `BENCH_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres);
//! a fresh database is created for the run and dropped after.

mod common;

use common::{cpu_ticks, env_or, start_server, token, wait_ready};

use std::time::{Duration, Instant};

use mealkitz::config::{DatabaseConfig, DatabaseUrl, Secret};
use mealkitz::domain::{Email, Position, Role};
use mealkitz::store::{NewUser, Store};
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const SECRET: &str = "checkout-load-secret-0123456789abcdef!!";

fn main() {
    let clients = env_or("CHECKOUT_CLIENTS", 50);
    let seconds = env_or("CHECKOUT_SECS", 30);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(clients, seconds));
}

async fn run(clients: usize, seconds: usize) {
    let admin = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("mealkitz_bench_checkout_{}", uuid::Uuid::new_v4().simple());
    let mut connection = PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut connection)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);

    let (mut child, port) = start_server(&[
        ("DATABASE_URL", url.clone()),
        ("MEALKITZ_JWT_SECRET", SECRET.to_owned()),
        ("MEALKITZ_CHECKOUTS_PER_MINUTE", "1000000".to_owned()),
        (
            "RUST_LOG",
            "info,mealkitz::api::middleware=warn,mealkitz::api::orders=warn".to_owned(),
        ),
    ]);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    wait_ready(&http, port).await;

    // Users straight into the store (the server migrated it); tokens signed with its secret.
    let store = Store::open(&DatabaseConfig {
        url: DatabaseUrl::Postgres(Secret::new(url.clone())),
        max_connections: 4,
        ..DatabaseConfig::default()
    })
    .unwrap();
    store.migrate().await.unwrap();
    let user = |role: Role, i: usize| NewUser {
        email: Email::parse(&format!("{}-{i}@load.example", role.as_str())).unwrap(),
        name: "Load".into(),
        role,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
    };
    let owner = store.create_user(user(Role::Merchant, 0)).await.unwrap().id;
    let mut customers = Vec::new();
    for i in 0..clients {
        customers.push(token(
            SECRET,
            store.create_user(user(Role::Customer, i)).await.unwrap().id,
            Role::Customer,
        ));
    }
    store.close().await;
    let owner_token = token(SECRET, owner, Role::Merchant);
    let location = Position {
        lat: 40.70,
        lon: -74.02,
    };
    let merchant: serde_json::Value = http
        .post(format!("{base}/api/v1/merchants"))
        .bearer_auth(&owner_token)
        .json(&json!({"name": "Load Kitchen", "address": "1 Load St", "location": location}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let merchant_id = merchant["id"].as_str().unwrap().to_owned();
    let menu: serde_json::Value = http
        .put(format!("{base}/api/v1/merchants/{merchant_id}/menu"))
        .bearer_auth(&owner_token)
        .json(&json!({"items": [{"name": "Kit", "price_cents": 1500}, {"name": "Side", "price_cents": 400}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = json!({
        "merchant_id": merchant_id,
        "items": [{"menu_item_id": menu["items"][0]["id"], "quantity": 2}, {"menu_item_id": menu["items"][1]["id"], "quantity": 1}],
        "dropoff": {"lat": 40.71, "lon": -74.02, "address": "2 Load St"},
        "payment_method": "pm_card_visa",
    });

    let cpu_before = cpu_ticks(child.id());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds as u64);
    let mut workers = Vec::new();
    for customer in customers {
        let http = http.clone();
        let body = body.clone();
        let url = format!("{base}/api/v1/orders");
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = std::collections::HashMap::<u16, usize>::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let status = http
                    .post(&url)
                    .bearer_auth(&customer)
                    .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if status == 201 {
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                } else {
                    *failures.entry(status).or_default() += 1;
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = std::collections::HashMap::<u16, usize>::new();
    for worker in workers {
        let (mine, failed) = worker.await.unwrap();
        latencies.extend(mine);
        for (status, count) in failed {
            *failures.entry(status).or_default() += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(child.id()) - cpu_before) as f64 / 100.0;
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{clients} concurrent clients for {elapsed:.0} s on PostgreSQL: {} orders placed, {:.0} checkouts/s",
        latencies.len(),
        latencies.len() as f64 / elapsed
    );
    println!(
        "checkout latency: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; failures by status: {failures:?}",
        at(0.5),
        at(0.9),
        at(0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    println!(
        "server CPU {:.0} % of one core ({cpu:.1} s)",
        cpu / elapsed * 100.0
    );
    let _ = child.kill();
    let _ = child.wait();
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut connection)
    .await
    .unwrap();
}
